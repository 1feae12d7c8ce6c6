"""The Python API: one function per command, returning a typed result (SPEC section 3).

Each function takes preset names, file paths, dicts or already loaded specs, raises
:class:`~cpo_opt.inputs.InputError` (or its :class:`~cpo_opt.inputs.ArgumentError`, which
names the argument) on bad input, and returns a result whose :meth:`Result.to_dict` is exactly
the command's ``--json`` object. The command line is a thin shell over these functions::

    import cpo_opt
    r = cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", "tp=1,pp=8,ep=64,dtype=fp8", tokens=14.8e12)
    r.step_time_s, r.breakdown_s["ep_comm"], r.to_dict()
    best = cpo_opt.optimize("megatron-1t", "dgx-a100-selene", global_batch=3072, exhaustive=True)
    best.plan_arg                      # a string that ``plan=`` accepts again

Results also read like the JSON object (``r["step_time_s"]``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, Mapping

from cpo_opt.analysis import calibrate as _calibrate
from cpo_opt.analysis import evaluate as _evaluate
from cpo_opt.analysis import optimize as _optimize
from cpo_opt.analysis import sensitivity as _sensitivity
from cpo_opt.analysis import validate as _validate
from cpo_opt.inputs import (ArgumentError, ModelSpec, PlanSpec, SystemSpec, load_cases,
                            load_model, load_plan, load_system)
from cpo_opt.inputs.constants_file import ConstantsTable, as_table
from cpo_opt.model.constants import constants_for

__all__ = ["Result", "EvaluateResult", "OptimizeResult", "SensitivityResult", "ValidateResult",
           "ReproduceResult", "CalibrateResult", "evaluate", "optimize", "sensitivity",
           "validate", "calibrate", "reproduce", "load_inputs", "load_constants"]


@dataclasses.dataclass(frozen=True)
class Result(Mapping):
    """A command's result: typed fields for the main numbers, the whole object in ``data``.

    ``to_dict()`` returns (a copy of) the command's ``--json`` object; indexing reads it.
    """

    data: dict = dataclasses.field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)

    def __getitem__(self, key):
        return self.data[key]

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = [f.name for f in dataclasses.fields(cls) if f.name != "data"]
        return cls(data=data, **{n: data.get(n) for n in names})


@dataclasses.dataclass(frozen=True)
class EvaluateResult(Result):
    """``evaluate``: step time, its exposed breakdown (s), MFU, memory and feasibility."""

    step_time_s: float = 0.0
    breakdown_s: dict = dataclasses.field(default_factory=dict)
    mfu: float = 0.0
    memory_GB_per_gpu: float = 0.0
    fits_memory: bool = True
    plan: dict = dataclasses.field(default_factory=dict)
    time_to_train_days: float | None = None


@dataclasses.dataclass(frozen=True)
class OptimizeResult(Result):
    """``optimize``: the winning plan, its step time, the search's accounting."""

    plan: dict | None = None
    step_time_s: float | None = None
    method: str = ""
    evaluations: int = 0
    search_wall_s: float = 0.0
    hardware: dict = dataclasses.field(default_factory=dict)
    result: dict | None = None


@dataclasses.dataclass(frozen=True)
class SensitivityResult(Result):
    """``sensitivity``: d(step)/d(field) and elasticities for every continuous field."""

    step_time_s: float = 0.0
    gradients: dict = dataclasses.field(default_factory=dict)
    elasticities: dict = dataclasses.field(default_factory=dict)
    ranking: list = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class ValidateResult(Result):
    """``validate``: predicted vs measured per case, mean and max |error|."""

    cases: list = dataclasses.field(default_factory=list)
    mean_abs_error: float = 0.0
    max_abs_error: float = 0.0


@dataclasses.dataclass(frozen=True)
class CalibrateResult(Result):
    """``calibrate``: fitted constants with 90% intervals, errors before/after/cross-validated.

    ``table`` is the fitted :class:`~cpo_opt.inputs.constants_file.ConstantsTable` (what
    ``--out`` writes; pass it as ``constants=`` to the other functions)."""

    constants: dict = dataclasses.field(default_factory=dict)
    before: dict = dataclasses.field(default_factory=dict)
    after: dict = dataclasses.field(default_factory=dict)
    cross_validation: dict = dataclasses.field(default_factory=dict)
    unconstrained: list = dataclasses.field(default_factory=list)
    table: Any = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class ReproduceResult(Result):
    """``reproduce``: the copper-vs-Passage study object."""

    scale_up_ratio: float = 0.0
    configs: list = dataclasses.field(default_factory=list)


def _spec(ref, cls, loader, name: str, overrides=None, **kw):
    if isinstance(ref, cls):
        if overrides:
            raise ArgumentError("overrides", f"apply overrides when loading {name} "
                                "(pass a preset name, path or dict instead of a loaded spec)")
        return ref
    if ref is None:
        raise ArgumentError(name, "required (a preset name, a file path, a dict or a loaded spec)")
    return loader(ref, overrides=overrides, **kw) if overrides else loader(ref, **kw)


def load_constants(constants) -> ConstantsTable | None:
    """A checked constants table from a path (``--constants``), a dict or a table; None:
    the shipped constants."""
    return as_table(constants)


def _with_constants(system: SystemSpec, table: ConstantsTable | None) -> SystemSpec:
    """A loaded system with its constants replaced by ``table`` (None: unchanged)."""
    if table is None:
        return system
    return dataclasses.replace(system, constants=table, system=dataclasses.replace(
        system.system, constants=constants_for(system.gpu_name, table)))


