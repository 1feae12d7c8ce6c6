"""Software stacks (issue 20): presets with sources, what a stack fills in and what a plan keeps,
each option acting only through its mechanism, the searches over the options a stack lets them
choose, honest placement accounting, and plans that round-trip."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from cpo_opt.analysis.evaluate import step_time_jit
from cpo_opt.cli.main import main
from cpo_opt.inputs import InputError, load_model, load_plan, load_system
from cpo_opt.inputs.sources import preset_names
from cpo_opt.inputs.stacks import DEFAULT_STACK, OPTIONS, load_stack
from cpo_opt.model.config import replace
from cpo_opt.model.step import BREAKDOWN_PARTS, step_time
from cpo_opt.search import exhaustive_search, gradient_search, lattice, make_space
from cpo_opt.search.space import DOMINANCE_TOLERANCE, DOMINANT


# --------------------------------------------------------------------------- presets
@pytest.mark.parametrize("name", preset_names("stacks"))
def test_every_shipped_stack_option_names_its_source(name):
    st = load_stack(name)
    assert st.description
    for key in st.options:
        assert key in OPTIONS
        assert len(st.sources.get(key, "")) > 20, (name, key)


def test_the_default_stack_and_the_plain_one_ship():
    names = preset_names("stacks")
    assert DEFAULT_STACK in names and "megatron-defaults" in names
    assert "deepseek-v3-published" in names
    plain = load_stack("megatron-defaults")
    assert plain.choose == () and plain.options["overlap_ep"] is False


@pytest.mark.parametrize("doc, rule", [
    ({"options": {"dispatcher": {"value": "nccl", "source": "x"}}}, "must be one of"),
    ({"options": {"overlap_magic": True}}, "not a software option"),
    ({"options": {}, "search": {"choose": ["tp"]}}, "options a search may choose"),
    ({"options": {"cuda_graphs": {"source": "x"}}}, "missing required key"),
    ({"options": {}, "stack": {"color": "red"}}, "unknown key"),
])
def test_bad_stack_files_are_bad_input(doc, rule):
    with pytest.raises(InputError, match=rule):
        load_stack(doc)


def test_bad_stack_flag_exits_2_with_one_line(capsys):
    code = main(["evaluate", "--model", "gpt3-175b", "--system", "dgx-a100-selene",
                 "--plan", "tp=8,pp=8", "--stack", "no-such-stack"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no-such-stack" in err[0]


# --------------------------------------------------------------------------- plan vs stack
@pytest.fixture(scope="module")
def dsv3():
    m = load_model("deepseek-v3")
    s = load_system("gb200-nvl72", overrides={"cluster.gpus": "1152"})
    return m, s


def test_the_plan_wins_and_the_stack_fills_the_rest(dsv3):
    m, s = dsv3
    p = load_plan("tp=1,pp=4,vpp=2,ep=32,dtype=fp8,dispatcher=alltoall", m, s)
    assert p.stack == DEFAULT_STACK
    assert p.options["dispatcher"] == {"value": "alltoall", "from": "plan"}
    assert p.options["cuda_graphs"]["from"] == "stack" and p.values["cuda_graphs"] is True
    q = load_plan("tp=1,pp=4,vpp=2,ep=32,dtype=fp8", m, s, stack="megatron-defaults")
    assert q.values["cuda_graphs"] is False and q.values["dispatcher"] == "alltoall"


def test_a_stack_value_that_does_not_apply_says_why(dsv3):
    m, s = dsv3
    # DeepSeek's stack runs DualPipe; with an odd pp it cannot: 1F1B, with the reason
    p = load_plan("tp=1,pp=3,ep=32,dtype=fp8,global_batch=1152", m, s,
                  stack="deepseek-v3-published")
    assert p.values["schedule"] == "1f1b"
    assert "DualPipe" in p.options["schedule"]["note"]
    # EP overlap needs interleaving when pp > 1 (Megatron-Core's rule)
    q = load_plan("tp=1,pp=4,vpp=1,ep=32,dtype=fp8", m, s)
    assert q.values["overlap_ep"] is False and "vpp" in q.options["overlap_ep"]["note"]


# --------------------------------------------------------------------------- "fit" modules
@pytest.fixture(scope="module")
def h800():
    return load_model("deepseek-v3"), load_system("h800-cluster")


H800_BASE = "ep=64,micro_batch=1,global_batch=15360,dtype=fp8"


def _explicit(m, s, plan, norm_act, mla_up):
    """The plan with both modules set by the plan (no policy): (fits, step seconds)."""
    p = load_plan(f"{plan},recompute_norm_act={str(norm_act).lower()},"
                  f"recompute_mla_up={str(mla_up).lower()}", m, s)
    with jax.enable_x64(True):
        x = step_time_jit(m.model, s.system, p.plan)
    return bool(float(x.fits_memory) > 0.5), float(x.step_time_s)


@pytest.mark.parametrize("degrees", ["tp=1,pp=8,vpp=1", "tp=2,pp=2,vpp=1", "tp=1,pp=4,vpp=1"])
def test_fit_modules_are_the_fastest_set_that_fits(h800, degrees):
    """A plan that does not fit without recompute modules gets, from the default stack's
    'fit' policy, the set that the four explicit evaluations rank fastest among those that
    fit; each module is reported as the stack's, with the policy and why."""
    m, s = h800
    plan = f"{degrees},{H800_BASE}"
    runs = {(a, b): _explicit(m, s, plan, a, b) for a in (False, True) for b in (False, True)}
    assert not runs[(False, False)][0]  # the case: it needs a module
    fitting = [(t, a + b, (a, b)) for (a, b), (fits, t) in runs.items() if fits]
    assert fitting
    want = min(fitting)[2]
    p = load_plan(plan, m, s)
    got = (p.values["recompute_norm_act"], p.values["recompute_mla_up"])
    assert got == want
    for key, on in zip(("recompute_norm_act", "recompute_mla_up"), got):
        o = p.options[key]
        assert o["from"] == "stack" and o["policy"] == "fit"
        assert o["note"].startswith("on:" if on else "off:")
    with jax.enable_x64(True):
        x = step_time_jit(m.model, s.system, p.plan)
    assert float(x.fits_memory) > 0.5
    assert float(x.step_time_s) == pytest.approx(runs[want][1], rel=1e-12)


