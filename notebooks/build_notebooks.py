"""Regenerate the study notebooks from the cell sources below, executed, outputs stored.

    python notebooks/build_notebooks.py            # build and execute both (a few minutes)
    python notebooks/build_notebooks.py --no-execute

Each notebook is written, executed in a fresh python3 kernel (nbclient) and stored with its
outputs, so a reader sees the plots and numbers without running it. Its metadata carries
``cpo_opt.inputs_sha256``: the hash of its cell sources and of every file of the package that
its numbers depend on (:func:`inputs_hash`); ``tests/test_study_paper.py`` recomputes it, so a
change of the model, the presets or the study without rebuilding the notebooks fails there.
Edit the cells here, not the .ipynb files.
"""

import argparse
import hashlib
import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).resolve().parent
PACKAGE = HERE.parent / "cpo_opt"
NOT_INPUTS = ("cli",)
"""Package folders whose files do not change a notebook's numbers (left out of the hash)."""
TIMEOUT_S = 1200


def inputs_hash(cells) -> str:
    """sha256 of the cells' sources and of every .py/.toml file of the package (outside
    :data:`NOT_INPUTS`), in sorted path order."""
    h = hashlib.sha256()
    for c in cells:
        h.update(c.cell_type.encode() + b"\0" + c.source.encode() + b"\0")
    for f in sorted(PACKAGE.rglob("*")):
        rel = f.relative_to(PACKAGE)
        if f.suffix in (".py", ".toml") and rel.parts[0] not in NOT_INPUTS \
                and "__pycache__" not in rel.parts:
            h.update(str(rel).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()

SETUP = '''\
from cpo_opt.runtime import setup
setup()  # float64 and the persistent compile cache, as the cpo-opt CLI does

from cpo_opt.study import load_study
from cpo_opt.study.headline import optimum, speedup

study = load_study("quick")
CONFIG = "config1"
print(f"{CONFIG}: {study.params_total(CONFIG) / 1e12:.2f}T parameters, "
      f"{study.global_batch(CONFIG)} sequences of "
      f"{study.models[CONFIG].values['model']['seq_len']} tokens per step, "
      f"{study.tokens:.3g} training tokens on {study.gpus} GPUs")'''

BEST = '''\
best = {f: optimum(study, CONFIG, f) for f in ("copper", "passage")}
for f, r in best.items():
    p = r["plan"]
    print(f"{f:8s} tp={p['tp']} cp={p['cp']} pp={p['pp']} ep={p['ep']} dp={p['dp']}  "
          f"step {r['step_time_s']:.3f} s  MFU {100 * r['mfu']:.1f}%  "
          f"{r['time_to_train_days']:.2f} days  ({r['search']['method']})")'''

FIGURE = '''\
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
from cpo_opt.study import paper_figure

fig_ = paper_figure.figure(study)
rows = fig_["rows"]
print(f"{fig_['workload']} on {fig_['gpus']} GPUs, {fig_['tokens_per_gpu']} tokens per GPU per "
      f"step ({fig_['global_batch']} sequences of {fig_['seq_len']}), {fig_['dtype']}")
print(f"{'bar':26s} {'paper':>6s} {'model':>7s} {'copper plan':>12s}  plan")
for r in rows:
    p = r["plan"]
    print(f"{r['name']:26s} {r['paper_relative_time']:6.2f} {r['model_relative_time']:7.3f} "
          f"{r['model_relative_time_same_plan']:12.3f}  tp={p['tp']} cp={p['cp']} pp={p['pp']} "
          f"ep={p['ep']} dp={p['dp']}")

x = np.arange(len(rows))
fig, ax = plt.subplots(figsize=(7, 3.8))
for i, (key, label, color) in enumerate((
        ("paper_relative_time", "paper (published)", "#999999"),
        ("model_relative_time", "model, own best plan", "#2a7ab9"),
        ("model_relative_time_same_plan", "model, copper's plan", "#b87333"))):
    vals = [r[key] for r in rows]
    ax.bar(x + (i - 1) * 0.27, vals, 0.27, label=label, color=color)
    for xi, v in zip(x, vals):
        ax.text(xi + (i - 1) * 0.27, v + 0.01, f"{v:.2f}", ha="center", fontsize=8)
ax.set_xticks(x)
ax.set_xticklabels([r["name"] for r in rows], fontsize=8)
ax.set_ylabel("relative time to train (lower is better)")
ax.set_title("The paper's figure beside the model's")
ax.legend(fontsize=8)
plt.show()
for line in fig_["explanation"]["text"]:
    print("-", line)'''

PASSAGE_VS_COPPER = [
    new_markdown_cell(
        "# Copper vs Passage\n\n"
        "First the paper's published time-to-train figure (a trillion-parameter MoE on 512 "
        "GPUs: 4 copper pods of 128 at 14.4 Tbps = 1.00, one Passage pod of 512 at 14.4 Tbps "
        "= 0.60, at 32 Tbps = 0.37; as shown in a 2026 Lightmatter talk) beside the model's "
        "bars for the same three systems: each system's own best plan, and the copper "
        "baseline's plan on every system. Nothing is fitted to the published bars.\n\n"
        "Then Config1 (~1T-parameter MoE) at scale on the study's two fabrics: the paper's "
        "copper domain (144 GPUs, 900 GB/s per GPU per direction) and its Passage pod "
        "(512 GPUs, 2000 GB/s), 18,432 GPUs, each with its own best plan; the speedup is the "
        "ratio of the two times to train, with its interval over the model constants' ranges."),
    new_code_cell(SETUP),
    new_markdown_cell("## The paper's figure beside the model's"),
    new_code_cell(FIGURE),
    new_markdown_cell("## The best plan on each fabric"),
    new_code_cell(BEST),
    new_markdown_cell("## Where the step time goes (exposed seconds per step)"),
    new_code_cell('''\
from cpo_opt.study.explain import PARTS
from cpo_opt.cli.text import table

rows = [[k, best["copper"]["breakdown_s"][k], best["passage"]["breakdown_s"][k]]
        for k in PARTS]
rows.append(["step", best["copper"]["step_time_s"], best["passage"]["step_time_s"]])
print(table(rows, ["part (s)", "copper", "passage"]))
for f in best:
    t = best[f]["traffic_GB_per_gpu_per_step"]
    print(f"{f}: {t['scale_out']:.1f} GB scale-out, {t['scale_up']:.1f} GB scale-up per GPU per step")'''),
    new_code_cell('''\
%matplotlib inline
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 4))
bottom = [0.0, 0.0]
for part in PARTS:
    vals = [best[f]["breakdown_s"][part] for f in ("copper", "passage")]
    if max(vals) > 0:
        ax.bar(["copper", "passage"], vals, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, vals)]
ax.set_ylabel("exposed seconds per step")
ax.set_title(CONFIG)
ax.legend(fontsize=8)
plt.show()'''),
    new_markdown_cell("## Speedup, and why (sentences generated from the numbers above)"),
    new_code_cell('''\
from cpo_opt.study.explain import explain

s = speedup(best["copper"], best["passage"])
print(f"speedup: {s:.2f}x  (copper {best['copper']['time_to_train_days']:.2f} days / "
      f"Passage {best['passage']['time_to_train_days']:.2f} days)")
for line in explain(CONFIG, best["copper"], best["passage"], study.fabrics)["text"]:
    print("-", line)

from cpo_opt.study.headline import interval
iv = interval(study, CONFIG, best)
print(f"speedup interval over the constants' ranges ({iv['corners']} corners, plans fixed): "
      f"{iv['interval'][0]:.2f}-{iv['interval'][1]:.2f}x")'''),
    new_markdown_cell("## Where the speedup comes from as the batch grows\n\n"
                      "Tokens per GPU per step swept; both fabrics re-optimized at each point; "
                      "the speedup minus one split into the parts of the step."),
    new_code_cell('''\
from cpo_opt.study import sweeps

brows = sweeps.batch_sweep(study, CONFIG, study.mode.tokens_per_gpu)
groups = list(brows[0]["contribution"])
fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
tpg = [r["tokens_per_gpu"] for r in brows]
a1.plot(tpg, [r["speedup"] for r in brows], "o-")
a1.set_xscale("log", base=2)
a1.set_xlabel("tokens per GPU per step")
a1.set_ylabel("speedup (copper days / Passage days)")
bottom = np.zeros(len(brows))
for g in groups:
    v = np.array([r["contribution"][g] for r in brows])
    a2.bar([str(t) for t in tpg], v, bottom=np.where(v >= 0, bottom, 0), label=g)
    bottom += np.where(v >= 0, v, 0)
a2.set_xlabel("tokens per GPU per step")
a2.set_ylabel("contribution to speedup - 1")
a2.legend(fontsize=7)
plt.show()
print(sweeps.batch_why(brows))'''),
]

SENSITIVITY = [
    new_markdown_cell(
        "# Which hardware knob matters: elasticities of time to train\n\n"
        "At config1's best plan on each fabric, `d log(days) / d log(field)` for every "
        "continuous system field, by automatic differentiation of the exact step-time model "
        "(`cpo_opt.analysis.sensitivity`). An elasticity of -0.3 means 1% more of that field "
        "shortens training by about 0.3% (plan held fixed)."),
    new_code_cell(SETUP),
    new_code_cell(BEST),
    new_code_cell('''\
from cpo_opt.study.elasticity import elasticities
from cpo_opt.cli.text import table

sens = {f: elasticities(study, CONFIG, f, best[f], top=8) for f in best}
fields = [r["field"] for r in sens["copper"]["all"]
          if max(abs(next(x["elasticity"] for x in sens[f]["all"] if x["field"] == r["field"]))
                 for f in sens) > 1e-3]
el = {f: {r["field"]: r["elasticity"] for r in sens[f]["all"]} for f in sens}
print(table([[k, el["copper"][k], el["passage"][k]] for k in fields],
            ["field", "copper", "passage"]))'''),
    new_code_cell('''\
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

y = np.arange(len(fields))
fig, ax = plt.subplots(figsize=(6, 0.35 * len(fields) + 1))
ax.barh(y - 0.2, [el["copper"][k] for k in fields], 0.4, label="copper", color="#b87333")
ax.barh(y + 0.2, [el["passage"][k] for k in fields], 0.4, label="passage", color="#2a7ab9")
ax.set_yticks(y)
ax.set_yticklabels(fields, fontsize=8)
ax.axvline(0, color="k", lw=0.5)
ax.set_xlabel("elasticity of time to train")
ax.legend()
plt.show()'''),
    new_markdown_cell("## Interpretation (generated from the numbers)"),
    new_code_cell('''\
from IPython.display import Markdown

def knob(f):
    e = sens[f]
    k = e["most_important"]
    return (f"On **{f}** the most important hardware knob is `{k}` "
            f"(elasticity {el[f][k]:+.3f}: 10% more of it shortens training by about "
            f"{-100 * (1.1 ** el[f][k] - 1):.1f}%).")

lines = [knob("copper"), knob("passage")]
for k in ("scale_up.bandwidth_GB_s", "scale_out.bandwidth_GB_s", "scale_up.domain_size"):
    a, b = el["copper"][k], el["passage"][k]
    more = "more" if abs(b) > abs(a) else "less"
    lines.append(f"`{k}`: {a:+.3f} on copper, {b:+.3f} on Passage: time to train depends "
                 f"{more} on it at the Passage optimum.")
compute = "gpu.matmul_tflops_fp8"
lines.append(f"`{compute}` (the GPU's fp8 peak): {el['copper'][compute]:+.3f} on copper vs "
             f"{el['passage'][compute]:+.3f} on Passage; a larger magnitude means a step "
             "closer to compute-bound.")
Markdown("\\n\\n".join(lines))'''),
]


NOTEBOOKS = {"passage_vs_copper": PASSAGE_VS_COPPER, "sensitivity": SENSITIVITY}


def execute(nb, timeout: int = TIMEOUT_S):
    """Run ``nb`` in a fresh python3 kernel from this folder; outputs stored in place."""
    import nbclient
    nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(HERE)}}).execute()
    return nb


def build(names=None, run: bool = True) -> None:
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
            "cpo_opt": {"inputs_sha256": inputs_hash(cells), "executed": run}})
        nbformat.validate(nb)
        if run:
            execute(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print(f"wrote {HERE / (name + '.ipynb')}" + (" (executed)" if run else ""))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Regenerate (and execute) the study notebooks")
    ap.add_argument("names", nargs="*", help=f"notebooks (default: all of {list(NOTEBOOKS)})")
    ap.add_argument("--no-execute", action="store_true", help="write without outputs")
    args = ap.parse_args()
    build(args.names, run=not args.no_execute)
