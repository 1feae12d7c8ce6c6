"""Files of a study run: ``results.md``, CSV tables and ``reproduce.json`` (plots: plots.py).

Everything here formats numbers the run computed; nothing is computed or concluded here.
``clean`` makes the result strictly valid JSON: numpy scalars become Python numbers and
non-finite floats become ``None`` (``null``).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pathlib
import shutil
import stat
import tempfile
from typing import Any

import numpy as np

from cpo_opt.inputs import ArgumentError, writes
from cpo_opt.model.step import BREAKDOWN_PARTS

PARTS = BREAKDOWN_PARTS
FILES = ("results.md", "results.csv", "sweeps.csv", "pareto.csv", "sensitivity.csv",
         "paper_figure.csv", "batch_sweep.csv", "reproduce.json")
PLAN_KEYS = ("tp", "cp", "pp", "vpp", "dp", "ep", "etp", "micro_batch", "recompute", "zero",
             "placement")


def clean(x: Any) -> Any:
    """``x`` with numpy scalars/arrays as Python values and NaN/inf as None."""
    if isinstance(x, dict):
        return {str(k): clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return clean(x.tolist())
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    return x


def plan_text(r: dict[str, Any] | None) -> str:
    """The plan of a result (an optimum, a sweep point, a figure bar) as ``--plan`` takes it
    back: its ``plan_line`` (:func:`cpo_opt.analysis.plan_text.plan_line`: every key the
    stack does not fill, ``global_batch`` always), else every key of its ``plan``."""
    from cpo_opt.analysis.plan_text import plan_line
    if not r or not r.get("plan"):
        return "-"
    return r.get("plan_line") or plan_line(r["plan"])


def _f(x, fmt=".3g") -> str:
    return "-" if x is None else format(x, fmt)


def _write_csv(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def headline_rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (config, fabric) of the headline."""
    rows = []
    for c in obj["configs"]:
        for f in ("copper", "passage"):
            r = c[f]
            row = {"config": c["name"], "params_total": c["params_total"], "fabric": f,
                   "dtype": c["dtype"], "global_batch": c["global_batch"],
                   "seq_len": c["seq_len"]}
            row.update({k: (r["plan"] or {}).get(k) for k in PLAN_KEYS})
            row["plan"] = plan_text(r)
            row.update({"step_time_s": r["step_time_s"], "mfu": r["mfu"],
                        "memory_GB_per_gpu": r["memory_GB_per_gpu"],
                        "time_to_train_days": r["time_to_train_days"],
                        "speedup": c["speedup"],
                        "probability_passage_faster": (c.get("speedup_distribution") or {}
                                                       ).get("probability_passage_faster"),
                        "search_method": r["search"]["method"],
                        "gradient_step_time_s": r["search"]["gradient_step_time_s"],
                        "exhaustive_step_time_s": r["search"]["exhaustive_step_time_s"],
                        "search_agree_1pct": r["search"]["agree"]})
            row.update(_breakdown_columns(r))
            rows.append(row)
    return rows


def _breakdown_columns(r: dict[str, Any]) -> dict[str, Any]:
    """CSV columns of one result's step-time breakdown and traffic (none when infeasible)."""
    if not r["breakdown_s"]:
        return {}
    return {**{f"{k}_s": r["breakdown_s"][k] for k in PARTS},
            **{f"{t}_GB_per_gpu_per_step": v for t, v in r["traffic_GB_per_gpu_per_step"].items()}}


def sweep_rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in obj["sweeps"]:
        row = {k: s[k] for k in ("config", "sweep", "field", "value", "fabric",
                                 "time_to_train_days", "step_time_s", "mfu", "method")}
        row.update({k: (s["plan"] or {}).get(k) for k in PLAN_KEYS})
        row["plan"] = plan_text(s)
        row.update(_breakdown_columns(s))
        rows.append(row)
    return rows


def pareto_rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
    p = obj["pareto"]
    rows = [{"kind": "codesign", "budget_fraction_of_copper": q["budget_fraction_of_copper"],
             "budget_kW": q["budget_kW"], "power_kW": q["power_kW"],
             "time_to_train_days": q["time_to_train_days"], "bandwidth_GB_s": q["bandwidth_GB_s"],
             "domain_size": q["domain_size"], "on_front": q.get("on_front"),
             "plan": plan_text(q)} for q in p["points"]]
    rows += [{"kind": f"preset:{q['name']}", "power_kW": q["power_kW"],
              "time_to_train_days": q["time_to_train_days"],
              "bandwidth_GB_s": q["bandwidth_GB_s"], "domain_size": q["domain_size"]}
             for q in p["presets"]]
    return rows