def test_fit_modules_stay_off_where_the_plan_fits_and_the_plan_wins(h800):
    m, s = h800
    fits = load_plan(f"tp=4,pp=8,vpp=1,{H800_BASE}", m, s)
    assert fits.values["recompute_norm_act"] is False and fits.values["recompute_mla_up"] is False
    assert fits.options["recompute_mla_up"]["note"].startswith("off: the plan fits")
    # the plan's own value wins: no policy, and the plan does not fit
    p = load_plan(f"tp=1,pp=8,vpp=1,{H800_BASE},recompute_mla_up=false,"
                  "recompute_norm_act=false", m, s)
    assert p.options["recompute_mla_up"] == {"value": False, "from": "plan"}
    with jax.enable_x64(True):
        assert float(step_time_jit(m.model, s.system, p.plan).fits_memory) < 0.5


def test_fit_never_turns_on_a_module_the_model_lacks():
    """Mixtral has no MLA: only the norm/activation module can be chosen (this plan needs
    it), and where nothing fits every module stays off."""
    m = load_model("mixtral-8x22b")
    s = load_system("dgx-h100", overrides={"cluster.gpus": "256"})
    p = load_plan("tp=1,pp=4,ep=8,micro_batch=1,global_batch=1024", m, s)
    assert p.values["recompute_norm_act"] is True and p.values["recompute_mla_up"] is False
    assert p.options["recompute_mla_up"]["policy"] == "fit"
    q = load_plan("tp=1,pp=1,ep=8,micro_batch=4,global_batch=1024", m,
                  load_system("dgx-h100", overrides={"cluster.gpus": "64"}))
    assert q.values["recompute_norm_act"] is False
    assert "with or without" in q.options["recompute_norm_act"]["note"]


