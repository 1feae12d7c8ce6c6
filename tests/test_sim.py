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

import numpy as np
import pytest

from cpo_opt.inputs import system_with
from cpo_opt.inputs.loaders import InputError, load_model, load_system, plan_from_values
from cpo_opt.model.config import replace
from cpo_opt.model.step import step_time
from cpo_opt.sim import SimOptions, Stage, megatron_layout, simulate
from cpo_opt.sim import engine, schedule
from cpo_opt.sim.costs import costs


def _load(model, system, gpus, **plan):
    m = load_model(model)
    s = load_system(system)
    if gpus is not None:
        s = system_with(s, {"cluster.gpus": float(gpus)})
    return m, s, plan_from_values(plan, m, s, "test", "megatron-defaults")


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


@pytest.mark.parametrize("F,D,W", [(1, 1, 1), (1, 2, 0), (0.5, 1, 0.5), (2, 1, 1), (1, 3, 1),
                                   (2, 3, 0), (1.5, 2, 0.25)])
def test_dualpipe_idles_what_the_closed_form_counts(F, D, W):
    """``DualPipe.step``'s order replayed with uniform chunks (forward F, backward B = D + W of
    which W the deferred weight gradient) idles ``n (F + D - W) + max(n (D - F) - F, 0)``
    with ``n = pp/2 - 1``, whatever m: the bubble :mod:`cpo_opt.model.step` uses (D11), not
    the README's ``n (F + 2D - W)``."""
    for pp in (4, 6, 8, 12):
        n = pp / 2 - 1
        for m in (2 * pp, 3 * pp):
            progs = [schedule.dualpipe(pp, m, r) for r in range(pp)]
            idle = schedule.makespan(progs, F, D + W, W) - m * (F + D + W)
            assert idle == pytest.approx(n * (F + D - W) + max(n * (D - F) - F, 0.0))


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
    d = res.to_dict()
    assert d["step_time_s"] == res.step_time_s and len(d["critical_path"]) == len(path)
    assert sum(d["critical_path_by_kind_s"].values()) <= res.step_time_s * (1 + 1e-9)


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
    dense = int(m.values.get("model.moe", {}).get("dense_layers", 0))
    per_mb = 3.0 * ((layers - dense) * (c.host_attn + c.host_router + c.host_moe_mlp)
                    + dense * (c.host_attn + c.host_dense_ffn))  # fwd + 2 x bwd
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


def test_the_output_layer_opens_the_first_bucket_and_the_embedding_closes_the_last():
    """Megatron-Core core_v0.19.0 ``_ParamAndGradBuffer`` walks the parameters in reverse:
    the output layer (registered last) is in the first gradient bucket, the embedding
    (registered first) in the last. With buckets of one embedding matrix the output layer
    fills the first bucket by itself, so it closes at the last layer (a zero share of it);
    the embedding joins the remainder (D2). A layer larger than a bucket is split over
    several, each layer's shares summing to one (D20)."""
    import importlib

    sim_mod = importlib.import_module("cpo_opt.sim.simulate")
    m, s, p = _load("deepseek-v3", "dgx-h100", 64, tp=8, ep=8, global_batch=64, dtype="fp8")
    emb = sim_mod._Sim(m.model, s.system, p.plan, None, SimOptions()).c.params_embedding
    sim = sim_mod._Sim(m.model, s.system, p.plan, None, SimOptions(bucket_params=emb))
    sim.layout = sim_mod.default_layout(m.model, p.plan, sim.c)
    assert not sim.tied and sim.ovl_dp
    groups = sim.buckets(0, 0, 0)
    n = len(sim.stage_layers(0))
    assert groups[0] == [(n - 1, 0.0)] and groups[-1][-1][0] == 0
    shares = np.zeros(n)
    for g in groups:
        for i, share in g:
            shares[i] += share
    assert shares == pytest.approx(np.ones(n))
    per_layer, _ = sim.stage_params(0)
    assert len(groups) > n  # this plan's layers hold more than a bucket each
    assert all(sum((per_layer[i][0] + per_layer[i][1]) * x for i, x in g)
               == pytest.approx(emb) for g in groups[1:-1])
    first, last = groups[0], groups[-1]
    bare = sim.bytes_of(0, last, False, False)[0]
    assert sim.bytes_of(0, last, True, False)[0] - bare == pytest.approx(emb)
    bare = sim.bytes_of(0, first, False, False)[0]
    assert sim.bytes_of(0, first, False, True)[0] - bare == pytest.approx(emb)


