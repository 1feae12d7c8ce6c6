"""The coordinates constants are fitted and sampled in: the logit of a fraction (so it stays
in (0, 1)) and the log of anything else (a time or a rate stays > 0), and the normal quantile
of a central 90% interval. Shared by :mod:`cpo_opt.analysis.calibrate` (the fit) and
:mod:`cpo_opt.analysis.uncertainty` (the samples)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cpo_opt.model.constants import INFO

Z90 = 1.6448536269514722
"""Standard normal quantile of 0.95: a central 90% interval is ``mean +- Z90 sd``."""

FRACTION_MAX = 1.0 - 1e-9
"""A fraction's prior is clipped below 1 so its logit is finite."""


def to_theta(name: str, value):
    """Physical value -> unbounded coordinate: logit of a fraction, log of anything else."""
    if INFO[name].unit == "fraction":
        v = jnp.clip(value, 1e-12, FRACTION_MAX)
        return jnp.log(v) - jnp.log1p(-v)
    return jnp.log(value)


def from_theta(name: str, theta):
    """Unbounded coordinate -> physical value (sigmoid or exp)."""
    if INFO[name].unit == "fraction":
        return jax.nn.sigmoid(theta)
    return jnp.exp(theta)
