"""Exhaustive search: every valid discrete plan, scored by the exact model (ground truth).

The plan space is :func:`cpo_opt.search.lattice.enumerate_plans` (every rule of SPEC.md). With free
hardware fields the plans are crossed with a grid of ``grid`` log-spaced values per field
within its bounds (integer fields rounded), so the result is the true optimum over that
finite set. Everything is scored in vmapped, device-sharded batches with a progress bar.
"""

from __future__ import annotations

import functools
import itertools
import time

import numpy as np

from cpo_opt.search import distributed, lattice
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


AUTO_EXHAUSTIVE_ROWS = 20_000_000
"""``optimize`` picks the exhaustive search by itself up to this many rows (plans x hardware
points). Measured on the project's 2-core CPU (docs/speed.md): from an empty compile cache the
exhaustive search of ~2e7 rows (4-20 s of scoring at 1-5e6 rows/s) ends before the gradient
search's descent has compiled (~46 s), and it is exact; every plan-only space of the shipped
presets is below it. Above it (co-design grids, 1e8+ rows) the gradient search is the faster
one (64.6x on DeepSeek-V3/GB200)."""


@functools.lru_cache(maxsize=4)
def _factors(model_values: str, system_values: str, global_batch: int, options: str,
             fp8: int) -> tuple[dict[str, np.ndarray], tuple]:
    import json
    return lattice.enumerate_factors(json.loads(model_values), json.loads(system_values),
                                     global_batch, options=json.loads(options), fp8=fp8)


def plan_factors(space: SearchSpace) -> tuple[dict[str, np.ndarray], tuple]:
    """The space's plans as :func:`lattice.enumerate_factors` gives them (base rows and the
    recompute and ZeRO codes), cached for the last few spaces so that sizing a space
    (:func:`space_size`) and searching it enumerate once."""
    import json
    return _factors(json.dumps(space.model.values, sort_keys=True, default=str),
                    json.dumps(space.system.values, sort_keys=True, default=str),
                    int(space.global_batch), json.dumps(space.options, sort_keys=True),
                    space.fp8)


def plan_columns(space: SearchSpace) -> dict[str, np.ndarray]:
    """Every valid plan of the space as full columns (:func:`lattice.enumerate_plans`, with
    the option columns the space's stack lets the search choose)."""
    return lattice.expand(*plan_factors(space))


def plan_count(space: SearchSpace) -> int:
    """Valid discrete plans of the space (nothing expanded)."""
    base, tail = plan_factors(space)
    return len(base["tp"]) * lattice.tail_size(tail)


def space_size(space: SearchSpace, grid: int = 9) -> int:
    """Rows the exhaustive search would score: plans x hardware grid points."""
    return plan_count(space) * len(hardware_grid(space, grid))


def _space_rows(space: SearchSpace, grid: int) -> tuple[dict[str, np.ndarray], tuple,
                                                        np.ndarray]:
    """The plan factors and the hardware grid; refuses spaces beyond :data:`MAX_ROWS`."""
    base, tail = plan_factors(space)
    hw = hardware_grid(space, grid)
    n_plans, n_hw = len(base["tp"]) * lattice.tail_size(tail), len(hw)
    if n_plans * n_hw > MAX_ROWS:
        raise ArgumentError("exhaustive", f"{n_plans} plans x {n_hw} hardware points is more than "
                         f"{MAX_ROWS} rows; free fewer fields or use the gradient search")
    return base, tail, hw


def _bucket(n: int) -> int:
    """Rows a device table of ``n`` is padded to: a power of two (at least 4096), so every
    space of one structure whose plans fall in one bucket shares the compiled scorer."""
    return max(1 << 12, 1 << max(int(n) - 1, 0).bit_length())


def device_plans(cols: dict[str, np.ndarray], tail=()) -> dict:
    """The plan columns (:func:`score.columns_for_scoring`) as device arrays padded to
    :func:`_bucket` rows (copies of the last plan), replicated on every local device, with
    the count of plans ``"n"`` (traced: not part of the compiled shape). With a ``tail``
    (:func:`lattice.enumerate_factors`) the columns are the base rows, each tail's codes go
    as ``"tail:" + name`` and ``"n"`` counts base rows x tail codes."""
    import jax
    n = len(cols["tp"])
    size = _bucket(n)
    rep = S.replicated()
    out = {}
    for k, v in S.columns_for_scoring(cols).items():
        pad = np.empty(size, dtype=v.dtype)
        pad[:n] = v
        pad[n:] = v[-1] if n else 0
        out[k] = jax.device_put(pad, rep)
    for name, codes in tail:
        out["tail:" + name] = jax.device_put(np.asarray(codes, dtype=np.int32), rep)
    out["n"] = jax.device_put(np.int32(n * lattice.tail_size(tail)), rep)
    return out