def test_fit_modules_batch_path_equals_one_plan_at_a_time(h800):
    from cpo_opt.analysis.batch import resolve_tables
    m, s = h800
    tables = [{"tp": tp, "pp": pp, "ep": 64, "vpp": 1, "micro_batch": 1,
               "global_batch": 15360, "dtype": "fp8"} for tp in (1, 2) for pp in (2, 4, 8)]
    specs, reasons = resolve_tables(tables, m, s)
    assert any(sp.values["recompute_mla_up"] or sp.values["recompute_norm_act"]
               for sp in specs if sp is not None)
    for t, sp, why in zip(tables, specs, reasons):
        one = load_plan(dict(t), m, s)
        assert sp is not None, why
        assert sp.values == one.values and sp.options == one.options


def test_fit_is_a_value_of_the_recompute_modules_only():
    st = load_stack({"options": {"recompute_norm_act": {"value": "fit", "source": "x"}}})
    assert st.options["recompute_norm_act"] == "fit"
    with pytest.raises(InputError, match="true, false or 'fit'"):
        load_stack({"options": {"recompute_mla_up": "fitt"}})
    with pytest.raises(InputError, match="must be"):
        load_stack({"options": {"overlap_ep": "fit"}})


def test_a_search_holds_fit_modules_off():
    from cpo_opt.search.space import search_options
    _, fixed, _ = search_options(load_stack(DEFAULT_STACK))
    fixed = dict(fixed)
    assert fixed["recompute_norm_act"] == 0.0 and fixed["recompute_mla_up"] == 0.0


def test_evaluate_text_says_which_fit_modules_ran(capsys):
    code = main(["evaluate", "--model", "deepseek-v3", "--system", "h800-cluster", "--plan",
                 f"tp=1,pp=8,vpp=1,{H800_BASE}"])
    out = capsys.readouterr().out
    assert code == 0
    assert "recompute_mla_up on (stack policy 'fit'): the plan does not fit in HBM without it" \
        in out


def test_a_fit_plan_round_trips_through_its_plan_line(h800):
    from cpo_opt.inputs.loaders import plan_arg
    m, s = h800
    p = load_plan(f"tp=1,pp=8,vpp=1,{H800_BASE}", m, s)
    again = load_plan(plan_arg(p.values, m, s), m, s)
    assert again.values == p.values


# --------------------------------------------------------------------------- mechanisms
def _pair(m, s, plan, **change):
    base = load_plan(plan, m, s, stack="megatron-defaults")
    on = replace(base.plan, **change)
    return (step_time_jit(m.model, s.system, base.plan), step_time_jit(m.model, s.system, on))


def _same(a, b, *names):
    for n in names:
        x, y = a, b
        for part in n.split("."):
            x, y = getattr(x, part), getattr(y, part)
        assert float(x) == pytest.approx(float(y), rel=1e-12), n


PLAN = "tp=2,pp=4,vpp=2,ep=16,micro_batch=1,global_batch=1152,dtype=fp8,recompute=selective"


def test_cuda_graphs_change_only_the_host_time(dsv3):
    m, s = dsv3
    slow = replace(s.system, constants=replace(s.system.constants, host_launch_s=200e-6,
                                               host_sync_s=0.0))
    s2 = dataclasses.replace(s, system=slow)
    a, b = _pair(m, s2, PLAN, cuda_graphs=1.0)
    assert float(b.compute_detail.host) < float(a.compute_detail.host)
    _same(a, b, "compute_detail.gemm", "compute_detail.attention", "memory.total",
          "traffic.scale_up_bytes", "traffic.scale_out_bytes")


def test_the_dispatcher_changes_the_all_to_all_bytes_only(dsv3):
    m, s = dsv3
    a, b = _pair(m, s, PLAN, dispatcher=1.0)
    assert float(b.traffic.scale_up_bytes) != float(a.traffic.scale_up_bytes)
    _same(a, b, "compute_detail.gemm", "compute_detail.host", "memory.total",
          "breakdown.tp_comm", "breakdown.cp_comm")


