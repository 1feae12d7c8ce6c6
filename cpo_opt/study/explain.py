"""Why one config trains faster on one fabric than on the other, derived from the numbers.

For a config's two optima (copper, Passage) this module computes

* the change of every exposed part of the step, ``delta_k = passage_k - copper_k`` (seconds),
  and its share of the total change ``delta_k / sum_k delta_k``;
* the plan change (every degree that differs);
* where each parallel group sits on the fabric: with ranks laid out TP, CP, DP, PP (dense) and
  ETP, EP, EDP, PP (MoE) innermost first, a group of ``g`` ranks ``stride`` apart has
  ``m = clamp(D / stride, 1, g)`` members in each scale-up domain of ``D`` GPUs
  (:func:`cpo_opt.model.fabric.members_in_domain`, the model's own rule), spans ``g / m`` domains and
  sends the share ``(g - m) / g`` of its all-to-all bytes over scale-out;
* bytes per GPU per step on each tier (``evaluate``'s ``traffic_GB_per_gpu_per_step``).

and writes sentences from them. No sentence is fixed text with a conclusion in it: each
states numbers and comparisons computed here, so a different model or preset changes them.
"""

from __future__ import annotations

from typing import Any

from cpo_opt.model import fabric
from cpo_opt.inputs.loaders import SystemSpec
from cpo_opt.model.step import BREAKDOWN_PARTS

PARTS = BREAKDOWN_PARTS
PLAN_KEYS = ("tp", "cp", "pp", "vpp", "dp", "ep", "etp", "edp", "micro_batch", "recompute",
             "zero")
MENTION = 0.05
"""Parts whose change is at least this share of the total change are named in the text."""


