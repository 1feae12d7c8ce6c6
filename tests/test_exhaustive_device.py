"""The exhaustive search with rows generated and reduced on the device (``score.score_range``)
against scoring every row on the host path (``score.score`` over the crossed rows, sorted
stably): same optimum, same top rows in the same order, same step times, same counts.

The reference path is the one the exhaustive search used before (every row built on the host
as plan columns tiled over the hardware points, scored by ``score_rows``, the ``top`` kept by
a stable sort), so ties and padding are checked as well as the values.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cpo_opt.inputs.loaders import load_model, load_system
from cpo_opt.model import fabric_cost
from cpo_opt.search import batching, exhaustive, exhaustive_search, make_space
from cpo_opt.search import score as S


def _reference(space, grid, top):
    """Every row on the host, scored by ``score_rows``; the ``top`` by a stable sort."""
    cols = exhaustive.plan_columns(space)
    hw = exhaustive.hardware_grid(space, grid)
    n = len(cols["tp"])
    rows = {k: np.tile(v, len(hw)) for k, v in cols.items()}
    for j, key in enumerate(space.free):
        rows["hw:" + key] = np.repeat(hw[:, j], n)
    scores = S.score(space, rows, batch=batching.SMALL_BATCH, split=False)
    _, best = S.best_row(rows, scores, top)
    return rows, scores, best, int(np.sum(scores["feasible"] > 0.5))


def _check(space, grid, batch, top=5):
    got = exhaustive_search(space, grid=grid, batch=batch, top=top)
    rows, scores, best, feasible = _reference(space, grid, top)
    assert got.evaluations == len(rows["tp"])
    assert got.detail["feasible"] == feasible
    want = S.describe(space, rows, scores, best)
    assert len(want) > 0 and len(got.detail["top"]) == len(want)
    for g, w in zip(got.detail["top"], want):
        assert g["plan"] == w["plan"] and g["hardware"] == w["hardware"]
        np.testing.assert_allclose(g["step_time_s"], w["step_time_s"], rtol=1e-12)
    assert got.plan_values == want[0]["plan"] and got.hardware == want[0]["hardware"]
    np.testing.assert_allclose(got.step_time_s, scores["step_time_s"][best[0]], rtol=1e-12)
    return got, rows, scores


def test_smallest_is_a_stable_sort_prefix():
    """``_smallest``: the ``top`` smallest values, ties to the lower index, infinities last,
    NaN never chosen over a finite value; checked against numpy's lexsort."""
    rng = np.random.default_rng(3)
    for trial in range(4):
        v = rng.integers(0, 6, 64).astype(float)  # many ties
        v[rng.choice(64, 20, replace=False)] = np.inf
        if trial == 3:
            v[:] = np.inf  # nothing feasible: every value inf
        idx = rng.permutation(1000)[:64].astype(np.int32) + 7
        got_v, got_i = jax.jit(S._smallest, static_argnums=2)(jnp.asarray(v), jnp.asarray(idx), 5)
        order = np.lexsort((idx, v))[:5]
        finite = np.isfinite(v[order])
        np.testing.assert_array_equal(np.asarray(got_v), v[order])
        np.testing.assert_array_equal(np.asarray(got_i)[finite], idx[order][finite])


def test_plans_only_equals_scoring_every_row():
    """Megatron-1T / Selene, 3072 (139k plans, one hardware point): a batch that does not
    divide the rows (the last call padded) and several calls in flight."""
    space = make_space(load_model("megatron-1t"), load_system("dgx-a100-selene"), 3072)
    got, rows, _ = _check(space, grid=9, batch=batching.SMALL_BATCH)
    assert len(rows["tp"]) % batching.SMALL_BATCH != 0
    assert len(rows["tp"]) > (exhaustive.PIPELINE + 1) * batching.SMALL_BATCH


def test_codesign_with_power_budget_equals_scoring_every_row():
    """Two free fabric fields crossed with the plans (hardware point major), with a power
    budget that makes some points infeasible, on a small batch (many calls)."""
    model = load_model("megatron-1t")
    system = load_system("dgx-a100-selene", overrides={"cluster.gpus": "512"})
    free = ("scale_up.bandwidth_GB_s", "scale_out.bandwidth_GB_s")
    budget = 1.2 * float(fabric_cost.interconnect_power_w(system.system))
    space = make_space(model, system, 512, free=free, power_budget_w=budget,
                       bounds={free[0]: (100.0, 1200.0), free[1]: (12.5, 100.0)})
    got, rows, scores = _check(space, grid=3, batch=batching.SMALL_BATCH)
    n_hw = len(exhaustive.hardware_grid(space, 3))
    assert n_hw == 9 and len(rows["tp"]) > batching.SMALL_BATCH
    # the budget binds: some rows fit in memory but not under the budget
    assert np.any((scores["fits_memory"] > 0.5) & (scores["feasible"] < 0.5))


def test_factored_plans_are_the_full_product_in_order():
    """The exhaustive search keeps the plan space as base rows x (recompute, ZeRO) codes
    (``lattice.enumerate_factors``): any plan index decodes (``lattice.tail_rows``) to the
    row the full cartesian product holds there (built here with numpy's own product, not
    ``lattice.expand``), and the count is the product's length."""
    from cpo_opt.search import lattice
    space = make_space(load_model("mixtral-8x22b"), load_system("dgx-h100"), 1024)
    base, tail = exhaustive.plan_factors(space)
    assert [name for name, _ in tail] == list(lattice.TAIL)
    full = {k: v for k, v in base.items() if k != "dp"}
    for name, codes in tail:  # the product by meshgrid: base major, last code fastest
        n, k = len(next(iter(full.values()))), len(codes)
        i, j = np.meshgrid(np.arange(n), np.arange(k), indexing="ij")
        full = {c: v[i.ravel()] for c, v in full.items()}
        full[name] = np.asarray(codes)[j.ravel()]
    n = len(full["tp"])
    assert exhaustive.plan_count(space) == n > 100_000
    want = exhaustive.plan_columns(space)
    for c in full:
        np.testing.assert_array_equal(want[c], full[c], err_msg=c)
    idx = np.random.default_rng(0).integers(0, n, 5000)
    got = lattice.tail_rows(base, tail, idx)
    assert list(got) == list(want)
    for c in want:
        np.testing.assert_array_equal(got[c], want[c][idx], err_msg=c)
