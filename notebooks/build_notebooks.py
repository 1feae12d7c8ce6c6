"""Regenerate the study notebooks (without outputs) from the cell sources below.

    python notebooks/build_notebooks.py

Each notebook is executed by ``tests/test_notebooks.py``; edit the cells here, not the
.ipynb files.
"""

import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = pathlib.Path(__file__).parent

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

PASSAGE_VS_COPPER = [
    new_markdown_cell(
        "# Copper vs Passage for one workload\n\n"
        "Config1 (~1T-parameter MoE) on the study's two fabrics: a copper NVL72 scale-up "
        "domain (72 GPUs, 900 GB/s per GPU per direction) and a Passage optical domain "
        "(576 GPUs, 800 GB/s). Each fabric gets its own best parallel plan (gradient search "
        "over the plan lattice, exact re-scoring); the speedup is the ratio of the two "
        "times to train."),
    new_code_cell(SETUP),
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
    print("-", line)'''),
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


def build() -> None:
    for name, cells in (("passage_vs_copper", PASSAGE_VS_COPPER), ("sensitivity", SENSITIVITY)):
        nb = new_notebook(cells=cells, metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}})
        nbformat.validate(nb)
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print(f"wrote {HERE / (name + '.ipynb')}")


if __name__ == "__main__":
    build()
