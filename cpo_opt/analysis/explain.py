"""Why a workload trains faster on one system than on another, derived from the numbers.

For the optima of one workload on a baseline and a candidate system (the study's copper and
Passage fabrics, or any two systems of ``cpo-opt compare``) this module computes

* the change of every exposed part of the step, ``delta_k = candidate_k - baseline_k``
  (seconds), and its share of the total change ``delta_k / sum_k delta_k``;
* the plan change (every degree that differs);
* where each parallel group sits on the fabric: with ranks laid out TP, CP, DP, PP (dense) and
  ETP, EP, EDP, PP (MoE) innermost first, a group of ``g`` ranks ``stride`` apart has
  ``m = clamp(D / stride, 1, g)`` members in each scale-up domain of ``D`` GPUs
  (:func:`cpo_opt.model.fabric.members_in_domain`, the model's own rule), spans ``g / m`` domains and
  sends the share ``(g - m) / g`` of its all-to-all bytes over scale-out;
* bytes per GPU per step on each tier (``evaluate``'s ``traffic_GB_per_gpu_per_step``).

and writes sentences from them. No sentence is fixed text with a conclusion in it: each
states numbers and comparisons computed here, so a different model or system changes them.
The speedup is the ratio of times to train when both results carry one, else of cluster
throughputs (tokens/s), which is the same ratio at equal tokens.
"""

from __future__ import annotations

import types

from typing import Any

from cpo_opt.model import fabric
from cpo_opt.inputs.loaders import SystemSpec
from cpo_opt.model.config import PLACEMENT_CODES
from cpo_opt.model.step import BREAKDOWN_PARTS

PARTS = BREAKDOWN_PARTS
PLAN_KEYS = ("tp", "cp", "pp", "vpp", "dp", "ep", "etp", "edp", "micro_batch", "recompute",
             "zero", "placement")
MENTION = 0.05
"""Parts whose change is at least this share of the total change are named in the text."""


