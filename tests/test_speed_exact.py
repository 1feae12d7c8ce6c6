"""The fast paths compute exactly what they replace (correctness only; speed is measured by
the scripts in experiments/, docs/speed.md)."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from cpo_opt.model import fabric


def _pieces(g, s, dom, n):
    """Reference for :func:`fabric.smallest_piece`, written from its definition (module
    docstring of :mod:`cpo_opt.model.fabric`) with Python integers: lay the blocks of
    ``B = g s`` ranks out on the line, cut at every multiple of the domain size, take the
    shortest piece of the first ``min(N / B, MAX_BLOCKS)`` blocks, or ``gcd(B, D)`` (the
    worst piece over a full period) when the blocks reach a period or pass MAX_BLOCKS."""
    b = g * s
    blocks = max(n // b, 1)
    gcd = math.gcd(b, dom)
    if blocks >= dom // gcd or blocks > fabric.MAX_BLOCKS:
        shortest = gcd
    else:
        shortest = b
        for k in range(blocks):
            lo, hi = k * b, k * b + b
            cuts = [lo] + list(range((lo // dom + 1) * dom, hi, dom)) + [hi]
            shortest = min([shortest] + [y - x for x, y in zip(cuts, cuts[1:])])
    return min(max(shortest // s, 1), g)


def _run(g, s, dom, n):
    f = jax.jit(fabric.smallest_piece)
    args = [jnp.asarray(np.asarray(x, dtype=float)) for x in (g, s, dom, n)]
    return np.asarray(f(*args)).astype(np.int64)


def test_smallest_piece_matches_the_cut_blocks_on_a_grid():
    """Every (group, stride, domain) of a small grid on clusters of 1-40 blocks and beyond
    MAX_BLOCKS (the gcd branch), against the blocks cut at the domain boundaries."""
    g, s, dom, k = np.meshgrid(np.arange(1, 13), np.arange(1, 5), np.arange(1, 41),
                               np.asarray([1, 2, 3, 5, 8, 17, 31, 32, 33, 40, 97]),
                               indexing="ij")
    g, s, dom, k = (x.ravel() for x in (g, s, dom, k))
    n = g * s * k + (k % 3)  # whole blocks and clusters with a partial block
    want = [_pieces(*map(int, row)) for row in zip(g, s, dom, n)]
    np.testing.assert_array_equal(_run(g, s, dom, n), want)


def test_smallest_piece_at_large_sizes():
    """Random sizes up to the schema's 2**27 GPUs (float32 cannot hold them exactly: the
    integer paths must), EP/TP-like powers of two and odd factors, large domains."""
    rng = np.random.default_rng(7)
    m = 3000
    g = 2 ** rng.integers(0, 12, m) * np.where(rng.random(m) < 0.4, rng.integers(1, 300, m), 1)
    s = np.where(rng.random(m) < 0.5, 1, 2 ** rng.integers(0, 8, m) * rng.integers(1, 60, m))
    dom = np.where(rng.random(m) < 0.5, rng.integers(1, 5000, m),
                   rng.choice([4, 8, 36, 52, 64, 72, 144, 576, 1152], m))
    dom = np.where(rng.random(m) < 0.1, rng.integers(1, 2**27, m), dom)
    n = np.where(rng.random(m) < 0.5, g * s * rng.integers(1, 200, m), rng.integers(1, 2**27, m))
    n = np.where(rng.random(m) < 0.05, 2**27, np.minimum(n, 2**27))
    keep = g * s <= 2**27
    g, s, dom, n = g[keep], s[keep], dom[keep], n[keep]
    want = [_pieces(*map(int, row)) for row in zip(g, s, dom, n)]
    np.testing.assert_array_equal(_run(g, s, dom, n), want)


def test_smallest_piece_on_the_longest_euclid_chains():
    """Pairs that need the most least-absolute-remainder Euclid steps below 2**22 (the Pell
    pairs (a_k, c_k) with a_{k+1} = 2 a_k + a_{k-1}: 17 and 18 steps), past MAX_BLOCKS
    blocks so the gcd branch answers."""
    g = np.asarray([3880899, 1607521, 1607521, 665857])
    s = np.asarray([1, 2, 1, 3])
    dom = np.asarray([2744210, 2 * 1136689, 1136689, 3 * 470832])
    n = np.full(4, 2**27)
    want = [_pieces(*map(int, row)) for row in zip(g, s, dom, n)]
    np.testing.assert_array_equal(_run(g, s, dom, n), want)


def test_divmod_is_exact_up_to_2_to_the_27():
    rng = np.random.default_rng(3)
    a = np.concatenate([rng.integers(0, 2**27 + 1, 200_000), rng.integers(0, 4096, 50_000),
                        [0, 1, 2**27, 2**27 - 1, 2**24, 2**24 + 1, 2**24 - 1]])
    b = np.concatenate([rng.integers(1, 2**27 + 1, 200_000),
                        np.clip(2 ** rng.integers(0, 28, 50_000) + rng.integers(-1, 2, 50_000),
                                1, 2**27), [1, 1, 1, 3, 1, 2**27, 7]])
    q, r = jax.jit(fabric._divmod)(jnp.asarray(a, jnp.int32), jnp.asarray(b, jnp.int32))
    np.testing.assert_array_equal(np.asarray(q), a // b)
    np.testing.assert_array_equal(np.asarray(r), a % b)


def _bench_rows(model_name, system_name, n=512):
    from cpo_opt.analysis.bench import sample_plans
    from cpo_opt.inputs import schema
    from cpo_opt.inputs.loaders import load_model, load_system
    from cpo_opt.inputs.stacks import load_stack
    from cpo_opt.model.structure import structure_of
    from cpo_opt.search import lattice
    from cpo_opt.search.space import search_options
    m, s = load_model(model_name), load_system(system_name)
    fixed = dict((k, v) for k, v in search_options(load_stack(None))[1] if k != "schedule")
    flash = schema.resolve_attention(-1, s.values["gpu"]["matmul_tflops_bf16"],
                                     "matmul_tflops_fp8" in s.values["gpu"])
    st = structure_of(m.model, 0, flash)
    rows = {k: jnp.asarray(v) for k, v in sample_plans(m, s, n, seed=3).items()}
    fp8, fl = st.plan_switches()
    return m.model, s.system, st, rows, lambda row: lattice.to_plan(row, fp8, fl, fixed=fixed)


def test_stored_shared_values_change_no_number():
    """:mod:`cpo_opt.model.fusion` stores what many outputs share by dividing by a traced
    one (exact): every StepTime field of 512 random plans of a dense and an MoE model is
    the same with ``every_field`` on and off, to the last bits XLA's different fusions of
    the two programs may round differently (1e-13 relative; measured: 2 of 512 rows one
    ulp apart, float64)."""
    from cpo_opt.model.step import step_time
    for model_name, system_name in (("megatron-1t", "dgx-a100-selene"),
                                    ("deepseek-v3", "gb200-nvl72")):
        model, system, st, rows, to_plan = _bench_rows(model_name, system_name)

        def run(every):
            return jax.jit(jax.vmap(lambda row: step_time(
                model, system, to_plan(row), structure=st, every_field=every)))(rows)

        a, b = run(True), run(False)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-13, atol=0)
        assert np.isfinite(np.asarray(a.step_time_s)).all()


def test_smallest_piece_of_one_block_matches_the_cut_block():
    """The world and pipeline groups' shortcut (their block is the whole cluster), against
    the cut blocks, for every (group, stride, domain) of a grid and random large sizes."""
    g, s, dom = np.meshgrid(np.arange(1, 17), np.arange(1, 9), np.arange(1, 80), indexing="ij")
    g, s, dom = (x.ravel() for x in (g, s, dom))
    rng = np.random.default_rng(11)
    m = 2000
    gl = 2 ** rng.integers(0, 8, m) * rng.integers(1, 40, m)
    sl = 2 ** rng.integers(0, 10, m) * rng.integers(1, 50, m)
    dl = np.where(rng.random(m) < 0.5, rng.choice([8, 36, 64, 72, 144, 512, 576], m),
                  rng.integers(1, 100_000, m))
    keep = gl * sl <= 2**27
    g, s, dom = (np.concatenate([a, b[keep]]) for a, b in ((g, gl), (s, sl), (dom, dl)))
    want = [_pieces(int(a), int(b), int(c), int(a) * int(b)) for a, b, c in zip(g, s, dom)]
    f = jax.jit(fabric.smallest_piece_one_block)
    got = f(*[jnp.asarray(np.asarray(x, dtype=float)) for x in (g, s, dom)])
    np.testing.assert_array_equal(np.asarray(got).astype(np.int64), want)
