"""Beyond the paper: what to build for a given interconnect power.

Provisioned interconnect power of the cluster (:func:`cpo_opt.model.fabric_cost.interconnect_power_w`):

    P = gpus x [2 x 8 x (B_up e_up s + B_out e_out) + ports(D) x s x p_port]
        [W; B in bytes/s per direction, e in J/bit, both directions; ports(D) the scale-up
         ports a GPU needs in a single tier of D GPUs, s the switch stages, p_port the fixed
         power of one port]

* :func:`codesign`: the Passage fabric with ``scale_up.domain_size`` and
  ``scale_up.bandwidth_GB_s`` free (within the study's bounds: radix/reach 1024, escape
  bandwidth 12,500 GB/s) and ``P <= P_copper``; the plan and the hardware point are searched
  together (gradient search over plan degrees and log hardware, rounding, exact polish). The
  answer to "what would you build for the copper fabric's interconnect power?".
* the domain trade (:func:`domain_trade`): at a fixed domain size ``D`` the power (and, when
  given, the cost) is linear in ``B_up`` (:func:`cpo_opt.model.fabric_cost.budget_bandwidth`),
  so the best bandwidth at ``D`` is the smallest of what the budget, the cost budget, the
  escape bandwidth and the search bound allow, and the step time never grows with the
  bandwidth (a tested model invariant). For every domain size of the run's domain ladder
  (``domain_sizes`` of the mode, the searched one added) the plan is searched again at that
  ``(D, B*(D))``; the fastest point wins (a smaller domain within
  :data:`DOMAIN_TOLERANCE` of it is preferred: a domain that does not buy time is not built).
  Where ports carry a fixed power or a price, a larger domain leaves less bandwidth (its
  ports are narrower, so more of them), and the chosen size moves with that price; where they
  do not, power does not depend on ``D`` below the radix and the table says so. Each row
  names the limit that binds its bandwidth (``power``, ``cost``, ``escape``, ``bound``); the
  answer names the limit that binds its domain (``radix``/``reach`` at the top of the
  ladder, ``power``/``cost`` when a larger domain was slower for its narrower ports,
  ``time`` when larger domains bought no time).
* :func:`pareto`: the same search under several budgets ``f x P_copper``; each point records
  the power actually drawn, time to train, bandwidth and domain. Together with the copper and
  Passage presets (from the headline) this traces time to train against interconnect power.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from cpo_opt.model import fabric_cost
from cpo_opt.study.optimum import best_plan
from cpo_opt.study.spec import Study

FREE = ("scale_up.domain_size", "scale_up.bandwidth_GB_s")

DOMAIN_TOLERANCE = 1e-3
"""A larger domain must buy at least this relative step-time gain to be chosen."""


def power_kw(study: Study, fabric: str) -> float:
    """Provisioned interconnect power of a study fabric preset, kW."""
    return float(fabric_cost.interconnect_power_w(study.fabrics[fabric].system)) / 1e3


def allowed_bandwidth(system, domain: float, budget_w: float | None,
                      cost_budget: float | None = None, bound: float = math.inf
                      ) -> tuple[float, str, dict[str, float]]:
    """``(B* GB/s, binding limit, every cap)``: the largest scale-up bandwidth per GPU per
    direction that the power budget (W), the cost budget (USD, optional), the escape
    bandwidth and ``bound`` (GB/s) allow on ``system`` (a loaded spec) at domain size
    ``domain`` (module docstring). Exact: power and cost are linear in ``B_up`` at a fixed
    domain (:func:`cpo_opt.model.fabric_cost.budget_bandwidth`)."""
    from cpo_opt.inputs import system_with
    at = system_with(system, {"scale_up.domain_size": float(domain)})
    caps_si = fabric_cost.budget_bandwidth(at.system, budget_w, cost_budget)
    caps = {"power": float(caps_si["power"]) / 1e9, "cost": float(caps_si["cost"]) / 1e9,
            "escape": float(system.values["scale_up"]["escape_bandwidth_GB_s"]),
            "bound": float(bound)}
    binding = min(caps, key=lambda k: caps[k])
    return caps[binding], binding, caps


def budget_bandwidth_GB_s(study: Study, budget_w: float) -> float:
    """Largest scale-up GB/s per GPU per direction the budget, the escape cap and the search
    bounds allow on the Passage fabric at its preset domain size (scale-out as provisioned)."""
    p = study.fabrics["passage"]
    return allowed_bandwidth(p, float(p.values["scale_up"]["domain_size"]), budget_w,
                             bound=study.codesign_bounds["scale_up.bandwidth_GB_s"][1])[0]


def domain_ladder(study: Study, extra: tuple[float, ...] = ()) -> list[int]:
    """Domain sizes the trade tries: the mode's domain sweep within the co-design bounds,
    whole domains of the cluster, plus ``extra`` (the searched size)."""
    lo, hi = study.codesign_bounds["scale_up.domain_size"]
    gpus = int(study.fabrics["passage"].values["cluster"]["gpus"])
    sizes = {int(d) for d in study.mode.domain_sizes} | {int(round(d)) for d in extra}
    return sorted(d for d in sizes if lo <= d <= hi and gpus % d == 0)


_TRADE_CACHE: dict = {}


def _plan_at(study: Study, config: str, domain: int, bandwidth: float, budget_w: float
             ) -> dict[str, Any]:
    """The best plan at one hardware point (cached per study, config and point: the
    co-design and the Pareto point at the same budget share it)."""
    from cpo_opt.inputs import system_with
    key = (id(study), config, domain, round(bandwidth, 6), round(budget_w, 3))
    if key not in _TRADE_CACHE:
        mode = study.mode
        hw = {"scale_up.domain_size": float(domain), "scale_up.bandwidth_GB_s": bandwidth}
        opt = best_plan(study.models[config], system_with(study.fabrics["passage"], hw),
                        study.global_batch(config), study.dtype, study.tokens,
                        starts=mode.search_starts, steps=mode.search_steps,
                        exhaustive_max=mode.sweep_exhaustive_max_plans,
                        power_budget_w=budget_w * (1 + 1e-9), stack=study.stack)
        opt["hardware"] = hw
        if len(_TRADE_CACHE) > 256:
            _TRADE_CACHE.clear()
        _TRADE_CACHE[key] = opt
    return _TRADE_CACHE[key]


def domain_trade(study: Study, config: str, budget_w: float, extra: tuple[float, ...] = (),
                 cost_budget: float | None = None) -> list[dict[str, Any]]:
    """One row per domain size of the ladder: the bandwidth the limits allow there, what
    binds it, the ports and power it takes, and the best plan's time (module docstring)."""
    from cpo_opt.inputs import system_with
    rows = []
    for d in domain_ladder(study, extra):
        bw, binding, caps = allowed_bandwidth(
            study.fabrics["passage"], d, budget_w, cost_budget,
            study.codesign_bounds["scale_up.bandwidth_GB_s"][1])
        row: dict[str, Any] = {"domain_size": d, "bandwidth_GB_s": bw, "binding": binding,
                               "caps_GB_s": caps}
        if not bw > 0:
            rows.append({**row, "feasible": False, "time_to_train_days": None})
            continue
        bw *= 1.0 - 1e-9
        sysd = system_with(study.fabrics["passage"], {"scale_up.domain_size": float(d),
                                                      "scale_up.bandwidth_GB_s": bw})
        fab = fabric_cost.report(sysd.system)
        opt = _plan_at(study, config, d, bw, budget_w)
        row.update(bandwidth_GB_s=bw, feasible=bool(opt["feasible"]),
                   time_to_train_days=opt["time_to_train_days"],
                   step_time_s=opt["step_time_s"], power_kW=fab["interconnect_power_kW"],
                   port_power_kW=fab["port_power_kW"], ports_per_gpu=fab["ports_per_gpu"],
                   port_width_GB_s=fab["port_width_GB_s"],
                   switch_chips_per_domain=fab["switch_chips_per_domain_whole"],
                   scale_up_cost_USD=fab["scale_up_cost_USD"], plan=opt["plan"])
        row["_opt"] = opt
        rows.append(row)
    return rows


