"""Rules that tie a plan to its model and system, and the plan defaults that depend on them.

Inputs are resolved file-unit tables (:func:`cpo_opt.inputs.tables.resolve_table`); every broken rule
raises :class:`~cpo_opt.inputs.sources.InputError` naming the plan key and the rule, for instance
``plan.tp: tp*cp*pp = 48 must divide cluster.gpus = 2048``.
"""

from __future__ import annotations

import math

from cpo_opt.inputs import schema
from cpo_opt.inputs.tables import error


def resolve_plan(plan: dict, model: dict, system: dict, where: str) -> dict:
    """Check ``plan`` against ``model`` and ``system`` (``.values`` of the specs).

    Returns the resolved plan in schema order with ``dp`` (after ``pp``) and ``edp`` (after
    ``etp``) inserted, ``global_batch`` defaulted and ``attention = "auto"`` resolved.
    """
    m, moe = model["model"], model.get("model.moe")
    plan = dict(plan)
    dp = _data_parallel(plan, system["cluster"]["gpus"], where)
    _check_tensor(plan, m, moe, where)
    edp = _check_experts(plan, moe, dp, where)
    _check_sequence(plan, m, where)
    _check_pipeline(plan, m, where)
    plan["global_batch"] = _global_batch(plan, m["seq_len"], dp, system["cluster"]["gpus"], where)
    _check_schedule(plan, dp, where)
    if plan.get("low_precision_storage") and plan["dtype"] != "fp8":
        raise error(where, "plan.low_precision_storage", "needs dtype = 'fp8' (fp8 and "
                    "12-bit activation caches of fp8 training)", True)
    if plan["dtype"] == "fp8" and "matmul_tflops_fp8" not in system["gpu"]:
        raise error(where, "plan.dtype", "'fp8' needs gpu.matmul_tflops_fp8 in the system",
                    "fp8")
    if "attention" in plan:
        plan["attention"] = _attention(plan["attention"], system["gpu"])
    derived = {"pp": ("dp", dp), "etp": ("edp", edp)}
    resolved = {}
    for key in schema.PLAN_KEYS:
        resolved[key.name] = plan[key.name]
        if key.name in derived:
            name, value = derived[key.name]
            resolved[name] = value
    return resolved


def _attention(name: str, gpu: dict) -> str:
    """The attention kernel with ``"auto"`` resolved against the GPU (schema.resolve_attention)."""
    code = schema.resolve_attention(schema.ATTENTION[name], gpu["matmul_tflops_bf16"],
                                    "matmul_tflops_fp8" in gpu)
    return next(choice for choice, c in schema.ATTENTION.items() if c == code)


def _data_parallel(plan: dict, gpus: int, where: str) -> int:
    grid = plan["tp"] * plan["cp"] * plan["pp"]
    if gpus % grid:
        raise error(where, "plan.tp", f"tp*cp*pp = {grid} must divide cluster.gpus = {gpus}")
    return gpus // grid


def _check_divides(where: str, key: str, value: int, target: str, size: int) -> None:
    if size % value:
        raise error(where, key, f"must divide {target} = {size}", value)


def _check_tensor(plan: dict, m: dict, moe: dict | None, where: str) -> None:
    tp = plan["tp"]
    _check_divides(where, "plan.tp", tp, "model.heads", m["heads"])
    _check_divides(where, "plan.tp", tp, "model.kv_heads", m["kv_heads"])
    if moe is None or moe["dense_layers"] > 0:
        _check_divides(where, "plan.tp", tp, "model.ffn_hidden", m["ffn_hidden"])


def _check_experts(plan: dict, moe: dict | None, dp: int, where: str) -> int:
    """EP/ETP rules; returns the expert data-parallel degree ``edp``."""
    ep, etp = plan["ep"], plan["etp"]
    if moe is None:
        for name in ("ep", "etp"):
            if plan[name] > 1:
                raise error(where, f"plan.{name}",
                            f"{name} > 1 needs a mixture-of-experts model ([model.moe])",
                            plan[name])
        return plan["tp"] * plan["cp"] * dp
    _check_divides(where, "plan.ep", ep, "model.moe.experts", moe["experts"])
    dense_group = plan["tp"] * plan["cp"] * dp
    if dense_group % (etp * ep):
        raise error(where, "plan.ep", f"etp*ep = {etp * ep} must divide tp*cp*dp = "
                    f"{dense_group} (MoE layers regroup the same GPUs)")
    _check_divides(where, "plan.etp", etp, "model.moe.expert_ffn_hidden",
                   moe["expert_ffn_hidden"])
    return dense_group // (etp * ep)


def _check_sequence(plan: dict, m: dict, where: str) -> None:
    _check_divides(where, "plan.cp", plan["cp"], "model.seq_len", m["seq_len"])
    if plan["sequence_parallel"] and plan["tp"] > 1:
        local = m["seq_len"] // plan["cp"]
        if local % plan["tp"]:
            raise error(where, "plan.tp", f"must divide model.seq_len / cp = {local} with "
                        "sequence_parallel", plan["tp"])


def _check_pipeline(plan: dict, m: dict, where: str) -> None:
    if plan["vpp"] > 1 and plan["pp"] == 1:
        raise error(where, "plan.vpp", "vpp > 1 needs pp > 1", plan["vpp"])
    stages = plan["pp"] * plan["vpp"]
    if stages > m["layers"]:
        raise error(where, "plan.pp", f"pp*vpp = {stages} must be <= model.layers = "
                    f"{m['layers']}")


def _check_schedule(plan: dict, dp: int, where: str) -> None:
    """DualPipe's own requirements (deepseek-ai/DualPipe ``DualPipe.step``): an even number of
    ranks, two stages per rank and no further interleaving, and an even number of
    micro-batches, at least twice the ranks."""
    if plan.get("schedule", "1f1b") != "dualpipe":
        return
    pp, vpp = plan["pp"], plan["vpp"]
    if pp < 2 or pp % 2:
        raise error(where, "plan.pp", "schedule 'dualpipe' needs an even pp >= 2", pp)
    if vpp != 1:
        raise error(where, "plan.vpp", "schedule 'dualpipe' holds two stages per rank by "
                    "itself: vpp must be 1", vpp)
    m = plan["global_batch"] // (plan["micro_batch"] * dp)
    if m < 2 * pp or m % 2:
        raise error(where, "plan.global_batch", f"schedule 'dualpipe' needs an even number of "
                    f"micro-batches >= 2 pp = {2 * pp}; global_batch / (micro_batch*dp) = {m}",
                    plan["global_batch"])


def _global_batch(plan: dict, seq_len: int, dp: int, gpus: int, where: str) -> int:
    """The given global batch, checked, or the default (:func:`schema.default_global_batch`)."""
    unit = plan["micro_batch"] * dp
    if "global_batch" not in plan:
        return schema.default_global_batch(gpus, seq_len, unit)
    if plan["global_batch"] % unit:
        raise error(where, "plan.global_batch", f"must be a multiple of micro_batch*dp = "
                    f"{plan['micro_batch']}*{dp} = {unit}", plan["global_batch"])
    return plan["global_batch"]
