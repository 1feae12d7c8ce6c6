"""PNG figures of a study run (matplotlib, Agg backend). Plotting only: every number comes
from the reproduce object; nothing is computed here beyond picking it out."""

from __future__ import annotations

import pathlib
from cpo_opt.model.step import BREAKDOWN_PARTS
from typing import Any

PARTS = BREAKDOWN_PARTS
COLORS = {"copper": "#b87333", "passage": "#2a7ab9"}
LABELS = {"compute": "compute", "tp_comm": "tensor-parallel comm.",
          "cp_comm": "context-parallel comm.", "ep_comm": "expert all-to-all",
          "pp_comm": "pipeline send/recv", "dp_comm": "data-parallel comm.",
          "bubble": "pipeline bubble", "optimizer": "optimizer step", "other": "other"}
"""Human names of the breakdown parts for legends."""
FABRICS = {"copper": "copper", "passage": "Passage"}


def _data_ticks(ax, xs) -> None:
    """Ticks at the data's own x values, written as numbers (no 2^k or 6x10^0 labels)."""
    from matplotlib.ticker import NullFormatter, NullLocator
    ticks = sorted(set(float(x) for x in xs))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:,.0f}" if t >= 10 else f"{t:g}" for t in ticks], fontsize=8)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def headline(obj: dict[str, Any], path: pathlib.Path) -> None:
    """Time to train per config and fabric, with the speedup written over each pair."""
    plt = _plt()
    cs = obj["configs"]
    fig, ax = plt.subplots(figsize=(7, 4))
    w = 0.38
    for j, f in enumerate(("copper", "passage")):
        days = [c[f]["time_to_train_days"] or 0.0 for c in cs]
        ax.bar([i + (j - 0.5) * w for i in range(len(cs))], days, w, label=FABRICS[f],
               color=COLORS[f])
    for i, c in enumerate(cs):
        if c["speedup"]:
            top = max(c["copper"]["time_to_train_days"], c["passage"]["time_to_train_days"])
            ax.text(i, top * 1.02, f"{c['speedup']:.2f}x", ha="center", va="bottom")
    ax.set_xticks(range(len(cs)))
    ax.set_xticklabels([f"{c['name']}\n{c['params_total'] / 1e12:.1f}T" for c in cs])
    ax.set_ylabel("time to train, days")
    ax.set_title(f"{obj['assumptions']['training_tokens']['value']:.3g} tokens on "
                 f"{obj['assumptions']['cluster_gpus']['value']} GPUs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def breakdown(obj: dict[str, Any], path: pathlib.Path) -> None:
    """Stacked exposed step-time parts per config and fabric."""
    plt = _plt()
    bars = [(f"{c['name']}\n{FABRICS[f]}", c[f]["breakdown_s"]) for c in obj["configs"]
            for f in ("copper", "passage") if c[f]["breakdown_s"]]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(bars)), 4.5))
    bottom = [0.0] * len(bars)
    cmap = plt.get_cmap("tab10")
    for k, part in enumerate(PARTS):
        vals = [b[part] for _, b in bars]
        if max(vals, default=0) <= 0:
            continue
        ax.bar(range(len(bars)), vals, 0.7, bottom=bottom, label=LABELS.get(part, part),
               color=cmap(k))
        bottom = [x + v for x, v in zip(bottom, vals)]
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([n for n, _ in bars], fontsize=8)
    ax.set_ylabel("exposed seconds per step")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep(obj: dict[str, Any], kind: str, path: pathlib.Path) -> None:
    """Time to train against the swept field (log x), one line per config, knees marked."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    knees = {k["config"]: k["knee"] for k in obj["knees"] if k["sweep"] == kind}
    marked, all_x = False, []
    for config in dict.fromkeys(s["config"] for s in obj["sweeps"] if s["sweep"] == kind):
        rows = [s for s in obj["sweeps"] if s["sweep"] == kind and s["config"] == config
                and s["time_to_train_days"] is not None]
        xs = [r["value"] for r in rows]
        ys = [r["time_to_train_days"] for r in rows]
        all_x += xs
        (line,) = ax.plot(xs, ys, "o-", label=config)
        if knees.get(config) in xs:
            i = xs.index(knees[config])
            ax.plot([xs[i]], [ys[i]], "*", ms=14, color=line.get_color())
            marked = True
    ax.set_xscale("log")
    ax.set_yscale("log")
    _data_ticks(ax, all_x)
    ax.set_xlabel("scale-up domain size, GPUs" if kind == "domain"
                  else "scale-up bandwidth per GPU per direction, GB/s")
    ax.set_ylabel("time to train, days")
    ax.set_title("plan re-optimized at each point"
                 + ("; * = knee: beyond it no step gains the knee threshold" if marked
                    else "; no knee in the swept range"), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def pareto(obj: dict[str, Any], path: pathlib.Path) -> None:
    """Time to train vs interconnect power: co-design points and the two presets."""
    plt = _plt()
    p = obj["pareto"]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    pts = sorted((q for q in p["points"] if q["feasible"]), key=lambda q: q["power_kW"])
    ax.plot([q["power_kW"] / 1e3 for q in pts], [q["time_to_train_days"] for q in pts], "o-",
            color="#444", label=f"co-design ({p['config']}, Passage, domain and GB/s free)")
    for q in pts:
        ax.annotate(f"{q['domain_size']:.0f} GPUs\n{q['bandwidth_GB_s']:.0f} GB/s",
                    (q["power_kW"] / 1e3, q["time_to_train_days"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4))
    for q in p["presets"]:
        ax.plot([q["power_kW"] / 1e3], [q["time_to_train_days"]], "s", ms=9,
                color=COLORS.get(q["name"], "k"),
                label=f"{FABRICS.get(q['name'], q['name'])} preset")
    ax.axvline(p["copper_power_kW"] / 1e3, ls=":", color=COLORS["copper"], alpha=0.6)
    ax.set_xlabel("provisioned interconnect power of the cluster, MW")
    ax.set_ylabel("time to train, days")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_all(obj: dict[str, Any], out_dir: str | pathlib.Path) -> list[str]:
    """Every figure; returns the file names written."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    jobs = [("time_to_train.png", lambda p: headline(obj, p)),
            ("breakdown.png", lambda p: breakdown(obj, p))]
    kinds = {s["sweep"] for s in obj["sweeps"]}
    for kind in ("domain", "bandwidth"):
        if kind in kinds:
            jobs.append((f"sweep_{kind}.png", lambda p, k=kind: sweep(obj, k, p)))
    if obj.get("pareto", {}).get("points"):
        jobs.append(("pareto.png", lambda p: pareto(obj, p)))
    for name, fn in jobs:
        fn(out / name)
        names.append(name)
    return names
