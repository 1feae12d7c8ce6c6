"""Placement of parallel groups on scale-up domains: the mechanism the copper-vs-Passage study
rests on. Unit checks of :mod:`cpo_opt.model.fabric` against hand formulas, then the full model's
per-tier traffic for DeepSeek-V3 expert parallelism.
"""

from __future__ import annotations

import dataclasses
import math
import types

import pytest

from cpo_opt.model import constants as C
from cpo_opt.model import fabric
from cpo_opt.model.config import replace
from cpo_opt.analysis.evaluate import step_time_jit
from cpo_opt.inputs.loaders import load_model, load_plan, load_system

V = 1e9  # bytes


def _system(domain, gpus, base="dgx-h100"):
    return load_system(base, overrides={"scale_up.domain_size": str(domain),
                                        "cluster.gpus": str(gpus)}).system


def _f(x):
    return float(x)


# --------------------------------------------------------------------------- members in a domain
# contiguous placement (issue 14): the worst-placed group's piece; EP 64 on 72-GPU domains
# straddles (blocks of 64 start at 0, 64, 56, ... mod 72: a piece of 8), EP 64 with stride 4
# (blocks of 256) likewise (gcd(256, 72) = 8 ranks = 2 members). Aligned placement keeps the
# group's block (g x stride GPUs) whole: 64 of each 72 GPUs work (EP 64), a block of 256 takes
# four 72-GPU domains with 64 working in each (stride 4: 16 members per domain).
@pytest.mark.parametrize("group, stride, domain, expected, aligned", [
    (8, 1, 8, 8, 8), (64, 1, 8, 8, 8), (64, 1, 72, 8, 64), (8, 8, 8, 1, 1), (16, 2, 8, 4, 4),
    (64, 4, 72, 2, 16), (4, 16, 8, 1, 1), (2, 8, 576, 2, 2), (64, 1, 64, 64, 64),
    (512, 1, 576, 64, 512),
])
def test_members_in_domain(group, stride, domain, expected, aligned):
    s = _system(domain, 4608)
    assert _f(fabric.members_in_domain(group, stride, s)) == expected
    at = _aligned(s, group * stride)
    assert _f(fabric.members_in_domain(group, stride, s, at=at)) == aligned


def _aligned(s, unit):
    """The aligned fill of a plan whose placement unit is ``unit`` GPUs."""
    plan = types.SimpleNamespace(tp=float(unit), cp=1.0, ep=1.0, etp=1.0, placement=1.0)
    return fabric.fill(s, plan)


def test_aligned_fill_counts_working_and_idle_gpus():
    """Aligned placement works whole units per domain; the rest idle (hand counts)."""
    cases = [  # domain, gpus, unit -> working per domain, working in all
        (144, 18432, 128, 128, 16384), (72, 4608, 64, 64, 4096), (72, 4608, 8, 72, 4608),
        (512, 18432, 128, 512, 18432), (72, 4608, 128, 64, 4096), (72, 72, 64, 64, 64),
        (72, 72, 8, 72, 72), (8, 2048, 64, 8, 2048), (72, 100, 8, 72, 96)]
    for d, n, u, per, world in cases:
        at = _aligned(_system(d, n), u)
        assert (_f(at.domain), _f(at.world)) == (per, world), (d, n, u)


def test_few_blocks_are_enumerated_not_worst_case():
    # 256 GPUs on 72-GPU domains: the world group (one block) is cut into 72, 72, 72, 40
    s = _system(72, 256)
    assert _f(fabric.members_in_domain(256, 1, s)) == 40
    # EP 64: blocks at 0, 64, 128, 192 -> pieces 64 | 8 56 | 16 48 | 24 40
    assert _f(fabric.members_in_domain(64, 1, s)) == 8


def test_domain_larger_than_cluster_is_capped_at_cluster():
    s = _system(domain=72, gpus=16)
    assert _f(fabric.fill(s, types.SimpleNamespace(placement=0.0)).domain) == 16
    assert _f(fabric.members_in_domain(16, 1, s)) == 16
    assert _f(fabric.members_in_domain(16, 2, s)) == 8  # 16 / stride 2, not 72 / 2 = 36
    assert _f(fabric.members_in_domain(8, 4, s)) == 4
    up, out = fabric.all_to_all_split(8, 4, s)
    assert (_f(up), _f(out)) == (3 / 8, 4 / 8)  # 4 of 8 members share the capped domain


