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

Precision. Every function here computes in float64 by default (``precision="float64"``), the
precision of the command line, so that the library and ``cpo-opt ... --json`` give the same
numbers (to 1e-12); ``precision="float32"`` runs in float32 for speed (searches, large
batches). The choice holds for the call only (``jax.enable_x64`` as a context): nothing here
changes JAX's global configuration, and code of the caller keeps its own precision.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import math
from typing import Any, Mapping

import numpy as np

from cpo_opt.analysis import compare as _compare
from cpo_opt.analysis import calibrate as _calibrate
from cpo_opt.analysis import evaluate as _evaluate
from cpo_opt.analysis import optimize as _optimize
from cpo_opt.analysis import sensitivity as _sensitivity
from cpo_opt.analysis import validate as _validate
from cpo_opt.inputs import (ArgumentError, InputError, ModelSpec, PlanSpec, SystemSpec,
                            load_cases, load_model, load_plan, load_scenario, load_system)
from cpo_opt.inputs.constants_file import ConstantsTable, as_table, for_gpu
from cpo_opt.inputs.loaders import Scenario, plan_for
from cpo_opt.inputs.stacks import StackSpec, load_stack
from cpo_opt.model.constants import constants_for

__all__ = ["Result", "EvaluateResult", "OptimizeResult", "SensitivityResult", "ValidateResult",
           "ReproduceResult", "CompareResult", "CalibrateResult", "BatchResult", "evaluate",
           "evaluate_batch", "optimize", "sensitivity", "validate", "calibrate", "reproduce",
           "compare", "load_inputs", "load_constants", "step_time", "PRECISIONS"]

PRECISIONS = ("float64", "float32")
"""``precision=`` of every function: float64 (the default, the command line's) or float32."""


@contextlib.contextmanager
def precision_scope(precision: str = "float64"):
    """Run the body in ``precision`` (``jax.enable_x64`` as a context: this thread, this
    call; JAX's global configuration is left as the caller set it)."""
    import jax
    if precision not in PRECISIONS:
        raise ArgumentError("precision", f"must be one of {', '.join(PRECISIONS)} "
                            f"(got {precision!r})")
    with jax.enable_x64(precision == "float64"):
        yield


def _numerics(fn):
    """Give ``fn`` a keyword ``precision="float64"`` and run it in that precision."""
    @functools.wraps(fn)
    def wrapped(*args, precision: str = "float64", **kwargs):
        with precision_scope(precision):
            return fn(*args, **kwargs)

    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    extra = inspect.Parameter("precision", inspect.Parameter.KEYWORD_ONLY, default="float64",
                              annotation="str")
    at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD),
              len(params))
    wrapped.__signature__ = sig.replace(parameters=params[:at] + [extra] + params[at:])
    wrapped.__doc__ = (fn.__doc__ or "") + (
        "\n\n    ``precision``: ``\"float64\"`` (default, as the command line) or "
        "``\"float32\"``, for this call only.")
    return wrapped


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
    plan_arg: str | None = None
    step_time_s: float | None = None
    objective: str = "point"
    robustness: dict | None = None
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


@dataclasses.dataclass(frozen=True)
class CompareResult(Result):
    """``compare``: each system's best plan (``baseline``/``candidate`` optimize objects), the
    speedups (``speedup`` = T_baseline / T_candidate; ``speedup_same_plan`` with the baseline's
    plan on the candidate, None when that plan is not valid there) and the ``why`` sentences;
    the speedup's 90% interval (``speedup_interval``, [5th, 95th] percentile of the sampled
    speedup) and ``probability_faster``, P(the baseline is faster than the candidate)."""

    speedup: float = 0.0
    speedup_interval: list | None = None
    probability_faster: float | None = None
    speedup_same_plan: float | None = None
    why: list = dataclasses.field(default_factory=list)
    baseline: dict = dataclasses.field(default_factory=dict)
    candidate: dict = dataclasses.field(default_factory=dict)
    breakdown_s: dict = dataclasses.field(default_factory=dict)


def _spec(ref, cls, loader, name: str, overrides=None, **kw):
    if isinstance(ref, cls):
        if overrides:
            raise ArgumentError("overrides", f"apply overrides when loading {name} "
                                "(pass a preset name, path or dict instead of a loaded spec)")
        return ref
    if ref is None:
        raise ArgumentError(name, "required (a preset name, a file path, a dict or a loaded spec)")
    _not_empty(ref, name)
    return loader(ref, overrides=overrides, **kw) if overrides else loader(ref, **kw)


def _not_empty(ref, name: str) -> None:
    """An empty or blank path is an ArgumentError naming the argument (``--model``)."""
    if isinstance(ref, str) and not ref.strip():
        raise ArgumentError(name, f"empty; give a file (.toml or .json) or a {name} preset name")


def load_constants(constants) -> ConstantsTable | None:
    """A checked constants table from a path (``--constants``), a dict or a table; None:
    the shipped constants."""
    return as_table(constants)


