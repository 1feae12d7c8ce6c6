"""Beyond the paper: what to build for a given interconnect power.

Provisioned interconnect power of the cluster (:func:`cpo_opt.model.fabric_cost.interconnect_power_w`):

    P = gpus x 2 x 8 x (B_up e_up + B_out e_out)        [W; B in bytes/s per direction,
                                                          e in J/bit, both directions]

* :func:`codesign`: the Passage fabric with ``scale_up.domain_size`` and
  ``scale_up.bandwidth_GB_s`` free (within the study's bounds: radix/reach 1024, escape
  bandwidth 12,500 GB/s) and ``P <= P_copper``; the plan and the hardware point are searched
  together (gradient search over plan degrees and log hardware, rounding, exact polish). The
  answer to "what would you build for the copper fabric's interconnect power?".
* budget fill: the step time never grows with scale-up bandwidth (a tested model invariant)
  nor, with the plan re-optimized, with the domain size (the sweeps check it), and the power
  does not depend on the domain size, so the best bandwidth under a budget is the largest the
  budget and the escape cap allow, ``B_up* = min(B_escape, B_hi, (P / (16 gpus) - B_out
  e_out) / e_up)``, and the best domain the largest allowed. When the joint search stops
  short of either, the plan is searched again at ``B_up*`` with the searched domain and with
  the largest domain, and the fastest point kept (all are reported: ``search_point`` and
  ``budget_fill``).
* :func:`pareto`: the same search under several budgets ``f x P_copper``; each point records
  the power actually drawn, time to train, bandwidth and domain. Together with the copper and
  Passage presets (from the headline) this traces time to train against interconnect power.
"""

from __future__ import annotations

from typing import Any, Callable

from cpo_opt.model import fabric_cost
from cpo_opt.study.optimum import best_plan
from cpo_opt.study.spec import Study

FREE = ("scale_up.domain_size", "scale_up.bandwidth_GB_s")


def power_kw(study: Study, fabric: str) -> float:
    """Provisioned interconnect power of a study fabric preset, kW."""
    return float(fabric_cost.interconnect_power_w(study.fabrics[fabric].system)) / 1e3


def budget_bandwidth_GB_s(study: Study, budget_w: float) -> float:
    """Largest scale-up GB/s per GPU per direction the budget, the escape cap and the search
    bounds allow on the Passage fabric (scale-out as provisioned)."""
    s = study.fabrics["passage"].system
    per_gpu = budget_w / float(s.gpus) / (2.0 * fabric_cost.BITS)
    b_up = (per_gpu - float(s.scale_out.bandwidth) * float(s.scale_out.energy_j_per_bit)) \
        / float(s.scale_up.energy_j_per_bit)
    hi = study.codesign_bounds["scale_up.bandwidth_GB_s"][1]
    escape = float(study.fabrics["passage"].values["scale_up"]["escape_bandwidth_GB_s"])
    return min(b_up / 1e9, hi, escape)


def _search(study: Study, config: str, budget_w: float) -> dict[str, Any]:
    """Joint plan + hardware search, then the budget fill (see module docstring)."""
    mode = study.mode
    model, gb = study.models[config], study.global_batch(config)
    opt = best_plan(model, study.fabrics["passage"], gb, study.dtype, study.tokens,
                    starts=mode.codesign_starts, steps=mode.codesign_steps, free=FREE,
                    bounds=study.codesign_bounds, power_budget_w=budget_w, stack=study.stack)
    if not opt["feasible"]:
        return opt
    bw = budget_bandwidth_GB_s(study, budget_w) * (1.0 - 1e-6)
    found = opt["hardware"]["scale_up.bandwidth_GB_s"]
    opt["search_point"] = {"bandwidth_GB_s": found,
                           "domain_size": opt["hardware"]["scale_up.domain_size"],
                           "time_to_train_days": opt["time_to_train_days"],
                           "power_kW": opt["interconnect_power_kW"]}
    opt["budget_fill"] = None
    d_found = opt["hardware"]["scale_up.domain_size"]
    d_max = study.codesign_bounds["scale_up.domain_size"][1]
    if bw <= found * 1.001 and d_found >= d_max:
        return opt
    from cpo_opt.inputs import system_with
    best, fills = opt, []
    for d in dict.fromkeys((d_found, d_max)):
        hw = {"scale_up.domain_size": d, "scale_up.bandwidth_GB_s": max(bw, found)}
        filled = best_plan(model, system_with(study.fabrics["passage"], hw), gb, study.dtype,
                           study.tokens, starts=mode.search_starts, steps=mode.search_steps,
                           exhaustive_max=mode.sweep_exhaustive_max_plans,
                           power_budget_w=budget_w, stack=study.stack)
        fills.append({"bandwidth_GB_s": hw["scale_up.bandwidth_GB_s"], "domain_size": d,
                      "time_to_train_days": filled["time_to_train_days"]})
        if filled["feasible"] and filled["step_time_s"] < best["step_time_s"]:
            filled["hardware"] = hw
            filled["search"] = {**opt["search"], "budget_fill_search": filled["search"]}
            best = filled
    fill = dict(min(fills, key=lambda f: f["time_to_train_days"] or float("inf")))
    fill["used"] = best is not opt
    fill["candidates"] = fills
    best["search_point"], best["budget_fill"] = opt["search_point"], fill
    return best


