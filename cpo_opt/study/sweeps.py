"""Time to train against one scale-up parameter, with the plan re-optimized at every point.

Two sweeps, each over one field of the Passage fabric preset with every other field held:

* ``scale_up.domain_size`` over the study's domain sizes (8 ... 1024 GPUs);
* ``scale_up.bandwidth_GB_s`` over the study's per-GPU bandwidths (200 ... 6400 GB/s per
  direction), at the Passage domain (512);

and one over the workload, on both fabrics alike: tokens per GPU per step (the global batch,
``global_batch = tokens_per_gpu x gpus / seq_len``), both fabrics re-optimized at each point
(:func:`batch_sweep`). Its rows split the speedup into the parts of the step:

    S - 1 = (T_cu - T_pa) / T_pa = sum_k (b_cu,k - b_pa,k) / T_pa     (b: exposed breakdown)

so ``contribution[k]`` says how much of the speedup each part (EP all-to-all, DP/EDP gradient
and weight traffic, pipeline bubble, ...) carries at that batch, and how that changes as the
batch grows (per-step weight traffic and the bubble are amortised over more tokens; the
all-to-all grows with them).

At each point the best plan is searched again (:func:`cpo_opt.study.optimum.best_plan`:
exhaustive when the plan space is small enough for the run's mode, else gradient search),
so each point is the best the fabric allows, not one plan's response.

The knee (:func:`knee`) is the smallest value ``x_i`` beyond which every further step of the
grid shortens time to train by less than ``threshold`` per doubling of the parameter:

    gain(x_j -> x_{j+1}) = 1 - (T_{j+1} / T_j) ** (1 / log2(x_{j+1} / x_j))
    knee = min { x_i : gain(x_j -> x_{j+1}) < threshold for every j >= i }

(per doubling, so the 32 -> 72 and 576 -> 1024 steps compare with the doublings).

Both fabrics use the same placement rule (:func:`cpo_opt.model.fabric.members_in_domain`): a
group that does not fit a domain straddles domains on copper and on Passage alike.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from cpo_opt.inputs.loaders import load_system
from cpo_opt.study.explain import PARTS, placement
from cpo_opt.study.optimum import best_plan, keep_faster
from cpo_opt.study.spec import Study

FIELDS = {"domain": "scale_up.domain_size", "bandwidth": "scale_up.bandwidth_GB_s"}
UNITS = {"domain": "GPUs", "bandwidth": "GB/s"}
MONOTONE_TOL = 0.01
"""A larger domain (or bandwidth) never lengthens the re-optimized time to train by more
than this (search tolerance; the exact optimum is monotone, the gradient search may not be)."""


def point(study: Study, config: str, kind: str, value: float, fabric: str = "passage",
          carried: dict[str, Any] | None = None) -> dict[str, Any]:
    """The best plan of ``config`` on the ``fabric`` preset with one field set to ``value``.

    ``carried``: the previous (smaller) point's row. Its plan is re-scored here, and kept
    when it is faster than what the search found: a larger domain or more bandwidth leaves
    every plan of the smaller point valid and no slower (the model is monotone in both), so
    the re-optimized time never grows along the sweep, where a gradient search on a space
    too large to enumerate could otherwise miss a plan it found one point earlier."""
    field = FIELDS[kind]
    system = load_system(study.fabric_presets[fabric], overrides={field: value},
                         constants=study.constants)
    mode = study.mode
    model = study.models[config]
    opt = best_plan(model, system, study.global_batch(config), study.dtype,
                    study.tokens, starts=mode.search_starts, steps=mode.search_steps,
                    exhaustive_max=mode.sweep_exhaustive_max_plans, gradient=False,
                    stack=study.stack)
    method = opt["search"]["method"]
    if carried is not None:
        opt, again = keep_faster(opt, model, system, carried.get("plan"), study.tokens,
                                 study.stack)
        if again:
            method = (f"{method}; the plan of {carried['value']:g} re-scored here is faster "
                      "and kept")
    row = {"config": config, "sweep": kind, "field": field, "value": float(value),
           "fabric": fabric, **{k: opt[k] for k in (
               "time_to_train_days", "step_time_s", "mfu", "plan", "plan_line", "breakdown_s",
               "traffic_GB_per_gpu_per_step", "interconnect_power_kW", "memory_GB_per_gpu")},
           "method": method}
    if opt["plan"] is not None:
        row["placement"] = placement(opt["plan"], system)
    return row


def run_sweep(study: Study, config: str, kind: str, values, tick: Callable[[str], None]
              = lambda label: None) -> list[dict[str, Any]]:
    """Rows of one sweep, ascending in the swept value; each point also re-scores the
    previous point's plan (:func:`point`)."""
    rows: list[dict[str, Any]] = []
    for v in sorted(values):
        rows.append(point(study, config, kind, v, carried=rows[-1] if rows else None))
        tick(f"{config} {kind}={v:g}")
    return rows


