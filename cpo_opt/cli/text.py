"""Readable text tables for each command (the output without ``--json``)."""

from __future__ import annotations

from typing import Any


def table(rows: list[list[Any]], header: list[str] | None = None,
          left_last: bool = False) -> str:
    """Left-aligned first column, right-aligned others (the last one left-aligned too with
    ``left_last``: text such as a plan), two spaces apart."""
    cells = [[_cell(c) for c in r] for r in ([header] if header else []) + rows]
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(cells[0]))]
    lines = []
    for j, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        if left_last and len(r) == len(widths) and len(r) > 1:
            parts[-1] = r[-1].ljust(widths[-1])
        lines.append("  ".join(parts).rstrip())
        if header and j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _cell(c: Any) -> str:
    if isinstance(c, bool):
        return "yes" if c else "no"
    if isinstance(c, float):
        if c == 0:
            return "0"
        if abs(c) >= 1e5 or abs(c) < 1e-3:
            return f"{c:.3g}"
        return f"{c:.4g}"
    return str(c)


def pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def plan_line(plan: dict, result: dict | None = None) -> str:
    """A plan as ``--plan`` takes it back (:func:`cpo_opt.analysis.plan_text.plan_line`):
    every key the plan (not the stack) decided, ``global_batch`` always; ``result`` is the
    evaluate object holding the options' provenance (``stack.options``)."""
    from cpo_opt.analysis.plan_text import plan_line as line
    options = ((result or {}).get("stack") or {}).get("options")
    return line(plan, options)


def stack_lines(r: dict) -> list[str]:
    """What ran besides the degrees: the software stack's options (and where each came
    from), the placement with its working and idle GPUs, the pipeline layout and the rank
    whose memory is reported."""
    out = []
    st = r.get("stack")
    if st:
        mark = {"plan": "", "stack": "", "search": "*", "default": ""}
        shown = [f"{k}={v['value']}{mark.get(v['from'], '')}"
                 for k, v in st.get("options", {}).items()
                 if k not in ("recompute", "attention", "placement")]
        out.append(f"stack {st['name']}: " + " ".join(shown)
                   + ("   (* chosen by the search)" if any(
                       v["from"] == "search" for v in st.get("options", {}).values()) else ""))
        on = [k for k, v in st.get("options", {}).items()
              if v.get("policy") == "fit" and v["value"] is True]
        if on:
            out.append(f"{' and '.join(on)} on (stack policy 'fit'): the plan does not fit "
                       f"in HBM without {'it' if len(on) == 1 else 'them'}")
    pl = r.get("placement")
    if pl:
        out.append(f"placement {pl['mode']}: {pl['working_gpus']} GPUs working, "
                   f"{pl['idle_gpus']} idle" + (f" ({pl['why']})" if pl.get("why") else ""))
    pipe = r.get("pipeline")
    if pipe and pipe.get("virtual_stages", 1) > 1:
        out.append(f"pipeline {pipe['layout']}: {pipe['virtual_stages']} virtual stages, "
                   f"first/middle/last {pipe['first_stage_layers']}/"
                   f"{pipe['middle_stage_layers']}/{pipe['last_stage_layers']} layers, "
                   f"paced by the {pipe['pacing_rank']} rank")
    if r.get("memory_rank"):
        out.append(f"memory of {r['memory_rank']}")
    return out


def presets_table(d: dict, width: int = 100) -> str:
    """Each kind, then one line per preset: name, then its description cut to fit ``width``
    (left-aligned; ``presets show NAME`` prints it whole)."""
    out = []
    for kind, items in d.items():
        out.append(f"{kind}:")
        if not items:
            out.append("  (none)")
            continue
        w = max(len(i["name"]) for i in items)
        for i in items:
            desc = i["description"]
            room = max(20, width - w - 4)
            if len(desc) > room:
                desc = desc[:room - 3].rstrip() + "..."
            out.append(f"  {i['name'].ljust(w)}  {desc}".rstrip())
    out.append("\n`cpo-opt presets show NAME` prints one preset in full, with its sources.")
    return "\n".join(out)