def test_fp8_dispatch_halves_only_the_forward_dispatch_of_fp8_moe_plans(dsv3):
    """DeepSeek-V3 quantises before the dispatch (sec. 3.3.3); Megatron-Core's dispatchers
    send the bf16 hidden states (core_v0.19.0 moe/fused_a2a.py). Only the EP exchange moves,
    by less than a quarter of its bytes (one of its four legs halved); bf16 plans and dense
    models do not move at all."""
    m, s = dsv3
    a, b = _pair(m, s, PLAN, fp8_dispatch=1.0)
    assert float(b.breakdown.ep_comm) < float(a.breakdown.ep_comm)
    moved = float(a.traffic.scale_up_bytes + a.traffic.scale_out_bytes
                  - b.traffic.scale_up_bytes - b.traffic.scale_out_bytes)
    assert 0.0 < moved
    _same(a, b, "compute_detail.gemm", "compute_detail.host", "memory.total",
          "breakdown.tp_comm", "breakdown.dp_comm", "breakdown.pp_comm")
    for plan, model in ((PLAN.replace("dtype=fp8", "dtype=bf16"), m),
                        ("tp=8,pp=8,micro_batch=1,global_batch=1152,dtype=fp8",
                         load_model("llama3-405b"))):
        c, d = _pair(model, s, plan, fp8_dispatch=1.0)
        _same(c, d, "step_time_s", "breakdown.ep_comm", "traffic.scale_up_bytes",
              "traffic.scale_out_bytes")
    tuned = load_plan(PLAN, m, s)
    assert tuned.options["fp8_dispatch"]["value"] is False
    assert "fused_a2a.py" in load_stack(DEFAULT_STACK).sources["fp8_dispatch"]
    ds = load_plan(PLAN, m, s, stack="deepseek-v3-published")
    assert ds.options["fp8_dispatch"]["value"] is True and float(ds.plan.fp8_dispatch) == 1.0


def test_fp8_output_layer_moves_only_the_output_layers_gemms(dsv3):
    """Megatron-Core runs the output layer as its own ``ColumnParallelLinear`` (bf16 under
    fp8) unless ``--fp8-output-proj`` (core_v0.19.0 gpt_model.py, MXFP8 only). Turning it on
    shortens only GEMM time, by less than the head's whole bf16 time (its FLOPs at the
    bf16 rate: ``3 x 2 T h V / tp`` per micro-batch on the last stage), in MoE and dense
    fp8 plans alike; bf16 plans do not move; the shipped stacks keep it off."""
    m, s = dsv3
    llama = load_model("llama3-405b")
    for model, plan in ((m, PLAN), (llama, "tp=8,pp=8,micro_batch=1,global_batch=1152,dtype=fp8")):
        a, b = _pair(model, s, plan, fp8_output_layer=1.0)
        saved = float(a.compute_detail.gemm - b.compute_detail.gemm)
        assert saved > 0.0
        _same(a, b, "memory.total", "breakdown.ep_comm", "breakdown.tp_comm",
              "breakdown.dp_comm", "breakdown.pp_comm", "traffic.scale_up_bytes",
              "traffic.scale_out_bytes")
        # bounds from the head's FLOPs alone (the last stage's micro-batches): at least half
        # the ideal saving of fp8's doubled peak, at most its time at 30% of the bf16 peak
        p = load_plan(plan, model, s).plan
        mv, sv = model.values["model"], s.values["gpu"]
        dp = s.values["cluster"]["gpus"] / float(p.tp * p.pp * p.cp)
        micro = float(p.global_batch) / (float(p.micro_batch) * dp)
        flops = micro * 3 * 2 * float(p.micro_batch) * mv["seq_len"] / float(p.cp) \
            * mv["hidden"] * mv["vocab"] / float(p.tp)
        bf16, fp8 = sv["matmul_tflops_bf16"] * 1e12, sv["matmul_tflops_fp8"] * 1e12
        assert 0.5 * (flops / bf16 - flops / fp8) < saved < flops / (0.3 * bf16), model
        c, d = _pair(model, s, plan.replace("dtype=fp8", "dtype=bf16"), fp8_output_layer=1.0)
        _same(c, d, "step_time_s", "compute_detail.gemm")
    for name in ("megatron-defaults", DEFAULT_STACK, "deepseek-v3-published"):
        assert load_stack(name).options["fp8_output_layer"] is False


