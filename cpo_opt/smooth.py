"""Exact and smooth versions of the model's non-smooth pieces, sharing one call site.

Every function takes a ``temperature`` that is a Python float (static under ``jit``):

* ``temperature == 0``: the exact operation (``max``, ``min``, ``ceil``); this is what
  ``evaluate`` runs.
* ``temperature > 0``: a smooth surrogate used by the relaxed model the optimizer descends.
  As ``temperature -> 0`` each surrogate converges to the exact operation, so the relaxed and
  exact models are one formula (style guide rule 7).

Surrogates:

* maximum of positive numbers: the p-norm ``(a^p + b^p)^(1/p)`` with ``p = 1/temperature``.
  It overestimates ``max`` by at most a factor ``2^temperature``.
* minimum of positive numbers: ``(a^-p + b^-p)^(-1/p)``, same ``p``.
* ``relu(x)``: ``temperature * scale * softplus(x / (temperature * scale))``.
* ``ceil(x)``: the Fourier-smoothed staircase
  ``floor_r(y) = y - 1/2 + atan(r sin 2 pi y / (1 - r cos 2 pi y)) / pi`` (the closed form of
  ``y - 1/2 + sum_n r^n sin(2 pi n y) / (pi n)``) with ``r = 1 - temperature``, evaluated at
  ``y = x + 1 - CEIL_EPS``. At ``temperature = 1`` it is the fluid ``x + 1/2 - CEIL_EPS``
  (the expected ceiling of a uniformly placed fraction); as ``r -> 1`` it becomes ``ceil``.
"""

from __future__ import annotations

import jax.numpy as jnp

CEIL_EPS = 1e-3
"""``ceil`` is evaluated as ``floor(x + 1 - CEIL_EPS)``: exact for every ``x`` whose
fractional part is 0 or above 1e-3 (all layer splits of up to 1000 stages)."""

TINY = 1e-30


def safe_div(num, den):
    """``num / den`` with 0 where ``den == 0``, with finite gradients (double-where trick)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def smax(a, b, temperature: float = 0.0):
    """Maximum of two non-negative numbers; p-norm with ``p = 1/temperature`` when smooth."""
    if temperature == 0.0:
        return jnp.maximum(a, b)
    p = 1.0 / temperature
    m = jnp.maximum(jnp.maximum(a, b), TINY)
    return m * ((a / m) ** p + (b / m) ** p) ** temperature


def smin(a, b, temperature: float = 0.0):
    """Minimum of two positive numbers; ``(a^-p + b^-p)^(-1/p)`` when smooth."""
    if temperature == 0.0:
        return jnp.minimum(a, b)
    p = 1.0 / temperature
    m = jnp.maximum(jnp.minimum(a, b), TINY)
    return m * ((m / a) ** p + (m / b) ** p) ** (-temperature)


def clamp(x, lo, hi, temperature: float = 0.0):
    """``min(max(x, lo), hi)`` for positive numbers, smooth when ``temperature > 0``."""
    return smin(smax(x, lo, temperature), hi, temperature)


def relu(x, scale, temperature: float = 0.0):
    """``max(x, 0)``; softplus of width ``temperature * scale`` when smooth.

    ``scale`` sets the units of the smoothing width (e.g. the overlap window, seconds).
    """
    if temperature == 0.0:
        return jnp.maximum(x, 0.0)
    w = jnp.maximum(temperature * scale, TINY)
    return w * jnp.logaddexp(x / w, 0.0)


def ceil(x, temperature: float = 0.0):
    """``ceil(x)``; Fourier-smoothed staircase with ``r = 1 - temperature`` when smooth."""
    if temperature == 0.0:
        return jnp.ceil(x - CEIL_EPS)
    r = 1.0 - min(temperature, 1.0)
    y = x + 1.0 - CEIL_EPS
    theta = 2.0 * jnp.pi * y
    return y - 0.5 + jnp.arctan2(r * jnp.sin(theta), 1.0 - r * jnp.cos(theta)) / jnp.pi


def step(x, temperature: float = 0.0):
    """Heaviside ``x > 0`` as 0/1; logistic of width ``temperature`` when smooth."""
    if temperature == 0.0:
        return (x > 0).astype(jnp.result_type(x, 1.0))
    return 0.5 * (1.0 + jnp.tanh(0.5 * x / temperature))