def _with_constants(system: SystemSpec, table: ConstantsTable | None) -> SystemSpec:
    """A loaded system with its constants replaced by ``table`` (None: unchanged). A table
    that does not cover the system's GPU generation is set aside: the shipped constants
    with their intervals apply, and the system's warnings say so
    (:func:`cpo_opt.inputs.constants_file.for_gpu`)."""
    if table is None:
        return system
    table = for_gpu(table, system.gpu_name)
    return dataclasses.replace(system, constants=table, system=dataclasses.replace(
        system.system, constants=constants_for(system.gpu_name, table)))


def load_inputs(model, system, plan=None, overrides: Mapping[str, Any] | None = None,
                constants=None, stack=None):
    """``(ModelSpec, SystemSpec, PlanSpec | None)`` from names, paths, dicts or specs.

    ``overrides`` maps ``"section.key"`` to values (as ``--set``) for the system;
    ``constants`` is a constants file, dict or table (``--constants``) replacing the shipped
    efficiency constants (default: the stack's constants file, if it names one); ``stack``
    is the software stack the plan is resolved on (default: the default stack).
    """
    st = load_stack(stack)
    if constants is None and st.constants is not None:
        constants = st.constants
    table = load_constants(constants)
    m = _spec(model, ModelSpec, load_model, "model")
    s = _with_constants(_spec(system, SystemSpec, load_system, "system", overrides), table)
    p = None
    if plan is not None:  # a loaded plan is checked again on another model or system
        p = (plan_for(plan, m, s, stack=st) if isinstance(plan, PlanSpec)
             else load_plan(plan, m, s, stack=st))
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


@dataclasses.dataclass
class _Inputs:
    """What a command runs on: specs, scenario defaults, and the echo of the system."""

    model: ModelSpec
    system: SystemSpec
    plan: PlanSpec | None
    global_batch: int | None
    tokens: float | None
    scenario: str | None
    overrides: dict
    warnings: list
    stack: StackSpec | None = None

    def echo(self, out: dict[str, Any]) -> dict[str, Any]:
        """Add the effective system, the overrides, the scenario and the warnings to ``out``."""
        out["system_effective"] = _evaluate.effective_system(self.system, self.overrides)
        out["overrides"] = dict(self.overrides)
        out["warnings"] = list(self.warnings)
        if self.scenario:
            out["scenario"] = self.scenario
        return out


@contextlib.contextmanager
def _edit_named(edits: Mapping[str, Any]):
    """A plan rule broken by a value that ``--dtype`` / ``--global-batch`` wrote into the plan
    is that argument's error (``global_batch: must be a multiple of ...``), not the plan's."""
    try:
        yield
    except InputError as e:
        if isinstance(e, ArgumentError):
            raise
        for k in edits:
            marker = f"plan.{k}: "
            if marker in str(e):
                raise ArgumentError(k, str(e).split(marker, 1)[1]) from None
        raise


def _resolve(model, system, plan=None, overrides=None, scenario=None,
             constants=None, stack=None, want_plan: bool = False,
             plan_edits: Mapping[str, Any] | None = None) -> _Inputs:
    """Load the inputs of a command; a scenario fills what is not given explicitly (its
    stack too, unless ``stack`` is given).

    ``want_plan``: the command evaluates a plan, so a scenario's plan is used when ``plan``
    is not given, also on an explicit ``model``/``system`` (checked again there; when it
    does not hold, :class:`ArgumentError` names the flag that dropped it and the rule).
    ``plan_edits``: ``{"dtype": ..., "global_batch": ...}`` from ``--dtype`` /
    ``--global-batch`` (None entries ignored), written into the plan; a plan that sets a
    different value is an :class:`ArgumentError` naming the flag."""
    from cpo_opt.inputs.loaders import _plan_table, plan_from_values
    overrides = {str(k): v for k, v in (overrides or {}).items()}
    edits = {k: v for k, v in (plan_edits or {}).items() if v is not None}
    sc = None
    _not_empty(scenario, "scenario")
    if scenario is not None:
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, overrides,
                                                                           stack)
    if stack is None and sc is not None:
        stack = sc.stack
    st = load_stack(stack)
    own = {"model": model is None, "system": system is None}
    if model is None and sc is not None:
        model = sc.model
    if system is None and sc is not None:
        if isinstance(scenario, Scenario) and overrides:
            raise ArgumentError("overrides", "apply overrides when loading the scenario "
                                "(pass its name or path instead of a loaded Scenario)")
        system, s_over = sc.system, None
    else:
        s_over = overrides
    if constants is None and st.constants is not None:
        constants = st.constants
    m, s, _ = load_inputs(model, system, None, s_over, constants=constants, stack=st)
    p = None
    if plan is not None:
        if isinstance(plan, PlanSpec):  # a loaded plan is checked again on another input
            p = plan_for(plan, m, s, stack=st)
            for k, v in edits.items():
                if p.values.get(k) != v:
                    raise ArgumentError(k, f"the plan has {k} = {p.values.get(k)}; pass the "
                                        "plan as a table or string to change it")
        else:
            table, label = _plan_table(plan)
            with _edit_named(edits):
                p = plan_from_values(_edited(table, edits), m, s, label, st)
    elif sc is not None and sc.plan is not None and (want_plan or edits):
        if own["model"] and own["system"] and constants is None and not edits:
            p = sc.plan  # the scenario's plan, checked against the scenario's own inputs
        else:
            table = _edited(sc.plan_table or {}, edits)
            try:
                with _edit_named(edits):
                    p = plan_from_values(table, m, s, f"{sc.origin}: scenario.plan", st)
            except ArgumentError:
                raise
            except InputError as e:
                flag = next((f for f in ("system", "model") if not own[f]), None)
                if flag is None:
                    raise
                raise ArgumentError(flag, f"the scenario's plan does not hold on this "
                                    f"{flag} ({str(e).split(': ', 1)[-1]}); give --plan") \
                    from None
    base = None
    if overrides:
        if sc is not None and system is sc.system:
            base = load_scenario(scenario).system
        elif not isinstance(system, SystemSpec):
            base = load_system(system)
    warnings = _evaluate.system_warnings(s, base)
    return _Inputs(m, s, p, sc.global_batch if sc else None, sc.tokens if sc else None,
                   sc.name if sc else None, overrides if (overrides and (base is not None or
                                                                       s_over)) else {},
                   warnings, st)