QWEN_H100 = "tp=2,pp=8,vpp=4,ep=32,micro_batch=1,global_batch=2048,dtype=fp8"


def test_current_scaling_runs_three_kernels_per_quantisation():
    """Per-tensor current scaling (``fp8_recipe = "tensorwise"``): Transformer Engine's
    ``Float8CurrentScalingQuantizer::quantize_impl`` runs amax, scale and cast for each
    tensor, where delayed, blockwise and MXFP8 scaling run the cast alone. Counted on
    Megatron-Core's MoE layer (GQA attention: the QKV and output projections; the experts:
    one quantiser per local expert for FC1 and for FC2, 128 / 32 = 4 local experts), the
    forward issues 2 x (2 + 2 x 4) = 20 more kernels; only compute moves, and only in fp8."""
    from cpo_opt.model import layer_costs
    m = load_model("qwen3-235b-a22b")
    s = load_system("dgx-h100", overrides={"cluster.gpus": "256"})
    auto = load_plan(QWEN_H100, m, s).plan
    cur = load_plan(QWEN_H100 + ",fp8_recipe=tensorwise", m, s).plan
    (_, _), (moe_a, _) = layer_costs.host_kernels(m.model, auto)
    (_, _), (moe_c, _) = layer_costs.host_kernels(m.model, cur)
    assert float(moe_c) - float(moe_a) == pytest.approx(2 * (2 + 2 * 4))
    # without overlaps (the plain stack), so that no exposed communication hides behind
    # the longer compute
    a, b = (step_time_jit(m.model, s.system, load_plan(QWEN_H100 + x, m, s,
                                                       stack="megatron-defaults").plan)
            for x in (",fp8_recipe=auto", ",fp8_recipe=tensorwise"))
    assert float(b.compute_detail.gemm) > float(a.compute_detail.gemm)
    _same(a, b, "memory.total", "breakdown.ep_comm", "breakdown.tp_comm", "breakdown.dp_comm",
          "breakdown.pp_comm", "traffic.scale_up_bytes", "traffic.scale_out_bytes")
    for other in ("delayed", "blockwise", "mxfp8"):
        o = step_time_jit(m.model, s.system, load_plan(QWEN_H100 + f",fp8_recipe={other}",
                                                       m, s, stack="megatron-defaults").plan)
        _same(a, o, "step_time_s")
    bf = QWEN_H100.replace("dtype=fp8", "dtype=bf16")
    c, d = (step_time_jit(m.model, s.system, load_plan(bf + x, m, s).plan)
            for x in ("", ",fp8_recipe=tensorwise"))
    _same(c, d, "step_time_s")
    assert load_stack(DEFAULT_STACK).options["fp8_recipe"] == "auto"
    assert load_stack("deepseek-v3-published").options["fp8_recipe"] == "blockwise"


@pytest.mark.parametrize("plan,stack,key", [
    (QWEN_H100 + ",fp8_recipe=current", DEFAULT_STACK, "plan.fp8_recipe"),
    # core_v0.19.0 TransformerConfig: "Delayed scaling does not support moe_act and
    # layernorm recompute for fp8"
    (QWEN_H100 + ",fp8_recipe=delayed,recompute_norm_act=true", DEFAULT_STACK,
     "plan.recompute_norm_act"),
])
def test_fp8_recipe_bad_input_exits_2_with_one_line(capsys, plan, stack, key):
    code = main(["evaluate", "--model", "qwen3-235b-a22b", "--system", "dgx-h100",
                 "--set", "cluster.gpus=256", "--plan", plan, "--stack", stack])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and key in err[0]
    assert main(["evaluate", "--model", "qwen3-235b-a22b", "--system", "dgx-h100",
                 "--set", "cluster.gpus=256", "--plan",
                 QWEN_H100 + ",fp8_recipe=tensorwise,recompute_norm_act=true"]) == 0


