"""The paper's time-to-train figure, reproduced bar by bar, and what it takes to match it.

The figure (as shown in a Lightmatter talk; ``[paper_figure]`` in study.toml) compares one
~1T-parameter MoE on 512 GPUs split three ways: four copper pods of 128 at 14.4 Tbps (1.00),
one Passage pod of 512 at the same 14.4 Tbps (0.60) and one Passage pod of 512 at 32 Tbps
(0.37). Its model, plan and batch are not published. For each bar ``i`` (system preset
``S_i``) this module computes

    model_relative_time_i           = T(S_i, plan*_i) / T(S_1, plan*_1)
    model_relative_time_same_plan_i = T(S_i, plan*_1) / T(S_1, plan*_1)

with ``plan*_i`` the best plan on ``S_i`` (:func:`cpo_opt.study.optimum.best_plan`) and ``T`` the
step time at the same tokens per step (so the time-to-train ratio). Nothing is fitted to the
published bars: they are printed beside the model's.

A :class:`Variant` re-runs the figure under one candidate assumption the paper may have made
(a fixed plan with EP across pods, a smaller or larger batch, no overlap, a slower
scale-out, ...). :func:`gap_closed` says how much of the distance (in log time) between the
model's bar and the paper's each variant closes, so the variant that moves the figure most is
found by computation, not by choice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from cpo_opt.analysis.evaluate import evaluate
from cpo_opt.inputs.loaders import InputError, load_model, load_system, plan_from_values
from cpo_opt.study.explain import PARTS, explain, placement
from cpo_opt.study.optimum import best_plan
from cpo_opt.study.spec import Study


@dataclasses.dataclass(frozen=True)
class Variant:
    """One candidate assumption behind the published figure.

    Attributes:
      name: short label; what: the assumption in words.
      workload: model preset instead of the figure's (None: the study's figure workload).
      tokens_per_gpu: tokens per GPU per step instead of the study's.
      system_overrides: ``{field: value}`` applied to every bar's system.
      dtype: plan precision instead of the study's.
      plan_edit: plan keys set on the evaluated plans.
      fixed_plan: True: every bar runs the baseline's (bar 1's) best plan with ``plan_edit``
        applied (one plan for the whole figure); False: each bar runs its own best plan with
        ``plan_edit`` applied.
    """

    name: str
    what: str
    workload: str | None = None
    tokens_per_gpu: int | None = None
    system_overrides: tuple[tuple[str, str], ...] = ()
    dtype: str | None = None
    plan_edit: tuple[tuple[str, Any], ...] = ()
    fixed_plan: bool = False


BASE = Variant("model", "the study's assumptions: each system's own best plan, the study's "
               "tokens per GPU, fp8, EP exposed, DP/PP overlapped")

VARIANTS: tuple[Variant, ...] = (
    BASE,
    Variant("EP across pods (512 experts, ep 512)",
            "one fixed plan for all bars with expert parallelism over all 512 GPUs (one expert "
            "per GPU), so on copper 3/4 of every all-to-all leaves the 128-GPU pod; cp 2, pp 1 "
            "so that dp = 256 divides the batch's sequences and ep = tp cp dp / etp = 512",
            workload="moe-1t-512e", plan_edit=(("tp", 1), ("cp", 2), ("pp", 1), ("vpp", 1),
                                              ("ep", 512), ("etp", 1)), fixed_plan=True),
    Variant("512 experts, own best plans", "the same 512-expert workload, each system's own "
            "best plan (does the optimizer keep EP inside the copper pod?)",
            workload="moe-1t-512e"),
    Variant("smaller batch (1/4 tokens per GPU)", "a quarter of the study's tokens per GPU per "
            "step: less compute per step to hide communication behind, more bubble",
            tokens_per_gpu=-4),
    Variant("larger batch (4x tokens per GPU)", "four times the study's tokens per GPU per step",
            tokens_per_gpu=4),
    Variant("no overlap", "DP gradient reduction and PP send/recv exposed (no overlap with "
            "compute) on every system's own best plan",
            plan_edit=(("overlap_dp", False), ("overlap_p2p", False))),
    Variant("EP all-to-all overlapped", "the opposite assumption: EP all-to-all hidden behind "
            "another micro-batch's compute (DualPipe-style) on every own best plan",
            plan_edit=(("overlap_ep", True),)),
    Variant("slower scale-out (400 Gb/s)", "scale-out 50 GB/s per direction for all bars",
            system_overrides=(("scale_out.bandwidth_GB_s", "50"),)),
    Variant("much slower scale-out (200 Gb/s)", "scale-out 25 GB/s per direction for all bars",
            system_overrides=(("scale_out.bandwidth_GB_s", "25"),)),
    Variant("bf16", "bf16 GEMMs instead of fp8 (twice the compute time per token)",
            dtype="bf16"),
)
"""The candidate explanations, each computed (``experiments/paper_figure.py`` runs them)."""


def _tokens_per_gpu(study: Study, v: Variant) -> int:
    base = study.batch_tokens // study.gpus
    if v.tokens_per_gpu is None:
        return base
    return base * v.tokens_per_gpu if v.tokens_per_gpu > 0 else base // -v.tokens_per_gpu


def _edit(plan: dict[str, Any], edit: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    out = {k: v for k, v in plan.items() if k not in ("dp", "edp")}
    out.update(dict(edit))
    if any(k in dict(edit) for k in ("pp", "vpp")):
        out.pop("overlap_p2p", None)
    return out


def _run(model, system, values: dict[str, Any], tokens: float, stack=None) -> dict[str, Any]:
    plan = plan_from_values(values, model, system, "paper figure plan", stack)
    r = evaluate(model, system, plan, tokens)
    from cpo_opt.analysis.plan_text import plan_line
    return {"plan": dict(plan.values), "plan_line": plan_line(r["plan"], r["stack"]["options"]),
            "step_time_s": r["step_time_s"],
            "time_to_train_days": r["time_to_train_days"], "breakdown_s": r["breakdown_s"],
            "fits_memory": r["fits_memory"], "mfu": r["mfu"],
            "traffic_GB_per_gpu_per_step": r["traffic_GB_per_gpu_per_step"],
            "microbatches": r["plan"].get("microbatches")}


def figure(study: Study, variant: Variant = BASE, tick: Callable[[str], None] = lambda s: None
           ) -> dict[str, Any]:
    """The figure's rows under ``variant``: ``{"variant", "what", "workload",
    "tokens_per_gpu", "global_batch", "rows": [...], "explanation"}``.

    Each row: ``name``, ``system``, ``paper_relative_time``, ``model_relative_time``,
    ``model_relative_time_same_plan``, ``plan``, ``step_time_s``, ``breakdown_s``,
    ``same_plan`` (bar 1's plan on this system), ``placement`` of the plan's groups.
    """
    spec = study.paper_figure
    workload = variant.workload or spec["workload"]
    model = study.models.get(workload) or load_model(workload)
    seq = int(model.values["model"]["seq_len"])
    mode = study.mode
    dtype = variant.dtype or study.dtype
    over = dict(variant.system_overrides) or None
    systems = [load_system(b["system"], overrides=over, constants=study.constants)
               for b in spec["bars"]]
    gpus = {int(s.values["cluster"]["gpus"]) for s in systems}
    if len(gpus) != 1:
        raise ValueError(f"paper figure: the bars must hold the same GPU count (got {gpus})")
    n = gpus.pop()
    tpg = _tokens_per_gpu(study, variant)
    gb = max(1, tpg * n // seq)
    tokens = study.tokens
    best = []
    for b, s in zip(spec["bars"], systems):
        best.append(best_plan(model, s, gb, dtype, tokens, starts=mode.search_starts,
                              steps=mode.search_steps,
                              exhaustive_max=mode.headline_exhaustive_max_plans,
                              stack=study.stack))
        tick(f"paper figure {b['name']}")
    if best[0]["plan"] is None:
        return {"variant": variant.name, "what": variant.what, "workload": workload,
                "feasible": False, "rows": []}
    base_plan = _edit(best[0]["plan"], variant.plan_edit)
    evaluated = []
    try:
        for opt, s in zip(best, systems):
            if variant.fixed_plan:
                own = _run(model, s, base_plan, tokens, study.stack)
            elif variant.plan_edit and opt["plan"] is not None:
                own = _run(model, s, _edit(opt["plan"], variant.plan_edit), tokens, study.stack)
            else:
                own = opt
            evaluated.append((own, _run(model, s, base_plan, tokens, study.stack)))
    except InputError as e:  # the variant's plan breaks a plan rule: report, do not fail
        return {"variant": variant.name, "what": variant.what, "workload": workload,
                "feasible": False, "reason": str(e), "rows": []}
    t0 = evaluated[0][0]["step_time_s"]
    rows = []
    for b, s, (own, same) in zip(spec["bars"], systems, evaluated):
        rows.append({
            "name": b["name"], "system": b["system"],
            "domain_size": int(s.values["scale_up"]["domain_size"]),
            "scale_up_bandwidth_GB_s": float(s.values["scale_up"]["bandwidth_GB_s"]),
            "paper_relative_time": float(b["paper_relative_time"]),
            "model_relative_time": own["step_time_s"] / t0 if own["step_time_s"] else None,
            "model_relative_time_same_plan": same["step_time_s"] / t0,
            "plan": own["plan"], "plan_line": own.get("plan_line"),
            "step_time_s": own["step_time_s"],
            "breakdown_s": own["breakdown_s"], "fits_memory": own["fits_memory"],
            "mfu": own["mfu"],
            "same_plan": {k: same[k] for k in ("step_time_s", "breakdown_s", "fits_memory")},
            "placement": placement(own["plan"], s) if own["plan"] else None,
        })
    out = {"variant": variant.name, "what": variant.what, "workload": workload,
           "gpus": n, "tokens_per_gpu": tpg, "global_batch": gb, "seq_len": seq,
           "dtype": dtype, "feasible": True, "rows": rows}
    if variant is BASE:
        out["explanation"] = explain_figure(rows, evaluated, systems)
    return out


def explain_figure(rows, evaluated, systems) -> dict[str, Any]:
    """Sentences (computed) on why the model's bars differ from the paper's: the plans, the
    parts of the step that change from bar 1 to bars 2 and 3, and the split of each bar into
    the fabric alone (bar 1's plan) and the re-optimized plan."""
    text = []
    for i in (1, 2):
        own, same = evaluated[i]
        base = evaluated[0][0]
        e = explain(rows[i]["name"], base, own, {"copper": systems[0], "passage": systems[i]},
                    same)
        r = rows[i]
        text.append(f"Bar {i + 1} ({r['name']}): model {r['model_relative_time']:.2f} vs paper "
                    f"{r['paper_relative_time']:.2f}. " + " ".join(e["text"][1:4]))
    b0 = rows[0]["breakdown_s"]
    step0 = rows[0]["step_time_s"]
    comm = sum(b0[k] for k in PARTS if k not in ("compute", "optimizer", "other"))
    floor = (b0["compute"] + b0["optimizer"] + b0["other"]) / step0
    text.append(f"On bar 1 the exposed communication and bubble are {comm:.3f} s of a "
                f"{step0:.3f} s step ({100 * comm / step0:.0f}%); compute, optimizer and other "
                f"take {100 * floor:.0f}%. A fabric that removed every exposed communication "
                f"second would reach relative time {floor:.2f} at best with this plan; the "
                f"paper's 0.37 needs the baseline's step to be at least "
                f"{100 * (1 - rows[2]['paper_relative_time']):.0f}% communication it can remove.")
    return {"text": text, "floor_relative_time": floor}


def gap_closed(base: dict[str, Any], var: dict[str, Any]) -> list[float | None]:
    """Per bar: the share of ``log(model / paper)`` that ``var`` removes relative to
    ``base`` (1: matches the paper; 0: no change; negative: moves away)."""
    out = []
    for rb, rv in zip(base["rows"], var["rows"]):
        p, mb, mv = (rb["paper_relative_time"], rb["model_relative_time"],
                     rv["model_relative_time"])
        if not mb or not mv or abs(math.log(mb / p)) < 1e-12:
            out.append(None)
            continue
        out.append((math.log(mb / p) - math.log(mv / p)) / math.log(mb / p))
    return out


def distance(fig: dict[str, Any]) -> float | None:
    """``sum_i |log(model_i / paper_i)|`` over the bars: how far the figure is from the
    paper's (0: identical)."""
    if not fig["feasible"]:
        return None
    return sum(abs(math.log(r["model_relative_time"] / r["paper_relative_time"]))
               for r in fig["rows"])


def variants(study: Study, names: tuple[str, ...] | None = None,
             tick: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every variant's figure with its ``gap_closed`` per bar and ``distance`` to the paper;
    ``closest``: the single variant with the smallest distance; ``most``: the one that moves
    bar 3 furthest (largest ``|log|`` change of its relative time, either way)."""
    figs = [figure(study, v, tick) for v in VARIANTS if names is None or v.name in names]
    base = next(f for f in figs if f["variant"] == BASE.name)
    for f in figs:
        f["gap_closed"] = gap_closed(base, f) if f["feasible"] else None
        f["distance"] = distance(f)
    others = [f for f in figs if f is not base and f["feasible"]]

    def brief(f, **extra):
        return None if f is None else {
            "variant": f["variant"], "distance": f["distance"],
            "gap_closed_bar3": f["gap_closed"][2],
            "model_relative_time": [r["model_relative_time"] for r in f["rows"]], **extra}

    closest = min(others, key=lambda f: f["distance"], default=None)
    b3 = base["rows"][2]["model_relative_time"]
    most = max(others, key=lambda f: abs(math.log(f["rows"][2]["model_relative_time"] / b3)),
               default=None)
    return {"variants": figs, "base_distance": base["distance"],
            "closest": brief(closest), "most": brief(most)}


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flat rows (variant, bar, paper, model, same plan, gap closed) for tables."""
    out = []
    for f in result["variants"]:
        for i, r in enumerate(f["rows"]):
            out.append({"variant": f["variant"], "bar": r["name"],
                        "paper_relative_time": r["paper_relative_time"],
                        "model_relative_time": r["model_relative_time"],
                        "model_relative_time_same_plan": r["model_relative_time_same_plan"],
                        "gap_closed": (f.get("gap_closed") or [None] * 3)[i],
                        "plan": r.get("plan_line") or " ".join(
                            f"{k}={r['plan'][k]}" for k in ("tp", "cp", "pp", "ep", "dp",
                                                           "micro_batch")),
                        "fits_memory": r["fits_memory"]})
    return out
