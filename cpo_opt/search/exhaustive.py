"""Exhaustive search: every valid discrete plan, scored by the exact model (ground truth).

The plan space is :func:`cpo_opt.lattice.enumerate_plans` (every rule of SPEC.md). With free
hardware fields the plans are crossed with a grid of ``grid`` log-spaced values per field
within its bounds (integer fields rounded), so the result is the true optimum over that
finite set. Everything is scored in vmapped, device-sharded batches with a progress bar.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from cpo_opt import lattice
from cpo_opt.inputs import InputError
from cpo_opt.search import score as S
from cpo_opt.search.space import INTEGER_FIELDS, SearchResult, SearchSpace

MAX_ROWS = 400_000_000
"""Refuse spaces beyond this many rows (about two minutes at 3e6 plans/s per core pair)."""


def hardware_grid(space: SearchSpace, grid: int) -> np.ndarray:
    """``(n, k)`` grid of free-field values (file units), log-spaced within bounds."""
    axes = []
    for key, (lo, hi) in zip(space.free, space.bounds):
        v = np.geomspace(lo, hi, grid) if hi > lo else np.asarray([lo])
        if key in INTEGER_FIELDS:
            v = np.unique(np.round(v))
        axes.append(v)
    if not axes:
        return np.zeros((1, 0))
    return np.asarray(list(itertools.product(*axes)), dtype=float)


def candidate_columns(space: SearchSpace, grid: int = 9) -> dict[str, np.ndarray]:
    """Every (plan, hardware point) row of the space."""
    cols = lattice.enumerate_plans(space.model.values, space.system.values, space.global_batch)
    hw = hardware_grid(space, grid)
    n_plans, n_hw = len(cols["tp"]), len(hw)
    if n_plans * n_hw > MAX_ROWS:
        raise InputError(f"--exhaustive: {n_plans} plans x {n_hw} hardware points is more than "
                         f"{MAX_ROWS} rows; free fewer fields or use the gradient search")
    out = {k: np.repeat(v, n_hw) for k, v in cols.items()}
    for j, key in enumerate(space.free):
        out["hw:" + key] = np.tile(hw[:, j], n_plans)
    return out


def exhaustive_search(space: SearchSpace, grid: int = 9, progress: bool = False,
                      batch: int = S.DEFAULT_BATCH, top: int = 5) -> SearchResult:
    """Score the whole space; returns the fastest feasible plan (and hardware point)."""
    t0 = time.perf_counter()
    cols = candidate_columns(space, grid)
    scores = S.score(space, cols, batch=batch, progress=progress)
    best, best_k = S.best_row(cols, scores, top)
    wall = time.perf_counter() - t0
    n = len(cols["tp"])
    detail = {"space_size": n, "feasible": int(np.sum(scores["feasible"] > 0.5)),
              "top": S.describe(space, cols, scores, best_k)}
    if best is None:
        return SearchResult({}, {}, float("inf"), n, wall, "exhaustive", detail)
    plan, hw = S.row_result(space, cols, best)
    return SearchResult(plan, hw, float(scores["step_time_s"][best]), n, wall, "exhaustive",
                        detail)