def test_the_router_gemm_runs_in_bf16_in_fp8_plans(dsv3):
    """Megatron-Core's router is a PyTorch linear (``TopKRouter``), outside Transformer
    Engine's fp8: the simulator's router task is the same in an fp8 plan as in bf16."""
    from cpo_opt.sim.costs import costs
    m, s = dsv3
    fp8 = load_plan(PLAN, m, s).plan
    bf16 = load_plan(PLAN.replace("dtype=fp8", "dtype=bf16"), m, s).plan
    a, b = costs(m.model, s.system, fp8)[0].router, costs(m.model, s.system, bf16)[0].router
    assert a == b and a.fwd > 0.0


def test_ep_overlap_hides_the_all_to_all_and_moves_no_byte(dsv3):
    m, s = dsv3
    a, b = _pair(m, s, PLAN, overlap_ep=1.0)
    assert float(b.breakdown.ep_comm) < float(a.breakdown.ep_comm)
    _same(a, b, "compute_detail.gemm", "memory.total", "traffic.scale_up_bytes",
          "traffic.scale_out_bytes", "breakdown.tp_comm")


def test_the_ddp_bucket_changes_only_the_exposed_dp_traffic(dsv3):
    """Megatron-Core ``--ddp-bucket-size``: with a bucket holding a rank's whole gradient the
    reduction waits for the end of the backward, so more DP time shows, in the closed form
    as in the simulator (which buckets layer by layer, independently); nothing else moves.
    The tuned stack carries Megatron-Bridge's 128 Mi parameters, the plain one 0 (Megatron-
    Core's own rule) and the plan line says it."""
    from cpo_opt.sim import simulate

    m, s = dsv3
    plan = "tp=2,ep=16,micro_batch=1,global_batch=576,dtype=fp8"
    a, b = _pair(m, s, plan, ddp_bucket=4e7)
    base = load_plan(plan, m, s, stack="megatron-defaults")
    c = step_time_jit(m.model, s.system, replace(base.plan, ddp_bucket=1e15))
    assert float(b.breakdown.dp_comm) < float(c.breakdown.dp_comm)
    _same(b, c, "compute_detail.gemm", "compute_detail.host", "memory.total",
          "breakdown.ep_comm", "breakdown.tp_comm", "traffic.scale_up_bytes")
    sim_small = simulate(m.model, s.system, replace(base.plan, ddp_bucket=4e7))
    sim_one = simulate(m.model, s.system, replace(base.plan, ddp_bucket=1e15))
    assert sim_small.step_time_s < sim_one.step_time_s
    assert float(base.plan.ddp_bucket) == 0.0
    tuned = load_plan(plan, m, s)
    assert float(tuned.plan.ddp_bucket) == 128 * 1024 * 1024
    assert tuned.options["ddp_bucket"]["from"] == "stack"


def test_low_precision_storage_trades_activation_memory_for_recompute(dsv3):
    m, s = dsv3
    a, b = _pair(m, s, PLAN, low_precision_storage=1.0)
    assert float(b.memory.activations) < float(a.memory.activations)
    assert float(b.compute_detail.recompute) > float(a.compute_detail.recompute)
    _same(a, b, "compute_detail.gemm", "traffic.scale_up_bytes", "breakdown.ep_comm")


def test_the_balanced_layout_moves_layers_off_the_last_stage(dsv3):
    m, s = dsv3
    a, b = _pair(m, s, PLAN, layout_balanced=1.0)
    # 61 layers over 8 virtual stages: even 8 per stage; balanced: the embedding and the
    # output layer count as layers, so the first and last stages hold fewer
    assert float(a.first_stage_layers) == float(a.last_stage_layers) == 8.0
    assert float(b.last_stage_layers) < 8.0 and float(b.first_stage_layers) <= 8.0
    assert float(b.step_time_s) < float(a.step_time_s)
    _same(a, b, "flops_per_token", "tokens_per_step")