def groups(plan: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``{name: (size, stride)}`` of the parallel groups of a resolved plan."""
    tp, cp, dp, pp = (float(plan[k]) for k in ("tp", "cp", "dp", "pp"))
    ep, etp, edp = (float(plan[k]) for k in ("ep", "etp", "edp"))
    return {"tp": (tp, 1.0), "cp": (cp, tp), "dp": (dp * cp, tp), "ep": (ep, etp),
            "edp": (edp, etp * ep), "pp": (pp, tp * cp * dp)}


def placement(plan: dict[str, Any], system: SystemSpec) -> dict[str, dict[str, Any]]:
    """Per group: size, members per domain, domains spanned, scale-out share, fits; under the
    plan's own placement (contiguous rank order, or aligned to the domains)."""
    out = {}
    code = plan.get("placement", "contiguous")
    ns = types.SimpleNamespace(**{k: float(plan[k]) for k in ("tp", "cp", "ep", "etp")},
                               placement=float(PLACEMENT_CODES.get(code, code)))
    at = fabric.fill(system.system, ns)  # the plan's own placement (working GPUs)
    for name, (g, stride) in groups(plan).items():
        m = float(fabric.members_in_domain(g, stride, system.system, at=at))
        out[name] = {"size": int(round(g)), "stride": int(round(stride)),
                     "members_per_domain": m, "domains_spanned": g / m,
                     "scale_out_share": (g - m) / g if g > 1 else 0.0,
                     "fits_in_domain": bool(m >= g - 1e-9)}
    return out


def _fmt_plan(plan: dict[str, Any]) -> str:
    return " ".join(f"{k}={plan[k]}" for k in PLAN_KEYS if k in plan)


def _group_sentence(name: str, fabric_name: str, domain: int, p: dict[str, Any]) -> str:
    if p["size"] <= 1:
        return f"{fabric_name}: no {name.upper()} group (size 1)."
    if p["fits_in_domain"]:
        return (f"{fabric_name}: the {name.upper()} group of {p['size']} fits in one "
                f"{domain}-GPU domain (all its traffic on scale-up).")
    return (f"{fabric_name}: the {name.upper()} group of {p['size']} has "
            f"{p['members_per_domain']:.3g} members per {domain}-GPU domain, spans "
            f"{p['domains_spanned']:.3g} domains, and sends {100 * p['scale_out_share']:.0f}% "
            f"of its all-to-all bytes over scale-out.")


def _speed_ratio(base: dict[str, Any], cand: dict[str, Any]) -> float:
    """How many times faster ``cand`` trains than ``base`` (days ratio, else tokens/s ratio)."""
    if base.get("time_to_train_days") and cand.get("time_to_train_days"):
        return base["time_to_train_days"] / cand["time_to_train_days"]
    return cand["tokens_per_s"] / base["tokens_per_s"]


def _microbatches(r: dict[str, Any]):
    return r.get("microbatches", r.get("plan", {}).get("microbatches"))


def explain_pair(name: str, base: dict[str, Any], cand: dict[str, Any],
                 systems: dict[str, SystemSpec], same_plan: dict[str, Any] | None = None,
                 keys: tuple[str, str] = ("baseline", "candidate"),
                 labels: tuple[str, str] = ("baseline", "candidate")) -> dict[str, Any]:
    """The explanation of one workload on two systems: ``{"text": [...], "numbers": {...}}``.

    Args:
      name: workload name (first word of the first sentence).
      base, cand: the two results (``evaluate`` objects, or the study's optimum objects), each
        with ``step_time_s``, ``breakdown_s``, ``plan``, ``mfu``, ``tokens_per_s`` and
        ``traffic_GB_per_gpu_per_step`` (and ``time_to_train_days`` when tokens were given).
      systems: ``{keys[0]: SystemSpec, keys[1]: SystemSpec}`` the results ran on.
      same_plan: the baseline's plan evaluated on the candidate, which splits the speedup into
        system x plan: ``S = (T_base / T_base-plan-on-cand) x (T_base-plan-on-cand / T_cand)``.
      keys: names of the two sides in ``numbers``; labels: their names in the sentences.
    """
    kb, kc = keys
    lb, lc = labels
    Lb = lb.capitalize() if lb.isalpha() else lb  # "copper" -> "Copper", names as given
    bc, bp = base["breakdown_s"], cand["breakdown_s"]
    delta = {k: bp[k] - bc[k] for k in PARTS}
    total = cand["step_time_s"] - base["step_time_s"]
    share = {k: (delta[k] / total if total else 0.0) for k in PARTS}
    changed = {k: (base["plan"][k], cand["plan"][k]) for k in PLAN_KEYS
               if base["plan"].get(k) != cand["plan"].get(k)}
    place = {f: placement(r["plan"], systems[f]) for f, r in ((kb, base), (kc, cand))}
    domains = {f: int(round(float(systems[f].values["scale_up"]["domain_size"])))
               for f in (kb, kc)}
    tc, tp_ = base["traffic_GB_per_gpu_per_step"], cand["traffic_GB_per_gpu_per_step"]
    speedup = _speed_ratio(base, cand)
    days = bool(base.get("time_to_train_days") and cand.get("time_to_train_days"))

    if days:
        head = (f"{name}: {cand['time_to_train_days']:.2f} days on {lc} vs "
                f"{base['time_to_train_days']:.2f} on {lb}")
    else:
        head = (f"{name}: {cand['tokens_per_s']:.4g} tokens/s on {lc} vs "
                f"{base['tokens_per_s']:.4g} on {lb}")
    text = [f"{head}, {speedup:.2f}x ({'faster' if speedup > 1 else 'slower'} on {lc}); step "
            f"{base['step_time_s']:.3f} s -> {cand['step_time_s']:.3f} s, MFU "
            f"{100 * base['mfu']:.1f}% -> {100 * cand['mfu']:.1f}%."]
    split = None
    if same_plan is not None:
        split = {"fabric_alone": _speed_ratio(base, same_plan),
                 "plan_reoptimized": _speed_ratio(same_plan, cand)}
        took = (f"{same_plan['time_to_train_days']:.2f} days" if days
                else f"{same_plan['step_time_s']:.3f} s per step")
        text.append(f"{Lb}'s plan run unchanged on {lc} takes {took}: the fabric "
                    f"alone gives {split['fabric_alone']:.2f}x, re-optimizing the plan for it "
                    f"{split['plan_reoptimized']:.2f}x more.")
    big = sorted((k for k in PARTS if total and abs(share[k]) >= MENTION),
                 key=lambda k: -abs(delta[k]))
    if big:
        text.append("Largest changes of the exposed step time: " + "; ".join(
            f"{k} {bc[k]:.3f} -> {bp[k]:.3f} s ({delta[k]:+.3f} s, "
            f"{100 * share[k]:.0f}% of the change)" for k in big) + ".")
    worse = [k for k in PARTS if delta[k] > 0 and abs(delta[k]) >= MENTION * abs(total)]
    if worse and total < 0:
        text.append(f"Grows on {lc}, outweighed by the rest: "
                    + ", ".join(f"{k} ({delta[k]:+.3f} s)" for k in worse) + ".")
    if changed:
        text.append("Best plan changes: " + ", ".join(f"{k} {a} -> {b}"
                                                      for k, (a, b) in changed.items())
                    + f" ({lb}: {_fmt_plan(base['plan'])}; {lc}: "
                      f"{_fmt_plan(cand['plan'])}).")
    else:
        text.append(f"Both fabrics choose the same plan ({_fmt_plan(base['plan'])}).")
    pc, pp_ = base["plan"], cand["plan"]
    moe = pc.get("ep", 1) > 1 or pp_.get("ep", 1) > 1
    for f, label in ((kb, Lb), (kc, lc)):
        if moe:
            text.append(_group_sentence("ep", label, domains[f], place[f]["ep"]))
    if moe:
        text.append(f"Largest power-of-two EP group inside one domain: {lb} "
                    f"{_pow2_at_most(domains[kb])}, {lc} "
                    f"{_pow2_at_most(domains[kc])}; the optima use ep = {pc['ep']} "
                    f"and {pp_['ep']}.")
    for g in ("tp", "cp", "dp", "edp", "pp"):
        fc, fp = place[kb][g], place[kc][g]
        if fc["size"] > 1 or fp["size"] > 1:
            if fc["fits_in_domain"] != fp["fits_in_domain"] or fc["size"] != fp["size"]:
                text.append(f"{g.upper()} group: {lb} {fc['size']} over "
                            f"{fc['domains_spanned']:.3g} domains, {lc} {fp['size']} over "
                            f"{fp['domains_spanned']:.3g} domains.")
    so_ratio = tp_["scale_out"] / tc["scale_out"] if tc["scale_out"] else None
    text.append(f"Bytes per GPU per step: scale-out {tc['scale_out']:.1f} GB ({lb}) vs "
                f"{tp_['scale_out']:.1f} GB ({lc})"
                + (f", {so_ratio:.2f}x" if so_ratio is not None else "")
                + f"; scale-up {tc['scale_up']:.1f} GB vs {tp_['scale_up']:.1f} GB.")
    if so_ratio is not None and so_ratio > 1:
        text.append(f"{lc} moves {100 * (so_ratio - 1):.0f}% more bytes per GPU over "
                    f"scale-out, yet exposed dp_comm is {bc['dp_comm']:.3f} -> "
                    f"{bp['dp_comm']:.3f} s and ep_comm {bc['ep_comm']:.3f} -> "
                    f"{bp['ep_comm']:.3f} s: with pp {pc['pp']} -> {pp_['pp']} and "
                    f"{_microbatches(base)} -> {_microbatches(cand)} "
                    "micro-batches per step, the traffic hides behind a different window.")
    return {
        "text": text,
        "numbers": {
            "speedup": speedup,
            "speedup_split": split,
            "step_time_s": {kb: base["step_time_s"], kc: cand["step_time_s"]},
            "breakdown_delta_s": delta,
            "breakdown_share_of_change": share,
            "plan_changes": {k: list(v) for k, v in changed.items()},
            "placement": place,
            "traffic_GB_per_gpu_per_step": {kb: tc, kc: tp_},
            "scale_out_ratio": so_ratio,
            "domain_size": domains,
        },
    }


def _pow2_at_most(n: int) -> int:
    p = 1
    while p * 2 <= n:
        p *= 2
    return p