def sensitivity_rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for e in obj["sensitivity"] for r in e["all"]]


def markdown(obj: dict[str, Any]) -> str:
    """``results.md``: headline, explanations, knees, co-design, sensitivity."""
    a = obj["assumptions"]
    L = [f"# Copper vs Passage: time to train frontier MoE models ({obj['mode']} run)", "",
         f"Cluster {a['cluster_gpus']['value']} GPUs ({a['gpu']['value']}), "
         f"{a['training_tokens']['value']:.3g} training tokens, "
         f"{a['global_batch_tokens']['value']:,} tokens per step, dtype {a['dtype']['value']}. "
         f"Aggregate scale-up pod bandwidth ratio (Passage / copper) = "
         f"{obj['scale_up_ratio']:.1f}. "
         f"Wall time {obj['wall_s']:.0f} s.", "",
         "## Headline", "",
         "| config | params | fabric | plan | step s | MFU | days | speedup | search |",
         "|---|---|---|---|---|---|---|---|---|"]
    for c in obj["configs"]:
        for f in ("copper", "passage"):
            r = c[f]
            s = r["search"]
            chk = (f"{s['method']}; grad {_f(s['gradient_step_time_s'], '.4g')} s"
                   + (f", exh {_f(s['exhaustive_step_time_s'], '.4g')} s, agree "
                      f"{s['agree']}" if s["exhaustive_step_time_s"] is not None else ""))
            L.append(f"| {c['name']} | {c['params_total'] / 1e12:.2f}T | {f} | "
                     f"{plan_text(r)} | {_f(r['step_time_s'], '.4g')} | "
                     f"{_f(r['mfu'] and 100 * r['mfu'], '.1f')}% | "
                     f"{_f(r['time_to_train_days'], '.2f')} | "
                     f"{_f(c['speedup'], '.2f') + 'x' if f == 'passage' else ''}"
                     f"{_interval_text(c) if f == 'passage' else ''} | {chk} |")
    L += ["", "Speedup brackets: [low-high] over the constants' ranges (each fabric's plan "
          "fixed, corners of the stated and fitted ranges); 'sampled': median and 90% "
          "interval of 256 draws of the fitted constants' posterior (correlations kept) and "
          "a model-form factor per fabric from the fit's leave-one-out residuals, and the "
          "share of draws in which Passage is faster (docs/uncertainty.md).",
          "", "Breakdown of the exposed step time (s):", "",
          "| config | fabric | " + " | ".join(PARTS) + " | scale-out GB/GPU/step | "
          "scale-up GB/GPU/step |", "|---|---|" + "---|" * (len(PARTS) + 2)]
    for c in obj["configs"]:
        for f in ("copper", "passage"):
            r = c[f]
            if r["breakdown_s"]:
                t = r["traffic_GB_per_gpu_per_step"]
                L.append(f"| {c['name']} | {f} | " + " | ".join(
                    f"{r['breakdown_s'][k]:.3f}" for k in PARTS)
                    + f" | {t['scale_out']:.1f} | {t['scale_up']:.1f} |")
    variants = [(c["name"], d, v) for c in obj["configs"] for d, v in c.get("variants", {}).items()]
    if variants:
        L += ["", "Precision variant:", "", "| config | dtype | copper days | Passage days | "
              "speedup |", "|---|---|---|---|---|"]
        for name, d, v in variants:
            L.append(f"| {name} | {d} | {_f(v['copper']['time_to_train_days'], '.2f')} | "
                     f"{_f(v['passage']['time_to_train_days'], '.2f')} | "
                     f"{_f(v['speedup'], '.2f')}x |")
    L += paper_figure_markdown(obj)
    L += ["", "## Why (generated from the numbers)", ""]
    for c in obj["configs"]:
        if "explanation" in c:
            L += [f"### {c['name']}", ""] + [f"- {t}" for t in c["explanation"]["text"]] + [""]
    L += ["## Sweeps and knees", "",
          f"Other fields as the Passage preset; plan re-optimized at every point; knee = smallest "
          f"value beyond which each doubling gains < "
          f"{100 * a['knee_threshold']['value']:.0f}% time to train.", "",
          "| config | sweep | values | days | knee | monotone (1%) |", "|---|---|---|---|---|---|"]
    for k in obj["knees"]:
        L.append(f"| {k['config']} | {k['sweep']} | {', '.join(f'{v:g}' for v in k['values'])} | "
                 f"{', '.join(_f(d, '.2f') for d in k['days'])} | {_f(k['knee'], 'g')} | "
                 f"{k['non_increasing_within_1pct']} |")
    L += [""] + [f"- {k['why']}" for k in obj["knees"]]
    cd = obj["codesign"]
    L += batch_markdown(obj)
    L += ["", "## Beyond the paper: co-design under an interconnect power budget", ""]
    L += [f"- {t}" for t in cd.get("text", [])]
    L += [f"- {t}" for t in obj.get("sensitivity_summary", [])[:0]]
    if "exhaustive_plan_check" in cd:
        e = cd["exhaustive_plan_check"]
        L.append(f"- Exhaustive plan search at that hardware point: {_f(e['step_time_s'], '.4g')} "
                 f"s (agree within 1%: {e['agree']}).")
    p = obj["pareto"]
    L += ["", f"Pareto front of time to train vs interconnect power ({p['config']}; copper "
          f"power {p['copper_power_kW']:.0f} kW):", "",
          "| point | budget kW | power kW | days | GB/s | domain | on front |",
          "|---|---|---|---|---|---|---|"]
    for q in p["points"]:
        L.append(f"| {q['budget_fraction_of_copper']:g}x copper | {q['budget_kW']:.0f} | "
                 f"{_f(q['power_kW'], '.0f')} | {_f(q['time_to_train_days'], '.2f')} | "
                 f"{_f(q['bandwidth_GB_s'], '.0f')} | {_f(q['domain_size'], '.0f')} | "
                 f"{q.get('on_front')} |")
    for q in p["presets"]:
        L.append(f"| preset {q['name']} | - | {q['power_kW']:.0f} | "
                 f"{q['time_to_train_days']:.2f} | {q['bandwidth_GB_s']:.0f} | "
                 f"{q['domain_size']:.0f} | - |")
    L += ["", "## Sensitivity: elasticities of time to train at each optimum", "",
          "d log(days) / d log(field), plan fixed (top 5 by magnitude; cluster.gpus is listed "
          "but the cluster is fixed, so the most important knob ranks the other fields).", "",
          "| config | fabric | top fields (elasticity) | most important hardware knob |",
          "|---|---|---|---|"]
    for e in obj["sensitivity"]:
        L.append(f"| {e['config']} | {e['fabric']} | " + ", ".join(
            f"{r['field']} {r['elasticity']:+.3f}" for r in e["top"])
                 + f" | {e['most_important']} {e['most_important_elasticity']:+.3f} |")
    L += ["", "## Assumptions", "", "Every number with its source (also in reproduce.json).", ""]
    for k, v in a.items():
        val = v["value"]
        if isinstance(val, dict) and "params_total" in val:
            val = f"{val['params_total'] / 1e12:.3f}T total, {val['params_active'] / 1e9:.1f}B active"
        L.append(f"- **{k}** = {val}{' ' + v['unit'] if v.get('unit') else ''}: {v['source']}"
                 + (f" Why: {v['why']}" if v.get("why") else ""))
    return "\n".join(L) + "\n"