def test_explicit_first_and_last_stage_layers(dsv3):
    m, s = dsv3
    p = load_plan(PLAN + ",first_stage_layers=4,last_stage_layers=3", m, s)
    r = step_time_jit(m.model, s.system, p.plan)
    assert (float(r.first_stage_layers), float(r.last_stage_layers)) == (4.0, 3.0)
    assert float(r.middle_stage_layers) == 9.0  # (61 - 7) / 6 middle stages
    with pytest.raises(InputError, match="fewer than one layer"):
        load_plan(PLAN + ",first_stage_layers=40,last_stage_layers=20", m, s)


N = 300


@pytest.mark.parametrize("option", sorted(DOMINANT))
def test_dominant_options_are_never_slower_and_hold_no_more_memory(dsv3, option):
    """search.space.DOMINANT's claim within DOMINANCE_TOLERANCE, on random plans of
    DeepSeek-V3 (fp8, 1152 GB200, three times the shipped host launch time)."""
    m, s = dsv3
    cols = lattice.enumerate_plans(m.values, s.values, 4608, options={"placement": (0, 1)})
    idx = np.random.default_rng(1).choice(len(cols["tp"]), N, replace=False)
    sub = {k: v[idx] for k, v in cols.items()}
    plan = lattice.to_plan(sub, 1, 1, fixed={"dispatcher": 1.0})
    slow = replace(s.system, constants=replace(s.system.constants, host_launch_s=30e-6))
    f = jax.jit(jax.vmap(lambda pl: step_time(m.model, slow, pl)))
    off = f(replace(plan, **{option: np.zeros(N)}))
    on = f(replace(plan, **{option: np.ones(N)}))
    tol = DOMINANCE_TOLERANCE[option] + 1e-12
    assert np.all(np.asarray(on.step_time_s) <= np.asarray(off.step_time_s) * (1 + tol))
    assert np.all(np.asarray(on.memory.total) <= np.asarray(off.memory.total) * (1 + 1e-12))


# --------------------------------------------------------------------------- search
def test_exhaustive_enumerates_options_only_where_they_apply():
    m, s = load_model("mixtral-8x22b"), load_system("dgx-h100", overrides={"cluster.gpus": "64"})
    space = make_space(m, s, 256, "fp8")
    assert set(space.options) >= {"dispatcher", "pipeline_layout"}
    cols = lattice.enumerate_plans(m.values, s.values, 256, options=space.options, fp8=1)
    rows = {tuple(int(cols[k][i]) for k in cols) for i in range(len(cols["tp"]))}
    assert len(rows) == len(cols["tp"])  # no two rows alike
    ep1 = cols["ep"] == 1
    assert not np.any(cols["dispatcher"][ep1] == 1)       # deepep needs expert parallelism
    assert not np.any(cols["pipeline_layout"][cols["pp"] == 1] == 1)


def test_gradient_search_finds_the_exhaustive_optimum_of_the_enlarged_space():
    m, s = load_model("mixtral-8x22b"), load_system("dgx-h100", overrides={"cluster.gpus": "64"})
    space = make_space(m, s, 256, "fp8")
    truth = exhaustive_search(space)
    found = gradient_search(space, starts=8, steps=40)
    assert found.step_time_s <= truth.step_time_s * (1 + 1e-9)
    assert found.step_time_s >= truth.step_time_s * (1 - 1e-9)  # the truth is the minimum


