"""The study's optima under a robust objective against its point optima (issue 22, item 2).

For each config and fabric of the copper-vs-Passage study, the best plan for the point
constants (``optimize``'s default) and the best plan for the 90th percentile of the step time
over sampled constants and the model-form term (``optimize --objective p90``). Both plans are
then re-evaluated on the same fresh draws (256 by default, not the search's): their point,
mean and 90th-percentile step times, how often the other plan is faster, and the expected
regret of taking the point optimum (``E[T_point / min(T_point, T_p90) - 1]``). The last table
gives the study's speedup (copper / Passage) under each objective.

    python experiments/robust_vs_point.py [--configs config1 config4] [--mode quick]
        [--samples 32] [--check-samples 256] [--json out.json]

Everything runs through the library: :func:`cpo_opt.optimize` with the study's loaded model,
fabric and stack, and :mod:`cpo_opt.analysis.uncertainty` for the re-evaluation.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import cpo_opt
from cpo_opt.analysis import uncertainty
from cpo_opt.inputs.loaders import plan_from_values
from cpo_opt.runtime import setup
from cpo_opt.study import load_study


def optima(study, config: str, fabric: str, samples: int, exhaustive: bool | None):
    """``{"point": result, "p90": result}`` of ``cpo_opt.optimize`` on one config/fabric."""
    model, system = study.models[config], study.fabrics[fabric]
    out = {}
    for objective in ("point", "p90"):
        t0 = time.perf_counter()
        r = cpo_opt.optimize(model, system, study.global_batch(config), dtype=study.dtype,
                             tokens=study.tokens, stack=study.stack, exhaustive=exhaustive,
                             objective=objective,
                             samples=None if objective == "point" else samples,
                             starts=study.mode.search_starts, steps=study.mode.search_steps)
        out[objective] = (r.to_dict(), time.perf_counter() - t0)
    return out


def recheck(study, config: str, fabric: str, plans: dict, n: int, seed: int = 12345) -> dict:
    """Both plans on the same ``n`` fresh draws: point/mean/p90 step times, how often each
    is the faster, and the expected regret of each choice."""
    model, system = study.models[config], study.fabrics[fabric]
    designs = [(system, plan_from_values({k: v for k, v in plans[o].items()
                                          if k not in ("dp", "edp", "microbatches")},
                                         model, system, f"{o} optimum", study.stack))
               for o in ("point", "p90")]
    post = uncertainty.posterior_of(system)
    draws = uncertainty.draw([post], n, seed)
    draws = uncertainty.Draws(draws.n, draws.z, np.repeat(draws.eps[:1], 2, 0), draws.alt)
    times, fits = uncertainty.sampled_step_times(model, designs, [post, post], draws)
    times = np.where(fits > 0.5, times, np.inf)
    out = {}
    for i, o in enumerate(("point", "p90")):
        rob = uncertainty.choice_robustness(times, i)
        out[o] = {"mean_s": float(np.mean(times[i])),
                  "p90_s": float(np.quantile(times[i], 0.9)),
                  "faster_fraction": float(rob["wins"][i]),
                  "expected_regret": float(rob["expected_regret"])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["config1", "config2", "config3", "config4"])
    ap.add_argument("--mode", default="quick", choices=("quick", "tiny", "full"))
    ap.add_argument("--samples", type=int, default=32, help="draws the p90 search uses")
    ap.add_argument("--check-samples", type=int, default=256,
                    help="fresh draws both optima are re-evaluated on")
    ap.add_argument("--gradient", action="store_true",
                    help="gradient search on every space (default: exhaustive where the "
                         "library's automatic choice takes it)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    setup()
    study = load_study(args.mode)
    rows = []
    print("| config | fabric | objective | plan | point s | mean s | p90 s | faster in | "
          "expected regret | search s |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for config in args.configs:
        for fabric in ("copper", "passage"):
            res = optima(study, config, fabric, args.samples,
                         False if args.gradient else None)
            plans = {o: res[o][0]["plan"] for o in res}
            check = recheck(study, config, fabric, plans, args.check_samples)
            for o in ("point", "p90"):
                r, wall = res[o]
                row = {"config": config, "fabric": fabric, "objective": o,
                       "plan": r.get("plan_line") or r.get("plan_arg"),
                       "point_step_time_s": r["step_time_s"],
                       "time_to_train_days": r.get("time_to_train_days"),
                       "search_wall_s": wall, "same_plan": plans["point"] == plans["p90"],
                       **check[o]}
                rows.append(row)
                if row["same_plan"]:  # one plan: neither is faster, no regret
                    row.update(faster_fraction=None, expected_regret=0.0)
                faster = "same plan" if row["same_plan"] else f"{row['faster_fraction']:.0%}"
                print(f"| {config} | {fabric} | {o} | `{row['plan']}` | "
                      f"{row['point_step_time_s']:.3f} | {row['mean_s']:.3f} | "
                      f"{row['p90_s']:.3f} | {faster} | "
                      f"{row['expected_regret']:.2%} | {wall:.0f} |", flush=True)
    print()
    print("| config | speedup, point optima (point constants) | speedup, p90 optima (p90 times) |")
    print("|---|---:|---:|")
    for config in args.configs:
        by = {(r["fabric"], r["objective"]): r for r in rows if r["config"] == config}
        sp = by["copper", "point"]["point_step_time_s"] / by["passage", "point"]["point_step_time_s"]
        sr = by["copper", "p90"]["p90_s"] / by["passage", "p90"]["p90_s"]
        print(f"| {config} | {sp:.3f}x | {sr:.3f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