def system_line(r: dict) -> str:
    """``system NAME`` with the overrides applied named as such, and the effective fabric."""
    eff = r.get("system_effective")
    if not eff:
        return ""
    v = eff["values"]
    up, out = v["scale_up"], v["scale_out"]
    over = r.get("overrides") or {}
    head = f"system {eff['name']}" + (" with overrides " + ", ".join(
        f"{k}={val}" for k, val in over.items()) if over else "")
    if r.get("scenario"):
        head = f"scenario {r['scenario']}: " + head
    return (f"{head}\n  effective: {v['cluster']['gpus']} x {v['gpu']['name']}, scale-up "
            f"{up['domain_size']}-GPU domains at {up['bandwidth_GB_s']:g} GB/s "
            f"({up['energy_pJ_per_bit']:g} pJ/bit, radix {up['switch_radix']}, reach "
            f"{up['max_domain_size']}), scale-out {out['bandwidth_GB_s']:g} GB/s")


def preset_show(r: dict) -> str:
    """One preset in full: its TOML content, resolved defaults and sources."""
    import json
    lines = [f"{r['kind']} preset {r['name']}  ({r['path']})"]
    if r["description"]:
        lines.append(r["description"])
    lines.append("")
    for section, t in r["content"].items():
        if isinstance(t, dict):
            lines.append(f"[{section}]")
            rows = [[k, json.dumps(val) if not isinstance(val, dict) else json.dumps(val)]
                    for k, val in t.items()]
            lines += ["  " + ln for ln in table(rows, left_last=True).splitlines()]
        else:
            lines.append(f"{section} = {json.dumps(t)}")
    res = r.get("resolved")
    if res and r["kind"] in ("system", "model"):
        lines += ["", "with defaults filled:"]
        for section, t in res.items():
            given = r["content"].get(section.split(".")[0], {})
            if section.startswith("model."):
                given = given.get(section.split(".")[1], {})
            extra = {k: val for k, val in t.items() if k not in given}
            if extra:
                lines.append(f"  [{section}] " + ", ".join(f"{k}={val}"
                                                           for k, val in extra.items()))
    for label in ("sources", "notes"):
        items = r[label] if isinstance(r[label], list) else [r[label]]
        if items:
            lines += ["", f"{label}:"] + [f"- {x}" for x in items]
    return "\n".join(lines)


def evaluate_table(r: dict) -> str:
    lines = [f"model {r['model']} on {r['system']} ({r['gpus']} GPUs)"]
    if r.get("system_effective"):
        lines.append(system_line(r))
    lines += [f"plan  {plan_line(r['plan'], r)}"] + stack_lines(r) + [""]
    step = r["step_time_s"]
    rows = [["step time", _s(step), "100.0%"]]
    for k, v in r["breakdown_s"].items():
        share = v / step if step else 0.0
        rows.append([f"  {k}", _s(v), f"{100 * share:.1f}%"])
    rows += [
        ["tokens/s per GPU", f"{r['tokens_per_s_per_gpu']:,.0f}", ""],
        ["model TFLOP/s per GPU", f"{r['model_tflops_per_gpu']:.1f}", ""],
        ["MFU", f"{100 * r['mfu']:.1f}%", f"of the {mfu_basis(r)}"],
        ["memory per GPU", f"{r['memory_GB_per_gpu']:.1f} GB",
         f"of {r['hbm_GB']:.0f} GB HBM"],
        ["fits memory", r["fits_memory"], ""],
        ["params total / active", f"{r['params']['total'] / 1e9:.1f}B / "
                                  f"{r['params']['active'] / 1e9:.1f}B", ""],
    ]
    if "time_to_train_days" in r:
        rows.append(["time to train", f"{r['time_to_train_days']:.2f} days",
                     f"{r['tokens']:.3g} tokens"])
    out = "\n".join(lines) + table(rows, ["", "value", "share of step"])
    if r.get("simulated"):
        out += "\n\n" + simulated_text(r["simulated"])
    return out