def _point(opt: dict[str, Any], budget_kw: float) -> dict[str, Any]:
    if not opt["feasible"]:
        return {"budget_kW": budget_kw, "feasible": False, "power_kW": None,
                "time_to_train_days": None, "bandwidth_GB_s": None, "domain_size": None,
                "plan": None, "plan_line": None}
    hw = opt["hardware"]
    return {"budget_kW": budget_kw, "feasible": True, "power_kW": opt["interconnect_power_kW"],
            "time_to_train_days": opt["time_to_train_days"],
            "step_time_s": opt["step_time_s"],
            "bandwidth_GB_s": hw.get("scale_up.bandwidth_GB_s"),
            "domain_size": hw.get("scale_up.domain_size"), "plan": opt["plan"],
            "plan_line": opt.get("plan_line"),
            "breakdown_s": opt["breakdown_s"], "mfu": opt["mfu"],
            "search_point": opt.get("search_point"), "budget_fill": opt.get("budget_fill")}


def _days(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def codesign(study: Study, config: str, headline: dict[str, dict[str, Any]],
             exhaustive_check: bool = False) -> dict[str, Any]:
    """The best Passage hardware point and plan for ``config`` under the copper power.

    Args:
      headline: ``{"copper": optimum, "passage": optimum}`` of ``config`` (for comparison).
      exhaustive_check: re-search the plan exhaustively at the chosen hardware point (the
        plan space at fixed hardware is small; the joint space is not).
    """
    budget_kw = power_kw(study, "copper")
    opt = _search(study, config, budget_kw * 1e3)
    out = {"config": config, "fabric": "passage", "free": list(FREE),
           "bounds": {k: list(v) for k, v in study.codesign_bounds.items()},
           **_point(opt, budget_kw), "search": opt["search"]}
    if not opt["feasible"]:
        out["text"] = [f"{config}: no feasible hardware point under {budget_kw:.0f} kW."]
        return out
    c, p = headline["copper"], headline["passage"]
    out["speedup_vs_copper"] = c["time_to_train_days"] / opt["time_to_train_days"]
    out["speedup_vs_passage_preset"] = p["time_to_train_days"] / opt["time_to_train_days"]
    if exhaustive_check:
        from cpo_opt.inputs import system_with
        sys_at = system_with(study.fabrics["passage"], opt["hardware"])
        chk = best_plan(study.models[config], sys_at, study.global_batch(config), study.dtype,
                        study.tokens, starts=1, steps=1, exhaustive_max=10 ** 9, gradient=False,
                        stack=study.stack)
        out["exhaustive_plan_check"] = {
            "step_time_s": chk["step_time_s"],
            "agree": bool(opt["step_time_s"] <= chk["step_time_s"] * 1.01),
            "plan": chk["plan"], "plan_line": chk.get("plan_line")}
    out["text"] = [
        f"{config} under the copper fabric's interconnect power ({budget_kw:.0f} kW): build a "
        f"Passage domain of {out['domain_size']:.0f} GPUs at {out['bandwidth_GB_s']:.0f} GB/s "
        f"per GPU per direction, drawing {out['power_kW']:.0f} kW; time to train "
        f"{opt['time_to_train_days']:.2f} days, {out['speedup_vs_copper']:.2f}x faster than "
        f"copper ({c['time_to_train_days']:.2f} days) and "
        f"{out['speedup_vs_passage_preset']:.2f}x the Passage preset "
        f"({p['time_to_train_days']:.2f} days at {p['interconnect_power_kW']:.0f} kW).",
        f"Plan: tp={opt['plan']['tp']} cp={opt['plan']['cp']} pp={opt['plan']['pp']} "
        f"ep={opt['plan']['ep']} dp={opt['plan']['dp']}.",
    ]
    sp, bf = opt.get("search_point"), opt.get("budget_fill")
    if bf is not None:
        out["text"].append(
            f"The joint gradient search stopped at {sp['bandwidth_GB_s']:.0f} GB/s and "
            f"{sp['domain_size']:.0f} GPUs ({sp['time_to_train_days']:.2f} days, "
            f"{sp['power_kW']:.0f} kW); filling the budget ({bf['bandwidth_GB_s']:.0f} GB/s "
            f"at {bf['domain_size']:.0f} GPUs) gives {_days(bf['time_to_train_days'])} days"
            + (", kept." if bf["used"] else ", not better: the search point is kept."))
    return out


def pareto(study: Study, config: str, headline: dict[str, dict[str, Any]],
           tick: Callable[[str], None] = lambda label: None) -> dict[str, Any]:
    """Time to train vs interconnect power: co-design points and the two presets."""
    p_cu = power_kw(study, "copper")
    points = []
    for f in study.mode.pareto_budget_fractions:
        opt = _search(study, config, f * p_cu * 1e3)
        points.append({"budget_fraction_of_copper": f, **_point(opt, f * p_cu)})
        tick(f"pareto {f:g}x")
    presets = []
    for fabric in ("copper", "passage"):
        h = headline[fabric]
        s = study.fabrics[fabric].values["scale_up"]
        presets.append({"name": fabric, "power_kW": power_kw(study, fabric),
                        "time_to_train_days": h["time_to_train_days"],
                        "bandwidth_GB_s": float(s["bandwidth_GB_s"]),
                        "domain_size": float(s["domain_size"])})
    feas = sorted((q for q in points if q["feasible"]), key=lambda q: q["power_kW"])
    front, best = [], float("inf")
    for q in feas:
        if q["time_to_train_days"] < best:
            front.append(q["budget_fraction_of_copper"])
            best = q["time_to_train_days"]
    for q in points:
        q["on_front"] = q["budget_fraction_of_copper"] in front
    return {"config": config, "copper_power_kW": p_cu, "points": points, "presets": presets}