def gains_per_doubling(values, days) -> list[float | None]:
    """``gain(x_j -> x_{j+1})`` for each consecutive pair (None where undefined)."""
    out = []
    for (x0, t0), (x1, t1) in zip(zip(values, days), zip(values[1:], days[1:])):
        if t0 is None or t1 is None or not t0 > 0 or not x1 > x0:
            out.append(None)
            continue
        out.append(1.0 - (t1 / t0) ** (1.0 / math.log2(x1 / x0)))
    return out


def knee(values, days, threshold: float) -> float | None:
    """Smallest value beyond which every step gains less than ``threshold`` per doubling;
    None when the last step still gains at least that (no knee inside the grid)."""
    gains = gains_per_doubling(values, days)
    k = len(values) - 1
    for j in range(len(gains) - 1, -1, -1):
        if gains[j] is None or gains[j] >= threshold:
            break
        k = j
    if k == len(values) - 1 and gains and (gains[-1] is None or gains[-1] >= threshold):
        return None
    return float(values[k])


def _comm_line(row: dict[str, Any]) -> str:
    b, step = row["breakdown_s"], row["step_time_s"]
    parts = sorted(PARTS, key=lambda k: -b[k])
    return ", ".join(f"{k} {100 * b[k] / step:.0f}%" for k in parts if b[k] / step >= 0.02)


