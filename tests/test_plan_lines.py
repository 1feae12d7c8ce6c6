"""Printed plans round-trip and run: every plan line pastes back into ``--plan`` as the same
plan (same resolved values, same step time), ``global_batch`` included; ``--format megatron``
on ``optimize`` parses under the replica of Megatron-Core core_v0.19.0's argument parser
(tests/test_megatron_export.py), breaks none of its rules, and the plan read back from the
parsed arguments alone (plus the keys the export names as unmapped) re-evaluates to
``optimize``'s step time."""

import contextlib
import io
import json
import math
import re
import shlex

import pytest

import cpo_opt
from cpo_opt.analysis.megatron import stage_list
from cpo_opt.analysis.plan_text import plan_line
from cpo_opt.cli.main import main
from cpo_opt.inputs.loaders import parse_inline_plan
from test_megatron_export import megatron_rules, megatron_stage_counts, parse

RTOL = 1e-12


def run(*argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def _same_plan(a: dict, b: dict) -> None:
    assert a == b, {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}


@pytest.mark.parametrize("model,system,choices", [
    ("deepseek-v3", "gb200-nvl72", dict(tp=[1, 2], pp=[4, 8], ep=[16, 64], vpp=[1, 2],
                                        dtype="fp8")),
    ("megatron-1t", "dgx-a100-selene", dict(tp=[4, 8], pp=[8, 16], vpp=[1, 4],
                                            sequence_parallel=[True, False])),
])
def test_evaluate_plan_lines_paste_back_as_the_same_plan(model, system, choices):
    b = cpo_opt.plans.grid(model, system, **choices)
    r = cpo_opt.evaluate_batch(plans=b)
    for i in range(len(b)):
        d = r[i].to_dict()
        line = plan_line(d["plan"], d["stack"]["options"])
        assert f"global_batch={d['plan']['global_batch']}" in line
        again = cpo_opt.evaluate(model, system, line)
        _same_plan(again.to_dict()["plan"], d["plan"])
        assert math.isclose(again.step_time_s, d["step_time_s"], rel_tol=RTOL)


def test_the_text_table_plan_line_pastes_back():
    argv = ["--model", "deepseek-v3", "--system", "gb200-nvl72", "--plan",
            "tp=2,pp=4,ep=32,dtype=fp8,dispatcher=alltoall,micro_batch=2"]
    text = run("evaluate", *argv)
    line = next(ln for ln in text.splitlines() if ln.startswith("plan  "))[6:]
    assert "dispatcher=alltoall" in line and "global_batch=" in line
    a = json.loads(run("evaluate", "--json", *argv))
    b = json.loads(run("evaluate", "--json", "--model", "deepseek-v3", "--system",
                       "gb200-nvl72", "--plan", line))
    _same_plan(a["plan"], b["plan"])
    assert a["step_time_s"] == b["step_time_s"]


def test_a_study_plan_carries_its_batch():
    """The issue's failure: a study plan pasted into evaluate ran at the command's default
    batch. The study's plan line names its own batch and reproduces its step time."""
    from cpo_opt.study.optimum import best_plan
    m, s = cpo_opt.load_model("megatron-1t"), cpo_opt.load_system("dgx-a100-selene")
    opt = best_plan(m, s, 1536, "bf16", 1e12, starts=1, steps=1, exhaustive_max=10**7,
                    gradient=False)
    assert "global_batch=1536" in opt["plan_line"]
    again = cpo_opt.evaluate(m, s, opt["plan_line"])
    assert math.isclose(again.step_time_s, opt["step_time_s"], rel_tol=RTOL)
    from cpo_opt.study.outputs import plan_text
    assert plan_text(opt) == opt["plan_line"]


# ------------------------------------------------------------------------------------------
# --format megatron: parse, Megatron's rules, and the plan read back from the arguments
# ------------------------------------------------------------------------------------------

def megatron_lines(text: str) -> tuple[list[str], list[str]]:
    """(arguments, unmapped lines) of ``--format megatron`` output."""
    body = [ln for ln in text.splitlines() if not ln.startswith("#")]
    args = shlex.split(" ".join(ln.rstrip("\\").strip() for ln in body))
    unmapped = [ln[4:] for ln in text.splitlines() if ln.startswith("#   ")]
    return args, unmapped


def plan_from_megatron(ns, counts: list[int], unmapped: list[str], attention: str) -> dict:
    """A plan table from parsed Megatron arguments (the meaning of each flag at
    core_v0.19.0), with the stage split as explicit first/last layers, plus the keys the
    export names as unmapped (``key = value: why``)."""
    S = len(counts)
    vpp = S // ns.pipeline_model_parallel_size
    modules = ns.recompute_modules or []
    zero = 0
    if ns.use_megatron_fsdp:
        zero = 2 if ns.data_parallel_sharding_strategy == "optim_grads" else 3
    elif ns.use_distributed_optimizer:
        zero = 1
    plan = {
        "tp": ns.tensor_model_parallel_size, "pp": ns.pipeline_model_parallel_size,
        "cp": ns.context_parallel_size, "ep": ns.expert_model_parallel_size,
        "etp": ns.expert_tensor_parallel_size or 1, "vpp": vpp,
        "micro_batch": ns.micro_batch_size, "global_batch": ns.global_batch_size,
        "sequence_parallel": ns.sequence_parallel,
        "recompute": ("full" if ns.recompute_granularity == "full" else
                      "selective" if "core_attn" in modules or attention == "flash"
                      else "none"),
        "recompute_norm_act": "layernorm" in modules,
        "recompute_mla_up": "mla_up_proj" in modules,
        "zero": zero, "dtype": "fp8" if ns.fp8 else "bf16",
        "attention": "unfused" if ns.attention_backend == "unfused" else attention,
        "overlap_tp": ns.tp_comm_overlap, "overlap_dp": ns.overlap_grad_reduce,
        "overlap_p2p": vpp > 1 and ns.overlap_p2p_comm,
        "overlap_ep": ns.overlap_moe_expert_parallel_comm,
        "dispatcher": "deepep" if ns.moe_token_dispatcher_type == "flex" else "alltoall",
        "cuda_graphs": ns.cuda_graph_impl == "transformer_engine",
        "bf16_moments": ns.exp_avg_dtype == "bf16",
        "bf16_main_grads": ns.main_grads_dtype == "bf16",
        "fp8_param_gather": bool(ns.fp8) and ns.fp8_param_gather,
        "offload_optimizer": ns.optimizer_cpu_offload,
        "offload_expert_act": ns.fine_grained_activation_offloading,
        "perfect_balance": ns.moe_router_force_load_balancing,
    }
    if S > 1:
        plan["first_stage_layers"], plan["last_stage_layers"] = counts[0], counts[-1]
    for u in unmapped:
        m = re.match(r"(\w+) = (\S+):", u)
        if m and m.group(1) != "pipeline_layout":
            plan.update(parse_inline_plan(f"{m.group(1)}={m.group(2)}"))
    return plan


OPTIMIZE = {
    "dense": ["--model", "megatron-1t", "--system", "dgx-a100-selene"],
    "moe": ["--model", "mixtral-8x22b", "--system", "dgx-h100"],
}


@pytest.mark.parametrize("case", sorted(OPTIMIZE))
def test_optimize_format_megatron_parses_and_re_evaluates_to_the_same_step_time(case):
    argv = OPTIMIZE[case]
    res = json.loads(run("optimize", "--json", *argv))
    text = run("optimize", "--format", "megatron", *argv)
    args, unmapped = megatron_lines(text)
    assert args == res["plan_megatron"] and unmapped == res["plan_megatron_unmapped"]
    model = cpo_opt.load_model(argv[1])
    ns = parse(args)
    best = res["result"]
    world = best["placement"]["working_gpus"]
    moe = model.values.get("model.moe")
    bad, vpp = megatron_rules(ns, world, experts=int(moe["experts"]) if moe else None,
                              mla=bool(model.values.get("model.mla")))
    assert not bad, bad
    counts = megatron_stage_counts(ns, vpp)
    assert counts == stage_list(best["pipeline"], model.values["model"]["layers"])
    back = plan_from_megatron(ns, counts, unmapped, best["plan"]["attention"])
    again = cpo_opt.evaluate(argv[1], argv[3], back)
    assert math.isclose(again.step_time_s, res["step_time_s"], rel_tol=RTOL), (
        back, res["plan_arg"])


@pytest.mark.parametrize("layers,pipe,expect", [
    (61, dict(virtual_stages=8, first_stage_layers=7, middle_stage_layers=8,
              last_stage_layers=7), [7, 8, 8, 8, 8, 8, 7, 7]),
    (61, dict(virtual_stages=8, first_stage_layers=8, middle_stage_layers=8,
              last_stage_layers=8), [8, 8, 8, 8, 7, 7, 7, 8]),
    (96, dict(virtual_stages=16, first_stage_layers=6, middle_stage_layers=6,
              last_stage_layers=6), [6] * 16),
    (61, dict(virtual_stages=2, first_stage_layers=31, middle_stage_layers=0,
              last_stage_layers=30), [31, 30]),
])
def test_stage_list_sums_to_the_layers_with_the_model_s_stage_sizes(layers, pipe, expect):
    counts = stage_list(pipe, layers)
    assert counts == expect and sum(counts) == layers


@pytest.mark.parametrize("plan", ["tp=1,pp=8,ep=64,dtype=fp8",
                                  "tp=1,pp=4,vpp=2,ep=64,dtype=fp8,pipeline_layout=even",
                                  "tp=1,pp=16,ep=32,dtype=fp8,first_stage_layers=2"])
def test_the_exported_split_re_evaluates_to_the_same_step_time(plan):
    """DeepSeek-V3's 61 layers never split evenly: the exported per-stage layout, read back
    as first/last stage layers, is the split the model ran."""
    r = cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", plan)
    ns = parse(r["plan_megatron"])
    counts = megatron_stage_counts(ns, ns.num_virtual_stages_per_pipeline_rank)
    assert sum(counts) == 61 and len(counts) == r["pipeline"]["virtual_stages"]
    table = parse_inline_plan(plan_line(r["plan"], r["stack"]["options"]))
    table.update(first_stage_layers=counts[0], last_stage_layers=counts[-1])
    again = cpo_opt.evaluate("deepseek-v3", "gb200-nvl72", table)
    assert math.isclose(again.step_time_s, r.step_time_s, rel_tol=RTOL)