# --------------------------------------------------------------------------- safe writing
def _is_result_name(name: str) -> bool:
    return name in FILES or (name.endswith(".png") and "/" not in name)


def check_target(out_dir: str | pathlib.Path) -> bool:
    """Check the ``--out`` target before a run; return True when it holds an earlier result.

    Accepted: a path that does not exist, an empty directory, or a directory holding only an
    earlier result (the files this module and ``plots.py`` write, as plain files). Refused at
    once (:class:`~cpo_opt.inputs.ArgumentError` ``out``, exit 2): a file, a symbolic link, or
    a directory holding anything else (so ``--out ~`` can never replace a home directory).
    """
    text = os.fspath(out_dir)
    if not text.strip():
        raise ArgumentError("out", "empty path; give a directory")
    path = pathlib.Path(text)
    shown = text if len(text) <= 120 else text[:100] + f"... ({len(text)} characters)"
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ArgumentError("out", f"{shown}: unusable path: {exc.strerror or exc}") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise ArgumentError("out", f"{path}: is a symbolic link; give a real directory")
    if st is None:
        writes.writable_folder("--out", shown, path)  # a folder we can create it in
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise ArgumentError("out", f"{path}: is a file, not a directory; give a directory")
    try:
        entries = list(path.iterdir())
    except OSError as exc:
        raise ArgumentError("out", f"{shown}: cannot list it: {exc.strerror or exc}") from None
    foreign = [e.name + (" (a link)" if e.is_symlink() else "") for e in entries
               if not _is_result_name(e.name) or e.is_symlink() or not e.is_file()]
    if foreign:
        listed = ", ".join(sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
        raise ArgumentError("out", f"{shown}: holds files that are not a reproduce result "
                            f"({listed}); give a new or empty directory")
    writes.writable_folder("--out", shown, path)  # the swap renames entries of its parent
    return bool(entries)


@contextlib.contextmanager
def staged(out_dir: str | pathlib.Path):
    """Write a result into a fresh private directory beside ``out_dir``, then move it into place.

    Yields the staging directory (``tempfile.mkdtemp``: new, mode 0700, so no link can be
    planted in it and nothing is written through one). On success the target is replaced by
    renames (``os.rename`` does not follow a link at the target; the earlier result is
    renamed aside, then removed with ``shutil.rmtree``, which does not follow links either);
    on failure the staging directory is removed and the target is untouched. The target is
    re-checked with :func:`check_target` just before the move, and the two renames run with
    SIGINT and SIGTERM held back (:func:`cpo_opt.inputs.writes.signals_deferred`): at every
    moment either the earlier result or the new one is in place.
    """
    target = pathlib.Path(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.new-", dir=target.parent))
    old, swapped = None, False
    try:
        yield stage
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)
        replaces = check_target(target) or target.exists()
        if replaces:
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.old-",
                                                dir=target.parent))
        with writes.signals_deferred():  # a signal held here is raised when the block ends
            if replaces:
                os.rename(target, old / "result")
            try:
                os.rename(stage, target)
            except BaseException:
                if replaces:  # put the earlier result back
                    os.rename(old / "result", target)
                raise
            swapped = True
    except BaseException:
        if not swapped:
            shutil.rmtree(stage, ignore_errors=True)
        if old is not None and (swapped or not (old / "result").exists()):
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_all(obj: dict[str, Any], out_dir: str | pathlib.Path) -> list[str]:
    """Write results.md, the CSVs and reproduce.json; returns the file names."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "results.csv", headline_rows(obj))
    _write_csv(out / "sweeps.csv", sweep_rows(obj))
    _write_csv(out / "pareto.csv", pareto_rows(obj))
    _write_csv(out / "sensitivity.csv", sensitivity_rows(obj))
    _write_csv(out / "paper_figure.csv", paper_figure_rows(obj))
    _write_csv(out / "batch_sweep.csv", batch_rows(obj))
    (out / "results.md").write_text(markdown(obj))
    (out / "reproduce.json").write_text(json.dumps(obj, indent=1, allow_nan=False) + "\n")
    # strict JSON: a NaN here raises ValueError (an internal error), never a silent "NaN"
    return list(FILES)


# --- the paper's figure and the batch sweep ---------------------------------------------------

def _interval_text(c: dict[str, Any]) -> str:
    iv = c.get("speedup_interval")
    out = f" [{iv[0]:.2f}-{iv[1]:.2f}]" if iv and iv[0] is not None else ""
    d = c.get("speedup_distribution")
    if d and d.get("interval") and d["interval"][0] is not None:
        out += (f"; sampled {d['median']:.2f}x [{d['interval'][0]:.2f}-{d['interval'][1]:.2f}],"
                f" P(Passage faster) {d['probability_passage_faster']:.2f}")
    return out


def paper_figure_rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per bar of the base figure, then per variant and bar when they ran."""
    rows = []
    fig = obj.get("paper_figure_detail") or {}
    for r in fig.get("rows", []):
        rows.append({"variant": fig["variant"], "bar": r["name"], "system": r["system"],
                     "paper_relative_time": r["paper_relative_time"],
                     "model_relative_time": r["model_relative_time"],
                     "model_relative_time_same_plan": r["model_relative_time_same_plan"],
                     "step_time_s": r["step_time_s"], "plan": plan_text(r),
                     **{f"{k}_s": v for k, v in r["breakdown_s"].items()}})
    for f in (obj.get("paper_figure_variants") or {}).get("variants", []):
        if f["variant"] == fig.get("variant"):
            continue
        for i, r in enumerate(f["rows"]):
            rows.append({"variant": f["variant"], "bar": r["name"], "system": r["system"],
                         "paper_relative_time": r["paper_relative_time"],
                         "model_relative_time": r["model_relative_time"],
                         "model_relative_time_same_plan": r["model_relative_time_same_plan"],
                         "step_time_s": r["step_time_s"], "plan": plan_text(r),
                         "gap_closed": (f.get("gap_closed") or [None] * 3)[i]})
    return rows