def test_dp_traffic_follows_the_gradient_and_parameter_precision():
    """bf16 main gradients halve the reduce-scatter and an fp8 parameter gather halves the
    all-gather (Megatron-Core ``--main-grads-dtype bf16``, ``--fp8-param-gather``): with DP
    not overlapped (the traffic after the backward, on the critical path) the simulator's DP
    time equals the closed form's for each of the four combinations, and shrinks with each.
    (The simulator counted fp32 gradients and bf16 parameters whatever the plan until
    round 5, twice the closed form's DP time on the tuned stack's study optima.)"""
    times = {}
    for grads in (False, True):
        for gather in (False, True):
            m, s, p = _moe(1, zero=1, overlap_dp=False, bf16_main_grads=grads,
                           fp8_param_gather=gather)
            res = simulate(m.model, s.system, p.plan)
            closed = step_time(m.model, s.system, p.plan)
            sim_dp = res.path_totals().get("DP communication", 0.0)
            assert sim_dp == pytest.approx(float(closed.breakdown.dp_comm), rel=1e-6)
            times[grads, gather] = sim_dp
    assert times[True, False] < times[False, False]
    assert times[False, True] < times[False, False]
    assert times[True, True] < min(times[True, False], times[False, True])


def test_interleaving_with_fewer_micro_batches_than_stages_is_refused():
    """Megatron-Core's interleaved schedule raises unless its micro-batch group (default
    pp) lies in [pp, m]: a plan with vpp > 1 and m < pp is bad input (exit 2), not a plan
    to score. This was D8's open class (ZeRO-3 under interleaving with m < pp, the closed
    form 42-68% shorter than the simulator on schedules that Megatron does not run)."""
    with pytest.raises(InputError, match="plan.vpp: interleaving"):
        _load("gpt3-175b", "dgx-h100", 8, tp=1, pp=8, vpp=2, global_batch=4, zero=1)
    with pytest.raises(InputError, match="plan.vpp: interleaving"):  # D8's former plan
        _load("gpt3-175b", "hgx-b200", None, tp=8, pp=8, cp=4, vpp=8, micro_batch=2,
              global_batch=128, zero=3, recompute="none", overlap_tp=True)
    _load("gpt3-175b", "dgx-h100", 8, tp=1, pp=8, global_batch=4, zero=1)  # 1F1B runs it


def test_refused_schedules_are_flagged():
    """m >= pp but not a multiple of pp: Megatron runs it only with the group size set to
    m, and the simulator says so."""
    m, s, p = _load("gpt3-175b", "dgx-h100", 8, tp=1, pp=8, vpp=2, global_batch=12, zero=1)
    res = simulate(m.model, s.system, p.plan)
    assert any("not a multiple of pp" in n for n in res.notes)


# ----------------------------------------------------------------------------- vs closed form
def _closed_and_sim(m, s, p, system=None, options=SimOptions()):
    sy = system or s.system
    return (float(step_time(m.model, sy, p.plan).step_time_s),
            simulate(m.model, sy, p.plan, options=options).step_time_s)


