"""Static structure and compiled-scorer reuse (correctness only; speed is in experiments/)."""

import dataclasses

import jax
import numpy as np
import pytest

from cpo_opt.model.step import step_time
from cpo_opt.model.structure import Structure, structure_of
from cpo_opt.search import batching, exhaustive, lattice, make_space
from cpo_opt.search import score as S


def test_structure_is_hashable_frozen_and_read_from_the_model(presets):
    dense, _, _ = presets("megatron-1t", "dgx-a100-selene")
    moe, _, _ = presets("deepseek-v3", "h800-cluster")
    a, b = structure_of(dense.model), structure_of(dense.model)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.moe = True
    assert not a.moe and not a.mla
    s = structure_of(moe.model, fp8=1, flash=1)
    assert s.moe and s.mla and s.fp8 and s.flash and s != a
    assert structure_of(dense.model, flash=0) != a


@pytest.mark.parametrize("name", ["megatron-1t", "deepseek-v3", "mixtral-8x22b"])
def test_pin_keeps_every_value(presets, name):
    """``pin`` only writes values the model already holds (same numbers, now Python floats)."""
    m, _, _ = presets(name, "dgx-h100")
    pinned = structure_of(m.model).pin(m.model)
    for x, y in zip(jax.tree.leaves(m.model), jax.tree.leaves(pinned)):
        assert float(np.asarray(x)) == float(np.asarray(y))


def test_a_second_search_does_not_recompile(presets):
    """Same structure, free fields and batch shape: the jitted scorer is reused, even across
    searches, row counts (every call is padded to one batch shape), systems and models (the
    model is data: a second model of the same structure compiles nothing)."""
    m, s, _ = presets("megatron-1t", "dgx-a100-selene")
    space = make_space(m, s, 3072)
    cols = lattice.enumerate_plans(m.values, s.values, 3072)
    first = S.score(space, {k: v[:1000] for k, v in cols.items()}, batch=batching.SMALL_BATCH)
    size = S.score_rows._cache_size()
    again = S.score(space, {k: v[:3000] for k, v in cols.items()}, batch=batching.SMALL_BATCH)
    assert S.score_rows._cache_size() == size
    np.testing.assert_array_equal(first["raw_step_time_s"], again["raw_step_time_s"][:1000])
    # a different system (hardware is data) still reuses the executable
    _, s2, _ = presets("megatron-1t", "dgx-a100-selene", **{"scale_up.bandwidth_GB_s": 900})
    S.score(make_space(m, s2, 3072), {k: v[:10] for k, v in cols.items()},
            batch=batching.SMALL_BATCH)
    assert S.score_rows._cache_size() == size
    # a second model of the same structure (GPT-3 175B: dense, standard attention, ungated,
    # tied, as Megatron-1T) reuses it too, and scores what its own fresh evaluation gives
    m2, _, _ = presets("gpt3-175b", "dgx-a100-selene")
    space2 = make_space(m2, s, 1536)
    assert S.structure(space2) == S.structure(space)
    cols2 = lattice.enumerate_plans(m2.values, s.values, 1536)
    part2 = {k: v[:500] for k, v in cols2.items()}
    scores2 = S.score(space2, part2, batch=batching.SMALL_BATCH)
    assert S.score_rows._cache_size() == size
    ref = jax.vmap(lambda row: step_time(m2.model, s.system, lattice.to_plan(
        row, *S.structure(space2).plan_switches(), fixed=dict(space2.fixed))))(
        S.columns_for_scoring(part2))
    contiguous = scores2["placement"] == 0
    assert contiguous.any()
    np.testing.assert_allclose(scores2["raw_step_time_s"][contiguous],
                               np.asarray(ref.step_time_s)[contiguous], rtol=1e-12)
    assert not np.array_equal(scores2["raw_step_time_s"], first["raw_step_time_s"][:500])


def test_batched_map_pads_to_one_shape():
    seen = []

    def fn(rows):
        seen.append(rows["x"].shape[0])
        return {"y": rows["x"] * 2}

    out = batching.batched_map(fn, {"x": np.arange(10.0)}, batch=4)
    assert set(seen) == {batching.batch_shape(4)}
    np.testing.assert_array_equal(out["y"], np.arange(10.0) * 2)


def test_space_size_counts_plans_times_hardware_points(presets):
    m, s, _ = presets("megatron-1t", "dgx-a100-selene")
    space = make_space(m, s, 3072, free=("scale_up.bandwidth_GB_s",))
    n_plans = len(lattice.enumerate_plans(m.values, s.values, 3072, options=space.options)["tp"])
    assert exhaustive.space_size(space, grid=9) == 9 * n_plans
