"""Check: the gradient search against the exhaustive search on the paper figure's bars.

Runs ``cpo_opt.study.paper_figure.figure`` of the given study mode (default ``tiny``, the
test suite's: 16 starts x 100 steps, no exhaustive check of its own) with every bar also
searched exhaustively, and prints per bar the gradient search's step time, the exhaustive
one's, the gap and the plan. It found the polish bug of round 13 (docs/speed.md, "The
polish lost moves to option rules": +8.0% and +6.5% on two bars before the fix, 0 after).

    python experiments/polish_vs_exhaustive.py [--mode tiny]
"""

import argparse
import time

from cpo_opt import runtime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", default="tiny", help="study mode (tiny, quick, full)")
    args = p.parse_args()
    runtime.setup(x64=True)
    from cpo_opt.study import paper_figure
    from cpo_opt.study.spec import load_study
    study = load_study(args.mode)
    search = paper_figure.best_plan
    rows = []

    def both(*a, **k):  # the figure's own call, with the exhaustive search added
        r = search(*a, **{**k, "exhaustive_max": 10 ** 9})
        rows.append(r)
        return r

    paper_figure.best_plan = both
    t0 = time.perf_counter()
    try:
        fig = paper_figure.figure(study)
    finally:
        paper_figure.best_plan = search
    for bar, r in zip(study.paper_figure["bars"], rows):
        s = r["search"]
        print(f"{bar['name']:26s} gradient {s['gradient_step_time_s']:.4f} s, exhaustive "
              f"{s['exhaustive_step_time_s']:.4f} s, gap {100 * s['gradient_gap']:+.1f}%, "
              f"plan {r['plan_line']}")
    print(f"{fig['workload']}, {len(rows)} bars, {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
