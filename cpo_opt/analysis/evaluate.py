"""One evaluation of the exact model, and its result in the units of the JSON contract.

``evaluate(model_spec, system_spec, plan_spec, tokens)`` runs the jitted
:func:`cpo_opt.model.step.step_time` and converts its SI pytree into the SPEC's ``evaluate --json``
object (seconds, GB, TFLOP/s, days). Nothing here prints.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cpo_opt.inputs import schema
from cpo_opt.model import transformer
from cpo_opt.inputs.loaders import (ModelSpec, PlanSpec, SystemSpec,  # noqa: F401
                                    structure_of_plan)
from cpo_opt.model.step import BREAKDOWN_PARTS, StepTime, step_time_jit

SECONDS_PER_DAY = 86400.0
BITS_PER_BYTE = 8.0


def _f(x) -> float:
    return float(np.asarray(x))


def params_of(model: ModelSpec) -> dict[str, float]:
    """Total and active parameter counts."""
    total, active = transformer.param_counts(model.model)
    return {"total": _f(total), "active": _f(active)}


def _mfu_basis(system: SystemSpec, plan: PlanSpec) -> str:
    """What ``mfu`` divides by: the dense peak of the plan's GEMM dtype (model.step)."""
    dtype = plan.values.get("dtype", "bf16")
    peak = system.values["gpu"].get(f"matmul_tflops_{dtype}")
    return f"{dtype} dense peak {peak:g} TFLOP/s" if peak else f"{dtype} dense peak"


def result_dict(r: StepTime, model: ModelSpec, system: SystemSpec, plan: PlanSpec,
                tokens: float | None = None) -> dict[str, Any]:
    """The ``evaluate --json`` object for one :class:`StepTime` (host floats)."""
    s = system.system
    b = r.breakdown
    gpus = _f(s.gpus)
    up, out = _f(r.traffic.scale_up_bytes), _f(r.traffic.scale_out_bytes)
    e_up = up * BITS_PER_BYTE * _f(s.scale_up.energy_j_per_bit) * gpus
    e_out = out * BITS_PER_BYTE * _f(s.scale_out.energy_j_per_bit) * gpus
    step = _f(r.step_time_s)
    resolved = dict(plan.values)
    resolved["microbatches"] = int(round(_f(r.microbatches)))
    working = int(round(_f(r.working_gpus)))
    placement = {**(plan.placement or {"mode": plan.values.get("placement", "contiguous"),
                                        "why": ""}),
                 "working_gpus": working, "idle_gpus": int(round(gpus)) - working}
    out_d: dict[str, Any] = {
        "step_time_s": step,
        "breakdown_s": {k: _f(getattr(b, k)) for k in BREAKDOWN_PARTS},
        "compute_detail_s": {k: _f(getattr(r.compute_detail, k)) for k in (
            "gemm", "attention", "memory_bound", "recompute")},
        "tokens_per_s": _f(r.tokens_per_s),
        "tokens_per_s_per_gpu": _f(r.tokens_per_s) / _f(r.working_gpus),
        "flops_per_token": _f(r.flops_per_token),
        "model_tflops_per_gpu": _f(r.model_flops_per_gpu) / 1e12,
        "mfu": _f(r.mfu),
        "mfu_basis": _mfu_basis(system, plan),
        "memory_GB_per_gpu": _f(r.memory.total) / 1e9,
        "memory_breakdown_GB": {k: _f(getattr(r.memory, k)) / 1e9 for k in (
            "weights", "gradients", "optimizer", "activations", "reserved")},
        "hbm_GB": _f(s.gpu.hbm_bytes) / 1e9,
        "fits_memory": bool(_f(r.fits_memory) > 0.5),
        "params": params_of(model),
        "plan": resolved,
        "traffic_GB_per_gpu_per_step": {"scale_up": up / 1e9, "scale_out": out / 1e9},
        "interconnect_energy_J_per_step": {"scale_up": e_up, "scale_out": e_out},
        "model": model.name,
        "system": system.name,
        "gpus": int(round(gpus)),
        "stack": {"name": plan.stack, "options": plan.options},
        "placement": placement,
        "memory_rank": memory_rank(r, plan),
        "pipeline": pipeline_report(r, plan),
    }
    if tokens is not None:
        out_d["tokens"] = float(tokens)
        out_d["time_to_train_days"] = float(tokens) / _f(r.tokens_per_s) / SECONDS_PER_DAY
    return out_d


def memory_rank(r: StepTime, plan: PlanSpec) -> str:
    """Which pipeline rank ``memory_GB_per_gpu`` reports, in words."""
    pp = int(plan.values["pp"])
    i = int(round(_f(r.memory.rank)))
    if pp == 1:
        return "rank 0 (the only pipeline rank)"
    dual = plan.values.get("schedule") == "dualpipe"
    return {0: "rank 0 (first stage, embedding" + (", and the last stage, output layer)"
                                                    if dual else ")"),
            1: "rank 1 (middle stages)",
            2: f"rank {pp - 1} (last stage, output layer and loss"
               + (", and the first stage)" if dual else ")")}[i]


