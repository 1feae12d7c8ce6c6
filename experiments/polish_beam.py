"""The gradient search's polish beam on one study point where the search misses (round 14).

    python experiments/polish_beam.py [--config config4] [--tokens 8192] [--beams 8 16 32]

The quick study's batch sweep searches each point by gradient only (too many plans to
enumerate: 19M for config4 on copper at 8192 tokens per GPU). This prints, for each beam
width of :func:`cpo_opt.search.gradient_search` (the study's starts and steps, seed 0), the
step time it ends at, the polish rounds, the exact evaluations and the wall time, so the
cost of a wider polish is measured next to what it finds.
"""

from __future__ import annotations

import argparse
import time

from cpo_opt.runtime import setup
from cpo_opt.search import gradient_search, make_space
from cpo_opt.study import load_study


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config4")
    ap.add_argument("--fabric", default="copper")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per GPU per step")
    ap.add_argument("--beams", type=int, nargs="+", default=[8, 16, 32])
    args = ap.parse_args()
    setup()
    study = load_study("quick")
    gb = study.global_batch(args.config, args.tokens)
    space = make_space(study.models[args.config], study.fabrics[args.fabric], gb, study.dtype,
                       (), stack=study.stack)
    print(f"{args.config} on {args.fabric}, {args.tokens} tokens/GPU (global batch {gb})")
    print("| beam | step s | polish rounds | exact evaluations | wall s |")
    print("|---:|---:|---:|---:|---:|")
    for beam in args.beams:
        t = time.perf_counter()
        g = gradient_search(space, starts=study.mode.search_starts,
                            steps=study.mode.search_steps, seed=0, beam=beam)
        print(f"| {beam} | {g.step_time_s:.4f} | {g.detail['polish_rounds']} | "
              f"{g.detail['exact_evaluations']:,} | {time.perf_counter() - t:.1f} |")


if __name__ == "__main__":
    main()
