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

from cpo_opt.analysis import evaluate as _evaluate
from cpo_opt.analysis import optimize as _optimize
from cpo_opt.analysis import sensitivity as _sensitivity
from cpo_opt.analysis import validate as _validate
from cpo_opt.inputs import (ArgumentError, ModelSpec, PlanSpec, SystemSpec, load_model,
                            load_plan, load_system)

__all__ = ["Result", "EvaluateResult", "OptimizeResult", "SensitivityResult", "ValidateResult",
           "ReproduceResult", "evaluate", "optimize", "sensitivity", "validate", "reproduce",
           "load_inputs"]


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
class ReproduceResult(Result):
    """``reproduce``: the copper-vs-Passage study object."""

    scale_up_ratio: float = 0.0
    configs: list = dataclasses.field(default_factory=list)


def _spec(ref, cls, loader, name: str, overrides=None):
    if isinstance(ref, cls):
        if overrides:
            raise ArgumentError("overrides", f"apply overrides when loading {name} "
                                "(pass a preset name, path or dict instead of a loaded spec)")
        return ref
    if ref is None:
        raise ArgumentError(name, "required (a preset name, a file path, a dict or a loaded spec)")
    return loader(ref, overrides=overrides) if overrides else loader(ref)


def load_inputs(model, system, plan=None, overrides: Mapping[str, Any] | None = None):
    """``(ModelSpec, SystemSpec, PlanSpec | None)`` from names, paths, dicts or specs.

    ``overrides`` maps ``"section.key"`` to values (as ``--set``) for the system.
    """
    m = _spec(model, ModelSpec, load_model, "model")
    s = _spec(system, SystemSpec, load_system, "system", overrides)
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
             overrides: Mapping[str, Any] | None = None) -> EvaluateResult:
    """One exact step-time evaluation (``cpo-opt evaluate``)."""
    m, s, p = load_inputs(model, system, plan, overrides)
    if p is None:
        raise ArgumentError("plan", "required (a plan file, preset, dict or 'tp=8,pp=16')")
    return EvaluateResult.from_dict(_evaluate.evaluate(m, s, p, _tokens(tokens)))


def optimize(model, system, global_batch: int | None = None, *,
             exhaustive: bool | None = None,
             free: tuple[str, ...] | list[str] = (), power_budget_kW: float | None = None,
             dtype: str = "bf16", starts: int = 32, steps: int = 150, seed: int = 0,
             tokens: float | None = None, overrides: Mapping[str, Any] | None = None,
             progress: bool = False, coordinator: str | None = None,
             num_processes: int | None = None, process_id: int | None = None) -> OptimizeResult:
    """The best plan, and with ``free`` the best hardware values (``cpo-opt optimize``).

    ``exhaustive=None`` picks the exhaustive search on small spaces, else the gradient search.
    ``coordinator`` (``"HOST:PORT"``), ``num_processes``, ``process_id``: run as one of N
    ``jax.distributed`` processes (also from the environment or a detected SLURM job; see
    :mod:`cpo_opt.search.distributed`); every process returns the same result."""
    start_distributed(coordinator, num_processes, process_id)
    m, s, _ = load_inputs(model, system, None, overrides)
    return OptimizeResult.from_dict(_optimize.optimize(
        m, s, global_batch, exhaustive=exhaustive, free=tuple(free),
        power_budget_kW=power_budget_kW, dtype=dtype, starts=starts, steps=steps, seed=seed,
        tokens=_tokens(tokens), progress=progress))


def start_distributed(coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None) -> int:
    """Join a ``jax.distributed`` job when asked; returns the process count (1 alone)."""
    from cpo_opt.search import distributed
    try:
        return distributed.initialize(coordinator, num_processes, process_id)
    except ValueError as e:
        name, rule = str(e).split(": ", 1)
        raise ArgumentError(name, rule) from None


def sensitivity(model, system, plan, tokens: float | None = None, *,
                overrides: Mapping[str, Any] | None = None) -> SensitivityResult:
    """Gradients and elasticities of step time by autodiff (``cpo-opt sensitivity``)."""
    m, s, p = load_inputs(model, system, plan, overrides)
    if p is None:
        raise ArgumentError("plan", "required (a plan file, preset, dict or 'tp=8,pp=16')")
    return SensitivityResult.from_dict(_sensitivity.sensitivity(m, s, p, _tokens(tokens)))


def validate(cases=None) -> ValidateResult:
    """Predicted vs measured for a cases file (default: the shipped calibration set)."""
    return ValidateResult.from_dict(_validate.validate_file(cases))


def reproduce(quick: bool = False, out_dir: str | None = None,
              progress: bool = False, coordinator: str | None = None,
              num_processes: int | None = None, process_id: int | None = None
              ) -> ReproduceResult:
    """The copper-vs-Passage study (``cpo-opt reproduce``); ``out_dir=None`` writes nothing.

    With ``jax.distributed`` settings (see :func:`optimize`) the exhaustive searches split
    their rows over the processes; only process 0 writes ``out_dir`` and shows progress."""
    from cpo_opt.search import distributed
    from cpo_opt.study.reproduce import reproduce as _reproduce
    start_distributed(coordinator, num_processes, process_id)
    main = distributed.is_main()
    out = _reproduce(quick=quick, out_dir=out_dir if main else None,
                     progress=progress and main)
    out["processes"] = distributed.process_count()
    return ReproduceResult.from_dict(out)