CLEAN = [  # (model, system, gpus, plan) with nothing the two model differently
    ("llama3-405b", "dgx-h100", 8, dict(tp=8, global_batch=8, overlap_dp=False)),
    ("gpt3-175b", "dgx-a100-selene", 16, dict(tp=8, global_batch=8, overlap_dp=False,
                                              recompute="full")),
    ("mixtral-8x22b", "dgx-h100", 8, dict(ep=8, global_batch=64, overlap_dp=False)),
    ("mixtral-8x22b", "dgx-h100", 8, dict(ep=8, global_batch=64, overlap_ep=True,
                                          overlap_dp=False)),
    ("deepseek-v3", "h800-cluster", 64, dict(tp=2, ep=32, global_batch=32, dtype="fp8",
                                             overlap_dp=False)),
    ("config1", "study-copper", 16, dict(tp=2, ep=8, global_batch=16, dtype="fp8",
                                         overlap_dp=False)),
]
TOLERANCE = 0.015
"""The stated agreement of the closed form with the simulator on plans of the CLEAN class
(experiments/sim_check.py: no pipeline, CP or expert TP; TP, DP and EP not overlapped; no
ZeRO-3 or full recompute): |closed / simulated - 1| <= 1.5% on the named plans below and
on 99% of random ones. Measured (docs/simulator.md): 150 random plans (seed 3) median
0.00%, 95th percentile of |.| 0.12%, largest 0.20%; 1000 plans (seed 12, round 9) 95th
percentile 0.09%, largest 0.77% (four were between 1.5% and 1.6% before D14's fix,
isolated below)."""

RANDOM_TOLERANCE = TOLERANCE
"""The stated bound on every random CLEAN plan. It was 2% while D14 (docs/simulator.md) put
four of 1000 between 1.5% and 1.6%; since D14's fix (round 9) the largest of the 1000
(seed 12) is 0.77%."""


@pytest.mark.parametrize("case", CLEAN, ids=lambda c: f"{c[0]}-{c[1]}")
def test_closed_form_agrees_without_a_pipeline(case):
    """pp = 1 and DP not overlapped: the closed form's per-layer sums are the simulator's
    schedule, to within the stated tolerance (host run-ahead, TP overlap per block and the
    A2A pairing are the differences)."""
    model, system, gpus, plan = case
    m, s, p = _load(model, system, gpus, **plan)
    closed, sim = _closed_and_sim(m, s, p)
    assert closed == pytest.approx(sim, rel=TOLERANCE)


def _check_sample(n, seed, experiment, models=None, systems=None, max_tasks=None):
    sc = experiment("sim_check")
    rows = [sc.compare(*t) for t in sc.sample(n, seed, models, systems, restrict=sc.CLEAN,
                                              max_tasks=max_tasks or sc.MAX_TASK_ESTIMATE)]
    families = {r["features"]["family"] for r in rows}
    assert families == {"dense", "moe", "mla"}
    worst = max(rows, key=lambda r: abs(r["ratio"]))
    assert abs(worst["ratio"]) <= RANDOM_TOLERANCE, (worst["model"], worst["system"],
                                                     worst["plan"].values, worst["ratio"])
    over = [r for r in rows if abs(r["ratio"]) > TOLERANCE]
    assert len(over) <= 0.01 * len(rows), [(r["model"], r["system"], r["ratio"]) for r in over]
    return rows


def test_closed_form_agrees_on_random_clean_plans(experiment):
    """Two dozen random plans of the CLEAN class: a dense, an MoE and an MLA model on three
    systems, graphs under 20,000 tasks (derandomized: seed 11)."""
    _check_sample(24, 11, experiment, ["gpt3-175b", "mixtral-8x22b", "deepseek-v3"],
                  ["dgx-h100", "gb200-nvl72", "study-copper"], max_tasks=20_000)


@pytest.mark.slow
def test_closed_form_agrees_on_three_hundred_clean_plans(experiment):
    """The tolerance on 300 random CLEAN plans (a few minutes): every plan within
    ``RANDOM_TOLERANCE``, 99% within ``TOLERANCE``, the 95th percentile under 0.5%. The same
    check on 1000 plans (10 minutes on 2 cores, too long for CI's budget beside the rest) is
    ``python experiments/sim_check.py --clean --plans 1000 --seed 12``; docs/simulator.md
    quotes it."""
    rows = _check_sample(300, 12, experiment)
    assert np.percentile([abs(r["ratio"]) for r in rows], 95) < 0.005