# --------------------------------------------------------------------------- all-to-all
def test_ep8_inside_domain8_sends_nothing_out():
    s = _system(8, 64)
    c = fabric.all_to_all(V, 8, 1, s)
    assert _f(c.out_bytes) == 0.0
    assert _f(c.up_bytes) == pytest.approx(V * 7 / 8, rel=1e-15)  # own 1/8 stays on the GPU
    # time: scale-up only, one scale-up latency, no scale-out latency
    expected = V * 7 / 8 / (s.scale_up.bandwidth * C.LINK_EFF_SCALE_UP) + s.scale_up.latency_s
    assert _f(c.time) == pytest.approx(expected, rel=1e-12)


def test_ep64_over_8_domains_sends_seven_eighths_out():
    s = _system(8, 64)
    up, out = fabric.all_to_all_split(64, 1, s)
    assert _f(out) == pytest.approx(56 / 64, rel=1e-15)      # (g - m) / g of the buffer
    assert _f(up) == pytest.approx(7 / 64, rel=1e-15)        # (m - 1) / g
    c = fabric.all_to_all(V, 64, 1, s)
    assert _f(c.out_bytes) == pytest.approx(V * 7 / 8, rel=1e-15)
    assert _f(c.up_bytes) == pytest.approx(V * 7 / 64, rel=1e-15)
    # of the bytes that leave the GPU, 56 of the 63 peers are outside the domain
    assert _f(c.out_bytes / (c.up_bytes + c.out_bytes)) == pytest.approx(56 / 63, rel=1e-14)
    t_out = V * 7 / 8 / (s.scale_out.bandwidth * C.LINK_EFF_SCALE_OUT)
    t_up = V * 7 / 64 / (s.scale_up.bandwidth * C.LINK_EFF_SCALE_UP)
    # plus one message cost per remote peer (56 outside the domain; DeepEP's low-latency
    # table, constants.A2A_PEER_S)
    expected = (max(t_up, t_out) + s.scale_up.latency_s + s.scale_out.latency_s
                + 56 * C.A2A_PEER_S)
    assert _f(c.time) == pytest.approx(expected, rel=1e-12)


def test_ep64_fits_a_72_domain_and_nothing_crosses():
    # a cluster of one domain: no boundary to straddle
    c = fabric.all_to_all(V, 64, 1, _system(72, 64))
    assert _f(c.out_bytes) == 0.0 and _f(c.up_bytes) == pytest.approx(V * 63 / 64, rel=1e-15)
    # aligned placement on many 72-GPU domains (64 used): nothing crosses either
    s = _system(72, 4608)
    grp = fabric.place([64.0], [1.0], s, at=_aligned(s, 64))[0]
    assert _f(fabric.all_to_all_on(V, grp, s).out_bytes) == 0.0


def test_strided_ep_group_has_every_peer_outside():
    # EP 8 with stride 8 (etp = 8 inner): one member per domain of 8
    s = _system(8, 64)
    assert _f(fabric.members_in_domain(8, 8, s)) == 1
    c = fabric.all_to_all(V, 8, 8, s)
    assert _f(c.up_bytes) == 0.0
    assert _f(c.out_bytes) == pytest.approx(V * 7 / 8, rel=1e-15)
    # the same group with stride 1 stays inside
    assert _f(fabric.all_to_all(V, 8, 1, s).out_bytes) == 0.0