def _edited(table: Mapping[str, Any], edits: Mapping[str, Any]) -> dict:
    """``table`` with ``--dtype`` / ``--global-batch`` written in (a different value in the
    plan is an :class:`ArgumentError` naming the flag)."""
    out = dict(table)
    for k, v in edits.items():
        if k in out and out[k] != v:
            raise ArgumentError(k, f"the plan sets {k} = {out[k]}; drop one of the two")
        out[k] = v
    return out


@_numerics
def evaluate(model=None, system=None, plan=None, tokens: float | None = None, *,
             overrides: Mapping[str, Any] | None = None, scenario=None,
             constants=None, stack=None, dtype: str | None = None,
             global_batch: int | None = None, simulate: bool = False) -> EvaluateResult:
    """One exact step-time evaluation (``cpo-opt evaluate``); ``scenario`` (a name, path or
    :class:`~cpo_opt.inputs.loaders.Scenario`) fills the model, system, plan and tokens that
    are not given (its plan also on another ``model``/``system``, checked there); with
    ``constants`` carrying intervals it adds ``step_time_interval_s``. ``dtype`` and
    ``global_batch`` (``--dtype``, ``--global-batch``) fill the plan's keys (a plan that
    sets another value is an error naming the argument). ``simulate`` (``--simulate``) adds
    ``"simulated"``: the same step scheduled by the event simulator (:mod:`cpo_opt.sim`,
    docs/simulator.md), its critical path, and ``closed_form_vs_simulated`` (closed form /
    simulated - 1)."""
    x = _resolve(model, system, plan, overrides, scenario, constants, stack, want_plan=True,
                 plan_edits={"dtype": dtype, "global_batch": global_batch})
    if x.plan is None:
        raise ArgumentError("plan", "required (a plan file, preset, dict or 'tp=8,pp=16')")
    tokens = x.tokens if tokens is None else tokens
    out = _evaluate.evaluate(x.model, x.system, x.plan, _tokens(tokens))
    if simulate:
        out["simulated"] = simulated(x.model, x.system, x.plan, out["step_time_s"])
    return EvaluateResult.from_dict(x.echo(with_megatron(out, x.model, x.system)))


def simulated(model: ModelSpec, system: SystemSpec, plan: PlanSpec,
              closed_form_s: float) -> dict[str, Any]:
    """The ``"simulated"`` object of ``evaluate --simulate``: the event simulator's step
    time, critical path and per-rank busy/idle time (:meth:`cpo_opt.sim.SimResult.to_dict`,
    SI units) and the closed form's relative difference from it."""
    import numpy as np
    from cpo_opt.sim import simulate as _simulate
    res = _simulate(model.model, system.system, plan.plan)
    d = res.to_dict()
    d["closed_form_vs_simulated"] = float(closed_form_s / d["step_time_s"] - 1.0) \
        if np.isfinite(d["step_time_s"]) and d["step_time_s"] > 0 else None
    return d


def with_megatron(out: dict[str, Any], model: ModelSpec, system: SystemSpec) -> dict[str, Any]:
    """Add ``plan_megatron`` (the Megatron-Core arguments that run the plan, with the exact
    pipeline split it ran: :func:`cpo_opt.analysis.megatron.export_result`) and
    ``plan_megatron_unmapped`` (the plan keys Megatron has no equivalent for, and why) to an
    ``evaluate`` object."""
    from cpo_opt.analysis import megatron
    try:
        exp = megatron.export_result(out, model.values, system.gpu_name)
        out["plan_megatron"], out["plan_megatron_unmapped"] = list(exp.args), list(exp.unmapped)
    except ValueError as e:  # a split Megatron cannot express: say why, export nothing
        out["plan_megatron"], out["plan_megatron_unmapped"] = None, [str(e)]
    return out


