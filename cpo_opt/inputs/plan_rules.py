"""Rules that tie a plan to its model and system, and the plan defaults that depend on them.

Inputs are resolved file-unit tables (:func:`cpo_opt.inputs.tables.resolve_table`); every broken rule
raises :class:`~cpo_opt.inputs.sources.InputError` naming the plan key and the rule, for instance
``plan.tp: tp*cp*pp = 48 must divide cluster.gpus = 2048``.
"""

from __future__ import annotations

import functools
import types

from cpo_opt.inputs import schema
from cpo_opt.inputs.tables import error
from cpo_opt.model import fabric


def working_gpus(plan: dict, system: dict) -> int:
    """GPUs the plan's placement works (:func:`cpo_opt.model.fabric.fill`, the model's own
    rule, on host numbers): all of them when contiguous; whole units of ``max(tp cp, etp ep)``
    per domain when aligned."""
    gpus = int(system["cluster"]["gpus"])
    if plan.get("placement", "contiguous") != "aligned":
        return gpus
    return _aligned_working(float(gpus), float(system["scale_up"]["domain_size"]),
                            *(float(plan[k]) for k in ("tp", "cp", "ep", "etp")))


@functools.lru_cache(maxsize=4096)
def _aligned_working(gpus: float, domain: float, tp: float, cp: float, ep: float,
                     etp: float) -> int:
    """:func:`working_gpus` of an aligned plan, kept per (cluster, domain, unit degrees): the
    plan checks of a batch ask for the same few hundred combinations thousands of times."""
    sys_ = types.SimpleNamespace(gpus=gpus, scale_up=types.SimpleNamespace(domain_size=domain))
    p = types.SimpleNamespace(tp=tp, cp=cp, ep=ep, etp=etp, placement=1.0)
    return int(round(float(fabric.fill(sys_, p).world)))


def applies(key: str, plan: dict, model: dict, dp: int) -> str | None:
    """Why a software option's value does not apply to this plan (None when it does). A stack
    default that does not apply leaves the plan's default (off); a plan that sets it anyway
    breaks a rule only where the software refuses it (:func:`resolve_plan`)."""
    moe = model.get("model.moe")
    value = plan.get(key)
    if key == "schedule" and value == "dualpipe":
        m = _microbatches(plan, dp)
        if plan["pp"] < 2 or plan["pp"] % 2 or plan["vpp"] != 1 or m < 2 * plan["pp"] or m % 2:
            return ("DualPipe needs an even pp >= 2, vpp 1 and an even number of "
                    "micro-batches >= 2 pp")
    elif key == "low_precision_storage" and value and plan["dtype"] != "fp8":
        return "low-precision activation storage is part of fp8 training"
    elif key in ("overlap_ep", "dispatcher") and value not in (False, "alltoall"):
        if moe is None or plan["ep"] < 2:
            return "no expert parallelism"
        if key == "overlap_ep" and plan["pp"] > 1 and plan["vpp"] < 2 \
                and plan.get("schedule") != "dualpipe":
            return ("Megatron-Core's EP all-to-all overlap needs interleaving (vpp > 1) "
                    "when pp > 1")
    elif key == "overlap_tp" and value and plan["tp"] < 2:
        return "no tensor parallelism"
    elif key == "recompute_mla_up" and value and "model.mla" not in model:
        return "no MLA up-projections"
    elif key == "pipeline_layout" and value == "balanced" and plan["pp"] * plan["vpp"] < 2:
        return "one pipeline stage"
    return None


