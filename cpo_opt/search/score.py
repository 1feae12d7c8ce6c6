"""Exact, batched scoring of candidate plans (and hardware points) for the searches.

A candidate is a row of lattice columns (:mod:`cpo_opt.search.lattice`) plus, for each free
hardware field ``k``, a column ``"hw:" + k`` in file units. The score is the exact model's
step time; a candidate is feasible when it fits in HBM and respects every fabric limit
(:mod:`cpo_opt.model.fabric_cost`, power budget included). Infeasible candidates score ``inf``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cpo_opt.inputs import schema
from cpo_opt.model import fabric_cost
from cpo_opt.search import lattice
from cpo_opt.search.batching import DEFAULT_BATCH, batched_map
from cpo_opt.model.config import Model
from cpo_opt.search.space import SearchSpace
from cpo_opt.model.step import step_time


_SCORERS: dict = {}


def scorer_for(model: Model, free: tuple[str, ...], fp8: float, flash: float) -> Callable:
    """``jit(vmap(row -> scores))(system, rows, power_budget_w)`` for one model.

    The model, dtype and attention kernel are compile-time constants (blocks the model does
    not have are dropped from the graph: the fastest batched evaluation); the system is an
    argument, so sweeps over hardware reuse one compilation. Cached per model.
    """
    key = (tuple(float(x) for x in jax.tree.leaves(model)), free, float(fp8), float(flash))
    if key not in _SCORERS:
        def rows_fn(system, rows, power_budget_w):
            def one(row):
                plan = lattice.to_plan(row, float(fp8), float(flash))
                s = schema.with_fields(system, free, [row["hw:" + k] for k in free])
                r = step_time(model, s, plan)
                ok = r.fits_memory * fabric_cost.feasible(s, power_budget_w)
                return {"step_time_s": jnp.where(ok > 0, r.step_time_s, jnp.inf),
                        "raw_step_time_s": r.step_time_s, "feasible": ok,
                        "fits_memory": r.fits_memory}

            return jax.vmap(one)(rows)

        _SCORERS[key] = jax.jit(rows_fn)
    return _SCORERS[key]


def make_exact_scorer(space: SearchSpace) -> Callable[[dict], dict]:
    """``rows -> scores`` for this space (see :func:`scorer_for`)."""
    budget = np.inf if space.power_budget_w is None else space.power_budget_w
    fn = scorer_for(space.model.model, space.free, space.fp8, space.flash)
    system = space.system.system

    def scorer(rows):
        return fn(system, rows, budget)

    return scorer


def score(space: SearchSpace, columns: dict[str, np.ndarray], scorer=None,
          batch: int = DEFAULT_BATCH, progress: bool = False) -> dict[str, np.ndarray]:
    """Score every row of ``columns``; returns numpy arrays of the scorer's outputs."""
    scorer = scorer or make_exact_scorer(space)
    if len(next(iter(columns.values()))) == 0:
        return {"step_time_s": np.zeros(0), "raw_step_time_s": np.zeros(0),
                "feasible": np.zeros(0), "fits_memory": np.zeros(0)}
    cols = {k: np.asarray(v, dtype=np.float64 if jax.config.jax_enable_x64 else np.float32)
            for k, v in columns.items() if k in lattice.COLUMNS + ("global_batch",)
            or k.startswith("hw:")}
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


def row_result(space: SearchSpace, columns: dict[str, np.ndarray], i: int) -> tuple[dict, dict]:
    """``(plan values, hardware values)`` of row ``i`` (file units)."""
    plan = lattice.plan_values(columns, i, space.dtype, space.attention)
    hw = {k: float(columns["hw:" + k][i]) for k in space.free}
    return plan, hw


def describe(space: SearchSpace, columns: dict, scores: dict, top: list[int]) -> list[dict[str, Any]]:
    """The ``top`` rows as JSON-ready dicts (plan, hardware, step time)."""
    out = []
    for i in top:
        plan, hw = row_result(space, columns, i)
        out.append({"plan": plan, "hardware": hw, "step_time_s": float(scores["step_time_s"][i])})
    return out