def choose(rows: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    """The row the trade picks and the limit that binds its domain size (module
    docstring)."""
    ok = [r for r in rows if r.get("feasible")]
    if not ok:
        return None, "infeasible"
    best_t = min(r["step_time_s"] for r in ok)
    chosen = min((r for r in ok if r["step_time_s"] <= best_t * (1 + DOMAIN_TOLERANCE)),
                 key=lambda r: r["domain_size"])
    larger = [r for r in ok if r["domain_size"] > chosen["domain_size"]]
    if not larger:
        why = "radix" if not [r for r in rows if r["domain_size"] > chosen["domain_size"]] \
            else "infeasible above"
    elif any(r["bandwidth_GB_s"] < chosen["bandwidth_GB_s"] * (1 - 1e-6) for r in larger):
        why = next(r["binding"] for r in larger
                   if r["bandwidth_GB_s"] < chosen["bandwidth_GB_s"] * (1 - 1e-6))
    else:
        why = "time"
    return chosen, why


DOMAIN_LIMITS = {
    "radix": "the largest domain tried (the single-tier radix / the co-design bound)",
    "infeasible above": "larger domains have no feasible plan",
    "power": "larger domains need narrower, more numerous ports, whose fixed power leaves "
             "less bandwidth under the budget",
    "cost": "larger domains need more ports, whose cost leaves less bandwidth under the "
            "cost budget",
    "time": "larger domains buy no time (within 0.1%) at the same bandwidth",
    "escape": "larger domains are limited by the escape bandwidth",
    "bound": "larger domains are limited by the bandwidth bound",
}


def _search(study: Study, config: str, budget_w: float) -> dict[str, Any]:
    """Joint plan + hardware search, then the domain trade (see module docstring)."""
    mode = study.mode
    model, gb = study.models[config], study.global_batch(config)
    opt = best_plan(model, study.fabrics["passage"], gb, study.dtype, study.tokens,
                    starts=mode.codesign_starts, steps=mode.codesign_steps, free=FREE,
                    bounds=study.codesign_bounds, power_budget_w=budget_w, stack=study.stack)
    d_found = opt["hardware"].get("scale_up.domain_size") if opt["feasible"] else None
    rows = domain_trade(study, config, budget_w,
                        extra=() if d_found is None else (d_found,))
    chosen, why = choose(rows)
    if opt["feasible"]:
        opt["search_point"] = {"bandwidth_GB_s": opt["hardware"]["scale_up.bandwidth_GB_s"],
                               "domain_size": d_found,
                               "time_to_train_days": opt["time_to_train_days"],
                               "power_kW": opt["interconnect_power_kW"]}
    best = opt
    used = False
    if chosen is not None and (not opt["feasible"] or chosen["step_time_s"]
                               < opt["step_time_s"] * (1 - 1e-9)):
        best = dict(chosen["_opt"])
        best["search"] = {**(opt.get("search") or {}),
                          "domain_trade_search": chosen["_opt"]["search"]}
        best["search_point"] = opt.get("search_point")
        used = True
    best["domain_trade"] = {
        "rows": [{k: v for k, v in r.items() if k != "_opt"} for r in rows],
        "chosen_domain_size": None if chosen is None else chosen["domain_size"],
        "domain_limit": why, "domain_limit_text": DOMAIN_LIMITS.get(why, why),
        "bandwidth_limit": None if chosen is None else chosen["binding"],
        "used": used, "tolerance": DOMAIN_TOLERANCE}
    if used:
        best["binding"] = {"domain": why, "bandwidth": chosen["binding"]}
    else:
        best["binding"] = {"domain": "search point", "bandwidth": None}
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
            "search_point": opt.get("search_point"), "domain_trade": opt.get("domain_trade"),
            "binding": opt.get("binding")}


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
    out["text"] += trade_text(opt)
    return out