def _gap(model, system, gpus, plan, host=True, options=SimOptions(), hardware=None,
         constants=None):
    m, s, p = _load(model, system, gpus, **plan)
    if hardware:
        s = system_with(s, hardware)
    sy = s.system if host else _no_host(s.system)
    if constants:
        sy = replace(sy, constants=replace(sy.constants, **constants))
    closed, sim = _closed_and_sim(m, s, p, sy, options)
    return closed / sim - 1.0


def _disagreement(name, why, *args, **kw):
    return pytest.param(args, kw, id=name,
                        marks=pytest.mark.xfail(strict=True, reason=why,
                                                raises=AssertionError))


def _fixed(name, why, *args, **kw):
    """A former disagreement the closed form now follows (round 4, issue 21): held to the
    stated tolerance like any other plan."""
    return pytest.param(args, kw, id=name)


DISAGREEMENTS = [  # docs/simulator.md, "Disagreements": the closed form should change
    _fixed("layout", "D1 (fixed in round 10): labelled the worst-case layout, the +3.0% was "
                  "the DP traffic of a plan without DP overlap: each rank reduces after its "
                  "own last backward, the last rank (pp - 1) backward chunks before the "
                  "first, and the gathers follow the optimizer (+0.14% after)",
                  "deepseek-v3", "dgx-h100", 256,
                  dict(tp=8, pp=2, ep=16, global_batch=32, dtype="fp8", overlap_dp=False),
                  host=False),
    _fixed("dp-buckets", "D2 (fixed in round 11): Megatron's default DDP bucket of "
                  "max(4e7, 1e6 dp) parameters holds nearly half the rank at dp = 9216 (-34% "
                  "while the closed form took 40M buckets; round 10: the plan's ddp_bucket, "
                  "this rule when 0, and the first bucket's gather: -3.7%); Megatron's greedy "
                  "buckets put the remainder last (with the embedding; the output layer opens "
                  "the first), so the full bucket before it waits only for the remainder's "
                  "layers, after the backward and before the forward (-0.9%)",
                  "config1", "study-passage", None,
                  dict(tp=1, cp=2, ep=128, global_batch=9216, zero=2, recompute="none",
                       dtype="fp8")),
    _fixed("dp-gather-window", "D19 (fixed in round 17): without a pipeline the parameter "
                  "gathers hide only in the first forward and the gradient reductions only "
                  "in the last backward; the closed form pooled the two windows, so a "
                  "gather-bound forward (bf16 gradients: the gather as large as the "
                  "reduction, the forward half the backward) hid behind the backward's "
                  "slack (-4.28% before, -0.56% after)",
                  "llama3-405b", "dgx-h100", 64,
                  dict(tp=8, global_batch=8, zero=1, recompute="none", overlap_dp=True,
                       bf16_main_grads=True),
                  host=False, hardware={"scale_out.bandwidth_GB_s": 50.0}),
    _fixed("dp-window", "D3 (fixed in round 10): interleaved chunks reduce and gather "
                  "behind the other chunks and the fill/drain; only the first chunk's gather "
                  "and the last one's reduction are always exposed (closed form's rule since "
                  "round 4: -3.2%, was +27%; -1.7% at round 9; +0.02% once the window holds "
                  "the fill and drain's PP hops, D4)",
                  "llama3-405b", "dgx-h100", 768,
                  dict(tp=8, pp=6, vpp=7, global_batch=192, zero=1, recompute="none"),
                  host=False, hardware={"scale_out.bandwidth_GB_s": 12.5}),
    _fixed("p2p-hops", "D4 (fixed in round 10): the fill and the drain wait for every PP "
                  "transfer, 2 (pp vpp - 1) of them, which the closed form hid (-8.9% before, "
                  "+0.03% after)",
                  "gpt3-175b", "hgx-b200", 128,
                  dict(tp=8, pp=16, vpp=6, global_batch=16, zero=1, recompute="none",
                       dtype="fp8", overlap_dp=False), host=False),
    _fixed("sm-stretch", "D5: an overlapped all-to-all of c beside compute w ends at "
                  "max(c, w + f c); the closed form follows it since round 4 (2.5% off with "
                  "round 4's refit constants; +0.38% since the shared experts run before the "
                  "router in both, round 9)",
                  "moe-1t-512e", "dgx-h100", None,
                  dict(tp=4, ep=512, micro_batch=2, global_batch=131072, zero=2,
                       recompute="selective", overlap_ep=True, overlap_dp=False,
                       dispatcher="deepep"), host=False),
    _fixed("cp-ring", "D7 (fixed in round 9): the last piece of the attention core waits "
                  "for the last CP ring step: exposed (cp - 1) max(step - core / cp, 0), not "
                  "max((cp - 1) step - core, 0) (-2.5%, -1.8% before the fix; -0.11% after)",
                  "gpt3-175b", "dgx-a100-selene", 16,
                  dict(tp=8, cp=2, global_batch=4, overlap_dp=False, recompute="none"),
                  host=False),
    _fixed("sync-in-pairs", "D12: in a merged pair the router sync stalls compute "
                  "while the neighbour's all-to-all runs on; followed since round 4 (2.2% off "
                  "with round 4's refit constants; -0.04% since the shared experts run before "
                  "the router in both, round 9)",
                  "moe-1t-512e", "dgx-h100", None,
                  dict(tp=4, ep=512, micro_batch=2, global_batch=131072, zero=2,
                       recompute="selective", overlap_ep=True, overlap_dp=False,
                       dispatcher="deepep"), constants={"comm_sm_fraction": 0.0}),
    _fixed("host-run-ahead", "D14 (within 1.5% with round 4's refit constants): without a "
                  "sync the host runs ahead across layers "
                  "(every backward, dense layers); the closed form takes max(GPU, host) per "
                  "layer pass (+1.7% with a 0.5 ms launch, where issue and compute are close)",
                  "llama3-405b", "dgx-h100", 8,
                  dict(tp=8, global_batch=8, zero=1, recompute="none", dtype="fp8",
                       overlap_dp=False), constants={"host_launch_s": 5e-4}),
    _fixed("host-run-ahead-tp8", "D14 (round 9, session 11): the largest of the 1000 random "
                  "CLEAN plans (seed 12), +1.59%: the closed form put the shared experts' TP "
                  "pair before the sync and their GEMMs after it, the simulator both after; "
                  "Megatron-Core runs the shared experts before the router (both follow it "
                  "now), and the combine, issued last, runs after the host's issue of the "
                  "experts (the closed form's chain now waits for it): 0.00%",
                  "config2", "study-copper-nvl72", 18432,
                  dict(tp=8, ep=8, micro_batch=2, global_batch=147456, recompute="selective",
                       zero=0, dtype="fp8", dispatcher="deepep", placement="contiguous",
                       overlap_dp=False)),
    _fixed("host-run-ahead-tp8-no-host", "D14's plan with the host costs off: the gap is the "
                  "host's (0.00%)",
                  "config2", "study-copper-nvl72", 18432,
                  dict(tp=8, ep=8, micro_batch=2, global_batch=147456, recompute="selective",
                       zero=0, dtype="fp8", dispatcher="deepep", placement="contiguous",
                       overlap_dp=False), host=False),
    _fixed("tp-overlap", "D6 (fixed in round 9): each TP pair hides behind its own block's "
                  "GEMMs (attention, FFN, shared experts), not the layer's pooled (dense) or "
                  "the attention GEMMs alone (MoE) (+2.6% before, +4.6% with the shared "
                  "experts before the router; +1.08% after)",
                  "moe-1t-512e", "paper-fig-copper-4x128", None,
                  dict(tp=8, ep=256, micro_batch=2, global_batch=4096, zero=1,
                       recompute="none", dtype="fp8", overlap_tp=True, overlap_dp=False)),
    _fixed("expert-tp", "D10 (fixed in round 9): the expert-TP pair is the dispatcher's, "
                  "timed with the all-to-alls, not hidden by overlap_tp behind the attention "
                  "GEMMs (-8.5% before; +0.04% after)",
                  "deepseek-v3", "paper-fig-passage-512-900", None,
                  dict(tp=2, ep=16, etp=2, global_batch=4096, zero=1, recompute="none",
                       overlap_tp=True, overlap_dp=False, placement="aligned")),
    _fixed("recompute-ep", "D9: with recompute = full the recomputed forward is charged "
                  "the backward's all-to-all volume (2 combines) instead of dispatch + combine "
                  "(+8% in fp8)",
                  "config4", "hgx-b200", 128,
                  dict(tp=2, ep=64, global_batch=256, zero=1, recompute="full",
                       dtype="fp8", overlap_tp=True, overlap_dp=False)),
    _fixed("zero3-fill-1f1b", "D8 (round 15): under 1F1B a link-bound ZeRO-3 rank gathers "
                  "one layer ahead, so the fill and drain chain carries each chunk's ZeRO-3 "
                  "exposure; round 10's rule hid the whole bubble behind the link (-28.4%; "
                  "+0.7% after)",
                  "gpt3-175b", "hgx-b200", None,
                  dict(tp=8, pp=8, cp=4, micro_batch=2, global_batch=1024, zero=3,
                       recompute="none", overlap_tp=True)),
    _fixed("zero3-fill-interleaved", "D8 (round 15) under interleaving, stages dividing "
                  "the layers (vpp 4; -7.2% before, +0.7% after)",
                  "gpt3-175b", "hgx-b200", None,
                  dict(tp=8, pp=8, cp=4, vpp=4, micro_batch=2, global_batch=1024, zero=3,
                       recompute="none", overlap_tp=True)),
    _fixed("zero3-bubble-m-ge-pp", "D8's backlog where it holds: the first rank's extra "
                  "ZeRO-3 traffic (the embedding's) keeps its link busy through the fill and "
                  "drain; the same plan at vpp 8 (96 layers on 64 stages; -0.34% at round 14, "
                  "-0.3% with round 15's rule)",
                  "gpt3-175b", "hgx-b200", None,
                  dict(tp=8, pp=8, cp=4, vpp=8, micro_batch=2, global_batch=1024, zero=3,
                       recompute="none", overlap_tp=True)),
    _fixed("zero3-dualpipe", "D16 (fixed in round 12): under DualPipe a rank holds two "
                  "stages and a micro-batch passes one; the closed form gathered and reduced "
                  "both stages' ZeRO-3 parameters per micro-batch (+69.9% on this plan of the "
                  "random table, the largest class of its worst; -0.06% after)",
                  "megatron-1t", "dgx-a100-selene", None,
                  dict(tp=8, pp=2, micro_batch=2, global_batch=1536, recompute="full",
                       zero=3, overlap_tp=True, overlap_dp=False, schedule="dualpipe",
                       cuda_graphs=True)),
    _fixed("dualpipe", "D11 (fixed in round 10): DualPipe.step's own order idles "
                  "n (F + D - W) + max(n (D - F) - F, 0), n = pp/2 - 1, D = B - W, less than "
                  "the README's (PP/2 - 1)(F&B + B - 3W) (+7.9% before, +1.38% after)",
                  "llama3-405b", "dgx-h100", 64,
                  dict(tp=8, pp=8, schedule="dualpipe", global_batch=16, overlap_dp=False,
                       overlap_p2p=True), host=False),
]