def device_points(space: SearchSpace, hw: np.ndarray):
    """The hardware grid as a ``(bucket, len(free))`` device array (float dtype)."""
    import jax
    size = _bucket(len(hw))
    pad = np.zeros((size, len(space.free)), dtype=S._dtype())
    pad[: len(hw)] = hw
    if len(hw):
        pad[len(hw):] = hw[-1]
    return jax.device_put(pad, S.replicated())


PIPELINE = 4
"""Calls in flight while the host collects earlier ones (results are a few numbers each)."""


def exhaustive_search(space: SearchSpace, grid: int = 9, progress: bool = False,
                      batch: int | None = None, top: int = 5, scorer=None) -> SearchResult:
    """Score the whole space; returns the fastest feasible plan (and hardware point).

    The plans are enumerated once on the host and copied to the device once; every row
    (plan ``p`` at hardware point ``h``) is then generated on the device from its index
    (:func:`score.score_range`), and each call returns only its ``top`` fastest feasible
    rows and its count of feasible rows. So nothing of size "rows" crosses between host and
    device, every call has one batch shape, and a co-design space of hundreds of millions of
    rows never sits in memory. Under ``jax.distributed`` each process scores its share of
    the plans at every hardware point (:mod:`cpo_opt.search.distributed`) and the
    processes' best rows and counts are merged at the end. The result (and its ties: the
    lower row index, hardware point major) is that of scoring every row and sorting stably.
    """
    if scorer is not None:  # a sampled scorer (search/robust.py): rows built on the host
        return _host_search(space, grid, progress, batch, top, scorer)
    t0 = time.perf_counter()
    batch = S.batch_shape(batch or S.default_batch())
    base, tail, hw = _space_rows(space, grid)
    lo, hi = distributed.share(len(base["tp"]))  # whole base rows: each tail stays together
    mine = {k: v[lo:hi] for k, v in base.items()}
    n_mine = (hi - lo) * lattice.tail_size(tail)
    total = n_mine * len(hw)
    budget = np.inf if space.power_budget_w is None else space.power_budget_w
    static = {"structure": S.structure(space), "free": tuple(space.free),
              "fixed": space.fixed, "batch": batch, "top": top,
              "tail": tuple(name for name, _ in tail)}
    bar = None
    if progress and total > batch:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, desc="scoring plans", unit="plan", unit_scale=True,
                   leave=False)
    values, index, feasible = [np.zeros(0)], [np.zeros(0, dtype=np.int64)], 0
    if total:
        plans, points = device_plans(mine, tail), device_points(space, hw)
        model, system = space.model.model, space.system.system
        pending = []

        def collect(start, out):
            nonlocal feasible
            values.append(np.asarray(out["step_time_s"], dtype=float))
            index.append(np.asarray(out["index"], dtype=np.int64))
            feasible += int(out["feasible"])
            if bar is not None:
                bar.update(min(batch, total - start))

        for start in range(0, total, batch):
            pending.append((start, S.score_range(model, system, plans, points,
                                                 np.int32(start), np.int32(total), budget,
                                                 **static)))
            if len(pending) > PIPELINE:
                collect(*pending.pop(0))
        for item in pending:
            collect(*item)
    if bar is not None:
        bar.close()
    values, index = np.concatenate(values), np.concatenate(index)
    keep = np.isfinite(values)
    values, index = values[keep], index[keep]
    order = np.lexsort((index, values))[:top]
    values, index = values[order], index[order]
    h, p = index // max(n_mine, 1), index % max(n_mine, 1)
    kept = lattice.tail_rows(mine, tail, p)
    names = tuple(kept)  # the plan columns (integers), before the hardware columns join
    for j, key in enumerate(space.free):
        kept["hw:" + key] = hw[h, j]
    fixed = dict(space.fixed)
    placement = (kept["placement"].astype(float) if "placement" in kept
                 else np.full(len(p), float(fixed.get("placement", 0.0))))
    kept_scores = {"step_time_s": values, "raw_step_time_s": values,
                   "feasible": np.ones(len(p)), "fits_memory": np.ones(len(p)),
                   "placement": placement}
    return _result(space, names, kept, kept_scores, total, feasible, top, t0)