def load_inputs(model, system, plan=None, overrides: Mapping[str, Any] | None = None,
                constants=None):
    """``(ModelSpec, SystemSpec, PlanSpec | None)`` from names, paths, dicts or specs.

    ``overrides`` maps ``"section.key"`` to values (as ``--set``) for the system;
    ``constants`` is a constants file, dict or table (``--constants``) replacing the shipped
    efficiency constants.
    """
    table = load_constants(constants)
    m = _spec(model, ModelSpec, load_model, "model")
    s = _with_constants(_spec(system, SystemSpec, load_system, "system", overrides), table)
    p = None
    if plan is not None:
        p = plan if isinstance(plan, PlanSpec) else load_plan(plan, m, s)
    return m, s, p


def _tokens(tokens) -> float | None:
    if tokens is None:
        return None
    try:
        t = float(tokens)
    except (TypeError, ValueError):
        raise ArgumentError("tokens", f"must be a number (got {tokens!r})") from None
    if not (t > 0 and math.isfinite(t)):
        raise ArgumentError("tokens", f"must be a positive finite number (got {tokens!r})")
    return t


def evaluate(model, system, plan, tokens: float | None = None, *,
             overrides: Mapping[str, Any] | None = None, constants=None) -> EvaluateResult:
    """One exact step-time evaluation (``cpo-opt evaluate``); with ``constants`` carrying
    intervals it adds ``step_time_interval_s``."""
    m, s, p = load_inputs(model, system, plan, overrides, constants)
    if p is None:
        raise ArgumentError("plan", "required (a plan file, preset, dict or 'tp=8,pp=16')")
    return EvaluateResult.from_dict(_evaluate.evaluate(m, s, p, _tokens(tokens)))


def optimize(model, system, global_batch: int | None = None, *, exhaustive: bool = False,
             free: tuple[str, ...] | list[str] = (), power_budget_kW: float | None = None,
             dtype: str = "bf16", starts: int = 32, steps: int = 150, seed: int = 0,
             tokens: float | None = None, overrides: Mapping[str, Any] | None = None,
             progress: bool = False, constants=None) -> OptimizeResult:
    """The best plan, and with ``free`` the best hardware values (``cpo-opt optimize``)."""
    m, s, _ = load_inputs(model, system, None, overrides, constants)
    return OptimizeResult.from_dict(_optimize.optimize(
        m, s, global_batch, exhaustive=exhaustive, free=tuple(free),
        power_budget_kW=power_budget_kW, dtype=dtype, starts=starts, steps=steps, seed=seed,
        tokens=_tokens(tokens), progress=progress))


def sensitivity(model, system, plan, tokens: float | None = None, *,
                overrides: Mapping[str, Any] | None = None,
                constants=None) -> SensitivityResult:
    """Gradients and elasticities of step time by autodiff (``cpo-opt sensitivity``)."""
    m, s, p = load_inputs(model, system, plan, overrides, constants)
    if p is None:
        raise ArgumentError("plan", "required (a plan file, preset, dict or 'tp=8,pp=16')")
    return SensitivityResult.from_dict(_sensitivity.sensitivity(m, s, p, _tokens(tokens)))


def validate(cases=None, *, constants=None) -> ValidateResult:
    """Predicted vs measured for a cases file (default: the shipped calibration set); with
    ``constants`` every case runs with those constants instead of the shipped ones."""
    table = load_constants(constants)
    if table is None:
        return ValidateResult.from_dict(_validate.validate_file(cases))
    path = _validate.DEFAULT_CASES if cases is None else cases
    loaded = [dataclasses.replace(c, system=_with_constants(c.system, table))
              for c in load_cases(path)]
    out = _validate.validate_cases(loaded)
    out["cases_file"] = str(path)
    out["constants_file"] = table.origin
    return ValidateResult.from_dict(out)


def calibrate(cases, fit=None, *, out: str | None = None, constants=None,
              prior_weight: float = _calibrate.DEFAULT_PRIOR_WEIGHT,
              steps: int = _calibrate.DEFAULT_STEPS, cross_validate: bool = True,
              hold_out=()) -> CalibrateResult:
    """Fit efficiency constants to measured cases by gradient descent (``cpo-opt calibrate``).

    Args:
      cases: a cases file, a list of files, or loaded cases.
      fit: constant names to fit (default: every constant; those the cases cannot identify
        are reported in ``unconstrained`` and left at their prior).
      out: write the fitted constants there as TOML (readable by ``constants=``).
      constants: the starting (prior) constants table instead of the shipped values.
      prior_weight, steps: see :mod:`cpo_opt.analysis.calibrate`.
      cross_validate: leave-one-out predictions; hold_out: case ids not fitted.
    """
    cal = _calibrate.calibrate(cases, fit, base=constants, prior_weight=prior_weight,
                               steps=steps, cross_validate=cross_validate, hold_out=hold_out)
    data = dict(cal.report)
    if out is not None:
        data["out"] = _calibrate.write(cal, out)
    r = CalibrateResult.from_dict(data)
    return dataclasses.replace(r, table=cal.table)


def reproduce(quick: bool = False, out_dir: str | None = None,
              progress: bool = False, constants=None) -> ReproduceResult:
    """The copper-vs-Passage study (``cpo-opt reproduce``); ``out_dir=None`` writes nothing.

    ``constants`` reaches the study when its ``reproduce`` takes a ``constants`` argument."""
    import inspect
    from cpo_opt.study.reproduce import reproduce as _reproduce
    kw = {}
    table = load_constants(constants)
    if table is not None:
        if "constants" not in inspect.signature(_reproduce).parameters:
            raise ArgumentError("constants", "the study in this build does not take constants "
                                "yet (cpo_opt.study.reproduce has no constants argument)")
        kw["constants"] = table
    return ReproduceResult.from_dict(_reproduce(quick=quick, out_dir=out_dir,
                                                progress=progress, **kw))