def step_time(model, system, plan, temperature: float = 0.0, stacked: bool = False, *,
              structure=None, stack=None, precision: str = "float64"):
    """The traced model: :func:`cpo_opt.model.step.step_time` -> :class:`StepTime`.

    On config pytrees (:class:`~cpo_opt.model.config.Model`, ``System``, ``Plan``) it is the
    pure function itself, in the caller's JAX precision, under ``jit``, ``vmap`` and
    ``grad``::

        m, s = cpo_opt.load_model("deepseek-v3"), cpo_opt.load_system("gb200-nvl72")
        p = cpo_opt.load_plan("tp=1,pp=8,ep=64", m, s)
        cpo_opt.step_time(m.model, s.system, p.plan).step_time_s

    On loaded specs (or preset names, files, dicts, inline plans: whatever :func:`evaluate`
    takes) it evaluates once, jitted with the model's structure, in ``precision`` (float64 by
    default, for this call only): ``cpo_opt.step_time(m, s, p)`` equals
    ``cpo_opt.evaluate(m, s, p).step_time_s``. ``structure``, ``stack``: see
    :func:`cpo_opt.model.step.step_time` and :func:`evaluate`."""
    from cpo_opt.model.config import Model, Plan, System
    from cpo_opt.model import step as _step
    if isinstance(model, Model) and isinstance(system, System) and isinstance(plan, Plan):
        return _step.step_time(model, system, plan, temperature, stacked, structure=structure)
    with precision_scope(precision):
        m, s, p = load_inputs(model, system, plan, stack=stack)
        if p is None:
            raise ArgumentError("plan", "required (a plan file, preset, dict or 'tp=8,pp=16')")
        return _step.step_time_jit(m.model, s.system, p.plan, temperature,
                                   structure=structure or _evaluate.structure_of_plan(m, p))


@dataclasses.dataclass(frozen=True)
class BatchResult:
    """``evaluate_batch``: stacked results of many plans (numpy arrays, one entry per plan of
    ``plans``, in order).

    ``result[i]`` is the :class:`EvaluateResult` of plan ``i``, equal to
    ``cpo_opt.evaluate(model, system, plans.given[i])``; ``step_time`` is the stacked
    :class:`~cpo_opt.model.step.StepTime` (every field of the model); ``to_dict()`` holds the
    main columns as JSON lists, the plans and the rejected combinations."""

    step_time: Any = dataclasses.field(repr=False)
    plans: Any = None
    tokens: float | None = None
    inputs: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.plans)

    def __getitem__(self, i: int) -> EvaluateResult:
        from cpo_opt.analysis.batch import row
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"plan {i} of a batch of {n}")
        i %= n
        x = self.inputs
        out = _evaluate.result_dict(row(self.step_time, i), x.model, x.system,
                                    self.plans.specs[i], self.tokens)
        out = _evaluate.with_interval(out, x.model, x.system, self.plans.specs[i])
        return EvaluateResult.from_dict(x.echo(with_megatron(out, x.model, x.system)))

    @property
    def step_time_s(self) -> np.ndarray:
        return np.asarray(self.step_time.step_time_s)

    @property
    def fits_memory(self) -> np.ndarray:
        return np.asarray(self.step_time.fits_memory) > 0.5

    @property
    def mfu(self) -> np.ndarray:
        return np.asarray(self.step_time.mfu)

    @property
    def memory_GB_per_gpu(self) -> np.ndarray:
        return np.asarray(self.step_time.memory.total) / 1e9

    @property
    def breakdown_s(self) -> dict[str, np.ndarray]:
        from cpo_opt.model.step import BREAKDOWN_PARTS
        return {k: np.asarray(getattr(self.step_time.breakdown, k)) for k in BREAKDOWN_PARTS}

    @property
    def time_to_train_days(self) -> np.ndarray | None:
        if self.tokens is None:
            return None
        return self.tokens / np.asarray(self.step_time.tokens_per_s) / _evaluate.SECONDS_PER_DAY

    def best(self) -> int | None:
        """Index of the fastest plan that fits in memory (None when none fits)."""
        t = np.where(self.fits_memory, self.step_time_s, np.inf)
        return int(np.argmin(t)) if np.isfinite(t).any() else None

    def to_dict(self) -> dict[str, Any]:
        """Columns (one entry per plan), the plans and the rejected combinations."""
        x = self.inputs
        out = {"model": x.model.name, "system": x.system.name, "stack": self.plans.stack,
               "n": len(self), "step_time_s": self.step_time_s.tolist(),
               "breakdown_s": {k: v.tolist() for k, v in self.breakdown_s.items()},
               "mfu": self.mfu.tolist(), "memory_GB_per_gpu": self.memory_GB_per_gpu.tolist(),
               "fits_memory": self.fits_memory.tolist(),
               "plans": self.plans.values,
               "rejected": [{"plan": r.plan, "reason": r.reason} for r in self.plans.rejected]}
        if self.tokens is not None:
            out["tokens"] = self.tokens
            out["time_to_train_days"] = self.time_to_train_days.tolist()
        return x.echo(out)