def simulated_text(sim: dict) -> str:
    """``evaluate --simulate``: the simulator's step beside the closed form's, each rank's
    busy/idle time, its notes and the critical path (stretches of one chunk and kind)."""
    diff = sim.get("closed_form_vs_simulated")
    lines = [f"event simulator (cpo_opt.sim): step {_s(sim['step_time_s'])}"
             + (f", closed form {100 * diff:+.1f}% from it" if diff is not None else "")]
    lines += [f"  rank {r['rank']}: busy {_s(r['busy_s'])}, idle {_s(r['idle_s'])}"
              for r in sim["per_rank"]]
    lines += [f"  note: {n}" for n in sim["notes"]]
    lines.append("  critical path by kind: " + ", ".join(
        f"{k} {_s(v)}" for k, v in sim["critical_path_by_kind_s"].items()))
    path = sim["critical_path"]
    lines.append(f"  critical path ({len(path)} stretches):")
    shown = path if len(path) <= 40 else path[:20] + [None] + path[-20:]
    for seg in shown:
        lines.append("    ..." if seg is None else
                     f"    {seg['start_s'] * 1e3:10.3f} - {seg['end_s'] * 1e3:10.3f} ms  "
                     f"{seg['name']}")
    return "\n".join(lines)


def mfu_basis(r: dict) -> str:
    """The peak MFU is measured against: the plan's GEMM dtype (bf16 or fp8 tensor cores)."""
    return str(r.get("mfu_basis") or r.get("plan", {}).get("dtype", "bf16") + " peak")


def validate_table(r: dict) -> str:
    rows = [[c["id"], c["predicted_step_time_s"], c["measured_step_time_s"], pct(c["error"])]
            for c in r["cases"]]
    out = table(rows, ["case", "predicted s", "measured s", "error"])
    out += f"\n\nmean |error| {100 * r['mean_abs_error']:.2f}%   " \
           f"max |error| {100 * r['max_abs_error']:.2f}%   ({r['n']} cases)"
    for g, s in r.get("groups", {}).items():
        out += f"\n  {g}: mean {100 * s['mean_abs_error']:.2f}%  max " \
               f"{100 * s['max_abs_error']:.2f}%  ({s['n']} cases)"
    return out


def bench_table(r: dict) -> str:
    return table([
        ["evaluations/s", f"{r['evaluations_per_s']:.3g}"],
        ["plans evaluated", r["n"]],
        ["batch", r["batch"]],
        ["compile", f"{r['compile_s']:.2f} s"],
        ["timed wall", f"{r['wall_s']:.2f} s"],
        ["device", f"{r['device']} x{r['devices']} ({r['dtype']})"],
        ["model / system", f"{r['model']} / {r['system']}"],
    ])


def optimize_table(r: dict) -> str:
    lines = ([system_line(r)] if r.get("system_effective") else []) + [
             f"method {r['method']}: {r['evaluations']} evaluations in "
             f"{r['search_wall_s']:.2f} s",
             f"best plan  {plan_line(r['plan'], r.get('result'))}",
             f"--plan     {r['plan_arg']}",
             f"step time  {r['step_time_s']:.4g} s"]
    for k, v in r.get("hardware", {}).items():
        lines.append(f"  {k} = {v:.4g}")
    trim = r.get("domain_trim")
    if trim and trim["chosen_domain_size"] != trim["searched_domain_size"]:
        lines.append(f"  domain {trim['searched_domain_size']:.0f} -> "
                     f"{trim['chosen_domain_size']:.0f}: the smallest within "
                     f"{100 * trim['tolerance']:g}% of the search's step time")
    fab = r.get("fabric")
    if fab:
        used = f"interconnect power {fab['interconnect_power_kW']:,.1f} kW"
        if fab.get("power_budget_kW"):
            used += (f" of a {fab['power_budget_kW']:,.1f} kW budget "
                     f"({100 * fab['power_share_of_budget']:.1f}%)")
        if fab.get("reference_power_kW") is not None and r.get("free"):
            used += f"; the given system draws {fab['reference_power_kW']:,.1f} kW"
        lines.append(used)
    lines += robustness_lines(r)
    res = r.get("result", {})
    if res:
        lines += stack_lines(res)
        lines.append(f"MFU {100 * res['mfu']:.1f}% (of the {mfu_basis(res)})   memory "
                     f"{res['memory_GB_per_gpu']:.1f} GB of {res['hbm_GB']:.0f}"
                     + (f"   time to train {res['time_to_train_days']:.2f} days"
                        if "time_to_train_days" in res else ""))
    return "\n".join(lines)