def pipeline_report(r: StepTime, plan: PlanSpec) -> dict[str, Any]:
    """The pipeline layout the step ran: layers of the first, largest middle and last
    virtual stage, and which rank paced it."""
    names = ("first", "middle", "last")
    return {"layout": plan.values.get("pipeline_layout", "even"),
            "first_stage_layers": int(round(_f(r.first_stage_layers))),
            "middle_stage_layers": int(round(_f(r.middle_stage_layers))),
            "last_stage_layers": int(round(_f(r.last_stage_layers))),
            "virtual_stages": int(plan.values["pp"]) * (
                1 if plan.values.get("schedule") == "dualpipe" else int(plan.values["vpp"])),
            "pacing_rank": names[int(round(_f(r.pacing_rank)))]}


def evaluate(model: ModelSpec, system: SystemSpec, plan: PlanSpec,
             tokens: float | None = None) -> dict[str, Any]:
    """Evaluate one plan exactly; returns the ``evaluate --json`` object."""
    r = step_time_jit(model.model, system.system, plan.plan,
                      structure=structure_of_plan(model, plan))
    out = result_dict(r, model, system, plan, tokens)
    return with_interval(out, model, system, plan)


def with_interval(out: dict[str, Any], model: ModelSpec, system: SystemSpec,
                  plan: PlanSpec) -> dict[str, Any]:
    """Add ``step_time_interval_s`` ([low, high], 90%) when the system's constants carry
    intervals (:func:`cpo_opt.analysis.uncertainty.step_time_interval`: linearised)."""
    from cpo_opt.analysis import uncertainty
    if uncertainty.has_intervals(system):
        out["step_time_interval_s"] = uncertainty.step_time_interval(
            model, system, plan).as_list()
    return out




def system_warnings(system: SystemSpec, preset: SystemSpec | None = None) -> list[str]:
    """Physically odd but valid setups of ``system`` (file units), one sentence each.

    ``preset`` is the same system before ``--set`` overrides: a reach limit the preset had and
    the overrides lifted (a copper rack made larger) is then named.
    """
    v = system.values
    up, gpus = v["scale_up"], int(v["cluster"]["gpus"])
    dom = int(up["domain_size"])
    out = []
    note = getattr(system.constants, "note", None)  # a constants file set aside
    if note:
        out.append(note)
    if dom > gpus:
        out.append(f"scale_up.domain_size {dom} > cluster.gpus {gpus}: the domain is the "
                   f"whole cluster ({gpus} GPUs); scale-out carries nothing")
    elif gpus % dom:
        out.append(f"cluster.gpus {gpus} is not a whole number of scale_up.domain_size {dom} "
                   f"domains ({gpus / dom:.3g}): the last domain is partial; "
                   f"{gpus // dom * dom} or {-(-gpus // dom) * dom} GPUs would fill them")
    if dom > up["max_domain_size"]:
        out.append(f"scale_up.domain_size {dom} > scale_up.max_domain_size "
                   f"{up['max_domain_size']} (the medium's reach): not buildable as given; "
                   "optimize rejects it")
    if dom > up["switch_radix"]:
        out.append(f"scale_up.domain_size {dom} > scale_up.switch_radix {up['switch_radix']}: "
                   "one switch tier cannot join the domain")
    for tier in ("scale_up", "scale_out"):
        t = v[tier]
        if t["bandwidth_GB_s"] > t["escape_bandwidth_GB_s"] * (1 + 1e-9):
            out.append(f"{tier}.bandwidth_GB_s {t['bandwidth_GB_s']:g} > "
                       f"{tier}.escape_bandwidth_GB_s {t['escape_bandwidth_GB_s']:g}: more "
                       "than the package can bring out")
    if preset is not None:
        reach = preset.values["scale_up"]["max_domain_size"]
        if reach < schema.UNLIMITED and reach < dom <= up["max_domain_size"]:
            e = up["energy_pJ_per_bit"]
            same_e = e == preset.values["scale_up"]["energy_pJ_per_bit"]
            out.append(f"scale_up.domain_size {dom} exceeds the {reach}-GPU reach of "
                       f"{preset.name}'s scale-up medium (copper: about one rack)"
                       + (f"; scale_up.energy_pJ_per_bit is still the preset's {e:g}: set "
                          "the optics' value (e.g. Passage) if the domain is optical"
                          if same_e else ""))
    return out


def effective_system(system: SystemSpec, overrides: dict | None = None) -> dict[str, Any]:
    """The effective system echoed by every command: name, overrides, all values (file units,
    defaults filled, overrides applied)."""
    return {"name": system.name, "origin": system.origin,
            "overrides": {str(k): v for k, v in (overrides or {}).items()},
            "values": {k: dict(t) for k, t in system.values.items()}}
