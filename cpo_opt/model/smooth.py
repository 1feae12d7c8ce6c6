"""Exact and smooth versions of the model's non-smooth pieces, sharing one call site.

Every function takes a ``temperature``:

* the Python number ``0``: the exact operation (``max``, ``min``, ``ceil``); this is what
  ``evaluate`` runs (decided at trace time, so the exact model carries no smoothing code).
* a positive number or a traced scalar: a smooth surrogate used by the relaxed model the
  optimizer descends (a traced temperature lets one compiled loop anneal it).
  As ``temperature -> 0`` each surrogate converges to the exact operation, so the relaxed and
  exact models are one formula (style guide rule 7).

Surrogates:

* maximum of positive numbers: the p-norm ``(a^p + b^p)^(1/p)`` with ``p = 1/temperature``.
  It overestimates ``max`` by at most a factor ``2^temperature``.
* minimum of positive numbers: ``(a^-p + b^-p)^(-1/p)``, same ``p``.
* ``relu(x)``: ``temperature * scale * softplus(x / (temperature * scale))``.
* ``ceil(x)``: ``n + (1 - exp(-f/T)) / (1 - exp(-1/T))`` with ``n = floor(x + eps)`` and
  ``f = (x - n - eps) / (1 - 2 eps)`` clipped to ``[0, 1]`` (``eps = CEIL_EPS``, the exact
  ceiling's tolerance, so a fraction within ``eps`` of an integer gives it in both):
  continuous everywhere, exact at integers for every ``T`` (so integer plans are never
  blurred), rising from ``n`` to ``n + 1`` within about ``T`` above each integer; as
  ``T -> 0`` it becomes ``ceil``, at ``T = 1`` it is close to the fluid ``x + 1/2``.
"""

from __future__ import annotations

import jax.numpy as jnp

CEIL_EPS = 1e-3
"""``ceil`` is evaluated as ``floor(x + 1 - CEIL_EPS)``: exact for every ``x`` whose
fractional part is 0 or above 1e-3 (all layer splits of up to 1000 stages)."""

TINY = 1e-30


def is_exact(temperature) -> bool:
    """True when ``temperature`` is the Python number 0 (the exact model)."""
    return isinstance(temperature, (int, float)) and temperature == 0


def safe_div(num, den):
    """``num / den`` with 0 where ``den == 0``, with finite gradients (double-where trick)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def smax(a, b, temperature: float = 0.0):
    """Maximum of two non-negative numbers; p-norm with ``p = 1/temperature`` when smooth."""
    if is_exact(temperature):
        return jnp.maximum(a, b)
    p = 1.0 / temperature
    m = jnp.maximum(jnp.maximum(a, b), TINY)
    s = (a / m) ** p + (b / m) ** p
    ok = s > 0  # both zero: the norm is 0 (double where keeps the gradient finite)
    return jnp.where(ok, m * jnp.where(ok, s, 1.0) ** temperature, 0.0)


def smin(a, b, temperature: float = 0.0):
    """Minimum of two positive numbers; ``(a^-p + b^-p)^(-1/p)`` when smooth."""
    if is_exact(temperature):
        return jnp.minimum(a, b)
    p = 1.0 / temperature
    m = jnp.maximum(jnp.minimum(a, b), TINY)
    a, b = jnp.maximum(a, TINY), jnp.maximum(b, TINY)
    return m * ((m / a) ** p + (m / b) ** p) ** (-temperature)


def clamp(x, lo, hi, temperature: float = 0.0):
    """``min(max(x, lo), hi)`` for positive numbers, smooth when ``temperature > 0``."""
    return smin(smax(x, lo, temperature), hi, temperature)


def relu(x, scale, temperature: float = 0.0):
    """``max(x, 0)``; softplus of width ``temperature * scale`` when smooth.

    ``scale`` sets the units of the smoothing width (e.g. the overlap window, seconds).
    """
    if is_exact(temperature):
        return jnp.maximum(x, 0.0)
    w = jnp.maximum(temperature * scale, TINY)
    return w * jnp.logaddexp(x / w, 0.0)


def ceil(x, temperature: float = 0.0):
    """``ceil(x)``; exact at integers and smooth between them when ``temperature > 0``."""
    if is_exact(temperature):
        return jnp.ceil(x - CEIL_EPS)
    # the exact ceiling's tolerance on both sides: fractions within CEIL_EPS of n (above or
    # below) give n, and the rise spans the rest, so both agree as T -> 0 for every x
    n = jnp.floor(x + CEIL_EPS)
    f = jnp.clip((x - n - CEIL_EPS) / (1.0 - 2.0 * CEIL_EPS), 0.0, 1.0)
    return n + (-jnp.expm1(-f / temperature)) / (-jnp.expm1(-1.0 / temperature))


def step(x, temperature: float = 0.0):
    """Heaviside ``x > 0`` as 0/1; logistic of width ``temperature`` when smooth."""
    if is_exact(temperature):
        return jnp.where(x > 0, 1.0, 0.0)
    return 0.5 * (1.0 + jnp.tanh(0.5 * x / temperature))
