"""Time to train against the scale-up domain size, plan re-optimized at every point.

Measures: for one config, the best plan and time to train on the Passage fabric preset with
``scale_up.domain_size`` set to each value (every other field as the preset), the gain per
doubling between points, and the knee (smallest size beyond which each doubling gains less
than the study's 5%), with the reason read from the step breakdown at the knee.

    python experiments/sweep_domain.py --config config4 --values 8 16 32 72 144 288 512 1024
"""

import argparse

from cpo_opt.runtime import setup


def run(kind: str, doc: str, default_values) -> None:
    """Shared body of the domain and bandwidth sweep scripts."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--config", default="config4", help="study workload (config1..config4)")
    p.add_argument("--values", type=float, nargs="+", default=None,
                   help=f"points of the sweep (default: the study's {kind} grid)")
    p.add_argument("--mode", choices=["full", "quick", "tiny"], default="quick",
                   help="search effort: full re-optimizes exhaustively, quick by gradient")
    args = p.parse_args()
    setup()
    from cpo_opt.study import load_study
    from cpo_opt.study.sweeps import UNITS, gains_per_doubling, knee_report, run_sweep
    study = load_study(args.mode)
    values = args.values or default_values(study)
    rows = run_sweep(study, args.config, kind, values)
    gains = gains_per_doubling([r["value"] for r in rows],
                               [r["time_to_train_days"] for r in rows]) + [None]
    print(f"{args.config}: time to train vs {kind} ({UNITS[kind]}), Passage preset otherwise")
    print(f"{'value':>8} {'days':>8} {'gain/doubling':>14}  plan")
    for r, g in zip(rows, gains):
        plan = r["plan"] or {}
        days = r["time_to_train_days"]
        print(f"{r['value']:>8g} {days if days is None else round(days, 3):>8} "
              f"{'' if g is None else f'{100 * g:.1f}%':>14}  tp={plan.get('tp')} "
              f"cp={plan.get('cp')} pp={plan.get('pp')} ep={plan.get('ep')} "
              f"dp={plan.get('dp')}")
    print(knee_report(rows, study.knee_threshold)["why"])


if __name__ == "__main__":
    run("domain", __doc__, lambda study: study.assumptions["domain_sizes"]["value"])
