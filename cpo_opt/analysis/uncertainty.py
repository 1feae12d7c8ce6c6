"""Intervals of model outputs from the constants' intervals (linearisation through autodiff).

A constants file may carry a 90% interval ``[low, high]`` for a constant
(:mod:`cpo_opt.inputs.constants_file`; ``calibrate`` writes Laplace intervals). Each such
constant is read as an independent normal variable in its unbounded coordinate ``theta``
(the logit of a fraction, the log of a positive quantity; :mod:`cpo_opt.analysis.calibrate`)
with ``sd = (theta(high) - theta(low)) / (2 * 1.645)``. A positive output ``f`` (a step time, a
speedup) is propagated to first order in ``log f``::

    sd(log f)^2 = sum_j (d log f / d theta_j)^2 sd_j^2          (jax.grad, one pass)
    interval    = f * exp(+- 1.645 sd(log f))

Linearisation rather than sampling: it costs one gradient (the model is differentiable end to
end), is exact for the model's local response, and the intervals of fitted constants are a
few percent wide, where the step time is close to linear in ``theta``. Working in ``log f``
keeps the interval positive and makes a ratio's interval (a speedup) the same as its
inverse's. Limits: the marginal intervals of a file carry no correlations, so two constants
that the fit traded against each other (both set the compute time, say) count as
independent; that overstates the width of a quantity that depends only on their combination.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from cpo_opt.analysis.calibrate import Z90, from_theta, to_theta
from cpo_opt.analysis.evaluate import step_time_jit
from cpo_opt.inputs.constants_file import ConstantsTable, as_table
from cpo_opt.inputs.loaders import ModelSpec, PlanSpec, SystemSpec
from cpo_opt.model.constants import constants_for


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point value and its (90%) interval."""

    value: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def intervals_of(table: Any) -> list[tuple[str, str, float, float]]:
    """``(level, name, theta, sd)`` of every constant of ``table`` that carries an interval."""
    t = as_table(table)
    out = []
    if t is None:
        return out
    for level, names in t.intervals.items():
        for name, (low, high) in names.items():
            value = t[level][name]
            sd = float(to_theta(name, high) - to_theta(name, low)) / (2.0 * Z90)
            out.append((level, name, float(to_theta(name, value)), sd))
    return out


def interval_of(fn: Callable[[dict], Any], constants: Any, z: float = Z90) -> Interval:
    """The interval of ``fn(table)`` (> 0) from the intervals of a constants table.

    Args:
      fn: maps a plain constants table ``{level: {name: value}}`` (values may be JAX tracers)
        to one positive scalar; build systems inside it with :func:`with_table` so that the
        constants reach the model.
      constants: a :class:`~cpo_opt.inputs.constants_file.ConstantsTable`, a path or a dict.
      z: the normal quantile (1.645: a 90% interval).

    Returns:
      :class:`Interval` (low == high == value when no constant carries an interval).
    """
    table = as_table(constants) or ConstantsTable()
    keys = intervals_of(table)
    plain = {lvl: dict(v) for lvl, v in table.items()}
    if not keys:
        v = float(fn(plain))
        return Interval(v, v, v)
    theta = jnp.asarray([k[2] for k in keys])
    sd = jnp.asarray([k[3] for k in keys])

    def log_f(th):
        t = {lvl: dict(v) for lvl, v in plain.items()}
        for k, (level, name, _, _) in enumerate(keys):
            t[level][name] = from_theta(name, th[k])
        return jnp.log(fn(t))

    value, grad = jax.value_and_grad(log_f)(theta)
    s = float(jnp.sqrt(jnp.sum((grad * sd) ** 2)))
    v = float(value)
    return Interval(math.exp(v), math.exp(v - z * s), math.exp(v + z * s))


def with_table(system: SystemSpec, table: Mapping[str, Mapping[str, Any]]):
    """``system.system`` (the System pytree) with its constants taken from ``table``."""
    return dataclasses.replace(system.system,
                               constants=constants_for(system.gpu_name, table))


def has_intervals(system: SystemSpec) -> bool:
    """Whether the system was loaded with a constants table that carries intervals at the
    levels of its own GPU (an interval of another generation's constant would give a
    zero-width interval, which would claim a certainty nobody measured)."""
    c = system.constants
    return isinstance(c, ConstantsTable) and bool(c.intervals_for(system.gpu_name))


def step_time_interval(model: ModelSpec, system: SystemSpec, plan: PlanSpec,
                       z: float = Z90) -> Interval:
    """The interval of the step time of one plan from the system's constants intervals."""
    return interval_of(
        lambda t: step_time_jit(model.model, with_table(system, t), plan.plan).step_time_s,
        system.constants, z)