def test_optimize_reports_what_the_search_chose_and_the_plan_round_trips(capsys):
    code = main(["optimize", "--model", "mixtral-8x22b", "--system", "dgx-h100",
                 "--set", "cluster.gpus=64", "--global-batch", "256", "--dtype", "fp8",
                 "--exhaustive", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    opts = out["result"]["stack"]["options"]
    assert {k for k, v in opts.items() if v["from"] == "search"} >= {"dispatcher"}
    assert "global_batch=256" in out["plan_arg"]
    code = main(["evaluate", "--model", "mixtral-8x22b", "--system", "dgx-h100",
                 "--set", "cluster.gpus=64", "--plan", out["plan_arg"], "--json"])
    again = json.loads(capsys.readouterr().out)
    assert again["step_time_s"] == pytest.approx(out["step_time_s"], rel=1e-12)
    assert again["placement"]["working_gpus"] + again["placement"]["idle_gpus"] == 64


def test_evaluate_json_names_stack_placement_and_memory_rank(capsys):
    code = main(["evaluate", "--model", "deepseek-v3", "--system", "gb200-nvl72",
                 "--plan", "tp=1,pp=8,ep=64,dtype=fp8", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["stack"]["name"] == DEFAULT_STACK
    assert {"value", "from"} <= set(out["stack"]["options"]["dispatcher"])
    pl = out["placement"]
    assert pl["mode"] in ("aligned", "contiguous") and pl["why"]
    assert pl["working_gpus"] + pl["idle_gpus"] == out["gpus"]
    assert out["memory_rank"].startswith("rank ")


@pytest.mark.slow
def test_optimize_beats_deepseeks_published_plan_on_its_own_stack(capsys):
    """Issue 20: on 2048 H800 at DeepSeek-V3's published batch, searching the published stack's
    options finds a plan at least as fast as the published one (which fits in memory)."""
    args = ["--model", "deepseek-v3", "--system", "h800-cluster", "--stack",
            "deepseek-v3-published", "--json"]
    assert main(["evaluate", "--plan", "deepseek-v3-2048"] + args) == 0
    published = json.loads(capsys.readouterr().out)
    assert published["fits_memory"]
    assert main(["optimize", "--global-batch", "15360", "--dtype", "fp8"] + args) == 0
    best = json.loads(capsys.readouterr().out)
    assert best["step_time_s"] <= published["step_time_s"]


def test_recipe_words_map_to_plan_options_every_case_accepts(experiment):
    """``experiments/recipe_options.py`` reads the recipe a published row quotes: each phrase
    maps to its plan option, and every mapped plan of ``moe-published.toml`` is a valid plan
    of its case (the options exist, take those values and pass the plan rules)."""
    import tomllib
    from cpo_opt.inputs.loaders import load_model, load_system, plan_from_values
    ro = experiment("recipe_options")
    opts, unmapped, _ = ro.recipe_options(
        "x. Not in the plan (recipe, not the table): R_V1 (degrees match the row): HybridEP, "
        "no CUDA graphs, recompute mla_up_proj + mlp, EP all-to-all overlap off, TP comm "
        "overlap off. System: y")
    assert opts == {"dispatcher": "deepep", "cuda_graphs": False, "overlap_ep": False,
                    "overlap_tp": False, "recompute_mla_up": True}
    assert unmapped == ["recompute mlp"]
    opts, _, _ = ro.recipe_options("Not in the plan (recipe, not the table): R: alltoall "
                                   "dispatcher, CUDA graphs (attn), no recompute, EP overlap on.")
    assert opts == {"dispatcher": "alltoall", "cuda_graphs": True, "overlap_ep": True,
                    "recompute": "none"}
    assert ro.recipe_options("no recipe quoted") is None
    doc = tomllib.loads(ro.DATA.read_text())
    mapped = 0
    for case in doc["case"]:
        rec = ro.recipe_options(case["source"])
        if rec is None:
            continue
        m = load_model(case["model"])
        s = load_system(case["system"], overrides={k: str(v) for k, v in
                                                   ro.dotted(case.get("overrides") or {}).items()})
        p = plan_from_values({**case["plan"], **rec[0]}, m, s, case["id"])
        for k, v in rec[0].items():
            assert p.values[k] == v, (case["id"], k)
        mapped += 1
    assert mapped == 20
