"""The speedup's interval from the uncertainty of the model's efficiency constants.

The model's calibratable constants (:data:`cpo_opt.model.constants.INFO`) are each known only
within a range. With each fabric's plan held at its optimum (the plans are the study's
result; re-searching them at every constant value would mix search noise into the bound),
the speedup

    S(c) = T_copper(plan_copper; c) / T_passage(plan_passage; c)

is re-evaluated for constants ``c`` at every corner of the box of ranges (2^n points for the
n constants with a range, all in one ``jax.vmap``), plus the shipped values, and the interval is
``[min S, max S]``. The model is smooth and, in each constant, monotone over these ranges for
both step times, so the extreme ratio lies at a corner.

Ranges (:func:`ranges_for`): around the GPU's actual constants (per generation, with the
shipped fit), the 90% interval of the shipped fit (:mod:`cpo_opt.model.fitted`) where it set a
constant, else the stated range: a fraction of a peak ``+-10 %`` of its value, capped at 1 (the spread of the published micro-benchmarks each
constant's docstring cites: e.g. cuBLAS 75-85 % of H100 bf16 peak around 0.75+-0.075); the
kernel launch overhead x0.5-x2 (2-8 us, CUDA launch without / with host jitter); the reserved
HBM +-1 GB (it moves memory, not time, at fixed plans). A calibrate output (``--constants``,
read by :func:`cpo_opt.inputs.constants_file.read_constants`) goes through
:func:`ranges_from_table`: its values move the centre, its intervals replace the ranges.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Mapping

import jax
import numpy as np

from cpo_opt.inputs.loaders import ModelSpec, PlanSpec, SystemSpec
from cpo_opt.model.constants import INFO, Constants
from cpo_opt.model.step import step_time

FRACTION_SPREAD = 0.10
"""Relative half-width of a fraction-of-peak constant's stated range (capped at 1)."""

OVERHEAD_FACTOR = 2.0
"""The kernel overhead's range is ``[value / 2, value * 2]``."""

RESERVED_SPREAD_BYTES = 1e9
"""The reserved HBM's range is ``value +- 1 GB``."""


def stated_range(name: str, value: float | None = None) -> tuple[float, float]:
    """The documented plausible ``(low, high)`` of one constant (module docstring)."""
    info = INFO[name]
    v = info.default if value is None else float(value)
    if info.unit == "fraction":
        return (v * (1 - FRACTION_SPREAD), min(1.0, v * (1 + FRACTION_SPREAD)))
    if name == "kernel_overhead_s":
        return (v / OVERHEAD_FACTOR, v * OVERHEAD_FACTOR)
    if name == "reserved_bytes":
        return (max(0.0, v - RESERVED_SPREAD_BYTES), v + RESERVED_SPREAD_BYTES)
    return (v * (1 - FRACTION_SPREAD), v * (1 + FRACTION_SPREAD))


STATED_RANGES: dict[str, tuple[float, float]] = {n: stated_range(n) for n in INFO}
"""``{constant: (low, high)}`` around the global defaults (:data:`INFO`)."""


def stated_ranges(base: Constants | None = None) -> dict[str, tuple[float, float]]:
    """The stated range of every constant around ``base`` (a GPU's actual constants, per
    generation and fitted values included), or around the global defaults."""
    if base is None:
        return dict(STATED_RANGES)
    return {n: stated_range(n, float(np.asarray(getattr(base, n)))) for n in INFO}


def ranges_for(gpu_name: str, base: Constants | None = None) -> dict[str, tuple[float, float]]:
    """The ranges a GPU's speedup interval uses by default: the stated range around the GPU's
    constants (``base``), replaced by the 90% interval of the shipped fit
    (:mod:`cpo_opt.model.fitted`) for every constant that fit set at the GPU's levels."""
    from cpo_opt.model import fitted
    from cpo_opt.model.constants import generation_of
    out = stated_ranges(base)
    for level in ("*", generation_of(gpu_name) or "", str(gpu_name)):
        for name, (lo, hi) in fitted.INTERVALS.get(level, {}).items():
            if name in INFO:
                out[name] = (float(lo), float(hi))
    return out


def ranges_from_table(table, gpu_name: str, base: Constants | None = None
                      ) -> dict[str, tuple[float, float]]:
    """``{name: (low, high)}`` from a constants table's fitted intervals (``calibrate``) at
    the levels that apply to ``gpu_name`` (``"*"``, its generation, its name; the most
    specific wins); a constant the table sets without an interval takes the stated range
    around its value (the shipped fit's interval no longer applies to it); the others keep
    :func:`ranges_for` (around ``base``, the GPU's constants with the table applied)."""
    from cpo_opt.model.constants import generation_of
    out = ranges_for(gpu_name, base)
    intervals = getattr(table, "intervals", {}) or {}
    levels = ("*", generation_of(gpu_name) or "", str(gpu_name))
    for level in levels:
        for name, value in (table or {}).get(level, {}).items():
            if name in INFO:
                out[name] = stated_range(name, float(value))
    for level in levels:
        for name, (lo, hi) in intervals.get(level, {}).items():
            if name in INFO:
                out[name] = (float(lo), float(hi))
    return out


