"""Exact, batched scoring of candidate plans (and hardware points) for the searches.

A candidate is a row of lattice columns (:mod:`cpo_opt.search.lattice`) plus, for each free
hardware field ``k``, a column ``"hw:" + k`` in file units. The score is the exact model's
step time; a candidate is feasible when it fits in HBM and respects every fabric limit
(:mod:`cpo_opt.model.fabric_cost`, power budget included). Infeasible candidates score ``inf``.

Compiled scorers. :func:`score_rows` is one ``jax.jit`` function whose static arguments are
the model's :class:`~cpo_opt.model.structure.Structure` (which blocks the program has), the
free hardware fields and (implicitly) the batch shape; the model, the system, the rows and
the power budget are traced data. So ``jit``'s own cache holds one executable per
(structure, free fields, batch shape), shared by every model and system of that structure
(and by the persistent compilation cache across processes): no global dict, and the searches
use one batch shape (:mod:`cpo_opt.search.batching`).

The model is data, not a compile-time constant: the formulas read which blocks to build
from the structure (:mod:`cpo_opt.model.switch`), not from the model's leaves, so a traced
model builds the same pruned program a constant one did (before the structure was wired into
the formulas, a traced MoE model blended both sides of every MoE choice per row and scored
~20% slower; docs/speed.md).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cpo_opt.inputs import schema
from cpo_opt.model import fabric_cost
from cpo_opt.model.step import step_time
from cpo_opt.model.structure import Structure, structure_of
from cpo_opt.search import distributed, lattice
from cpo_opt.search.batching import (LARGE_BATCH, batch_shape, batch_sharding,  # noqa: F401
                                     batched_map, default_batch, replicated_sharding)
from cpo_opt.search.space import SearchSpace

DEFAULT_BATCH = LARGE_BATCH

OUTPUTS = ("step_time_s", "raw_step_time_s", "feasible", "fits_memory", "placement")
"""What the scorer returns per row; ``placement`` is the rank placement it chose (0
contiguous, 1 aligned)."""

PLACEMENTS = {0: "contiguous", 1: "aligned"}


def _scores(model, system, row, power_budget_w, structure: Structure,
            free: tuple[str, ...], fixed_opts: dict) -> dict:
    """The scorer's outputs for one row (under ``vmap``): lattice columns arrive as integers
    and are decoded here, on the device, into the float plan."""
    fp8, flash = structure.plan_switches()
    dt = jnp.result_type(float)
    row = {k: jnp.asarray(v).astype(dt) for k, v in row.items()}
    s = schema.with_fields(system, free, [row["hw:" + k] for k in free])
    fabric_ok = fabric_cost.feasible(s, power_budget_w)
    plan = lattice.to_plan(row, fp8, flash, fixed=fixed_opts)
    r = step_time(model, s, plan, structure=structure)
    ok = r.fits_memory * fabric_ok
    return {"step_time_s": jnp.where(ok > 0, r.step_time_s, jnp.inf),
            "raw_step_time_s": r.step_time_s, "feasible": ok,
            "fits_memory": r.fits_memory, "placement": plan.placement + 0.0 * ok}


@functools.partial(jax.jit, static_argnames=("structure", "free", "fixed"))
def score_rows(model, system, rows, power_budget_w, *, structure: Structure,
               free: tuple[str, ...], fixed: tuple[tuple[str, float], ...] = ()) -> dict:
    """``vmap(row -> scores)`` of one batch of rows (see module docstring).

    Only :data:`OUTPUTS` leave the function, so XLA builds only what they need of the
    :class:`~cpo_opt.model.step.StepTime` (the step time and the memory total).

    Args:
      model: the :class:`~cpo_opt.model.config.Model` (traced: every model of ``structure``
        reuses one compilation).
      system: the :class:`~cpo_opt.model.config.System` (traced: hardware sweeps reuse one
        compilation).
      rows: lattice columns (option columns included, ``dp`` for DualPipe rows; integers or
        floats) and ``"hw:" + k`` columns for ``free``, one batch.
      power_budget_w: cap on interconnect power (``inf`` for none).
      structure: static; the blocks the program has (and fp8 / flash); must be the model's.
      free: static; the free hardware fields.
      fixed: static; ``(plan field, code)`` of the software options the rows do not carry
        (the stack's values, :attr:`cpo_opt.search.space.SearchSpace.fixed`).
    """
    fixed_opts = dict(fixed)
    return jax.vmap(lambda row: _scores(model, system, row, power_budget_w, structure, free,
                                        fixed_opts))(rows)


def _smallest(values, index, top: int):
    """The ``top`` smallest ``values`` and their ``index``, ties to the lower index (the
    order of a stable sort), by ``top`` rounds of two reductions: deterministic on every
    backend, and no sort of the whole batch. NaN counts as ``inf`` (the host keeps only
    finite step times, as :func:`best_row` does)."""
    big = jnp.iinfo(index.dtype).max
    values = jnp.where(jnp.isnan(values), jnp.inf, values)  # as the host drops non-finite
    best_v, best_i = [], []
    for _ in range(top):
        v = jnp.min(values)
        i = jnp.min(jnp.where(values == v, index, big))
        best_v.append(v)
        best_i.append(i)
        values = jnp.where(index == i, jnp.inf, values)
    return jnp.stack(best_v), jnp.stack(best_i)


@functools.partial(jax.jit, static_argnames=("structure", "free", "fixed", "batch", "top",
                                             "tail"))
def score_range(model, system, plans, points, start, n_rows, power_budget_w, *,
                structure: Structure, free: tuple[str, ...],
                fixed: tuple[tuple[str, float], ...] = (), batch: int, top: int,
                tail: tuple[str, ...] = ()) -> dict:
    """Rows ``start .. start + batch - 1`` of a whole search space, generated and reduced on
    the device (the exhaustive search).

    Row ``i`` is plan ``i mod P`` (``plans``: integer lattice columns of ``P`` rows, padded
    to a bucket size so that spaces of one structure share executables) at hardware point
    ``i // P`` (``points``: ``(H, len(free))`` file units); rows at or past ``n_rows`` are
    padding. With a ``tail`` (static names; :func:`cpo_opt.search.lattice.enumerate_factors`)
    ``plans`` holds the base rows and each name's codes as ``"tail:" + name``: plan ``p`` is
    base row ``p // (codes per base row)`` with the codes taken last-name-fastest, the order
    of the full cartesian product. Returns the ``top`` fastest feasible rows (step times,
    ``inf`` when fewer; row indices, ties to the lower index) and the count of feasible
    rows: a few numbers per call cross back to the host, not the scores of every row.
    """
    fixed_opts = dict(fixed)
    n_plans = plans["n"]
    idx = start + jnp.arange(batch, dtype=jnp.int32)
    idx = jax.lax.with_sharding_constraint(idx, batch_sharding())
    valid = idx < n_rows
    safe = jnp.where(valid, idx, 0)
    h, p = safe // n_plans, safe % n_plans
    p, rows = lattice.split_index(p, [(name, plans["tail:" + name]) for name in tail])
    rows.update({k: v[p] for k, v in plans.items() if k != "n" and not k.startswith("tail:")})
    for j, key in enumerate(free):
        rows["hw:" + key] = points[h, j]
    out = jax.vmap(lambda row: _scores(model, system, row, power_budget_w, structure, free,
                                       fixed_opts))(rows)
    st = jnp.where(valid, out["step_time_s"], jnp.inf)
    feasible = jnp.sum(jnp.where(valid & (out["feasible"] > 0.5), 1, 0))
    best_v, best_i = _smallest(st, idx, top)
    return {"step_time_s": best_v, "index": best_i, "feasible": feasible}


def replicated():
    """Sharding of the tables :func:`score_range` gathers from (whole on every device)."""
    return replicated_sharding()


def structure(space: SearchSpace) -> Structure:
    """The :class:`Structure` of a search space's model, dtype and attention kernel."""
    return structure_of(space.model.model, space.fp8, space.flash)


def make_exact_scorer(space: SearchSpace) -> Callable[[dict], dict]:
    """``rows -> scores`` for this space: :func:`score_rows` with the space's static
    arguments bound (compiled once per structure, free fields and batch shape)."""
    budget = np.inf if space.power_budget_w is None else space.power_budget_w
    static = {"structure": structure(space), "free": tuple(space.free),
              "fixed": space.fixed}
    model, system = space.model.model, space.system.system

    def scorer(rows):
        return score_rows(model, system, rows, budget, **static)

    return scorer


def _dtype():
    return np.float64 if jax.config.jax_enable_x64 else np.float32


INT_KEYS = lattice.COLUMNS + lattice.OPTION_COLUMNS + ("dp",)
"""Lattice columns the scorer reads as int32 (small integers: degrees, codes, ``dp``)."""


def columns_for_scoring(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The columns the scorer reads: the small lattice integers as int32 (decoded on the
    device; half the bytes of float64), ``global_batch`` (up to ``2**40``) and the hardware
    columns in the current JAX float dtype."""
    out = {k: np.asarray(v, dtype=np.int32) for k, v in columns.items() if k in INT_KEYS}
    out.update({k: np.asarray(v, dtype=_dtype()) for k, v in columns.items()
                if k == "global_batch" or k.startswith("hw:")})
    return out


def score(space: SearchSpace, columns: dict[str, np.ndarray], scorer=None,
          batch: int | None = None, progress: bool = False,
          split: bool = True) -> dict[str, np.ndarray]:
    """Score every row of ``columns``; returns numpy arrays of the scorer's outputs.

    Under ``jax.distributed`` (and ``split``), each process scores its share of the rows on
    its local devices and the shares are gathered, so every process returns all scores.
    """
    scorer = scorer or make_exact_scorer(space)
    batch = batch or default_batch()
    n = len(next(iter(columns.values())))
    if n == 0:
        return {k: np.zeros(0) for k in OUTPUTS}
    cols = columns_for_scoring(columns)
    if split and distributed.process_count() > 1:
        lo, hi = distributed.share(n)
        part = {k: v[lo:hi] for k, v in cols.items()}
        mine = (batched_map(scorer, part, batch=batch, progress=progress, desc="scoring plans")
                if hi > lo else {k: np.zeros(0, _dtype()) for k in OUTPUTS})
        return distributed.gather_shares(mine, n)
    return batched_map(scorer, cols, batch=batch, progress=progress, desc="scoring plans")


def best_row(columns: dict[str, np.ndarray], scores: dict[str, np.ndarray], k: int = 5
             ) -> tuple[int | None, list[int]]:
    """Index of the fastest feasible row and of the ``k`` fastest (``None`` if none fits)."""
    st = scores["step_time_s"]
    if st.size == 0 or not np.isfinite(st).any():
        return None, []
    order = np.argsort(st, kind="stable")
    top = [int(i) for i in order[:k] if np.isfinite(st[i])]
    return top[0], top


def row_result(space: SearchSpace, columns: dict[str, np.ndarray], i: int,
               scores: dict[str, np.ndarray] | None = None) -> tuple[dict, dict]:
    """``(plan values, hardware values)`` of row ``i`` (file units), with the placement the
    scorer chose when ``scores`` are given."""
    plan = lattice.plan_values(columns, i, space.dtype, space.attention)
    if scores is not None and "placement" in scores:
        plan["placement"] = PLACEMENTS[int(round(float(scores["placement"][i])))]
    stack_values = space.stack.options if space.stack is not None else {}
    for attr, code in space.fixed:  # options the search chose by dominance
        key = next((k for k, a in lattice.OPTION_ATTRS.items() if a == attr), attr)
        value = (lattice.OPTION_VALUES[key][int(code)] if key in lattice.OPTION_VALUES
                 else bool(code))
        if key in space.chosen and key not in plan and stack_values.get(key) != value:
            plan[key] = value
    hw = {k: float(columns["hw:" + k][i]) for k in space.free}
    return plan, hw


def describe(space: SearchSpace, columns: dict, scores: dict, top: list[int]) -> list[dict[str, Any]]:
    """The ``top`` rows as JSON-ready dicts (plan, hardware, step time)."""
    out = []
    for i in top:
        plan, hw = row_result(space, columns, i, scores)
        out.append({"plan": plan, "hardware": hw, "step_time_s": float(scores["step_time_s"][i])})
    return out