def _same_inputs(a, b) -> bool:
    return a.values == b.values and getattr(a, "constants", None) is getattr(b, "constants",
                                                                               None)


@_numerics
def evaluate_batch(model=None, system=None, plans=None, tokens: float | None = None, *,
                   overrides: Mapping[str, Any] | None = None, constants=None, stack=None,
                   batch: int | None = None, progress: bool | None = None) -> BatchResult:
    """Many plans of one model on one system in one batched call (``jit(vmap(step_time))``,
    one compilation per model structure, dtype and attention kernel).

    Args:
      model, system: as :func:`evaluate` (None: those ``plans`` were checked against).
      plans: a :class:`cpo_opt.plans.PlanBatch` (from :func:`cpo_opt.plans.grid` or
        :func:`cpo_opt.plans.sample`; checked again on another ``model``/``system``), or a
        list of plans as :func:`evaluate` takes them (inline strings, dicts, presets,
        files, loaded plans): each is checked as ``--plan`` is, and the first that breaks a
        rule raises :class:`~cpo_opt.inputs.InputError` naming its index and the rule.
      tokens: training tokens (adds ``time_to_train_days``).
      batch: rows per compiled call (default 4096 on CPU); progress: a progress bar on
        stderr (default: for more than 20,000 plans when stderr is a terminal).

    Returns:
      :class:`BatchResult`: ``result[i]`` equals ``evaluate(model, system, plans[i])``."""
    import sys
    from cpo_opt.analysis import batch as _batch
    given = plans
    if given is None:
        raise ArgumentError("plans", "required (cpo_opt.plans.grid(...), sample(...) or a "
                            "list of plans)")
    if isinstance(given, _batch.PlanBatch) and model is None and system is None:
        model, system = given.model, given.system
        stack = given.stack if stack is None else stack
    x = _resolve(model, system, None, overrides, None, constants, stack)
    if isinstance(given, _batch.PlanBatch):
        pb = given
        if not (_same_inputs(pb.model, x.model) and _same_inputs(pb.system, x.system)
                and pb.stack == x.stack.name):
            pb = _batch.plan_batch(list(pb.given), x.model, x.system, x.stack,
                                   "plans", progress=bool(progress))
    else:
        if isinstance(given, (str, bytes, Mapping)):
            raise ArgumentError("plans", "a list of plans (or a PlanBatch); for one plan "
                                "use cpo_opt.evaluate")
        tables = _batch.tables_of(list(given), x.model, x.system)
        specs, reasons = _batch.resolve_tables(tables, x.model, x.system, x.stack, "plans")
        for i, why in enumerate(reasons):
            if why is not None:
                raise InputError(f"plans[{i}]: {why}")
        pb = _batch.PlanBatch(tuple(specs), tuple(tables), (), x.model, x.system, x.stack.name)
    if len(pb) == 0:
        raise ArgumentError("plans", f"no valid plan among {len(pb.rejected)} combinations "
                            f"(e.g. {pb.rejected[0].reason})" if pb.rejected else "no plans")
    if progress is None:
        progress = len(pb) > 20_000 and sys.stderr.isatty()
    r = _batch.evaluate_specs(x.model, x.system, pb.specs, batch=batch, progress=progress)
    return BatchResult(r, pb, _tokens(tokens), x)