def knee_report(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """The knee of one sweep and why, from the breakdowns around it."""
    rows = [r for r in rows if r["time_to_train_days"] is not None]
    values = [r["value"] for r in rows]
    days = [r["time_to_train_days"] for r in rows]
    gains = gains_per_doubling(values, days)
    k = knee(values, days, threshold)
    kind = rows[0]["sweep"] if rows else ""
    config = rows[0]["config"] if rows else ""
    unit = UNITS.get(kind, "")
    mono = all(d1 <= d0 * (1 + MONOTONE_TOL) for d0, d1 in zip(days, days[1:]))
    out: dict[str, Any] = {"config": config, "sweep": kind, "knee": k, "threshold": threshold,
                           "values": values, "days": days, "gain_per_doubling": gains,
                           "non_increasing_within_1pct": mono}
    if not rows:
        out["why"] = "no feasible point"
        return out
    if k is None:
        out["why"] = (f"{config}: no knee within {values[0]:g}-{values[-1]:g} {unit}: the last "
                      f"step still gains {100 * gains[-1]:.1f}% per doubling "
                      f"(threshold {100 * threshold:.0f}%).")
        return out
    i = values.index(k)
    at = rows[i]
    lines = [f"{config}: knee at {k:g} {unit}: beyond it each doubling gains at most "
             f"{100 * max(g for g in gains[i:] if g is not None):.1f}% "
             f"(threshold {100 * threshold:.0f}%)." if i < len(gains) else
             f"{config}: knee at {k:g} {unit} (the last point)."]
    if i > 0 and gains[i - 1] is not None:
        prev = rows[i - 1]
        d = {p: at["breakdown_s"][p] - prev["breakdown_s"][p] for p in PARTS}
        change = at["step_time_s"] - prev["step_time_s"]
        top = [p for p in sorted(PARTS, key=lambda p: d[p])[:2]
               if d[p] < 0 and abs(d[p]) >= 0.05 * abs(change)]
        lines.append(f"The step into the knee ({prev['value']:g} -> {k:g}) gained "
                     f"{100 * gains[i - 1]:.1f}% per doubling"
                     + (", mostly " + " and ".join(
                         f"{p} {prev['breakdown_s'][p]:.3f} -> {at['breakdown_s'][p]:.3f} s"
                         for p in top) if top else "") + ".")
    pl = at.get("placement", {})
    ep = pl.get("ep")
    if ep and ep["size"] > 1:
        lines.append(f"At the knee the plan uses ep={ep['size']}, tp={at['plan']['tp']}, "
                     f"cp={at['plan']['cp']}, pp={at['plan']['pp']}; the EP group "
                     + ("fits in one domain, so the all-to-all no longer crosses scale-out"
                        if ep["fits_in_domain"] else
                        f"still spans {ep['domains_spanned']:.3g} domains "
                        f"({100 * ep['scale_out_share']:.0f}% of its bytes on scale-out)")
                     + ".")
    lines.append(f"Exposed time at the knee: {_comm_line(at)}; scale-out "
                 f"{at['traffic_GB_per_gpu_per_step']['scale_out']:.1f} GB per GPU per step.")
    if i + 1 < len(rows):
        nxt = rows[i + 1]
        d = {p: nxt["breakdown_s"][p] - at["breakdown_s"][p] for p in PARTS}
        p = min(PARTS, key=lambda q: d[q])
        lines.append(f"Going on to {nxt['value']:g} changes the step by "
                     f"{nxt['step_time_s'] - at['step_time_s']:+.3f} s "
                     f"(largest drop: {p} {d[p]:+.3f} s).")
    out["why"] = " ".join(lines)
    return out


CONTRIBUTION_GROUPS = {
    "all-to-all (ep_comm)": ("ep_comm",),
    "expert/dense weight traffic (dp_comm)": ("dp_comm",),
    "pipeline bubble": ("bubble",),
    "pipeline p2p (pp_comm)": ("pp_comm",),
    "tp/cp comm": ("tp_comm", "cp_comm"),
    "compute and other": ("compute", "optimizer", "other"),
}
"""How the batch sweep groups the breakdown parts when it splits the speedup."""


def batch_point(study: Study, config: str, tokens_per_gpu: int,
                known: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Both fabrics' best plans of ``config`` at ``tokens_per_gpu``, the speedup and its
    split over :data:`CONTRIBUTION_GROUPS` (module docstring). ``known``: optima already
    searched at this batch (``{"copper": best_plan object, "passage": ...}``), reused."""
    mode = study.mode
    gb = study.global_batch(config, tokens_per_gpu)
    opts = dict(known or {})
    for f in ("copper", "passage"):
        if f in opts:
            continue
        opts[f] = best_plan(study.models[config], study.fabrics[f], gb, study.dtype,
                            study.tokens, starts=mode.search_starts, steps=mode.search_steps,
                            exhaustive_max=mode.sweep_exhaustive_max_plans, gradient=False,
                            stack=study.stack)
    row: dict[str, Any] = {"config": config, "sweep": "batch", "tokens_per_gpu": int(tokens_per_gpu),
                           "global_batch": gb}
    for f, o in opts.items():
        row[f] = {k: o[k] for k in ("time_to_train_days", "step_time_s", "mfu", "plan",
                                    "plan_line", "breakdown_s", "memory_GB_per_gpu")}
        row[f]["method"] = o["search"]["method"]
    cu, pa = opts["copper"], opts["passage"]
    if cu["step_time_s"] is None or pa["step_time_s"] is None:
        row["speedup"] = None
        return row
    row["speedup"] = cu["time_to_train_days"] / pa["time_to_train_days"]
    row["contribution"] = {
        g: sum(cu["breakdown_s"][k] - pa["breakdown_s"][k] for k in parts) / pa["step_time_s"]
        for g, parts in CONTRIBUTION_GROUPS.items()}
    return row


def batch_sweep(study: Study, config: str, values, tick: Callable[[str], None]
                = lambda label: None, known: dict[str, dict[str, Any]] | None = None
                ) -> list[dict[str, Any]]:
    """:func:`batch_point` rows, ascending in tokens per GPU; ``known`` (the headline optima
    of ``config``) is reused at the study's own tokens per GPU."""
    rows = []
    for v in sorted(values):
        rows.append(batch_point(study, config, int(v),
                                known if int(v) == study.tokens_per_gpu else None))
        tick(f"{config} batch={v}")
    return rows


def batch_why(rows: list[dict[str, Any]]) -> str:
    """One computed sentence: how the speedup and its largest contributions change from the
    smallest to the largest batch of a sweep."""
    rows = [r for r in rows if r.get("speedup") is not None]
    if len(rows) < 2:
        return "fewer than two feasible batch points"
    a, b = rows[0], rows[-1]
    keys = sorted(CONTRIBUTION_GROUPS, key=lambda g: -abs(a["contribution"][g]
                                                        - b["contribution"][g]))[:3]
    return (f"{a['config']}: speedup {a['speedup']:.2f}x at {a['tokens_per_gpu']} tokens per "
            f"GPU per step -> {b['speedup']:.2f}x at {b['tokens_per_gpu']}; largest changes of "
            "the contributions to S-1: " + ", ".join(
                f"{g} {a['contribution'][g]:+.3f} -> {b['contribution'][g]:+.3f}" for g in keys)
            + f" (copper plan {_plan_short(a['copper']['plan'])} -> "
              f"{_plan_short(b['copper']['plan'])}; Passage {_plan_short(a['passage']['plan'])}"
              f" -> {_plan_short(b['passage']['plan'])}).")


def _plan_short(p: dict[str, Any] | None) -> str:
    if not p:
        return "-"
    return "/".join(f"{k}{p[k]}" for k in ("tp", "cp", "pp", "ep"))