def test_all_to_all_of_one_member_is_free():
    c = fabric.all_to_all(V, 1, 1, _system(8, 64))
    assert (_f(c.time), _f(c.up_bytes), _f(c.out_bytes)) == (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- reduce-scatter
def _rs_by_hand(nbytes, g, m, s):
    n = g / m
    up = nbytes * (m - 1) / m
    out = nbytes / m * (n - 1) / n
    t = (up / (s.scale_up.bandwidth * C.LINK_EFF_SCALE_UP)
         + out / (s.scale_out.bandwidth * C.LINK_EFF_SCALE_OUT)
         + math.log2(m) * s.scale_up.latency_s + math.log2(n) * s.scale_out.latency_s)
    return t, up, out


def test_reduce_scatter_inside_one_domain_has_no_scale_out_bytes():
    s = _system(8, 64)
    c = fabric.reduce_scatter(V, 8, 1, s)
    assert _f(c.out_bytes) == 0.0
    assert _f(c.up_bytes) == pytest.approx(V * 7 / 8, rel=1e-15)


def test_reduce_scatter_one_member_per_domain_is_all_scale_out():
    s = _system(8, 64)
    c = fabric.reduce_scatter(V, 8, 8, s)  # m = 1
    assert _f(c.up_bytes) == 0.0
    assert _f(c.out_bytes) == pytest.approx(V * 7 / 8, rel=1e-15)  # (g - 1) / g
    t, _, _ = _rs_by_hand(V, 8, 1, s)
    assert _f(c.time) == pytest.approx(t, rel=1e-12)


@pytest.mark.parametrize("g, stride, domain, m", [(64, 1, 8, 8), (64, 2, 8, 4), (128, 1, 32, 32),
                                                   (16, 4, 32, 8)])
def test_reduce_scatter_hierarchical_hand_formula(g, stride, domain, m):
    s = _system(domain, 4096)
    c = fabric.reduce_scatter(V, g, stride, s)
    t, up, out = _rs_by_hand(V, g, m, s)
    assert _f(c.up_bytes) == pytest.approx(up, rel=1e-14)    # V (m-1)/m
    assert _f(c.out_bytes) == pytest.approx(out, rel=1e-14)  # V/m (n-1)/n
    assert _f(c.time) == pytest.approx(t, rel=1e-12)
    # all-reduce is two reduce-scatters
    ar = fabric.all_reduce(V, g, stride, s)
    assert _f(ar.out_bytes) == pytest.approx(2 * out, rel=1e-14)


def test_larger_domain_moves_reduce_scatter_bytes_in():
    outs = [_f(fabric.reduce_scatter(V, 64, 1, _system(d, 4608)).out_bytes)
            for d in (1, 2, 8, 32, 64, 72)]
    assert outs[0] == pytest.approx(V * 63 / 64, rel=1e-14)
    assert all(a > b for a, b in zip(outs[:4], outs[1:5]))
    assert outs[4] == 0.0
    # contiguous on 72-GPU domains the worst group straddles (8 | 56): more than on 64
    assert outs[5] > outs[4]
    s72 = _system(72, 4608)
    aligned = fabric.place([64.0], [1.0], s72, at=_aligned(s72, 64))[0]
    assert _f(fabric.reduce_scatter_on(V, aligned, s72).out_bytes) == 0.0


# --------------------------------------------------------------------------- full model
@pytest.fixture(scope="module")
def deepseek():
    return load_model("deepseek-v3")


def _run(model, system_name, overrides, plan, aligned=False):
    """The plan on the system on the plain Megatron stack (every routed copy sent, no
    overlap choices: the hand byte counts below); ``aligned``: aligned placement."""
    s = load_system(system_name, overrides=overrides)
    p = load_plan(plan + (",placement=aligned" if aligned else ""), model, s,
                  stack="megatron-defaults")
    return s, p, step_time_jit(model.model, s.system, p.plan)


DSV3_1F1B = ("tp=1,pp=16,cp=1,ep=64,etp=1,vpp=2,micro_batch=1,global_batch=15360,"
             "sequence_parallel=false,recompute=selective,zero=1,dtype=fp8,overlap_ep=true,"
             "overlap_p2p=true")
"""DeepSeek-V3's degrees on 1F1B interleaved with Megatron's all-to-all (every routed copy
sent), so the byte counts below follow by hand (the preset plan runs DualPipe and DeepEP)."""

ELEMS = 4096 * 8 * 7168  # tokens of one micro-batch (b s, tp = cp = 1) x top_k x hidden


def _dispatch_width(p):
    """Bytes per element the forward dispatch sends: 1 in fp8 plans with ``fp8_dispatch``
    (DeepSeek-V3's), else 2 (Megatron-Core sends the bf16 hidden states: the plain stack)."""
    return 1.0 if p.values["dtype"] == "fp8" and float(p.plan.fp8_dispatch) > 0 else 2.0


def _ep_bytes(s, p):
    """(up, out) bytes of one MoE layer's EP all-to-alls, forward + backward, by the fabric
    functions: dispatch (:func:`_dispatch_width`) and combine (bf16) forward, 2 x combine
    backward."""
    at = fabric.fill(s.system, p.plan)
    grp = fabric.place([float(p.values["ep"])], [float(p.values["etp"])], s.system, at=at)[0]
    dispatch = fabric.all_to_all_on(ELEMS * _dispatch_width(p), grp, s.system)
    combine = fabric.all_to_all_on(ELEMS * 2.0, grp, s.system)
    total = dispatch + 3.0 * combine
    return _f(total.up_bytes), _f(total.out_bytes)


PLAN_EP8 = "tp=1,pp=8,ep=8,micro_batch=1,global_batch=64,recompute=selective,zero=1"


def test_deepseek_ep8_on_domain8_keeps_ep_traffic_on_scale_up(deepseek):
    """64 GPUs: ep 8 x dp 8 per stage, 8 stages. Everything but PP stays in a DGX."""
    s, p, r = _run(deepseek, "h800-cluster", {"cluster.gpus": "64"}, PLAN_EP8)
    up, out = _ep_bytes(s, p)
    assert out == 0.0
    assert up == pytest.approx(7 / 8 * (2 * 2 + 2 * 2) * ELEMS, rel=1e-14)  # bf16 both ways
    # the whole step's scale-out traffic is exactly the PP send/recv (nothing from EP or DP)
    n_mb, act = 8, 2 * 1 * 4096 * 7168          # micro-batches, bf16 activation of b s h
    assert _f(r.microbatches) == n_mb
    assert _f(r.traffic.scale_out_bytes) == pytest.approx(n_mb * 2 * act, rel=1e-14)
    # a domain of the whole cluster removes the PP crossing and changes no EP byte
    s2, p2, r2 = _run(deepseek, "h800-cluster",
                      {"cluster.gpus": "64", "scale_up.domain_size": "64"}, PLAN_EP8)
    assert _ep_bytes(s2, p2) == (up, out)
    assert _f(r2.traffic.scale_out_bytes) == 0.0
    assert _f(r2.breakdown.ep_comm) == _f(r.breakdown.ep_comm)


@pytest.fixture(scope="module")
def ep64_by_domain(deepseek):
    """The published DeepSeek-V3 plan (pp 16, dp 128, ep 64 over 8 nodes) on domains of 8, 72
    and 576 H800s, aligned placement: 2048 working GPUs each time (on 72- and 576-GPU
    domains 2304 GPUs of which 64 of each 72, 512 of each 576 work; 8-GPU domains: all)."""
    gpus = {8: 2048, 72: 2304, 576: 2048}
    return {d: _run(deepseek, "h800-cluster", {"scale_up.domain_size": str(d),
                                               "cluster.gpus": str(gpus[d])},
                    DSV3_1F1B, aligned=True) for d in (8, 72, 576)}


def test_aligned_placement_works_only_its_gpus(ep64_by_domain):
    """Issue 20: working + idle = the cluster; dp and micro-batches follow the working GPUs."""
    for d, (s, p, r) in ep64_by_domain.items():
        gpus = int(s.values["cluster"]["gpus"])
        assert p.placement["working_gpus"] + p.placement["idle_gpus"] == gpus
        assert _f(r.working_gpus) == p.placement["working_gpus"] == 2048
        assert p.values["dp"] == 128 and _f(r.microbatches) == 120


def test_one_full_domain_is_the_same_under_both_placements(deepseek):
    """Issue 20: a 72-GPU job on one 72-GPU domain: aligned and contiguous lay it out alike
    (the bug: aligned placement counted a 64-GPU domain and sent DP traffic out)."""
    plan = "tp=1,pp=1,ep=8,micro_batch=1,global_batch=72,recompute=selective,zero=1"
    over = {"scale_up.domain_size": "72", "cluster.gpus": "72"}
    rc = _run(deepseek, "gb200-nvl72", over, plan)[2]
    ra = _run(deepseek, "gb200-nvl72", over, plan, aligned=True)[2]
    assert _f(ra.step_time_s) == _f(rc.step_time_s)
    assert _f(ra.traffic.scale_out_bytes) == _f(rc.traffic.scale_out_bytes) == 0.0


def test_deepseek_ep64_contiguous_on_72_straddles(deepseek, ep64_by_domain):
    """Issue 14: laid out contiguously, EP 64 groups straddle 72-GPU domains and the worst
    one paces the step; aligned placement keeps them inside."""
    s, p, r = _run(deepseek, "h800-cluster", {"scale_up.domain_size": "72"}, DSV3_1F1B)
    s64, p64, r64 = _run(deepseek, "h800-cluster", {"scale_up.domain_size": "64"},
                         DSV3_1F1B)
    assert _ep_bytes(s, p)[1] > 0.0 and _ep_bytes(s64, p64)[1] == 0.0
    assert _f(r.breakdown.ep_comm) > _f(r64.breakdown.ep_comm)
    assert _f(r.step_time_s) > _f(r64.step_time_s)
    aligned = ep64_by_domain[72][2]
    assert _f(aligned.breakdown.ep_comm) == pytest.approx(_f(r64.breakdown.ep_comm), rel=1e-12)


def test_deepseek_ep64_on_domain8_crosses_scale_out(deepseek, ep64_by_domain):
    s, p, r = ep64_by_domain[8]
    up, out = _ep_bytes(s, p)
    assert _dispatch_width(p) == 2.0              # the plain stack: bf16 dispatch in fp8 plans
    per_layer = (2 + 2 + 2 * 2) * ELEMS          # bf16 dispatch and combine, bwd 2 x combine
    assert out == pytest.approx(per_layer * 56 / 64, rel=1e-14)
    assert up == pytest.approx(per_layer * 7 / 64, rel=1e-14)
    # the traffic is the average GPU's (docs/model.md): 58 MoE layers over 16 ranks
    n_mb, moe_layers_rank = 120, 58 / 16
    assert _f(r.microbatches) == n_mb
    p2p = n_mb * 2 * 2 * (2 * 4096 * 7168)        # 2 vpp transfers per direction, bf16 b s h
    ep_out = n_mb * moe_layers_rank * out
    total_out = _f(r.traffic.scale_out_bytes)
    assert total_out >= p2p + ep_out
    assert ep_out > 0.85 * total_out             # EP dominates the scale-out traffic


def test_deepseek_larger_domain_moves_ep_bytes_in(deepseek, ep64_by_domain):
    outs, steps = {}, {}
    for d, (s, p, r) in ep64_by_domain.items():
        outs[d] = _f(r.traffic.scale_out_bytes)
        steps[d] = _f(r.step_time_s)
        if d > 8:
            assert _ep_bytes(s, p)[1] == 0.0  # ep 64 fits a domain of 72 or 576
    assert outs[72] < 0.1 * outs[8]
    assert outs[576] <= outs[72]
    # with 576, EP is inside; PP (stride 128) leaves the domain, and some 128-GPU DP groups
    # straddle (576 = 4.5 x 128: aligned placement keeps EP groups whole, not DP groups)
    assert outs[576] >= 120 * 2 * 2 * (2 * 4096 * 7168) * (1 - 1e-12)
    assert steps[72] < steps[8] and steps[576] <= steps[72] * (1 + 1e-12)
    ep = {d: _f(r.breakdown.ep_comm) for d, (_, _, r) in ep64_by_domain.items()}
    assert ep[72] < ep[8]


def test_deepseek_ep8_gains_little_from_a_larger_domain(deepseek):
    """Contrast: with ep 8 the EP traffic is already inside an 8-GPU domain."""
    plan = ("tp=1,pp=16,ep=8,vpp=2,micro_batch=1,global_batch=15360,recompute=selective,"
            "zero=1,dtype=fp8")
    runs = {d: _run(deepseek, "h800-cluster", {"scale_up.domain_size": str(d)}, plan)
            for d in (8, 72)}
    for d, (s, p, r) in runs.items():
        assert _ep_bytes(s, p)[1] == 0.0
    ep8, ep72 = (_f(runs[d][2].breakdown.ep_comm) for d in (8, 72))
    assert ep72 == pytest.approx(ep8, rel=1e-12)