@_numerics
def optimize(model=None, system=None, global_batch: int | None = None, *,
             exhaustive: bool | None = None,
             free: tuple[str, ...] | list[str] = (), power_budget_kW: float | None = None,
             dtype: str | None = None, starts: int = 32, steps: int = 150, seed: int = 0,
             tokens: float | None = None, overrides: Mapping[str, Any] | None = None,
             progress: bool = False, scenario=None, constants=None,
             domain_multiple: int | None = None, coordinator: str | None = None,
             num_processes: int | None = None, process_id: int | None = None,
             stack=None, objective: str = "point", samples: int | None = None
             ) -> OptimizeResult:
    """The best plan, and with ``free`` the best hardware values (``cpo-opt optimize``).

    ``exhaustive=None`` picks the exhaustive search on small spaces, else the gradient search.
    ``dtype`` defaults to the model's training precision (``[model] dtype``, else bf16).
    ``objective``: ``"point"`` (default: the step time at the point constants), ``"mean"``,
    ``"p90"`` or ``"worst"`` over ``samples`` draws of the constants' posterior and the
    model-form term; the result then adds ``robustness`` (``best_changes_fraction``,
    ``expected_regret``; :mod:`cpo_opt.search.robust`).
    ``coordinator`` (``"HOST:PORT"``), ``num_processes``, ``process_id``: run as one of N
    ``jax.distributed`` processes (also from the environment or a detected SLURM job; see
    :mod:`cpo_opt.search.distributed`); every process returns the same result.

    Raises :class:`~cpo_opt.analysis.optimize.InfeasibleError` (an InputError) naming the
    binding limit and the key that lifts it when nothing is feasible."""
    start_distributed(coordinator, num_processes, process_id)
    from cpo_opt.inputs.loaders import model_dtype
    x = _resolve(model, system, None, overrides, scenario, constants, stack)
    global_batch = x.global_batch if global_batch is None else global_batch
    tokens = x.tokens if tokens is None else tokens
    dtype = dtype or model_dtype(x.model)
    out = _optimize.optimize(
        x.model, x.system, global_batch, exhaustive=exhaustive, free=tuple(free),
        power_budget_kW=power_budget_kW, dtype=dtype, starts=starts, steps=steps, seed=seed,
        tokens=_tokens(tokens), progress=progress, domain_multiple=domain_multiple,
        stack=x.stack, objective=objective, samples=samples)
    with_megatron(out["result"], x.model, x.system)
    out["plan_megatron"] = out["result"]["plan_megatron"]
    out["plan_megatron_unmapped"] = out["result"]["plan_megatron_unmapped"]
    return OptimizeResult.from_dict(x.echo(out))


def start_distributed(coordinator: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None, timeout: float | None = None) -> int:
    """Join a ``jax.distributed`` job when asked; returns the process count (1 alone).

    ``timeout``: seconds to wait for the coordinator and the other processes (default
    :data:`cpo_opt.search.distributed.DEFAULT_TIMEOUT_S`, or ``CPO_OPT_COORDINATOR_TIMEOUT``);
    past it the call raises :class:`~cpo_opt.inputs.ArgumentError` naming ``coordinator``."""
    from cpo_opt.search import distributed
    return distributed.initialize(coordinator, num_processes, process_id, timeout=timeout)


@_numerics
def power_sweep(model=None, system=None, budgets_kW=(), global_batch: int | None = None, *,
                overrides: Mapping[str, Any] | None = None, scenario=None,
                tokens: float | None = None, constants=None, stack=None, **kwargs) -> Result:
    """``optimize`` at each power budget (``--power-budget-kW A B C``): ``{"sweep": [one
    optimize object per budget, or {"feasible": false, "reason": ...}], ...}``."""
    from cpo_opt.inputs.loaders import model_dtype
    x = _resolve(model, system, None, overrides, scenario, constants, stack)
    kwargs["stack"] = x.stack
    kwargs["dtype"] = kwargs.get("dtype") or model_dtype(x.model)
    global_batch = x.global_batch if global_batch is None else global_batch
    tokens = x.tokens if tokens is None else tokens
    return Result(data=x.echo(_optimize.power_sweep(
        x.model, x.system, list(budgets_kW), global_batch=global_batch,
        tokens=_tokens(tokens), **kwargs)))


@_numerics
def sensitivity(model=None, system=None, plan=None, tokens: float | None = None, *,
                overrides: Mapping[str, Any] | None = None,
                progress: bool = False, scenario=None, constants=None,
                stack=None, notice=None, dtype: str | None = None,
                global_batch: int | None = None) -> SensitivityResult:
    """Gradients and elasticities of step time by autodiff (``cpo-opt sensitivity``).

    Without a plan (given or in the scenario) the best plan is found first (``optimize``'s
    search, at ``global_batch`` and ``dtype``, default the model's training precision) and
    the result says so under ``"plan_source"``; ``notice(message)``, when given, is told so
    once the inputs are checked, before the search. With a plan, ``dtype`` and
    ``global_batch`` fill its keys as in :func:`evaluate`."""
    from cpo_opt.inputs.loaders import model_dtype
    x = _resolve(model, system, plan, overrides, scenario, constants, stack, want_plan=True,
                 plan_edits={"dtype": dtype, "global_batch": global_batch})
    m, s, p = x.model, x.system, x.plan
    tokens = _tokens(x.tokens if tokens is None else tokens)
    source = {"optimized": False}
    if p is None:
        if notice is not None:
            notice("no --plan given: optimizing first (gradient search)")
        best = _optimize.optimize(m, s, global_batch if global_batch is not None
                                  else x.global_batch, dtype=dtype or model_dtype(m),
                                  progress=progress, stack=x.stack)
        p = load_plan(best["plan_arg"], m, s, where="plan_arg", stack=x.stack)
        source = {"optimized": True, "method": best["method"], "plan_arg": best["plan_arg"],
                  "search_wall_s": best["search_wall_s"]}
    elif isinstance(plan, str):
        source["plan"] = plan
    out = _sensitivity.sensitivity(m, s, p, tokens)
    out["plan_source"] = source
    return SensitivityResult.from_dict(x.echo(out))


