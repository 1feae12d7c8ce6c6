"""The event simulator (cpo_opt.sim) on its own, and the closed form against it.

Three kinds of checks, none of them a copy of a formula under test:

* the simulator's schedules against published numbers: the 1F1B and interleaved bubbles
  (Narayanan et al. 2021, sec. 2.2), Megatron-Core's warm-up counts
  (``get_pp_rank_microbatches``), activations in flight (Korthikanti et al. 2022 sec. 4.2.3;
  DualPipe README "Activation Per Device PP+1");
* the simulator against hand-computed cases (one GPU, no overlap: the sum of its tasks; the
  SM stretch of one overlapped pair; the A2A overlap with one micro-batch; a host-bound step);
* the closed form (:func:`cpo_opt.model.step.step_time`) against the simulator, on the study's
  optima and on random plans (tolerance and known disagreements: docs/simulator.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cpo_opt.inputs import system_with
from cpo_opt.inputs.loaders import load_model, load_system, plan_from_values
from cpo_opt.model.config import replace
from cpo_opt.model.step import step_time
from cpo_opt.sim import SimOptions, Stage, megatron_layout, simulate
from cpo_opt.sim import engine, schedule
from cpo_opt.sim.costs import costs


def _load(model, system, gpus, **plan):
    m = load_model(model)
    s = system_with(load_system(system), {"cluster.gpus": float(gpus)})
    return m, s, plan_from_values(plan, m, s, "test")


def _no_host(system):
    return replace(system, constants=replace(system.constants, host_launch_s=0.0,
                                             host_sync_s=0.0))


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize("pp,vpp,m", [(4, 1, 8), (4, 1, 2), (8, 1, 3), (4, 2, 8), (4, 4, 8),
                                      (8, 2, 16), (4, 2, 4), (3, 3, 6)])
def test_megatron_schedules_have_the_published_bubble(pp, vpp, m):
    """Uniform chunks (forward f = F / vpp, backward b = B / vpp): 1F1B ends at
    ``(m + pp - 1)(F + B)``; interleaved with ``m`` a multiple of ``pp`` at
    ``m (F + B) + (pp - 1)(F + B) / vpp`` (Narayanan et al. 2021, sec. 2.2)."""
    F, B = 1.0, 2.0
    progs = [schedule.megatron(pp, vpp, m, r, False) for r in range(pp)]
    t = schedule.makespan(progs, F / vpp, B / vpp)
    assert t == pytest.approx(m * (F + B) + (pp - 1) * (F + B) / vpp)


def test_interleaving_gains_nothing_with_one_micro_batch():
    """One micro-batch crosses every virtual stage in turn: ``pp (F + B)`` whatever vpp."""
    for vpp in (1, 2, 4):
        progs = [schedule.megatron(4, vpp, 1, r, False) for r in range(4)]
        assert schedule.makespan(progs, 1.0 / vpp, 2.0 / vpp) == pytest.approx(12.0)


@pytest.mark.parametrize("pp,vpp,m,merged", [(4, 1, 8, False), (4, 2, 8, False),
                                             (4, 2, 8, True), (8, 3, 16, False)])
def test_megatron_warmup_counts(pp, vpp, m, merged):
    """Warm-up forwards of rank r: ``pp - r - 1`` (1F1B); ``2 (pp - r - 1) + (vpp - 1) pp``
    interleaved, one more with the A2A overlap (Megatron-Core ``get_pp_rank_microbatches``);
    then the first steady forward, alone or merged with the first backward."""
    for r in range(pp):
        prog = [it for it in schedule.megatron(pp, vpp, m, r, merged) if it[0] != "P"]
        first_b = next(i for i, it in enumerate(prog) if it[0] in ("B", "FB"))
        if vpp == 1 and not merged:
            want = pp - r - 1
        else:
            want = 2 * (pp - r - 1) + (vpp - 1) * pp + (1 if merged else 0)
        assert first_b == min(want, m * vpp) + (0 if merged else 1)


def _in_flight(prog):
    live = peak = 0
    for it in prog:
        if it[0] == "F":
            live += 1
        elif it[0] == "FB":
            peak = max(peak, live + 1)
        elif it[0] == "B":
            live -= 1
        peak = max(peak, live)
    return peak


def test_activations_in_flight_match_the_published_counts():
    """1F1B rank r holds ``pp - r`` micro-batches; interleaved rank 0
    ``pp (1 + (pp - 1) / (pp vpp))`` micro-batches (Korthikanti et al. 2022 sec. 4.2.3),
    i.e. ``2 (pp - 1) + (vpp - 1) pp + 1`` chunks; DualPipe every rank ``pp + 1`` chunks
    (deepseek-ai/DualPipe README: "Activation Per Device PP+1")."""
    for r in range(4):
        assert _in_flight(schedule.megatron(4, 1, 8, r, False)) == 4 - r
    assert _in_flight(schedule.megatron(4, 2, 8, 0, False)) / 2 == 4 * (1 + 3 / 8)
    for pp, m in [(4, 8), (8, 16), (6, 24)]:
        assert {_in_flight(schedule.dualpipe(pp, m, r)) for r in range(pp)} == {pp + 1}


@pytest.mark.parametrize("pp,m", [(2, 4), (4, 8), (6, 12), (8, 20)])
def test_dualpipe_runs_every_chunk_once(pp, m):
    """Every rank runs each micro-batch's forward and backward once, through the stage the
    direction puts on it; every deferred weight gradient is run; every send has its
    receive."""
    sends, recvs = [], []
    for r in range(pp):
        fwd, bwd, zb, w = set(), set(), 0, 0
        for it in schedule.dualpipe(pp, m, r):
            if it[0] in ("F", "FB"):
                fwd.add(it[1])
                assert it[2] == (r if it[1] < m // 2 else pp - 1 - r)
            if it[0] == "B":
                bwd.add(it[1])
                zb += it[3]
            if it[0] == "FB":
                bwd.add(it[3])
            w += it[0] == "W"
            if it[0] == "P":
                sends += it[1]
                recvs += it[2]
        assert fwd == bwd == set(range(m))
        assert zb == w
    assert sorted(sends) == sorted(recvs) and len(set(sends)) == len(sends)


def test_dualpipe_beats_1f1b_on_the_same_chunks():
    """Bidirectional with zero-bubble weight steps: less idle than 1F1B's (pp - 1)(F + B)
    on the same uniform chunks (F = 1, B = 2 with W = 1)."""
    pp, m = 8, 32
    dual = schedule.makespan([schedule.dualpipe(pp, m, r) for r in range(pp)], 1.0, 2.0, 1.0)
    one = schedule.makespan([schedule.megatron(pp, 1, m, r, False) for r in range(pp)],
                            1.0, 2.0)
    assert m * 3.0 < dual < one == pytest.approx((m + pp - 1) * 3.0)


def test_p2p_latency_adds_once_per_virtual_stage_hop():
    """With overlapped transfers the fill and the drain still wait for every hop: the
    interleaved schedule pays ``2 (pp vpp - 1)`` transfer times whatever m; plain 1F1B on
    uniform stages pays ``2 (pp - 1)`` with one micro-batch and more with many (each
    steady step waits for its neighbour's)."""
    def extra(pp, vpp, m):
        progs = [schedule.megatron(pp, vpp, m, r, False) for r in range(pp)]
        t0 = schedule.makespan(progs, 1.0 / vpp, 2.0 / vpp, p2p=0.0)
        return (schedule.makespan(progs, 1.0 / vpp, 2.0 / vpp, p2p=0.01) - t0) / 0.01

    for pp, vpp, m in [(4, 2, 8), (8, 2, 16), (4, 3, 4), (4, 2, 2)]:
        assert extra(pp, vpp, m) == pytest.approx(2 * (pp * vpp - 1))
    assert extra(4, 1, 1) == pytest.approx(6.0)
    assert 6.0 < extra(4, 1, 8) < extra(4, 1, 16)


# ----------------------------------------------------------------------------- engine
def test_sm_stretch_is_processor_sharing():
    """A compute task of w = 1 s beside an all-to-all of c = 0.5 s holding f = 0.25 of the
    SMs runs at 0.75 for 0.5 s and at full speed after: it ends at 1 + 0.25 * 0.5."""
    g = engine.Graph()
    g.add(1.0, [], engine.COMPUTE, 0)
    g.add(0.5, [], engine.SM_COMM, 0)
    _, finish, _ = engine.run(g, 0.25, 1)
    assert finish[0] == pytest.approx(1.125)
    g = engine.Graph()  # the compute fits inside the all-to-all: it ends at w / (1 - f)
    g.add(0.3, [], engine.COMPUTE, 0)
    g.add(1.0, [], engine.SM_COMM, 0)
    _, finish, _ = engine.run(g, 0.25, 1)
    assert finish[0] == pytest.approx(0.4)


def test_engine_reports_a_deadlock():
    g = engine.Graph()
    a = g.add(1.0, [])
    b = g.add(1.0, [a])
    g.deps[a].append(b)
    with pytest.raises(engine.Deadlock):
        engine.run(g, 0.0, 1)


# ----------------------------------------------------------------------------- layout
def test_megatron_layout_even_and_remainder():
    lay = megatron_layout(61, 1, 32)
    assert sum(st.layers for st in lay) == 61 and [st.layers for st in lay[:29]] == [2] * 29
    assert [st.layers for st in lay[29:]] == [1, 1, 1]
    assert lay[0] == Stage(1, 1, True, False) and lay[-1].head and not lay[-1].embedding
    lay = megatron_layout(10, 10, 4, first=1, last=1)
    assert [st.layers for st in lay] == [1, 4, 4, 1] and all(st.moe == 0 for st in lay)


# ----------------------------------------------------------------------------- simulator
def test_one_gpu_without_overlap_is_the_sum_of_its_tasks():
    """pp = 1, one micro-batch, no communication, no host cost: the step is the layers'
    forward and backward kernels, the output layer, the optimizer and the norm."""
    m, s, p = _load("llama3-405b", "dgx-h100", 1, tp=1, global_batch=1, zero=0,
                    recompute="none")
    sy = _no_host(s.system)
    c, d = costs(m.model, sy, p.plan)
    layers = int(m.values["model"]["layers"])
    kernels = layers * (c.attention.fwd + c.attention.bwd + c.dense_ffn.fwd + c.dense_ffn.bwd)
    kernels += c.head.fwd + c.head.bwd
    res = simulate(m.model, sy, p.plan)
    assert res.pipeline_s == pytest.approx(kernels, rel=1e-9)
    assert res.step_time_s > res.pipeline_s
    path = res.critical_path
    assert path[0].start_s == 0.0 and path[-1].end_s == pytest.approx(res.step_time_s)
    assert all(a.end_s <= b.start_s + 1e-12 for a, b in zip(path, path[1:]))


def _moe(microbatches, **kw):
    """config1 on 8 GPUs of the study's copper system, pp = 1, ep = 8 (dp = 8)."""
    plan = dict(tp=1, pp=1, ep=8, global_batch=8 * microbatches, zero=1, recompute="none",
                dtype="fp8")
    plan.update(kw)
    return _load("config1", "study-copper", 8, **plan)


def test_a2a_overlap_needs_a_second_micro_batch():
    """Megatron-Core's merged 1F1B pairs the forward of micro-batch i + 1 with the backward
    of i: with one micro-batch there is no pair, and the overlap changes nothing."""
    for gb in (1, 4):
        m, s, off = _moe(gb)
        _, _, on = _moe(gb, overlap_ep=True)
        t_off = simulate(m.model, s.system, off.plan).step_time_s
        t_on = simulate(m.model, s.system, on.plan).step_time_s
        if gb == 1:
            assert t_on == pytest.approx(t_off, rel=1e-12)
        else:
            assert t_on < t_off


def test_host_bound_step_is_the_host_thread():
    """With a 1 ms launch cost the host issues more slowly than the GPU computes: the
    step is at least the host's issue time of all layers, and close to it."""
    m, s, p = _moe(4)
    slow = replace(s.system, constants=replace(s.system.constants, host_launch_s=1e-3))
    c, _ = costs(m.model, slow, p.plan)
    layers = int(m.values["model"]["layers"])
    per_mb = 3.0 * layers * (c.host_attn + c.host_router + c.host_moe_mlp)  # fwd + 2 x bwd
    res = simulate(m.model, slow, p.plan)
    assert 4 * per_mb < res.step_time_s < 4 * per_mb * 1.25
    assert res.path_totals().get("host issue", 0.0) > 0.5 * res.step_time_s


def test_smaller_gradient_buckets_overlap_more():
    """pp = 1, one micro-batch: with one bucket the whole reduction waits for the end of
    the backward; with 40M-parameter buckets only the last one does."""
    m, s, p = _moe(1, zero=2)
    one = simulate(m.model, s.system, p.plan, options=SimOptions(bucket_params=1e15))
    small = simulate(m.model, s.system, p.plan, options=SimOptions(bucket_params=4e7))
    assert small.step_time_s < one.step_time_s
    assert one.path_totals().get("DP communication", 0.0) > \
        small.path_totals().get("DP communication", 0.0)


def test_refused_schedules_are_flagged():
    m, s, p = _load("gpt3-175b", "dgx-h100", 8, tp=1, pp=8, vpp=2, global_batch=4, zero=1)
    res = simulate(m.model, s.system, p.plan)
    assert any("m >= pp" in n for n in res.notes)


# ----------------------------------------------------------------------------- vs closed form
def _closed_and_sim(m, s, p, system=None, options=SimOptions()):
    sy = system or s.system
    return (float(step_time(m.model, sy, p.plan).step_time_s),
            simulate(m.model, sy, p.plan, options=options).step_time_s)


CLEAN = [  # (model, system, gpus, plan) with nothing the two model differently
    ("llama3-405b", "dgx-h100", 8, dict(tp=8, global_batch=8, overlap_dp=False)),
    ("gpt3-175b", "dgx-a100-selene", 16, dict(tp=8, cp=2, global_batch=4, overlap_dp=False,
                                              recompute="full")),
    ("mixtral-8x22b", "dgx-h100", 8, dict(ep=8, global_batch=64, overlap_dp=False)),
    ("mixtral-8x22b", "dgx-h100", 8, dict(ep=8, global_batch=64, overlap_ep=True,
                                          overlap_dp=False)),
    ("deepseek-v3", "h800-cluster", 64, dict(tp=2, ep=32, global_batch=32, dtype="fp8",
                                             overlap_dp=False)),
    ("config1", "study-copper", 16, dict(tp=2, ep=8, global_batch=16, dtype="fp8",
                                         overlap_tp=True, overlap_dp=False)),
]


@pytest.mark.parametrize("case", CLEAN, ids=lambda c: f"{c[0]}-{c[1]}")
def test_closed_form_agrees_without_a_pipeline(case):
    """pp = 1 and DP not overlapped: the closed form's per-layer sums are the simulator's
    schedule, to within 1% (host run-ahead and the A2A pairing are the differences)."""
    model, system, gpus, plan = case
    m, s, p = _load(model, system, gpus, **plan)
    closed, sim = _closed_and_sim(m, s, p)
    assert closed == pytest.approx(sim, rel=0.01)