def paper_figure_markdown(obj: dict[str, Any]) -> list[str]:
    fig = obj.get("paper_figure_detail")
    if not fig or not fig.get("rows"):
        return []
    L = ["", "## The paper's figure beside the model's", "",
         f"{fig['workload']} on {fig['gpus']} GPUs, {fig['tokens_per_gpu']} tokens per GPU per "
         f"step ({fig['global_batch']} sequences of {fig['seq_len']}), {fig['dtype']}.", "",
         "| bar | paper | model (own best plan) | model (copper's plan) | plan | step s |",
         "|---|---|---|---|---|---|"]
    for r in fig["rows"]:
        L.append(f"| {r['name']} | {r['paper_relative_time']:.2f} | "
                 f"{_f(r['model_relative_time'], '.3f')} | "
                 f"{_f(r['model_relative_time_same_plan'], '.3f')} | {plan_text(r)} | "
                 f"{_f(r['step_time_s'], '.4g')} |")
    L += [""] + [f"- {t}" for t in fig.get("explanation", {}).get("text", [])]
    var = obj.get("paper_figure_variants")
    if var:
        L += ["", "Candidate assumptions behind the published bars (each computed):", "",
              "| variant | bar 2 model | bar 3 model | bar 3 gap closed |", "|---|---|---|---|"]
        for f in var["variants"]:
            if not f["feasible"]:
                L.append(f"| {f['variant']} | - | - | - |")
                continue
            g = (f.get("gap_closed") or [None] * 3)[2]
            L.append(f"| {f['variant']} | {_f(f['rows'][1]['model_relative_time'], '.3f')} | "
                     f"{_f(f['rows'][2]['model_relative_time'], '.3f')} | "
                     f"{_f(g and 100 * g, '.0f')}% |")
        for key, what in (("most", "moves bar 3 most"), ("closest", "comes closest")):
            if var.get(key):
                L += ["", f"Single assumption that {what}: {var[key]['variant']} (bar 3 "
                          f"{var[key]['model_relative_time'][2]:.2f}, "
                          f"{100 * var[key]['gap_closed_bar3']:.0f}% of its gap)."]
    return L