def sensitivity_table(r: dict) -> str:
    rows = sorted(([k, f"{r['values'][k]:g}", _signed(r["gradients"][k], "+.3g"),
                    _signed(r["elasticities"][k], "+.3f"), r["elasticities"][k]]
                   for k in r["gradients"]), key=lambda x: -abs(x[4]))
    rows = [x[:4] for x in rows]
    out = (system_line(r) + "\n") if r.get("system_effective") else ""
    src = r.get("plan_source", {})
    if src.get("optimized"):
        out += f"plan optimized first ({src['method']}): {src['plan_arg']}\n"
    out += f"step time {r['step_time_s']:.4g} s"
    ttt = r.get("time_to_train")
    if ttt:
        out += f"   time to train {ttt['days']:.4g} days ({ttt['tokens']:.3g} tokens)"
    out += "\n" + table(rows, ["field (its unit)", "value", "d step/d field, s per unit",
                               "elasticity"])
    out += "\n(elasticity: % change of the step time per +1% of the field)"
    if ttt:
        out += "\n(time-to-train elasticities: " + ", ".join(
            f"{k} {ttt['elasticities'][k]:+.3g}" for k in r.get("ranking", [])[:3]) + ")"
    return out


def _signed(x: float, fmt: str) -> str:
    return "0" if x == 0 else format(x, fmt)


def reproduce_table(r: dict) -> str:
    rows = []
    for c in r["configs"]:
        sp = c["speedup"]
        rows.append([c["name"], f"{c['params_total'] / 1e12:.2f}T",
                     _days(c["copper"]["time_to_train_days"]),
                     _days(c["passage"]["time_to_train_days"]),
                     "-" if sp is None else f"{sp:.2f}x"])
    out = table(rows, ["config", "params", "copper days", "passage days", "speedup"])
    out += f"\n\nscale-up domain ratio {r['scale_up_ratio']:.1f}x"
    for k in r.get("knees", []):
        knee = "none in the grid" if k["knee"] is None else f"{k['knee']:g}"
        out += f"\nknee {k['config']} {k['sweep']}: {knee}"
    for line in r.get("codesign", {}).get("text", [])[:1]:
        out += f"\n{line}"
    if r.get("out_dir"):
        out += f"\n\nfiles in {r['out_dir']}"
    return out