def trade_text(opt: dict[str, Any]) -> list[str]:
    """Sentences on the domain trade: where the search stopped, what each domain size
    allows and which limit binds the answer."""
    sp, tr = opt.get("search_point"), opt.get("domain_trade")
    if not tr:
        return []
    out = []
    if sp is not None:
        out.append(f"The joint gradient search stopped at {sp['bandwidth_GB_s']:.0f} GB/s and "
                   f"{sp['domain_size']:.0f} GPUs ({_days(sp['time_to_train_days'])} days, "
                   f"{sp['power_kW']:.0f} kW).")
    rows = [r for r in tr["rows"] if r.get("feasible")]
    if rows:
        out.append("Domain trade (bandwidth the limits allow at each size, its binding limit, "
                   "ports per GPU, days): " + "; ".join(
                       f"{r['domain_size']}: {r['bandwidth_GB_s']:.0f} GB/s ({r['binding']}), "
                       f"{r['ports_per_gpu']:.0f} ports, {_days(r['time_to_train_days'])} d"
                       for r in rows) + ".")
    if tr["chosen_domain_size"] is not None:
        out.append(f"Chosen domain {tr['chosen_domain_size']}: bandwidth bound by "
                   f"{tr['bandwidth_limit']}, domain bound by {tr['domain_limit']} "
                   f"({tr['domain_limit_text']})"
                   + ("." if tr["used"] else "; the search point is faster and kept."))
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