def groups(plan: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """``{name: (size, stride)}`` of the parallel groups of a resolved plan."""
    tp, cp, dp, pp = (float(plan[k]) for k in ("tp", "cp", "dp", "pp"))
    ep, etp, edp = (float(plan[k]) for k in ("ep", "etp", "edp"))
    return {"tp": (tp, 1.0), "cp": (cp, tp), "dp": (dp * cp, tp), "ep": (ep, etp),
            "edp": (edp, etp * ep), "pp": (pp, tp * cp * dp)}


def placement(plan: dict[str, Any], system: SystemSpec) -> dict[str, dict[str, Any]]:
    """Per group: size, members per domain, domains spanned, scale-out share, fits."""
    out = {}
    for name, (g, stride) in groups(plan).items():
        m = float(fabric.members_in_domain(g, stride, system.system))
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


def explain(name: str, copper: dict[str, Any], passage: dict[str, Any],
            systems: dict[str, SystemSpec], same_plan: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """The explanation of one config: ``{"text": [sentences], "numbers": {...}}``.

    Args:
      name: config name.
      copper, passage: the study optima (:func:`cpo_opt.study.optimum.best_plan` objects).
      systems: ``{"copper": SystemSpec, "passage": SystemSpec}`` the optima ran on.
      same_plan: copper's plan evaluated on Passage (``headline.same_plan``), which splits
        the speedup into fabric x plan: ``S = (T_cu / T_cu-plan-on-Passage) x
        (T_cu-plan-on-Passage / T_Passage)``.
    """
    bc, bp = copper["breakdown_s"], passage["breakdown_s"]
    delta = {k: bp[k] - bc[k] for k in PARTS}
    total = passage["step_time_s"] - copper["step_time_s"]
    share = {k: (delta[k] / total if total else 0.0) for k in PARTS}
    changed = {k: (copper["plan"][k], passage["plan"][k]) for k in PLAN_KEYS
               if copper["plan"].get(k) != passage["plan"].get(k)}
    place = {f: placement(r["plan"], systems[f]) for f, r in (("copper", copper),
                                                              ("passage", passage))}
    domains = {f: int(round(float(systems[f].values["scale_up"]["domain_size"])))
               for f in systems}
    tc, tp_ = copper["traffic_GB_per_gpu_per_step"], passage["traffic_GB_per_gpu_per_step"]
    speedup = copper["time_to_train_days"] / passage["time_to_train_days"]

    text = [f"{name}: {passage['time_to_train_days']:.2f} days on Passage vs "
            f"{copper['time_to_train_days']:.2f} on copper, {speedup:.2f}x "
            f"({'faster' if speedup > 1 else 'slower'} on Passage); step "
            f"{copper['step_time_s']:.3f} s -> {passage['step_time_s']:.3f} s, MFU "
            f"{100 * copper['mfu']:.1f}% -> {100 * passage['mfu']:.1f}%."]
    split = None
    if same_plan is not None:
        d_same = same_plan["time_to_train_days"]
        split = {"fabric_alone": copper["time_to_train_days"] / d_same,
                 "plan_reoptimized": d_same / passage["time_to_train_days"]}
        text.append(f"Copper's plan run unchanged on Passage takes {d_same:.2f} days: the fabric "
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
        text.append("Grows on Passage, outweighed by the rest: "
                    + ", ".join(f"{k} ({delta[k]:+.3f} s)" for k in worse) + ".")
    if changed:
        text.append("Best plan changes: " + ", ".join(f"{k} {a} -> {b}"
                                                      for k, (a, b) in changed.items())
                    + f" (copper: {_fmt_plan(copper['plan'])}; Passage: "
                      f"{_fmt_plan(passage['plan'])}).")
    else:
        text.append(f"Both fabrics choose the same plan ({_fmt_plan(copper['plan'])}).")
    for f, label in (("copper", "Copper"), ("passage", "Passage")):
        text.append(_group_sentence("ep", label, domains[f], place[f]["ep"]))
    pc, pp_ = copper["plan"], passage["plan"]
    if pc.get("ep") and pp_.get("ep"):
        text.append(f"Largest power-of-two EP group inside one domain: copper "
                    f"{_pow2_at_most(domains['copper'])}, Passage "
                    f"{_pow2_at_most(domains['passage'])}; the optima use ep = {pc['ep']} "
                    f"and {pp_['ep']}.")
    for g in ("tp", "cp", "dp", "edp", "pp"):
        fc, fp = place["copper"][g], place["passage"][g]
        if fc["size"] > 1 or fp["size"] > 1:
            if fc["fits_in_domain"] != fp["fits_in_domain"] or fc["size"] != fp["size"]:
                text.append(f"{g.upper()} group: copper {fc['size']} over "
                            f"{fc['domains_spanned']:.3g} domains, Passage {fp['size']} over "
                            f"{fp['domains_spanned']:.3g} domains.")
    so_ratio = tp_["scale_out"] / tc["scale_out"] if tc["scale_out"] else None
    text.append(f"Bytes per GPU per step: scale-out {tc['scale_out']:.1f} GB (copper) vs "
                f"{tp_['scale_out']:.1f} GB (Passage)"
                + (f", {so_ratio:.2f}x" if so_ratio is not None else "")
                + f"; scale-up {tc['scale_up']:.1f} GB vs {tp_['scale_up']:.1f} GB.")
    if so_ratio is not None and so_ratio > 1:
        text.append(f"Passage moves {100 * (so_ratio - 1):.0f}% more bytes per GPU over "
                    f"scale-out, yet exposed dp_comm is {bc['dp_comm']:.3f} -> "
                    f"{bp['dp_comm']:.3f} s and ep_comm {bc['ep_comm']:.3f} -> "
                    f"{bp['ep_comm']:.3f} s: with pp {pc['pp']} -> {pp_['pp']} and "
                    f"{copper.get('microbatches')} -> {passage.get('microbatches')} "
                    "micro-batches per step, the traffic hides behind a different window.")
    return {
        "text": text,
        "numbers": {
            "speedup": speedup,
            "speedup_split": split,
            "step_time_s": {"copper": copper["step_time_s"], "passage": passage["step_time_s"]},
            "breakdown_delta_s": delta,
            "breakdown_share_of_change": share,
            "plan_changes": {k: list(v) for k, v in changed.items()},
            "placement": place,
            "traffic_GB_per_gpu_per_step": {"copper": tc, "passage": tp_},
            "scale_out_ratio": so_ratio,
            "domain_size": domains,
        },
    }


def _pow2_at_most(n: int) -> int:
    p = 1
    while p * 2 <= n:
        p *= 2
    return p
