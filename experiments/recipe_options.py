"""Published runs evaluated with the software options of their own recipe (issue 20).

``moe-published.toml`` evaluates each run with its plan as the table publishes it (degrees,
batch, precision) and leaves the software options the table does not state to the default
stack. For the Megatron-Bridge 26.04 rows the case's ``source`` also quotes the recipe whose
degrees match the row (``Not in the plan (recipe, not the table): ...``: dispatcher, CUDA
graphs, recompute, EP overlap). This script reads those words, maps each to a plan option, and
evaluates every such run both ways, so the effect of the stack's defaults on the published
errors is measured rather than assumed.

    python experiments/recipe_options.py [--json out.json]

Mapping (the recipe's words -> plan option; anything else is left to the default stack and
listed as unmapped):

* ``HybridEP`` / ``DeepEP`` -> ``dispatcher = "deepep"``; ``alltoall dispatcher`` ->
  ``dispatcher = "alltoall"``
* ``no CUDA graphs`` -> ``cuda_graphs = false``; ``CUDA graphs (...)`` -> ``cuda_graphs = true``
* ``EP overlap off`` / ``EP all-to-all overlap off`` -> ``overlap_ep = false``; ``... on`` ->
  ``true``; ``TP comm overlap off`` -> ``overlap_tp = false``
* ``no recompute`` -> ``recompute = "none"``; ``recompute mla_up_proj`` ->
  ``recompute_mla_up = true``; ``recompute layernorm + moe_act`` -> ``recompute_norm_act =
  true``; ``recompute mlp`` (Megatron's MLP-module recompute), an explicit pipeline layout
  string and the Muon optimizer have no plan option here: listed as unmapped.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import tomllib

import numpy as np

import cpo_opt
from cpo_opt.runtime import setup

DATA = pathlib.Path(cpo_opt.__file__).parent / "data" / "moe-published.toml"
RECIPE = re.compile(r"Not in the plan \(recipe, not the table\): (?P<text>.*?)(?:System:|$)")


def recipe_options(source: str) -> tuple[dict, list[str], str] | None:
    """``(plan options, unmapped words, recipe text)`` of a case's quoted recipe, or None."""
    m = RECIPE.search(source)
    if not m:
        return None
    text = m.group("text")
    opts: dict = {}
    unmapped = []
    if re.search(r"HybridEP|DeepEP", text):
        opts["dispatcher"] = "deepep"
    elif "alltoall dispatcher" in text:
        opts["dispatcher"] = "alltoall"
    if "no CUDA graphs" in text:
        opts["cuda_graphs"] = False
    elif "CUDA graphs (" in text:
        opts["cuda_graphs"] = True
    ep = re.search(r"EP (?:all-to-all )?overlap (on|off)", text)
    if ep:
        opts["overlap_ep"] = ep.group(1) == "on"
    if "TP comm overlap off" in text:
        opts["overlap_tp"] = False
    if "no recompute" in text:
        opts["recompute"] = "none"
    if "mla_up_proj" in text:
        opts["recompute_mla_up"] = True
    if "layernorm + moe_act" in text:
        opts["recompute_norm_act"] = True
    if re.search(r"recompute (?:mla_up_proj \+ )?mlp\b", text):
        unmapped.append("recompute mlp")
    layout = re.search(r"layout '([^']*)'", text)
    if layout:
        unmapped.append(f"pipeline layout {layout.group(1)}")
    if "dist_muon" in text:
        unmapped.append("optimizer dist_muon")
    return opts, unmapped, text


def dotted(table: dict, prefix: str = "") -> dict:
    """``{"cluster": {"gpus": 16}}`` -> ``{"cluster.gpus": 16}`` (``overrides=``'s keys)."""
    out = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out.update(dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def summary(errors) -> dict:
    a = np.asarray(errors, dtype=float)
    return {"n": int(a.size), "median_abs": float(np.median(np.abs(a))),
            "mean": float(np.mean(a)), "max_abs": float(np.max(np.abs(a)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    setup()
    doc = tomllib.loads(DATA.read_text())
    rows = []
    print("| run | options from the recipe | unmapped | measured s | as published | "
          "with the recipe |")
    print("|---|---|---|---:|---:|---:|")
    for case in doc["case"]:
        measured = case["measured"]["step_time_s"]
        kw = {"overrides": dotted(case.get("overrides") or {})}
        base = cpo_opt.evaluate(case["model"], case["system"], dict(case["plan"]), **kw)
        row = {"id": case["id"], "measured_s": measured,
               "published_error": base.step_time_s / measured - 1}
        rec = recipe_options(case["source"])
        if rec is not None:
            opts, unmapped, _ = rec
            r = cpo_opt.evaluate(case["model"], case["system"], {**case["plan"], **opts}, **kw)
            row.update(options=opts, unmapped=unmapped,
                       recipe_error=r.step_time_s / measured - 1)
            shown = ", ".join(f"{k}={str(v).lower()}" for k, v in opts.items())
            print(f"| {case['id']} | {shown} | {', '.join(unmapped) or '-'} | {measured:.3f} | "
                  f"{100 * row['published_error']:+.1f}% | {100 * row['recipe_error']:+.1f}% |",
                  flush=True)
        rows.append(row)
    with_recipe = [r for r in rows if "recipe_error" in r]
    print()
    print("| runs | n | median \\|error\\| as published | with the recipe | mean as published | "
          "with the recipe |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, group, after in (
            ("with a quoted recipe", with_recipe, [r["recipe_error"] for r in with_recipe]),
            ("all of moe-published.toml", rows,
             [r.get("recipe_error", r["published_error"]) for r in rows])):
        a, b = summary([r["published_error"] for r in group]), summary(after)
        print(f"| {label} | {a['n']} | {100 * a['median_abs']:.1f}% | "
              f"{100 * b['median_abs']:.1f}% | {100 * a['mean']:+.1f}% | {100 * b['mean']:+.1f}% |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