@_numerics
def compare(model=None, system=None, against=None, tokens: float | None = None, *,
            global_batch: int | None = None, exhaustive: bool | None = None,
            dtype: str | None = None,
            starts: int = 32, steps: int = 150, seed: int = 0,
            overrides: Mapping[str, Any] | None = None,
            against_overrides: Mapping[str, Any] | None = None,
            progress: bool = False, scenario=None, constants=None,
            stack=None, samples: int = 256, alternatives: tuple[str, ...] = (),
            model_form: bool | float = True) -> CompareResult:
    """``model`` on ``system`` (baseline) against ``against`` (candidate): each one's best
    plan, the baseline's plan on the candidate, speedups and why (``cpo-opt compare``).

    ``overrides`` apply to the baseline, ``against_overrides`` to the candidate (``--set`` and
    ``--set-against``); ``scenario`` fills the model, the baseline system, batch and tokens;
    ``dtype`` defaults to the model's training precision::

        r = cpo_opt.compare("deepseek-v3", "gb200-nvl72", "gb200-nvl72", tokens=14.8e12,
                            against_overrides={"scale_up.domain_size": 576,
                                               "scale_up.max_domain_size": 576,
                                               "scale_up.bandwidth_GB_s": 2000})
        r.speedup, r.speedup_same_plan, r.why
        r.speedup_interval, r.probability_faster   # P(the baseline is faster)

    ``samples``, ``alternatives`` (stack options to sample,
    :data:`cpo_opt.analysis.uncertainty.ALTERNATIVES`) and ``model_form`` (True: the fit's
    leave-one-out term; False: none; a number: that sd) shape the speedup's distribution.
    """
    x = _resolve(model, system, None, overrides, scenario, constants, stack)
    if against is None:
        raise ArgumentError("against", "required (the candidate system)")
    _not_empty(against, "against")
    try:
        y = _resolve(x.model, against, None, against_overrides, None, constants, x.stack)
    except ArgumentError:
        raise
    except InputError as e:  # the candidate's overrides: name the flag that gave them
        if str(e).startswith("--set:"):
            raise InputError("--set-against:" + str(e)[len("--set:"):]) from None
        raise
    from cpo_opt.inputs.loaders import model_dtype
    labels = _compare.labels_of(x.system, y.system, x.overrides, y.overrides)
    global_batch = x.global_batch if global_batch is None else global_batch
    dtype = dtype or model_dtype(x.model)
    tokens = x.tokens if tokens is None else tokens
    out = _compare.compare(
        x.model, x.system, y.system, global_batch, tokens=_tokens(tokens),
        exhaustive=exhaustive, dtype=dtype, starts=starts, steps=steps, seed=seed,
        labels=labels, progress=progress, stack=x.stack, samples=samples,
        alternatives=tuple(alternatives), model_form=model_form)
    x.echo(out["baseline"])
    y.echo(out["candidate"])
    out["warnings"] = ([f"baseline: {w}" for w in x.warnings]
                       + [f"candidate: {w}" for w in y.warnings])
    if x.scenario:
        out["scenario"] = x.scenario
    return CompareResult.from_dict(out)


def preset_show(name: str) -> dict[str, Any]:
    """The full content of one shipped preset with its sources (``cpo-opt presets show``):
    ``{"kind", "name", "path", "description", "sources", "notes", "content", "resolved"}``;
    ``resolved`` holds every value with defaults filled (models, systems, GPUs, scenarios)."""
    from cpo_opt.inputs.sources import find_preset, read_document
    kind, path = find_preset(name)
    doc = read_document(path, f"{kind[:-1]} preset '{path.stem}'")
    about = doc.get("about", {})
    content = {k: v for k, v in doc.items() if k != "about"}
    resolved = None
    if kind == "models":
        resolved = load_model(path.stem).values
    elif kind == "systems":
        resolved = load_system(path.stem).values
    elif kind == "gpus":
        from cpo_opt.inputs.tables import resolve_table
        resolved = {"gpu": resolve_table("gpu", {"name": path.stem, **doc["gpu"]}, str(path))}
    elif kind == "stacks":
        resolved = load_stack(path.stem).to_dict()
    elif kind == "scenarios":
        sc = load_scenario(path.stem)
        resolved = {"model": sc.model.name, "system": sc.system.name,
                    "plan": None if sc.plan is None else sc.plan.values,
                    "global_batch": sc.global_batch, "tokens": sc.tokens}
    return {"kind": kind[:-1], "name": path.stem, "path": str(path),
            "description": about.get("description", ""), "sources": about.get("sources", []),
            "notes": about.get("notes", []), "content": content, "resolved": resolved}