def resolve_plan(plan: dict, model: dict, system: dict, where: str,
                 from_stack: dict | None = None) -> dict:
    """Check ``plan`` against ``model`` and ``system`` (``.values`` of the specs).

    ``from_stack``: ``{key: schema default}`` of the software options the stack (not the plan)
    set; where such a value does not apply (:func:`applies`) the default comes back and
    ``notes[key]`` says why.

    Returns the resolved plan in schema order with ``dp`` (after ``pp``) and ``edp`` (after
    ``etp``) inserted, ``global_batch`` defaulted and ``attention = "auto"`` resolved, and
    the notes under ``"_notes"``. ``placement`` must be ``contiguous`` or ``aligned``.
    """
    m, moe = model["model"], model.get("model.moe")
    plan = dict(plan)
    from_stack = from_stack or {}
    notes: dict[str, str] = {}
    _check_placement(plan, where)
    working = working_gpus(plan, system)
    dp = _data_parallel(plan, working, where, system["cluster"]["gpus"])
    _check_tensor(plan, m, moe, where)
    edp = _check_experts(plan, moe, dp, where)
    _check_sequence(plan, m, where)
    _check_pipeline(plan, m, where)
    plan["global_batch"] = _global_batch(plan, m["seq_len"], dp, system["cluster"]["gpus"],
                                         where)
    for key in ("schedule", "low_precision_storage", "overlap_ep", "dispatcher", "overlap_tp",
                "recompute_mla_up", "pipeline_layout"):
        if key in from_stack:
            why = applies(key, plan, model, dp)
            if why:
                notes[key] = f"stack value {plan[key]!r} not applied: {why}"
                plan[key] = from_stack[key]
    _check_schedule(plan, dp, where)
    _check_interleaving(plan, dp, where)
    _check_layout(plan, m, where)
    if plan.get("low_precision_storage") and plan["dtype"] != "fp8":
        raise error(where, "plan.low_precision_storage", "needs dtype = 'fp8' (fp8 and "
                    "12-bit activation caches of fp8 training)", True)
    if (plan["dtype"] == "fp8" and plan.get("fp8_recipe") == "delayed"
            and plan.get("recompute_norm_act") is True):
        # core_v0.19.0 transformer_config.py __post_init__: "Delayed scaling does not support
        # moe_act and layernorm recompute for fp8."
        raise error(where, "plan.recompute_norm_act", "Megatron-Core refuses the layernorm / "
                    "moe_act recompute modules with delayed fp8 scaling (fp8_recipe = "
                    "'delayed'); use another fp8_recipe or no recompute_norm_act", "true")
    if plan["dtype"] == "fp8" and "matmul_tflops_fp8" not in system["gpu"]:
        raise error(where, "plan.dtype", "'fp8' needs gpu.matmul_tflops_fp8 in the system",
                    "fp8")
    if "attention" in plan:
        plan["attention"] = _attention(plan["attention"], system["gpu"])
    derived = {"pp": ("dp", dp), "etp": ("edp", edp)}
    resolved = {}
    for key in schema.PLAN_KEYS:
        if key.name in plan:
            resolved[key.name] = plan[key.name]
        if key.name in derived:
            name, value = derived[key.name]
            resolved[name] = value
    resolved["_notes"] = notes
    return resolved


def _check_placement(plan: dict, where: str) -> None:
    """Aligned placement keeps units of ``max(tp cp, etp ep)`` whole: the smaller block must
    nest in the larger (both are powers of two in the search space)."""
    if plan.get("placement") == "auto":
        raise error(where, "plan.placement", "'auto' is resolved before the plan rules "
                    "(internal)", "auto")
    if plan.get("placement") != "aligned":
        return
    a, b = plan["tp"] * plan["cp"], plan["etp"] * plan["ep"]
    if max(a, b) % min(a, b):
        raise error(where, "plan.placement", f"'aligned' keeps units of max(tp*cp, etp*ep) "
                    f"GPUs whole; tp*cp = {a} and etp*ep = {b} must divide one another",
                    "aligned")