def test_uneven_even_layout_counts_a_ranks_own_stages():
    """D17 (round 14): where ``pp vpp`` does not divide the layers, the even layout's ranks
    hold Megatron's split with the extras on the earlier stages (the simulator's layout and
    the Megatron export's); the closed form counted every middle stage of a rank at the
    largest (Mixtral-8x22B, 56 layers on 48 stages: a rank's 8 chunks as 16 layers against
    at most 10; +61.8%). It now spreads a rank's middle layers as the balanced layout does;
    what is left is the first and last stage counted at the largest (within one layer of
    the pacing rank): +2.1%."""
    m, s, p = _load("mixtral-8x22b", "dgx-h100", 384, tp=8, pp=6, vpp=8, ep=8,
                    global_batch=1152, zero=1, recompute="none", overlap_dp=False)
    closed, sim = _closed_and_sim(m, s, p, _no_host(s.system))
    assert 0.0 <= closed / sim - 1.0 <= 0.03


@pytest.mark.parametrize("args,kw", DISAGREEMENTS)
def test_known_disagreements(args, kw):
    """Each known disagreement (docs/simulator.md), isolated on one plan: it fails the
    stated tolerance today (strict xfail); fixing the closed form turns it into a pass,
    and the marker then comes off."""
    assert abs(_gap(*args, **kw)) <= TOLERANCE


