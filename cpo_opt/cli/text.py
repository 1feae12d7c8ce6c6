"""Readable text tables for each command (the output without ``--json``)."""

from __future__ import annotations

from typing import Any


def table(rows: list[list[Any]], header: list[str] | None = None) -> str:
    """Left-aligned first column, right-aligned others, two spaces apart."""
    cells = [[_cell(c) for c in r] for r in ([header] if header else []) + rows]
    if not cells:
        return ""
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(len(cells[0]))]
    lines = []
    for j, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
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


def plan_line(plan: dict) -> str:
    keys = ("tp", "pp", "dp", "cp", "ep", "etp", "vpp", "micro_batch", "global_batch",
            "recompute", "zero", "dtype", "attention")
    return " ".join(f"{k}={plan[k]}" for k in keys if k in plan)


def presets_table(d: dict) -> str:
    out = []
    for kind, items in d.items():
        out.append(f"{kind}:")
        out.append(table([[f"  {i['name']}", i["description"]] for i in items])
                   if items else "  (none)")
    return "\n".join(out)


def evaluate_table(r: dict) -> str:
    lines = [f"model {r['model']} on {r['system']} ({r['gpus']} GPUs)",
             f"plan  {plan_line(r['plan'])}", ""]
    rows = [["step time", f"{r['step_time_s']:.4g} s"]]
    for k, v in r["breakdown_s"].items():
        share = v / r["step_time_s"] if r["step_time_s"] else 0.0
        rows.append([f"  {k}", f"{v:.4g} s", f"{100 * share:.1f}%"])
    rows += [
        ["tokens/s per GPU", f"{r['tokens_per_s_per_gpu']:.4g}"],
        ["model TFLOP/s per GPU", f"{r['model_tflops_per_gpu']:.4g}"],
        ["MFU", f"{100 * r['mfu']:.1f}%"],
        ["memory per GPU", f"{r['memory_GB_per_gpu']:.1f} GB of {r['hbm_GB']:.0f}"],
        ["fits memory", r["fits_memory"]],
        ["params total / active", f"{r['params']['total'] / 1e9:.1f}B / "
                                  f"{r['params']['active'] / 1e9:.1f}B"],
    ]
    if "time_to_train_days" in r:
        rows.append(["time to train", f"{r['time_to_train_days']:.2f} days "
                                      f"({r['tokens']:.3g} tokens)"])
    return "\n".join(lines) + table(rows)


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
    lines = [f"method {r['method']}: {r['evaluations']} evaluations in "
             f"{r['search_wall_s']:.2f} s",
             f"best plan  {plan_line(r['plan'])}",
             f"step time  {r['step_time_s']:.4g} s"]
    for k, v in r.get("hardware", {}).items():
        lines.append(f"  {k} = {v:.4g}")
    res = r.get("result", {})
    if res:
        lines.append(f"MFU {100 * res['mfu']:.1f}%   memory {res['memory_GB_per_gpu']:.1f} GB"
                     + (f"   time to train {res['time_to_train_days']:.2f} days"
                        if "time_to_train_days" in res else ""))
    return "\n".join(lines)


def sensitivity_table(r: dict) -> str:
    rows = sorted(([k, r["values"][k], r["gradients"][k], r["elasticities"][k]]
                   for k in r["gradients"]), key=lambda x: -abs(x[3]))
    out = f"step time {r['step_time_s']:.4g} s"
    ttt = r.get("time_to_train")
    if ttt:
        out += f"   time to train {ttt['days']:.4g} days ({ttt['tokens']:.3g} tokens)"
    out += "\n" + table(rows, ["field", "value", "d step / d field", "elasticity"])
    if ttt:
        out += "\n(time-to-train elasticities: " + ", ".join(
            f"{k} {ttt['elasticities'][k]:+.3g}" for k in r.get("ranking", [])[:3]) + ")"
    return out


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
    if r.get("out"):
        out += f"\n\nwrote {r['out']}"
    return out