def _check_layout(plan: dict, m: dict, where: str) -> None:
    """Explicit first/last stage sizes: a pipeline of at least two virtual stages, and room
    for them among the layers (every middle stage keeps at least one layer)."""
    given = [k for k in ("first_stage_layers", "last_stage_layers") if k in plan]
    if not given:
        return
    stages = plan["pp"] * (1 if plan.get("schedule") == "dualpipe" else plan["vpp"])
    if stages < 2:
        raise error(where, f"plan.{given[0]}", "needs at least two pipeline stages "
                    "(pp * vpp >= 2)", plan[given[0]])
    used = sum(plan[k] for k in given)
    middle = stages - len(given)
    if used + middle > m["layers"]:
        raise error(where, f"plan.{given[-1]}", f"{' + '.join(given)} = {used} leaves fewer "
                    f"than one layer for each of the other {middle} stages of "
                    f"model.layers = {m['layers']}", plan[given[-1]])


def _attention(name: str, gpu: dict) -> str:
    """The attention kernel with ``"auto"`` resolved against the GPU (schema.resolve_attention)."""
    code = schema.resolve_attention(schema.ATTENTION[name], gpu["matmul_tflops_bf16"],
                                    "matmul_tflops_fp8" in gpu)
    return next(choice for choice, c in schema.ATTENTION.items() if c == code)


def _data_parallel(plan: dict, working: int, where: str, gpus: int) -> int:
    grid = plan["tp"] * plan["cp"] * plan["pp"]
    if working != gpus:
        if working % grid:
            raise error(where, "plan.tp", f"tp*cp*pp = {grid} must divide the {working} GPUs "
                        f"that aligned placement works (of cluster.gpus = {gpus})")
        return working // grid
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
    m = _microbatches(plan, dp)
    if m < 2 * pp or m % 2:
        raise error(where, "plan.global_batch", f"schedule 'dualpipe' needs an even number of "
                    f"micro-batches >= 2 pp = {2 * pp}; global_batch / (micro_batch*dp) = {m}",
                    plan["global_batch"])


def _check_interleaving(plan: dict, dp: int, where: str) -> None:
    """Interleaving needs at least ``pp`` micro-batches per step. Megatron-Core's
    ``forward_backward_pipelining_with_interleaving`` (NVIDIA/Megatron-LM
    megatron/core/pipeline_parallel/schedules.py, read at 00611e6) raises ``ValueError``
    unless ``microbatch_group_size_per_vp_stage`` (default ``pp``) lies in ``[pp, m]``, so no
    group size runs ``m < pp`` (releases before that option asserted ``m % pp == 0``).
    (``m >= pp`` not a multiple of ``pp`` runs with the group size set to ``m``,
    ``--microbatch-group-size-per-virtual-pipeline-stage``; the model and the simulator take
    that group then.) DualPipe holds its two stages per rank by itself
    (``vpp = 1``, :func:`_check_schedule`)."""
    pp, vpp = plan["pp"], plan["vpp"]
    if vpp < 2:
        return
    m = _microbatches(plan, dp)
    if m < pp:
        raise error(where, "plan.vpp", f"interleaving (vpp = {vpp}) needs at least pp = {pp} "
                    f"micro-batches per step, as Megatron-Core's interleaved schedule "
                    f"requires; global_batch / (micro_batch*dp) = {m}", vpp)


def _microbatches(plan: dict, dp: int) -> int:
    """Micro-batches per step, ``global_batch / (micro_batch * dp)``."""
    return plan["global_batch"] // (plan["micro_batch"] * dp)


def _global_batch(plan: dict, seq_len: int, dp: int, gpus: int, where: str) -> int:
    """The given global batch, checked, or the default (:func:`schema.default_global_batch`)."""
    unit = plan["micro_batch"] * dp
    if "global_batch" not in plan:
        return schema.default_global_batch(gpus, seq_len, unit)
    if plan["global_batch"] % unit:
        raise error(where, "plan.global_batch", f"must be a multiple of micro_batch*dp = "
                    f"{plan['micro_batch']}*{dp} = {unit}", plan["global_batch"])
    return plan["global_batch"]