def _optimum(config, fabric, why=None):
    marks = [pytest.mark.xfail(strict=True, reason=why, raises=AssertionError)] if why else []
    return pytest.param(config, fabric, id=f"{config}-{fabric}", marks=marks)


@pytest.mark.parametrize("config,fabric", [  # the optima of docs/study-results.md
    _optimum("config1", "copper"),
    _optimum("config2", "copper", "round 17: the copper optimum is pp 2 vpp 8 with m = pp = 2 "
             "micro-batches; the closed form 3.9% longer than the simulator (a later rank's "
             "first-chunk gather runs in its fill wait, which the closed form adds to the "
             "bubble; the last rank reduces its last two chunks after its own end, "
             "align_grad_reduce's lag, which the closed form counts as one after rank 0's "
             "end): docs/simulator.md D18, open"),
    _optimum("config3", "copper", "round 17: pp 2 vpp 8, m = pp = 2, +3.5%: D18, open"),
    _optimum("config4", "copper"),
    _optimum("config1", "passage"),
    _optimum("config2", "passage"),
    _optimum("config3", "passage"),
    _optimum("config4", "passage"),
])
def test_study_optima_agree_within_3_percent(config, fabric, experiment):
    """The issue's bar: the copper and Passage optima of docs/study-results.md (fp8, the
    study's batch, resolved on the study's stack, whose DP buckets are Megatron-Bridge's 128 Mi
    parameters) agree within 3% with the simulator. Those that do not are known
    disagreements."""
    sc = experiment("sim_check")
    system = f"study-{fabric}"
    (text,) = [t for c, s, t in sc.study_optima() if c == config and s == system]
    try:
        plan = sc.study_plan(config, system, text)
    except InputError as e:  # the page predates a plan rule: it needs regenerating
        pytest.skip(f"docs/study-results.md's optimum no longer loads: {e}")
    r = sc.compare(config, system, plan)
    assert abs(r["ratio"]) <= 0.03, r["ratio"]