def _days(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def compare_table(r: dict) -> str:
    """Both optima, the baseline's plan on the candidate, speedups, breakdowns side by side."""
    la, lb = r["labels"]["baseline"], r["labels"]["candidate"]
    a, b, same = r["baseline"], r["candidate"], r.get("baseline_plan_on_candidate")
    lines = [f"model {r['model']}: baseline {la} ({a['result']['gpus']} GPUs) vs candidate "
             f"{lb} ({b['result']['gpus']} GPUs)",
             f"baseline best plan   {plan_line(a['plan'], a.get('result'))}",
             f"candidate best plan  {plan_line(b['plan'], b.get('result'))}", ""]
    rows = [["step time", _s(a["step_time_s"]),
             _s(same["step_time_s"]) if same else "-", _s(b["step_time_s"]),
             _s(b["step_time_s"] - a["step_time_s"], signed=True), ""]]
    for k, v in r["breakdown_s"].items():
        s = same["breakdown_s"][k] if same else None
        rows.append([f"  {k}", _s(v["baseline"]), "-" if s is None else _s(s),
                     _s(v["candidate"]), _s(v["difference"], signed=True),
                     f"{100 * v['baseline_share']:.1f}% -> {100 * v['candidate_share']:.1f}%"])
    ra, rb = a["result"], b["result"]
    rows.append(["MFU", f"{100 * ra['mfu']:.1f}%",
                 f"{100 * same['mfu']:.1f}%" if same else "-", f"{100 * rb['mfu']:.1f}%",
                 "", ""])
    if "time_to_train_days" in ra:
        rows.append(["time to train", f"{ra['time_to_train_days']:.2f} d",
                     f"{same['time_to_train_days']:.2f} d" if same else "-",
                     f"{rb['time_to_train_days']:.2f} d",
                     f"{rb['time_to_train_days'] - ra['time_to_train_days']:+.2f} d", ""])
    power = r.get("interconnect_power_kW")
    if power:
        rows.append(["interconnect power", f"{power['baseline']:.4g} kW", "-",
                     f"{power['candidate']:.4g} kW",
                     f"{power['candidate'] - power['baseline']:+.4g} kW", ""])
    lines.append(table(rows, ["", "baseline", "base plan on cand.", "candidate",
                              "difference", "share of step"]))
    sp, same_sp = r["speedup"], r.get("speedup_same_plan")
    lines += ["", f"speedup {sp:.3f}x: the candidate trains in {1 / sp:.3f} of the baseline's "
                  f"time (each on its own best plan)"]
    lines += uncertainty_lines(r, la, lb)
    if same_sp is not None:
        lines.append(f"  baseline's plan unchanged on the candidate: {same_sp:.3f}x; "
                     f"re-optimizing the plan: {r['speedup_plan_reoptimized']:.3f}x more")
    elif r.get("baseline_plan_on_candidate_error"):
        lines.append(f"  the baseline's plan is not valid on the candidate: "
                     f"{r['baseline_plan_on_candidate_error']}")
    lines += ["", "why:"] + [f"- {t}" for t in r["why"]]
    return "\n".join(lines)


def robustness_lines(r: dict) -> list[str]:
    """optimize --objective: the objective's value and how robust the choice is."""
    rob = r.get("robustness")
    if not rob:
        return []
    out = [f"objective {r['objective']}: {r['objective_value_s']:.4g} s over the search's "
           f"samples; over {rob['samples']} fresh samples another of the "
           f"{len(rob['candidates'])} best candidates is fastest in "
           f"{100 * rob['best_changes_fraction']:.0f}% of them, expected regret "
           f"{100 * rob['expected_regret']:.2f}%"]
    rows = [[("* " if i == 0 else "  ") + c["plan_arg"],
             ", ".join(f"{k.split('.')[-1]}={v:.4g}" for k, v in c["hardware"].items()),
             f"{c['point_step_time_s']:.4g}", f"{c['mean_s']:.4g}", f"{c['p90_s']:.4g}",
             f"{c['worst_s']:.4g}", f"{100 * c['fastest_fraction']:.0f}%"]
            for i, c in enumerate(rob["candidates"][:8])]
    out.append(table(rows, ["candidate (* chosen)", "hardware", "point s", "mean s", "p90 s",
                            "worst s", "fastest"]))
    return out


def uncertainty_lines(r: dict, la: str, lb: str) -> list[str]:
    """The speedup's interval and the probability that each side is faster (compare)."""
    iv, u = r.get("speedup_interval"), r.get("uncertainty") or {}
    if not iv or iv[0] is None:
        return []
    out = [f"  90% interval {iv[0]:.3f}-{iv[1]:.3f}x (median {r['speedup_median']:.3f}x, "
           f"{u.get('samples')} samples); P({la} faster) = {r['probability_faster']:.2f}, "
           f"P({lb} faster) = {r['probability_candidate_faster']:.2f}"]
    sampled = u.get("sampled", {})
    parts = []
    if sampled.get("constants"):
        parts.append("constants " + ", ".join(sampled["constants"]))
    mf = max(sampled.get("model_form_sd") or [0.0])
    if mf:
        parts.append(f"model form {100 * mf:.1f}% per side")
    if sampled.get("alternatives"):
        parts.append("stack alternatives " + ", ".join(sampled["alternatives"]))
    out.append("  sampled: " + ("; ".join(parts) if parts else "nothing")
               + (" (every sampled quantity is exact: zero width)" if u.get("exact") else ""))
    return out


def _s(x: float, signed: bool = False) -> str:
    """Seconds with a unit and a fixed, readable precision: ``1.234 s``, ``56.7 ms``, ``0``
    for less than 0.05 ms."""
    if x is None:
        return "-"
    if abs(x) < 5e-5:
        return "0"
    sign = "+" if signed and x >= 0 else ""
    if abs(x) >= 1:
        return f"{sign}{x:.3f} s"
    return f"{sign}{1e3 * x:.1f} ms"


def sweep_table(r: dict) -> str:
    """One row per power budget: feasible, time, power used, domain, bandwidth, plan."""
    rows = []
    for x in r["sweep"]:
        if not x["feasible"]:
            rows.append([f"{x['power_budget_kW']:,.0f}", "no", "-", "-", "-", "-",
                         x["reason"]])
            continue
        hw = x.get("hardware", {})
        rows.append([f"{x['power_budget_kW']:,.0f}", "yes", _s(x["step_time_s"]),
                     f"{x['interconnect_power_kW']:,.0f}",
                     f"{hw['scale_up.domain_size']:.0f}" if "scale_up.domain_size" in hw
                     else "-",
                     f"{hw['scale_up.bandwidth_GB_s']:,.0f}" if "scale_up.bandwidth_GB_s" in hw
                     else "-", plan_line(x["plan"], x.get("result"))])
    head = ([system_line(r)] if r.get("system_effective") else [])
    return "\n".join(head + [table(rows, ["budget kW", "feasible", "step", "power kW",
                                           "domain", "up GB/s", "plan"], left_last=True)])


def calibrate_table(r: dict) -> str:
    """``calibrate``: fitted constants per level with 90% intervals, then the errors."""
    rows = []
    for level, lv in r["levels"].items():
        for name, c in lv["constants"].items():
            if not c["constrained"]:
                continue
            rows.append([f"{level}.{name}", c["prior"], c["value"], c["low"], c["high"],
                         c["unit"]])
    out = table(rows, ["constant", "shipped", "fitted", "90% low", "90% high", "unit"]) \
        if rows else "no constant was constrained by these cases"
    if r.get("unconstrained"):
        out += "\n\nnot constrained (kept at their prior): " + ", ".join(
            f"{u['level']}.{u['name']}" for u in r["unconstrained"])

    def line(label, s):
        if s.get("median_abs_error") is None:
            return f"\n{label:<26}n/a"
        return (f"\n{label:<26}mean |error| {100 * s['mean_abs_error']:.2f}%   median "
                f"{100 * s['median_abs_error']:.2f}%   max {100 * s['max_abs_error']:.2f}%")

    out += f"\n\n{r['n']} cases"
    out += line("before (shipped)", r["before"])
    out += line("after (fitted)", r["after"])
    out += line("leave-one-out", r["cross_validation"])
    if "held_out" in r:
        out += line("held out, before", r["held_out"]["before"])
        out += line("held out, after", r["held_out"]["after"])
    tr = r.get("transfer")
    if tr:
        rows = [[f"{tr['to']}.{n}", c["shipped"], c["value"], c["low"], c["high"], c["unit"]]
                for n, c in tr["constants"].items()]
        out += (f"\n\ntransferred {tr['from']} -> {tr['to']} (the fitted shift carried to the "
                "target's shipped value; interval widened by the shift)\n")
        out += table(rows, ["constant", "shipped", "transferred", "90% low", "90% high",
                            "unit"]) if rows else "nothing constrained to transfer"
        if tr.get("held_out"):
            h = tr["held_out"]
            out += f"\n{len(h['ids'])} held-out {tr['to']} cases"
            out += line(f"{tr['to']}, shipped", h["before"])
            out += line(f"{tr['to']}, transferred", h["after"])
    if r.get("out"):
        out += f"\n\nwrote {r['out']}"
    return out


def megatron_text(r: dict) -> str:
    """``--format megatron``: the plan's Megatron-Core arguments, one flag per line joined by
    `` \\`` (shell-safe; paste after ``torchrun ... pretrain_gpt.py``), the plan and the
    world size as comments before, the keys Megatron has no equivalent for after."""
    import shlex
    from cpo_opt.analysis.megatron import PINNED_RELEASE
    res = r.get("result") or r
    args = r.get("plan_megatron")
    pl = res.get("placement") or {}
    head = [f"# Megatron-Core {PINNED_RELEASE} arguments: {res['model']} on {res['system']}, "
            f"WORLD_SIZE {pl.get('working_gpus', res.get('gpus'))}"
            + (f" ({pl['idle_gpus']} of {res['gpus']} GPUs idle)" if pl.get("idle_gpus") else ""),
            f"# plan: {plan_line(res['plan'], res)}",
            f"# step time {res['step_time_s']:.4g} s (cpo-opt)"]
    if args is None:
        return "\n".join(head + ["# no export: " + "; ".join(r.get("plan_megatron_unmapped",
                                                                    []))])
    lines, cur = [], []
    for a in args:
        if a.startswith("--") and cur:
            lines.append(" ".join(cur))
            cur = []
        cur.append(shlex.quote(a))
    if cur:
        lines.append(" ".join(cur))
    body = " \\\n".join(lines)
    tail = r.get("plan_megatron_unmapped") or []
    if tail:
        tail = ["# not expressed in Megatron-Core arguments:"] + [f"#   {u}" for u in tail]
    return "\n".join(head + [body] + tail)
