"""The same published plan measured on several software releases (issue 20's bar, read).

    python experiments/release_twins.py

Groups the rows of ``cpo_opt/data/moe-published.toml`` that train the same model on the same
system with the same plan (every plan key equal: degrees, batch, micro-batch, precision,
recompute) under different source releases (the case id up to its first ``-``), and prints:

* each such group's measured step per release, and the oldest over the newest;
* the least number of the group's rows that *any* release-blind prediction (one step time per
  plan, as the default stack gives) must miss by more than 15%: for each group the prediction
  ``p`` that keeps the most rows within ``|p / t - 1| <= 0.15`` (the best ``p`` lies at a row's
  bound, so the candidates are ``0.85 t`` and ``1.15 t``);
* what that forces on the median over the file's rows, even if every row that has no twin were
  predicted exactly.

Nothing is fitted and the model is not run: the numbers are the measurements' own.
"""

from __future__ import annotations

import collections
import pathlib
import tomllib

import numpy as np

FILE = pathlib.Path(__file__).resolve().parents[1] / "cpo_opt" / "data" / "moe-published.toml"
BAR = 0.15


def _model_key(model) -> str:
    return model if isinstance(model, str) else model["name"]


def _system_key(case) -> tuple:
    system, over = case["system"], case.get("overrides", {})
    if isinstance(system, str):
        gpus = over.get("cluster", {}).get("gpus")
        domain = over.get("scale_up", {}).get("domain_size")
        return (system, gpus, domain)
    return (system["gpu"]["name"], system["cluster"]["gpus"], system["scale_up"]["domain_size"])


def twin_groups(cases) -> list[list[dict]]:
    """Groups of two or more rows with the same model, system and plan from different sources."""
    groups = collections.defaultdict(list)
    for case in cases:
        key = (_model_key(case["model"]), _system_key(case),
               tuple(sorted(case["plan"].items())))
        groups[key].append(case)
    return [g for g in groups.values() if len({c["id"].split("-")[0] for c in g}) > 1]


def least_misses(times, bar: float = BAR) -> int:
    """Fewest of ``times`` that one prediction must miss by more than ``bar``."""
    cands = [t * (1.0 - bar) for t in times] + [t * (1.0 + bar) for t in times]
    best = max(sum(abs(p / t - 1.0) <= bar + 1e-12 for t in times) for p in cands)
    return len(times) - best


def main() -> None:
    cases = tomllib.loads(FILE.read_text())["case"]
    groups = twin_groups(cases)
    print(f"`{FILE.name}`: {len(cases)} rows; {sum(len(g) for g in groups)} of them in "
          f"{len(groups)} groups of the same model, system and plan measured on more than one "
          "release.\n")
    print("| model | system (GPUs) | plan | measured s by release | oldest / newest | "
          f"rows any one prediction misses by > {BAR:.0%} |")
    print("|---|---|---|---|---:|---:|")
    forced, ratios = 0, []
    for g in sorted(groups, key=lambda g: g[0]["id"]):
        g = sorted(g, key=lambda c: c["id"].split("-")[0])
        times = [c["measured"]["step_time_s"] for c in g]
        miss = least_misses(times)
        forced += miss
        ratio = times[0] / times[-1]
        ratios.append(ratio)
        plan = g[0]["plan"]
        desc = " ".join(f"{k}{plan[k]}" for k in ("tp", "pp", "vpp", "ep", "micro_batch")
                        if k in plan) + f" gbs{plan['global_batch']} {plan['dtype']}"
        sysk = _system_key(g[0])
        by = ", ".join(f"{c['id'].split('-')[0]} {c['measured']['step_time_s']:.3f}" for c in g)
        print(f"| {_model_key(g[0]['model'])} | {sysk[0]} ({sysk[1] or ''}) | {desc} | {by} | "
              f"{ratio:.2f} | {miss} |")
    n = len(cases)
    print(f"\nOldest over newest release, same plan: median {np.median(ratios):.2f}x, "
          f"range {min(ratios):.2f}-{max(ratios):.2f}x over {len(groups)} groups.")
    print(f"Rows that any release-blind prediction misses by more than {BAR:.0%}: at least "
          f"{forced} of {n}, even with every other row exact; the median over {n} rows is "
          f"above {BAR:.0%} when more than {n // 2} rows are.")


if __name__ == "__main__":
    main()
