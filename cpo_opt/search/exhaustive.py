"""Exhaustive search: every valid discrete plan, scored by the exact model (ground truth).

The plan space is :func:`cpo_opt.search.lattice.enumerate_plans` (every rule of SPEC.md). With free
hardware fields the plans are crossed with a grid of ``grid`` log-spaced values per field
within its bounds (integer fields rounded), so the result is the true optimum over that
finite set. Everything is scored in vmapped, device-sharded batches with a progress bar.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

from cpo_opt.search import lattice
from cpo_opt.inputs.loaders import ArgumentError
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


def _space_rows(space: SearchSpace, grid: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The plan columns and the hardware grid; refuses spaces beyond :data:`MAX_ROWS`."""
    cols = lattice.enumerate_plans(space.model.values, space.system.values, space.global_batch)
    hw = hardware_grid(space, grid)
    n_plans, n_hw = len(cols["tp"]), len(hw)
    if n_plans * n_hw > MAX_ROWS:
        raise ArgumentError("exhaustive", f"{n_plans} plans x {n_hw} hardware points is more than "
                         f"{MAX_ROWS} rows; free fewer fields or use the gradient search")
    return cols, hw


def _at(space: SearchSpace, cols: dict[str, np.ndarray], point: np.ndarray
        ) -> dict[str, np.ndarray]:
    """Every plan at one hardware point (the free fields as constant columns)."""
    n = len(cols["tp"])
    out = dict(cols)
    for j, key in enumerate(space.free):
        out["hw:" + key] = np.full(n, point[j])
    return out


def exhaustive_search(space: SearchSpace, grid: int = 9, progress: bool = False,
                      batch: int = S.DEFAULT_BATCH, top: int = 5) -> SearchResult:
    """Score the whole space; returns the fastest feasible plan (and hardware point).

    The plans are enumerated once and scored at one hardware point after another, keeping
    each point's ``top`` rows, so memory stays that of one point's plans (a co-design space
    of hundreds of millions of rows never sits in memory at once).
    """
    t0 = time.perf_counter()
    cols, hw = _space_rows(space, grid)
    scorer = S.make_exact_scorer(space)
    keep_cols, keep_scores, n, feasible = [], [], 0, 0
    bar = None
    if progress and len(hw) > 1:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(hw) * len(cols["tp"]), desc="scoring plans", unit="plan",
                   unit_scale=True, leave=False)
    for point in hw:
        rows = _at(space, cols, point)
        scores = S.score(space, rows, scorer, batch=batch, progress=progress and bar is None)
        n += len(rows["tp"])
        feasible += int(np.sum(scores["feasible"] > 0.5))
        _, idx = S.best_row(rows, scores, top)
        keep_cols.append({k: v[idx] for k, v in rows.items()})
        keep_scores.append({k: v[idx] for k, v in scores.items()})
        if bar is not None:
            bar.update(len(rows["tp"]))
    if bar is not None:
        bar.close()
    kept = {k: np.concatenate([c[k] for c in keep_cols]) for k in keep_cols[0]}
    kept_scores = {k: np.concatenate([c[k] for c in keep_scores]) for k in keep_scores[0]}
    best, best_k = S.best_row(kept, kept_scores, top)
    wall = time.perf_counter() - t0
    detail = {"space_size": n, "feasible": feasible,
              "top": S.describe(space, kept, kept_scores, best_k)}
    if best is None:
        return SearchResult({}, {}, float("inf"), n, wall, "exhaustive", detail)
    plan, hw_best = S.row_result(space, kept, best)
    return SearchResult(plan, hw_best, float(kept_scores["step_time_s"][best]), n, wall,
                        "exhaustive", detail)
