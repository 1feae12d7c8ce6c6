"""Many plans of one model on one system: checked like ``--plan`` and evaluated in one call.

:func:`grid_tables` spells out the combinations of a user's choices (``tp=[1, 2, 4], ...``)
as plan tables; :func:`sample_tables` draws distinct plans from the search space
(:mod:`cpo_opt.search.lattice`). :func:`resolve_tables` checks each table exactly as
``evaluate`` checks ``--plan`` (:func:`cpo_opt.inputs.loaders.plan_from_values` on the
software stack: the stack's options, ``placement = "auto"`` resolved by scoring both
placements), so every rejected combination carries the rule it broke in the words of
``evaluate`` (``plan.tp: tp*cp*pp = 48 must divide cluster.gpus = 2048``); the plans whose
placement has to be scored are scored together in one batched call. :func:`evaluate_specs`
runs :func:`cpo_opt.model.step.step_time` under ``jit(vmap(...))`` on the stacked plans, one
compilation per model :class:`~cpo_opt.model.structure.Structure` (dtype and attention
kernel included) and batch shape, in fixed batches of :data:`BATCH` rows (the last padded),
and returns the stacked :class:`~cpo_opt.model.step.StepTime` (numpy leaves). The numbers
are those of ``evaluate`` one plan at a time (tests/test_plans_batch.py checks 1e-12).

Nothing here flips JAX's precision: callers (:func:`cpo_opt.api.evaluate_batch`) choose it.
The placement choice is always scored in float64, as :func:`plan_from_values` scores it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Iterable, NamedTuple, Sequence

import jax
import numpy as np

from cpo_opt.inputs.loaders import (DERIVED_KEYS, InputError, ModelSpec, PlanSpec, SystemSpec,
                                    plan_from_values)
from cpo_opt.inputs.sources import ArgumentError
from cpo_opt.inputs.tables import check_value, key_of
from cpo_opt.model.config import Plan
from cpo_opt.model.step import StepTime, step_time
from cpo_opt.model.structure import Structure, structure_of
from cpo_opt.search import lattice
from cpo_opt.search.batching import batched_map

BATCH = 1 << 12
"""Rows per compiled call on CPU (every call is padded to it, so one compilation serves any
number of plans; accelerators use :func:`cpo_opt.search.batching.default_batch`)."""

MAX_COMBINATIONS = 1_000_000
"""Most combinations :func:`grid_tables` spells out (each is checked on the host, about a
millisecond apiece: a larger grid is better drawn with :func:`sample_tables`)."""

PLAN_FIELDS = tuple(f.name for f in dataclasses.fields(Plan))


class Rejected(NamedTuple):
    """A combination that is not a valid plan: the plan table and the rule it broke."""

    plan: dict
    reason: str


@dataclasses.dataclass(frozen=True)
class PlanBatch:
    """Valid plans of one model on one system, stacked, and the rejected combinations.

    Attributes:
      specs: each valid plan, resolved exactly as ``evaluate --plan`` resolves it.
      given: the plan table each valid plan came from (what ``plan=`` would take).
      rejected: :class:`Rejected` ``(plan, reason)`` for every combination that breaks a
        plan rule, ``reason`` naming the key and the rule (``"plan.global_batch: must be a
        multiple of micro_batch*dp = 1*1152 = 1152"``).
      model, system: the specs the plans were checked against.
      stack: the software stack's name.
    """

    specs: tuple
    given: tuple
    rejected: tuple
    model: ModelSpec
    system: SystemSpec
    stack: str

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, i: int) -> PlanSpec:
        return self.specs[i]

    def __iter__(self):
        return iter(self.specs)

    @functools.cached_property
    def plan(self) -> Plan:
        """The stacked :class:`~cpo_opt.model.config.Plan` pytree: every leaf a float64 numpy
        array with one entry per valid plan (``jax.vmap`` over it)."""
        return Plan(**{f: np.asarray([getattr(s.plan, f) for s in self.specs], dtype=np.float64)
                       for f in PLAN_FIELDS})

    @property
    def values(self) -> list[dict]:
        """The resolved plan tables (file units, every key; ``evaluate --json``'s ``plan``)."""
        return [dict(s.values) for s in self.specs]

    def column(self, key: str) -> np.ndarray:
        """One resolved plan key over the valid plans (``batch.column("tp")``)."""
        return np.asarray([s.values[key] for s in self.specs])

    def reasons(self) -> dict[str, int]:
        """How many combinations each plan key's rules rejected (``{"plan.tp": 12, ...}``)."""
        out: dict[str, int] = {}
        for r in self.rejected:
            key = r.reason.split(":", 1)[0]
            out[key] = out.get(key, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def __repr__(self) -> str:
        return (f"PlanBatch({len(self)} valid plans of {self.model.name} on {self.system.name} "
                f"(stack {self.stack}), {len(self.rejected)} rejected)")


# --------------------------------------------------------------------------- the tables
def _values_of(name: str, choice: Any) -> list:
    if isinstance(choice, (str, bytes, bool, int, float)) or choice is None:
        return [choice]
    try:
        values = list(choice)
    except TypeError:
        return [choice]
    if not values:
        raise ArgumentError(name, "an empty list of choices")
    return values


def grid_tables(choices: dict[str, Any], where: str = "plans.grid") -> list[dict]:
    """Every combination of ``choices`` (plan key -> a value or a list of values) as a plan
    table, in ``itertools.product`` order of the keys as given. Keys and values are checked
    like a plan file's (unknown key, wrong type, out of range: :class:`ArgumentError`);
    rules between keys are left to :func:`resolve_tables`."""
    keys, lists = [], []
    for name, choice in choices.items():
        try:
            key = key_of("plan", name, where, DERIVED_KEYS)
            values = [check_value(key, v, where, f"plan.{name}") for v in _values_of(name,
                                                                                   choice)]
        except InputError as e:
            raise ArgumentError(name, str(e).split(": ", 2)[-1]) from None
        keys.append(name)
        lists.append(values)
    n = int(np.prod([len(v) for v in lists], dtype=float)) if lists else 1
    if n > MAX_COMBINATIONS:
        raise ArgumentError("choices", f"{n:,} combinations, more than {MAX_COMBINATIONS:,}; "
                            "narrow the lists or draw plans with cpo_opt.plans.sample")
    return [dict(zip(keys, combo)) for combo in itertools.product(*lists)]


def sample_tables(model: ModelSpec, system: SystemSpec, n: int, seed: int = 0,
                  global_batch: int | None = None, dtype: str = "bf16", stack=None
                  ) -> list[dict]:
    """Up to ``n`` distinct plans drawn uniformly (``numpy.random.default_rng(seed)``) from
    the search space of ``optimize`` (:func:`cpo_opt.search.lattice.enumerate_plans` with the
    stack's searchable options), as plan tables. Where the stack's placement policy is
    ``auto`` the tables leave placement to it, as a user's plan would."""
    from cpo_opt.inputs.stacks import load_stack
    from cpo_opt.search.space import make_space
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ArgumentError("n", f"must be a positive integer (got {n!r})")
    st = load_stack(stack)
    space = make_space(model, system, global_batch, dtype, stack=st)
    cols = lattice.enumerate_plans(model.values, system.values, space.global_batch,
                                   options=space.options, fp8=space.fp8)
    size = len(cols["tp"])
    order = np.random.default_rng(seed).permutation(size)
    auto = st.options.get("placement") == "auto"
    seen, out = set(), []
    for i in order:
        t = lattice.plan_values(cols, int(i), dtype, space.attention)
        if auto:
            t.pop("placement", None)
        k = tuple(sorted(t.items()))
        if k in seen:
            continue
        seen.add(k)
        out.append(t)
        if len(out) == n:
            break
    return out


# --------------------------------------------------------------------------- checking
class _Deferred(Exception):
    """Raised from :func:`plan_from_values`'s scoring of candidate plans (both placements of
    an ``auto`` plan, a stack's ``fit`` recompute sets) when their scores are not known yet:
    they are scored later, together with every other such plan."""

    def __init__(self, ok: dict):
        super().__init__("deferred")
        self.ok = ok


def _scores_or_defer(known: dict):
    """A ``score_plans`` for :func:`plan_from_values` that answers from ``known``
    (``{label: (fits, step_time_s)}``) and defers the labels it does not know."""
    def score(model, system, ok):
        missing = {label: s for label, s in ok.items() if label not in known}
        if missing:
            raise _Deferred(missing)
        return {label: known[label] for label in ok}
    return score


def reason_of(error: InputError, where: str) -> str:
    """The rule of an :class:`InputError` without the ``where: `` it starts with."""
    text = str(error)
    return text[len(where) + 2:] if text.startswith(where + ": ") else text


def resolve_tables(tables: Sequence[dict], model: ModelSpec, system: SystemSpec, stack=None,
                   where: str = "plans.grid", progress: bool = False,
                   batch: int | None = None) -> tuple[list[PlanSpec | None], list[str | None]]:
    """Check every table as :func:`plan_from_values` does on ``stack``: ``(specs, reasons)``,
    one entry per table, ``specs[i]`` None where ``reasons[i]`` says which rule it breaks.

    Candidate plans :func:`plan_from_values` scores (both placements of an ``auto`` plan,
    a stack's ``fit`` recompute sets) are scored in batched float64 calls
    (:func:`evaluate_specs`), one per round of candidates, instead of one evaluation each."""
    specs: list[PlanSpec | None] = [None] * len(tables)
    reasons: list[str | None] = [None] * len(tables)
    known: dict[int, dict] = {i: {} for i in range(len(tables))}
    pending = list(range(len(tables)))
    bar = _bar(len(tables), "checking plans", progress and len(tables) > 2000)
    while pending:
        deferred: dict[int, dict] = {}
        for i in pending:
            try:
                specs[i] = plan_from_values(tables[i], model, system, where, stack,
                                            score_plans=_scores_or_defer(known[i]))
            except _Deferred as d:
                deferred[i] = d.ok
            except InputError as e:
                reasons[i] = reason_of(e, where)
            if bar is not None and i not in deferred:
                bar.update(1)
        if not deferred:
            break
        pairs = [(i, label, s) for i, ok in deferred.items() for label, s in ok.items()]
        with jax.enable_x64(True):  # as plan_from_values scores its candidates
            r = evaluate_specs(model, system, [s for _, _, s in pairs], batch=batch,
                               progress=progress)
        for j, (i, label, _) in enumerate(pairs):
            known[i][label] = (bool(r.fits_memory[j] > 0.5), float(r.step_time_s[j]))
        pending = list(deferred)
    if bar is not None:
        bar.close()
    return specs, reasons


def plan_batch(tables: Sequence[dict], model: ModelSpec, system: SystemSpec, stack=None,
               where: str = "plans.grid", progress: bool = False) -> PlanBatch:
    """A :class:`PlanBatch` of ``tables`` (:func:`resolve_tables`)."""
    from cpo_opt.inputs.stacks import load_stack
    st = load_stack(stack)
    specs, reasons = resolve_tables(tables, model, system, st, where, progress)
    ok = [i for i, s in enumerate(specs) if s is not None]
    rejected = tuple(Rejected(dict(tables[i]), reasons[i]) for i in range(len(tables))
                     if specs[i] is None)
    return PlanBatch(tuple(specs[i] for i in ok), tuple(dict(tables[i]) for i in ok), rejected,
                     model, system, st.name)


# --------------------------------------------------------------------------- evaluation
@functools.partial(jax.jit, static_argnames=("structure",))
def step_rows(model, system, rows: dict, *, structure: Structure) -> StepTime:
    """``vmap`` of :func:`~cpo_opt.model.step.step_time` over stacked plan fields ``rows``
    (``{Plan field: array}``), the model and system unbatched traced data: one compilation
    per ``structure``, batch shape and precision, shared by every model and system."""
    return jax.vmap(lambda r: step_time(model, system, Plan(**r), structure=structure))(rows)


def evaluate_specs(model: ModelSpec, system: SystemSpec, specs: Sequence[PlanSpec],
                   batch: int | None = None, progress: bool = False) -> StepTime:
    """The exact step time of every plan, stacked (numpy leaves, one row per plan, in
    order), in the precision JAX runs in at the call. Plans are grouped by their
    structure (dtype, attention kernel): one compiled program per group."""
    from cpo_opt.search.batching import default_batch
    if not specs:
        raise ArgumentError("plans", "no plans to evaluate")
    if batch is None:
        batch = BATCH if jax.default_backend() == "cpu" else default_batch()
    dtype = np.float64 if jax.config.jax_enable_x64 else np.float32
    groups: dict[Structure, list[int]] = {}
    for i, s in enumerate(specs):
        key = structure_of(model.model, s.plan.fp8, s.plan.flash_attention)
        groups.setdefault(key, []).append(i)
    n = len(specs)
    out = None
    for st, idx in groups.items():
        cols = {f: np.asarray([getattr(specs[i].plan, f) for i in idx], dtype=dtype)
                for f in PLAN_FIELDS}
        r = batched_map(functools.partial(step_rows, model.model, system.system, structure=st),
                        cols, batch=batch,
                        progress=progress and len(idx) > 4 * batch, desc="evaluating plans")
        if out is None:
            out = jax.tree.map(lambda x: np.empty((n,) + np.shape(x)[1:], np.asarray(x).dtype),
                               r)
        jax.tree.map(lambda o, x: o.__setitem__(np.asarray(idx), x), out, r)
    return out


def row(r: StepTime, i: int) -> StepTime:
    """Row ``i`` of stacked results (numpy scalars)."""
    return jax.tree.map(lambda x: x[i], r)


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="plan", unit_scale=True, leave=False)


def tables_of(plans: Iterable[Any], model: ModelSpec, system: SystemSpec,
              where: str = "plans") -> list[dict]:
    """Plan tables of user references: inline strings (``"tp=8,pp=4"``), dicts, preset
    names or files, or loaded :class:`PlanSpec` (its resolved values)."""
    from cpo_opt.inputs.loaders import _plan_table
    out = []
    for i, p in enumerate(plans):
        if isinstance(p, PlanSpec):
            t = {k: v for k, v in p.values.items() if k not in ("dp", "edp", "microbatches")}
        else:
            t, _ = _plan_table(p, f"{where}[{i}]")
        out.append(dict(t))
    return out