def batch_rows(obj: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for r in obj.get("batch_sweep", []):
        row = {"config": r["config"], "tokens_per_gpu": r["tokens_per_gpu"],
               "global_batch": r["global_batch"], "speedup": r["speedup"]}
        for f in ("copper", "passage"):
            row[f"{f}_days"] = r[f]["time_to_train_days"]
            row[f"{f}_plan"] = plan_text(r[f])
        row.update({f"contribution {g}": v for g, v in (r.get("contribution") or {}).items()})
        rows.append(row)
    return rows


def batch_markdown(obj: dict[str, Any]) -> list[str]:
    rows = obj.get("batch_sweep") or []
    if not rows:
        return []
    groups = list(rows[0].get("contribution") or {})
    L = ["", "## Batch sweep: tokens per GPU per step", "",
         "Both fabrics re-optimized at each point; the speedup minus one split into the parts "
         "of the step, (copper part - Passage part) / Passage step.", "",
         "| config | tokens/GPU | copper days | Passage days | speedup | " + " | ".join(groups)
         + " |", "|---|---|---|---|---|" + "---|" * len(groups)]
    for r in rows:
        c = r.get("contribution") or {}
        L.append(f"| {r['config']} | {r['tokens_per_gpu']} | "
                 f"{_f(r['copper']['time_to_train_days'], '.2f')} | "
                 f"{_f(r['passage']['time_to_train_days'], '.2f')} | "
                 f"{_f(r['speedup'], '.2f')} | " + " | ".join(_f(c.get(g), '+.3f')
                                                             for g in groups) + " |")
    L += [""] + [f"- {w}" for w in obj.get("batch_sweep_why", [])]
    return L
