"""The paper's time-to-train figure beside the model's, under every candidate assumption.

For each variant of :data:`cpo_opt.study.paper_figure.VARIANTS` (the model as is; a fixed plan
with EP across the 512 GPUs; a smaller / larger batch; no overlap; EP overlapped; a slower
scale-out; bf16) the three bars are re-run (each bar's best plan by exhaustive search, or one
fixed plan where the variant says so) and printed beside the published 1.00 / 0.60 / 0.37,
with the share of the log-distance to the paper's bar that the variant closes. The last lines
name the single assumption that moves bar 3 most and the one that comes closest. Nothing is fitted to the paper's bars.

    python experiments/paper_figure.py [--json out/paper_figure.json] [--only NAME ...]
"""

import argparse
import json
import pathlib

from cpo_opt.runtime import setup
from cpo_opt.study import load_study
from cpo_opt.study.outputs import clean
from cpo_opt.study.paper_figure import summary_rows, variants


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default="out/paper_figure.json")
    ap.add_argument("--only", nargs="*", help="variant names (default: all)")
    args = ap.parse_args()
    setup()
    study = load_study("quick")
    res = variants(study, tuple(args.only) if args.only else None)
    print(f"{'variant':42s} {'bar':26s} paper  model  same-plan  gap closed  plan (tp/cp/pp/ep/dp/mb)")
    for r in summary_rows(res):
        gc = "" if r["gap_closed"] is None else f"{100 * r['gap_closed']:6.0f}%"
        print(f"{r['variant']:42s} {r['bar']:26s} {r['paper_relative_time']:.2f}   "
              f"{r['model_relative_time']:.3f}  {r['model_relative_time_same_plan']:.3f}     "
              f"{gc:>8s}    {r['plan']}{'' if r['fits_memory'] else ' (does not fit)'}")
    print(f"distance to the paper (sum over bars of |log(model/paper)|): model "
          f"{res['base_distance']:.3f}")
    for key, what in (("most", "moves bar 3 most"), ("closest", "comes closest to the paper")):
        m = res[key]
        if m:
            print(f"{key}: {m['variant']} {what}: relative times "
                  f"{', '.join(f'{x:.2f}' for x in m['model_relative_time'])}, distance "
                  f"{m['distance']:.3f}, {100 * m['gap_closed_bar3']:.0f}% of bar 3's gap")
    if args.json:
        p = pathlib.Path(args.json)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(clean(res), indent=1))


if __name__ == "__main__":
    main()
