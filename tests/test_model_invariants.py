"""Structural invariants of the exact step-time model: jit == eager, no recompilation across
plan values, breakdown sums, a lone GPU communicates nothing, monotonicity in hardware,
bubble share, memory fit flag.

One batched function (``_BATCHED``: ``jit(vmap(step_time))`` with model and system as
unbatched arguments) serves every lattice test, so it compiles once for both models.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from cpo_opt.search import lattice
from cpo_opt.inputs import schema
from cpo_opt.model.config import replace
from cpo_opt.analysis.evaluate import step_time_jit
from cpo_opt.inputs.loaders import load_model, load_plan, load_scenario, load_system
from cpo_opt.model.step import step_time

N_PLANS = 2400
TRACES = {"n": 0}


def _body(model, system, plan):
    TRACES["n"] += 1  # Python side effect: runs only while JAX traces
    return step_time(model, system, plan)


_BATCHED = jax.jit(jax.vmap(_body, in_axes=(None, None, 0)))

CASES = {
    # dense: the Megatron 1T cluster; MoE: DeepSeek-V3 on 16 NVL72 racks (--set cluster.gpus)
    "dense": ("megatron-1t", "dgx-a100-selene", None, 3072),
    "moe": ("deepseek-v3", "gb200-nvl72", {"cluster.gpus": "1152"}, 15360),
}


def _flash(s):
    g = s.values["gpu"]
    return schema.resolve_attention(-1, g["matmul_tflops_bf16"], "matmul_tflops_fp8" in g)


class Sample:
    """``N_PLANS`` random valid lattice plans of one case, evaluated on the base system."""

    def __init__(self, key, seed=0, keep=None):
        mname, sname, overrides, gb = CASES[key]
        self.model = load_model(mname)
        self.spec = load_system(sname, overrides=overrides)
        cols = lattice.enumerate_plans(self.model.values, self.spec.values, gb)
        ok = np.ones(len(cols["tp"]), bool) if keep is None else keep(cols)
        idx = np.flatnonzero(ok)
        assert idx.size >= N_PLANS, (key, idx.size)
        idx = np.random.default_rng(seed).choice(idx, N_PLANS, replace=False)
        self.cols = {k: v[idx] for k, v in cols.items()}
        fp8 = 1 if key == "moe" else 0
        self.plan = lattice.to_plan(self.cols, fp8, _flash(self.spec))
        self.system = self.spec.system
        self.base = self.run(self.system)

    def run(self, system):
        return _BATCHED(self.model.model, system, self.plan)


@pytest.fixture(scope="module")
def samples():
    return {k: Sample(k) for k in CASES}


@pytest.fixture(scope="module")
def samples_no_zero3_no_cp():
    keep = lambda c: (c["zero"] < 3) & (c["cp"] == 1)  # noqa: E731
    return {k: Sample(k, seed=1, keep=keep) for k in CASES}


# --------------------------------------------------------------------------- jit vs eager
SCENARIOS = ["megatron-1t-a100-3072", "deepseek-v3-h800-2048", "llama3-405b-h100-16k"]


@pytest.mark.parametrize("name", SCENARIOS)
def test_jit_equals_eager(name):
    sc = load_scenario(name)
    args = (sc.model.model, sc.system.system, sc.plan.plan)
    eager = step_time(*args)
    jitted = step_time_jit(*args)
    le, lj = jax.tree.leaves(eager), jax.tree.leaves(jitted)
    assert len(le) == len(lj) > 30
    for a, b in zip(le, lj):
        a, b = float(a), float(b)
        assert np.isfinite(a) and abs(a - b) <= 1e-10 * max(abs(a), abs(b)), (a, b)
    assert float(eager.step_time_s) > 0


def test_no_recompile_for_new_plan_values():
    sc = load_scenario("megatron-1t-a100-3072")
    m, s = sc.model, sc.system
    p1 = sc.plan.plan
    p2 = load_plan("tp=4,pp=32,cp=2,vpp=2,micro_batch=2,global_batch=3072,recompute=selective,"
                   "zero=3", m, s).plan
    assert jax.tree.structure(p1) == jax.tree.structure(p2)
    r1 = step_time_jit(m.model, s.system, p1)
    size = step_time_jit._cache_size()
    r2 = step_time_jit(m.model, s.system, p2)
    assert step_time_jit._cache_size() == size
    assert float(r1.step_time_s) != float(r2.step_time_s)


def test_batched_function_traces_once_for_both_models(samples):
    """Another plan batch and another model (same shapes) reuse the compiled function."""
    n = TRACES["n"]
    assert n >= 1
    moe = samples["moe"]
    other = jax.tree.map(lambda x: x[::-1].copy(), moe.plan)
    r = _BATCHED(moe.model.model, moe.system, other)
    r = _BATCHED(samples["dense"].model.model, samples["dense"].system, samples["dense"].plan)
    assert TRACES["n"] == n
    np.testing.assert_array_equal(np.asarray(r.step_time_s),
                                  np.asarray(samples["dense"].base.step_time_s))


# --------------------------------------------------------------------------- breakdown
@pytest.mark.parametrize("key", list(CASES))
def test_breakdown_adds_up_to_step_time(samples, key):
    r = samples[key].base
    parts = [np.asarray(getattr(r.breakdown, f.name)) for f in dataclasses.fields(r.breakdown)]
    total = np.sum(parts, axis=0)
    step = np.asarray(r.step_time_s)
    assert np.all(np.isfinite(step)) and np.all(step > 0)
    assert np.all(np.stack(parts) >= 0)
    np.testing.assert_allclose(total, step, rtol=1e-12, atol=0)


# --------------------------------------------------------------------------- a lone GPU
@pytest.mark.parametrize("mname", ["gpt3-175b", "mixtral-8x22b"])
@pytest.mark.parametrize("zero", [0, 1, 3])
@pytest.mark.parametrize("recompute", ["none", "full"])
def test_single_gpu_has_no_communication_and_no_bubble(mname, zero, recompute):
    m = load_model(mname)
    s = load_system("dgx-a100-selene", overrides={"cluster.gpus": "1"})
    p = load_plan(f"tp=1,pp=1,cp=1,ep=1,micro_batch=1,global_batch=4,zero={zero},"
                  f"recompute={recompute}", m, s)
    r = step_time_jit(m.model, s.system, p.plan)
    b = r.breakdown
    for part in ("tp_comm", "cp_comm", "ep_comm", "pp_comm", "dp_comm", "bubble", "other"):
        assert float(getattr(b, part)) == 0.0, part
    assert float(r.traffic.scale_up_bytes) == 0.0
    assert float(r.traffic.scale_out_bytes) == 0.0
    assert float(b.compute) > 0 and float(r.dp) == 1.0 and float(r.microbatches) == 4.0


# --------------------------------------------------------------------------- monotonicity
def _doubled(system, path, factor=2.0):
    """``system`` with the leaf at ``section.field`` multiplied by ``factor``."""
    section, field = path.split(".")
    sub = getattr(system, section)
    return replace(system, **{section: replace(sub, **{field: getattr(sub, field) * factor})})


def _faster_compute(system, field):
    s = _doubled(system, f"gpu.{field}")
    if field == "matmul_flops_bf16":  # the MoE sample runs fp8: double both tensor peaks
        s = _doubled(s, "gpu.matmul_flops_fp8")
    return s


def _worst_increase(sample, system):
    new = np.asarray(sample.run(system).step_time_s)
    old = np.asarray(sample.base.step_time_s)
    rel = (new - old) / old
    i = int(np.argmax(rel))
    return rel[i], {k: int(v[i]) for k, v in sample.cols.items()}, old[i], new[i]


FABRIC_CHANGES = [("scale_up.bandwidth", 2.0), ("scale_out.bandwidth", 2.0),
                  ("scale_up.latency_s", 0.5), ("scale_out.latency_s", 0.5)]


@pytest.mark.parametrize("key", list(CASES))
@pytest.mark.parametrize("path, factor", FABRIC_CHANGES)
def test_faster_fabric_never_slows_a_step(samples, key, path, factor):
    smp = samples[key]
    rel, plan, old, new = _worst_increase(smp, _doubled(smp.system, path, factor))
    assert rel <= 1e-9, (path, plan, old, new)


# Regression: one kernel window used to hide several communications at once (CP behind the
# attention core and ZeRO-3 behind the forward/backward containing it), so faster kernels could
# expose more than they saved: deepseek-v3 on 1152 GB200 (tp1 cp4 pp9 vpp4 ep16 mb8 zero3 fp8)
# went 15.587 -> 16.644 s when the tensor peaks doubled. Windows are now disjoint and nested.
@pytest.mark.parametrize("key", list(CASES))
@pytest.mark.parametrize("field", ["matmul_flops_bf16", "hbm_bandwidth"])
def test_faster_gpu_never_slows_a_step(samples, key, field):
    smp = samples[key]
    rel, plan, old, new = _worst_increase(smp, _faster_compute(smp.system, field))
    assert rel <= 1e-9, (field, plan, old, new)


@pytest.mark.parametrize("key", list(CASES))
def test_larger_domain_never_adds_scale_out_traffic(samples, key):
    smp = samples[key]
    new = smp.run(_doubled(smp.system, "scale_up.domain_size"))
    old_out = np.asarray(smp.base.traffic.scale_out_bytes)
    new_out = np.asarray(new.traffic.scale_out_bytes)
    assert np.all(new_out <= old_out * (1 + 1e-12))
    assert np.any(new_out < 0.5 * old_out)


# Regression: collective latency used to be (m-1) a_up + log2(n) a_out, so moving members into
# the domain added latency (deepseek-v3 tp128 on 1152 GB200, domain 72 -> 144: +17.4%). Both
# tiers now have log-depth latency.
@pytest.mark.parametrize("key", list(CASES))
def test_larger_domain_never_slows_a_step(samples, key):
    smp = samples[key]
    rel, plan, old, new = _worst_increase(smp, _doubled(smp.system, "scale_up.domain_size"))
    assert rel <= 1e-9, (plan, old, new)


# --------------------------------------------------------------------------- bubble share
@pytest.mark.parametrize("scenario", ["megatron-1t-a100-3072", "llama3-405b-h100-16k",
                                      "deepseek-v3-h800-2048"])
def test_more_microbatches_shrink_the_bubble_share(scenario):
    sc = load_scenario(scenario)
    m, s, p = sc.model.model, sc.system.system, sc.plan.plan
    shares, mbs = [], []
    for k in (1, 2, 4, 8):
        r = step_time_jit(m, s, replace(p, global_batch=p.global_batch * k))
        shares.append(float(r.breakdown.bubble / r.step_time_s))
        mbs.append(float(r.microbatches))
    assert mbs == [mbs[0] * k for k in (1, 2, 4, 8)]
    assert shares[0] > 0
    assert all(a > b for a, b in zip(shares, shares[1:])), shares
    # the bubble itself is a fixed number of micro-batch times: share ~ 1 / microbatches
    assert shares[-1] < 0.2 * shares[0] or shares[-1] < 0.01, shares


# --------------------------------------------------------------------------- memory flag
@pytest.mark.parametrize("key", list(CASES))
def test_fits_memory_iff_total_within_hbm(samples, key):
    smp = samples[key]
    r = smp.base
    total = np.asarray(r.memory.total)
    fits = np.asarray(r.fits_memory)
    hbm = float(smp.system.gpu.hbm_bytes)
    assert set(np.unique(fits)) == {0.0, 1.0}  # both kinds in the sample
    np.testing.assert_array_equal(fits == 1.0, total <= hbm)
    m = r.memory
    np.testing.assert_allclose(
        np.asarray(m.weights + m.gradients + m.optimizer + m.activations + m.reserved), total,
        rtol=1e-12)


# ------------------------------------------------ the two fixed bugs, one plan each
def _lattice_plan(key, **row):
    """One lattice row as a scalar Plan (Python floats: the shared scalar compilation)."""
    mname, sname, overrides, gb = CASES[key]
    m, s = load_model(mname), load_system(sname, overrides=overrides)
    cols = {k: np.array([v]) for k, v in dict(row, global_batch=gb).items()}
    plan = lattice.to_plan(cols, 1 if key == "moe" else 0, _flash(s))
    return m.model, s.system, jax.tree.map(lambda x: float(x[0]), plan)


EXAMPLES = {
    "moe_zero3": ("moe", dict(tp=1, cp=4, pp=9, vpp=4, ep=16, etp=1, micro_batch=8,
                              recompute=0, zero=3)),
    "dense_zero1_cp32": ("dense", dict(tp=1, cp=32, pp=1, vpp=1, ep=1, etp=1, micro_batch=16,
                                       recompute=0, zero=1)),
    "moe_tp128": ("moe", dict(tp=128, cp=1, pp=9, vpp=4, ep=32, etp=2, micro_batch=1,
                              recompute=2, zero=2)),
}


@pytest.mark.parametrize("example, field", [("moe_zero3", "matmul_flops_bf16"),
                                            ("dense_zero1_cp32", "hbm_bandwidth")])
def test_example_faster_gpu_no_longer_slows_step(example, field):
    key, row = EXAMPLES[example]
    m, s, p = _lattice_plan(key, **row)
    old = float(step_time_jit(m, s, p).step_time_s)
    new = float(step_time_jit(m, _faster_compute(s, field), p).step_time_s)
    assert new <= old, (old, new)


def test_example_larger_domain_no_longer_slows_latency_bound_tp():
    m, s, p = _lattice_plan("moe", **EXAMPLES["moe_tp128"][1])
    old = step_time_jit(m, s, p)
    new = step_time_jit(m, _doubled(s, "scale_up.domain_size"), p)
    assert float(new.step_time_s) <= float(old.step_time_s), (
        float(old.step_time_s), float(new.step_time_s),
        float(old.breakdown.tp_comm), float(new.breakdown.tp_comm))


def test_example_larger_domain_no_longer_slows_grad_norm_all_reduce():
    m, s, p = _lattice_plan("moe", **EXAMPLES["moe_zero3"][1])
    old = float(step_time_jit(m, s, p).breakdown.other)
    new = float(step_time_jit(m, _doubled(s, "scale_up.domain_size"), p).breakdown.other)
    assert new <= old, (old, new)
