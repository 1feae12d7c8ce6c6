"""Errors of the model on the published training runs, by source, by model size, between
hardware, and the memory fit of every published plan (issues 20 and 21).

    python experiments/published_errors.py                 # markdown tables on stdout
    python experiments/published_errors.py --json out.json # the same numbers as JSON

Every number comes from ``cpo_opt.validate`` (the function behind ``cpo-opt validate``) on the
shipped case files; nothing is typed by hand. Which files informed a constant (in sample) and
which never did (out of sample) is said in each table's title, from
:data:`cpo_opt.model.fitted.ABOUT` (the cases files of the shipped fit).

* By source: the case id up to its first ``-`` (``mb2604``: Megatron-Bridge 26.04, ``mb2511``:
  25.11, ``mz``: Megatron-MoE-ModelZoo, ``am``: NeMo AutoModel, ...).
* By model size: small = hidden <= 4096 (gpt-oss, Qwen3-30B-A3B, Qwen3-235B-A22B), large =
  hidden > 4096 (DeepSeek-V3, Kimi-K2).
* Between hardware: the same model, release and precision on different GPUs (the case id with
  its GPU token removed, as the header of ``moe-published.toml`` lists the pairs): the model's
  step-time ratio over the measured one, ``(1 + e_a) / (1 + e_b)``, for every pair.
* Memory: the model's HBM per GPU for each published plan against the GPU's capacity (the
  runs did fit).
"""

from __future__ import annotations

import argparse
import itertools
import json
import pathlib

import numpy as np

import cpo_opt
from cpo_opt.inputs.loaders import load_cases
from cpo_opt.model import fitted
from cpo_opt.runtime import setup

ROOT = pathlib.Path(cpo_opt.__file__).parent
DATA = ROOT / "data"
SETS = ("moe-published.toml", "moe-published-recipes.toml", "dense-published.toml",
        "moe-heldout.toml", "modern.toml", "moe-fit.toml", "megatron-a100.toml")
GPU_TOKENS = ("gb300", "gb200", "b300", "b200", "h100", "h800", "a100")


def sample(name: str) -> str:
    """'in sample' when the shipped fit used the file, else 'out of sample'."""
    used = {pathlib.Path(p).name for p in fitted.ABOUT.get("cases_files", [])}
    return "in sample (informs the shipped constants)" if name in used else "out of sample"


def summary(errors) -> dict:
    a = np.asarray(errors, dtype=float)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "median_abs": float(np.median(np.abs(a))),
            "mean": float(np.mean(a)), "mean_abs": float(np.mean(np.abs(a))),
            "max_abs": float(np.max(np.abs(a)))}


def pct(x) -> str:
    return f"{100 * x:+.1f}%"


def run() -> dict:
    out = {}
    for name in SETS:
        path = DATA / name
        if not path.exists():
            continue
        r = cpo_opt.validate(path).to_dict()
        cases = r["cases"]
        loaded = {k.id: k for k in load_cases(path)}
        for c in cases:
            k = loaded[c["id"]]
            c["hidden"] = float(k.model.model.hidden)
            c["hbm_GB"] = float(k.system.system.gpu.hbm_bytes) / 1e9
        out[name] = {"sample": sample(name), "cases": cases}
    return out


def tables(res: dict) -> str:
    lines = []
    for name, r in res.items():
        cases = r["cases"]
        errs = [c["error"] for c in cases]
        s = summary(errs)
        lines.append(f"### `{name}` ({r['sample']}): {s['n']} runs, median |error| "
                     f"{100 * s['median_abs']:.1f}%, mean {pct(s['mean'])}, max |error| "
                     f"{100 * s['max_abs']:.1f}%\n")
        lines.append("| by | group | runs | median abs | mean | max abs |")
        lines.append("|---|---|---:|---:|---:|---:|")
        groups: dict[tuple[str, str], list[float]] = {}
        for c in cases:
            groups.setdefault(("source", c["id"].split("-")[0]), []).append(c["error"])
            size = "small (hidden <= 4096)" if c["hidden"] <= 4096 else "large (hidden > 4096)"
            groups.setdefault(("model size", size), []).append(c["error"])
        for (by, g), e in sorted(groups.items()):
            t = summary(e)
            lines.append(f"| {by} | {g} | {t['n']} | {100 * t['median_abs']:.1f}% | "
                         f"{pct(t['mean'])} | {100 * t['max_abs']:.1f}% |")
        lines.append("")
        # cross-hardware ratios
        pairs = []
        by_key: dict[str, list[dict]] = {}
        for c in cases:
            parts = c["id"].split("-")
            gpu = [p for p in parts if p in GPU_TOKENS]
            if len(gpu) != 1:
                continue
            key = "-".join(p for p in parts if p not in GPU_TOKENS)
            by_key.setdefault(key, []).append({**c, "gpu": gpu[0]})
        for key, members in sorted(by_key.items()):
            for a, b in itertools.combinations(members, 2):
                pairs.append((key, a["gpu"], b["gpu"], (1 + a["error"]) / (1 + b["error"]) - 1))
        if pairs:
            worst = max(abs(p[3]) for p in pairs)
            within = sum(abs(p[3]) <= 0.20 for p in pairs)
            lines.append(f"Step-time ratios between hardware (model / measured - 1): "
                         f"{within} of {len(pairs)} pairs within 20%, worst {100 * worst:.1f}%\n")
            lines.append("| runs | a | b | ratio error |")
            lines.append("|---|---|---|---:|")
            for key, a, b, e in pairs:
                lines.append(f"| {key} | {a} | {b} | {pct(e)} |")
            lines.append("")
        # per case, with memory
        nofit = [c for c in cases if not c["fits_memory"]]
        lines.append(f"Per run ({len(nofit)} of {len(cases)} published plans do not fit by the "
                     f"model's account):\n")
        lines.append("| run | predicted s | measured s | error | memory GB | HBM GB | fits |")
        lines.append("|---|---:|---:|---:|---:|---:|---|")
        for c in cases:
            lines.append(f"| {c['id']} | {c['predicted_step_time_s']:.3f} | "
                         f"{c['measured_step_time_s']:.3f} | {pct(c['error'])} | "
                         f"{c['memory_GB_per_gpu']:.1f} | {c['hbm_GB']:.0f} | "
                         f"{'yes' if c['fits_memory'] else 'NO'} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the numbers to this JSON file")
    ap.add_argument("--only", action="append", help="case file name(s) to run (default: all)")
    args = ap.parse_args()
    setup()
    global SETS
    if args.only:
        SETS = tuple(args.only)
    res = run()
    print(tables(res))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