# ------------------------------------------------------------------- evaluate --simulate
def test_evaluate_simulate_reports_the_simulator_beside_the_closed_form(capsys):
    """``evaluate --simulate``: the simulator's step is the end of its critical path (the
    stretches join without gaps from 0), the difference is the closed form's from it, and
    the text names both (SPEC section 4: ``"simulated": {"step_time_s", "critical_path"}``)."""
    import json

    from cpo_opt.cli.main import main
    argv = ["evaluate", "--model", "mixtral-8x22b", "--system", "dgx-h100", "--stack",
            "megatron-defaults", "--plan", "tp=2,pp=4,ep=8,global_batch=4096", "--simulate"]
    assert main(argv + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    sim = r["simulated"]
    path = sim["critical_path"]
    assert path and path[0]["start_s"] == pytest.approx(0.0, abs=1e-12)
    assert path[-1]["end_s"] == pytest.approx(sim["step_time_s"], rel=1e-9)
    assert all(b["start_s"] == pytest.approx(a["end_s"], rel=1e-9, abs=1e-12)
               for a, b in zip(path, path[1:]))
    assert sim["closed_form_vs_simulated"] == pytest.approx(
        r["step_time_s"] / sim["step_time_s"] - 1.0, rel=1e-12)
    assert abs(sim["closed_form_vs_simulated"]) < 0.25  # the plan runs the same step
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "event simulator (cpo_opt.sim): step" in text and "critical path" in text