@_numerics
def validate(cases=None, *, constants=None, stack=None) -> ValidateResult:
    """Predicted vs measured for a cases file (default: the shipped calibration set); with
    ``constants`` every case runs with those constants instead of the shipped ones; with
    ``stack`` every case's plan is resolved on it (else on the case's own ``stack``, else on
    the default stack)."""
    from cpo_opt.analysis.validate import DEFAULT_CASES
    _not_empty(cases, "cases")
    table = load_constants(constants)
    path = DEFAULT_CASES if cases is None else cases
    loaded = [dataclasses.replace(c, system=_with_constants(c.system, table))
              for c in load_cases(path, stack=stack)]
    out = _validate.validate_cases(loaded)
    out["cases_file"] = str(path)
    if table is not None:
        out["constants_file"] = table.origin
    out["warnings"] = [f"{c.id}: {w}" for c in loaded
                       for w in _evaluate.system_warnings(c.system)]
    return ValidateResult.from_dict(out)


@_numerics
def calibrate(cases, fit=None, *, out: str | None = None, constants=None,
              prior_weight: float = _calibrate.DEFAULT_PRIOR_WEIGHT,
              steps: int = _calibrate.DEFAULT_STEPS, cross_validate: bool = True,
              hold_out=(), prior: str = "shipped", stack=None,
              transfer: str | None = None, method: str = "adam") -> CalibrateResult:
    """Fit efficiency constants to measured cases by gradient descent (``cpo-opt calibrate``).

    Args:
      cases: a cases file, a list of files, or loaded cases.
      fit: constant names to fit (default: every constant; those the cases cannot identify
        are reported in ``unconstrained`` and left at their prior).
      out: write the fitted constants there as TOML (readable by ``constants=``).
      constants: the starting (prior) constants table instead of the shipped values.
      prior_weight, steps: see :mod:`cpo_opt.analysis.calibrate`.
      cross_validate: leave-one-out predictions; hold_out: case ids not fitted.
      prior: ``"shipped"`` (start from the shipped constants, fitted ones included) or
        ``"physical"`` (from the physical defaults only: how the shipped fit is regenerated).
      ``fit`` entries may name a level, ``"blackwell:host_launch_s"``.
      transfer: ``"hopper:blackwell"``: fit the source generation's cases only and carry
        the fitted shifts (relative to the shipped constants) to the target generation,
        with wider intervals; the target's cases are held out and reported before and after
        (``transfer`` in the result; :mod:`cpo_opt.analysis.calibrate`).
      method: ``"adam"`` (default, ``steps`` steps) or ``"gauss-newton"``
        (Levenberg-Marquardt from the compiled Jacobian: far fewer model evaluations on
        large sets of many structures, :func:`cpo_opt.analysis.calibrate.fit_gauss_newton`).
    """
    if stack is not None:
        cases = _cases_on(cases, stack)
    from cpo_opt.inputs.constants_file import check_out
    target = None if out is None else check_out(out)  # before the fit: a bad --out fails now
    cal = _calibrate.calibrate(cases, fit, base=constants, prior_weight=prior_weight,
                               steps=steps, cross_validate=cross_validate, hold_out=hold_out,
                               prior=prior, transfer=transfer, method=method)
    data = dict(cal.report)
    if target is not None:
        data["out"] = _calibrate.write(cal, target)
        if target.replaces:
            data["warnings"] = list(data.get("warnings", [])) + [
                f"replaced the earlier constants file {data['out']} (written by "
                "cpo-opt calibrate)"]
    r = CalibrateResult.from_dict(data)
    return dataclasses.replace(r, table=cal.table)


def _cases_on(cases, stack) -> list:
    """Cases files (or loaded cases) loaded with every plan resolved on ``stack``."""
    if isinstance(cases, (str, bytes)) or hasattr(cases, "__fspath__"):
        cases = [cases]
    out = []
    for c in cases:
        out.extend(load_cases(c, stack=stack) if not hasattr(c, "plan") else [c])
    return out


@_numerics
def reproduce(quick: bool = False, out_dir: str | None = None,
              progress: bool = False, coordinator: str | None = None,
              num_processes: int | None = None, process_id: int | None = None,
              constants=None, stack=None) -> ReproduceResult:
    """The copper-vs-Passage study (``cpo-opt reproduce``); ``out_dir=None`` writes nothing.

    With ``jax.distributed`` settings (see :func:`optimize`) the exhaustive searches split
    their rows over the processes; only process 0 writes ``out_dir`` and shows progress.
    ``constants`` reaches the study when its ``reproduce`` takes a ``constants`` argument."""
    import inspect
    from cpo_opt.search import distributed
    from cpo_opt.study.reproduce import reproduce as _reproduce
    kw = {}
    table = load_constants(constants)
    if table is not None:
        if "constants" not in inspect.signature(_reproduce).parameters:
            raise ArgumentError("constants", "the study in this build does not take constants "
                                "yet (cpo_opt.study.reproduce has no constants argument)")
        kw["constants"] = table
    if stack is not None:
        kw["stack"] = load_stack(stack)
    start_distributed(coordinator, num_processes, process_id)
    main = distributed.is_main()
    out = _reproduce(quick=quick, out_dir=out_dir if main else None,
                     progress=progress and main, **kw)
    out["processes"] = distributed.process_count()
    return ReproduceResult.from_dict(out)