MAX_CORNER_CONSTANTS = 12
"""Most varied constants whose box is enumerated corner by corner (4,096 corners); beyond it
(19 constants: 524,288 corners) :func:`corners` takes each constant to each end alone and the
interval adds the deviations (:func:`speedup_interval`)."""


def _varied(ranges: Mapping[str, tuple[float, float]]) -> list[str]:
    return [n for n in INFO if ranges.get(n) and ranges[n][0] != ranges[n][1]]


def corners(base: Constants, ranges: Mapping[str, tuple[float, float]]) -> Constants:
    """A batched :class:`Constants`, ``base`` in the last row. Up to
    :data:`MAX_CORNER_CONSTANTS` varied constants: every corner of the box; more: each varied
    constant at its low then its high end alone, the others at ``base`` (``2 k`` rows)."""
    names = list(INFO)
    varied = _varied(ranges)
    at_base = {n: float(np.asarray(getattr(base, n))) for n in names}
    cols = {n: [] for n in names}
    if len(varied) <= MAX_CORNER_CONSTANTS:
        settings = [dict(zip(varied, (ranges[n][b] for n, b in zip(varied, bits))))
                    for bits in itertools.product((0, 1), repeat=len(varied))]
    else:
        settings = [{n: ranges[n][b]} for n in varied for b in (0, 1)]
    for change in settings + [{}]:
        for n in names:
            cols[n].append(change.get(n, at_base[n]))
    return Constants(**{n: np.asarray(v, dtype=float) for n, v in cols.items()})


@functools.partial(jax.jit, static_argnames=("structure",))
def _corner_times(model, system, plan, batch: Constants, *, structure):
    """Step time at every row of the batched constants (model, system and plan traced: one
    compilation per structure and corner count, shared by every config and fabric)."""
    def one(c):
        return step_time(model, dataclasses.replace(system, constants=c), plan,
                         structure=structure).step_time_s
    return jax.vmap(one)(batch)


def _step_times(model: ModelSpec, system: SystemSpec, plan: PlanSpec, batch: Constants
                ) -> np.ndarray:
    from cpo_opt.analysis.evaluate import structure_of_plan
    return np.asarray(_corner_times(model.model, system.system, plan.plan, batch,
                                    structure=structure_of_plan(model, plan)))


def speedup_interval(model: ModelSpec, baseline: tuple[SystemSpec, PlanSpec],
                     candidate: tuple[SystemSpec, PlanSpec],
                     ranges: Mapping[str, tuple[float, float]] | None = None,
                     tokens_ratio: float = 1.0) -> dict[str, Any]:
    """``{"interval": [min, max], "at_defaults", "ranges", "method"}`` of
    ``T_baseline / T_candidate`` over the corners of ``ranges`` (default
    :func:`ranges_for` the baseline's GPU: stated ranges around its actual constants, the
    shipped fit's intervals where it has them), each side's plan fixed. ``tokens_ratio`` multiplies the ratio when
    the two steps carry different tokens (candidate tokens / baseline tokens)."""
    base = baseline[0].system.constants
    ranges = dict(ranges_for(baseline[0].gpu_name, base) if ranges is None else ranges)
    batch = corners(base, ranges)
    tb = _step_times(model, baseline[0], baseline[1], batch)
    tc = _step_times(model, candidate[0], candidate[1], batch)
    s = tb / tc * tokens_ratio
    ok = np.isfinite(s)
    if len(_varied(ranges)) <= MAX_CORNER_CONSTANTS:
        interval = [float(s[ok].min()), float(s[ok].max())] if ok.any() else [None, None]
        method = ("plans fixed at each fabric's optimum; speedup re-evaluated at every corner "
                  "of the constants' ranges (vmap); min-max")
    else:  # one constant at a time: the deviations from the point, added per side
        d = np.where(ok[:-1], s[:-1] - s[-1], 0.0).reshape(-1, 2)
        low = s[-1] + np.sum(np.minimum(d.min(axis=1), 0.0))
        high = s[-1] + np.sum(np.maximum(d.max(axis=1), 0.0))
        interval = [float(low), float(high)] if np.isfinite(s[-1]) else [None, None]
        method = ("plans fixed at each fabric's optimum; each constant at each end of its "
                  "range alone (vmap), the speedup's deviations added per side: the corners' "
                  "min-max when the constants act separately, first-order otherwise")
    return {"interval": interval,
            "at_defaults": float(s[-1]),
            "corners": int(len(s) - 1),
            "ranges": {k: list(v) for k, v in ranges.items()},
            "method": method}