def _at(space: SearchSpace, cols: dict[str, np.ndarray], points: np.ndarray
        ) -> dict[str, np.ndarray]:
    """Every plan at each of ``points`` (the free fields as columns), point after point."""
    n = len(cols["tp"])
    out = {k: np.tile(v, len(points)) for k, v in cols.items()}
    for j, key in enumerate(space.free):
        out["hw:" + key] = np.repeat(points[:, j], n)
    return out


def _host_search(space: SearchSpace, grid: int, progress: bool, batch: int | None, top: int,
                 scorer) -> SearchResult:
    """:func:`exhaustive_search` with a scorer of its own (``rows -> scores``, e.g. the
    sampled robust scorer of :mod:`cpo_opt.search.robust`), rows built on the host.

    The plans are enumerated once and scored a group of hardware points at a time (at least
    a few batches of rows per group), keeping each group's ``top`` rows, so memory stays that
    of a few million rows (a co-design space of hundreds of millions of rows never sits in
    memory at once) and every call has the same batch shape. Under ``jax.distributed`` each
    process scores its share of every group's plans (:mod:`cpo_opt.search.distributed`) and
    the processes' best rows and counts are merged at the end.
    """
    t0 = time.perf_counter()
    batch = batch or S.default_batch()
    base, tail, hw = _space_rows(space, grid)
    cols = lattice.expand(base, tail)
    lo, hi = distributed.share(len(cols["tp"]))
    mine = {k: v[lo:hi] for k, v in cols.items()}
    n_mine = hi - lo
    keep_cols, keep_scores, n, feasible = [], [], 0, 0
    per_group = max(1, (8 * batch) // max(n_mine, 1))
    bar = None
    if progress and len(hw) > 1:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(hw) * n_mine, desc="scoring plans", unit="plan",
                   unit_scale=True, leave=False)
    for g in range(0, len(hw) if n_mine else 0, per_group):
        rows = _at(space, mine, hw[g:g + per_group])
        scores = S.score(space, rows, scorer, batch=batch, progress=progress and bar is None,
                         split=False)
        n += len(rows["tp"])
        feasible += int(np.sum(scores["feasible"] > 0.5))
        _, idx = S.best_row(rows, scores, top)
        keep_cols.append({k: v[idx] for k, v in rows.items()})
        keep_scores.append({k: v[idx] for k, v in scores.items()})
        if bar is not None:
            bar.update(len(rows["tp"]))
    if bar is not None:
        bar.close()
    names = list(cols) + ["hw:" + k for k in space.free]
    kept = {k: np.concatenate([c[k] for c in keep_cols] + [np.zeros(0)]) for k in names}
    kept_scores = {k: np.concatenate([c[k] for c in keep_scores] + [np.zeros(0)])
                   for k in S.OUTPUTS}
    _, mine_top = S.best_row(kept, kept_scores, top)
    kept = {k: v[mine_top] for k, v in kept.items()}
    kept_scores = {k: v[mine_top] for k, v in kept_scores.items()}
    return _result(space, cols, kept, kept_scores, n, feasible, top, t0)


def _result(space: SearchSpace, cols, kept: dict, kept_scores: dict, n: int,
            feasible: int, top: int, t0: float) -> SearchResult:
    """This process's best rows merged with the other processes' (``jax.distributed``),
    and the search's result: the fastest feasible row, its plan and the top rows
    (``cols``: the names of the plan columns, kept as integers)."""
    kept, kept_scores, (n, feasible) = distributed.gather_best(
        kept, kept_scores, np.asarray([n, feasible]), top)
    n, feasible = int(n), int(feasible)
    kept = {k: (v.astype(np.int64) if k in cols else v) for k, v in kept.items()}
    best, best_k = S.best_row(kept, kept_scores, top)
    wall = time.perf_counter() - t0
    detail = {"space_size": n, "feasible": feasible,
              "top": S.describe(space, kept, kept_scores, best_k)}
    if best is None:
        return SearchResult({}, {}, float("inf"), n, wall, "exhaustive", detail)
    plan, hw_best = S.row_result(space, kept, best, kept_scores)
    return SearchResult(plan, hw_best, float(kept_scores["step_time_s"][best]), n, wall,
                        "exhaustive", detail)
