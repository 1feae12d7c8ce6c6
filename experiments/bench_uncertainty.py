"""Benchmark: the cost of a sampled distribution against one exact evaluation (issue 22).

A distribution of a step time draws the constants from their fitted posterior (and a
model-form factor) and evaluates every sample in one vmapped, compiled call
(:func:`cpo_opt.analysis.uncertainty.sampled_step_times`). This prints, warm (compiled
once, then the median of repeated calls), the wall time of one exact evaluation of the
same design (``step_time_jit``) and of ``--samples`` samples, and their ratio.

    python experiments/bench_uncertainty.py [--samples 256] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

from cpo_opt.analysis import uncertainty as U
from cpo_opt.analysis.evaluate import step_time_jit, structure_of_plan
from cpo_opt.inputs import load_model, load_plan, load_system
from cpo_opt.runtime import setup

DESIGNS = [("deepseek-v3", "gb200-nvl72", "tp=1,pp=8,ep=64,dtype=fp8"),
           ("gpt3-175b", "dgx-a100-selene", "tp=8,pp=8,vpp=2,micro_batch=1,global_batch=1536")]


def _median_wall(fn, repeats: int) -> float:
    fn()  # compile (and warm)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    setup()
    for model, system, plan in DESIGNS:
        m, s = load_model(model), load_system(system)
        p = load_plan(plan, m, s)
        st = structure_of_plan(m, p)

        def one():
            return float(step_time_jit(m.model, s.system, p.plan, structure=st).step_time_s)

        post = [U.posterior_of(s)]
        draws = U.draw(post, args.samples, 0)

        def sampled():
            return U.sampled_step_times(m, [(s, p)], post, draws)[0].sum()

        t1 = _median_wall(one, args.repeats)
        tn = _median_wall(sampled, args.repeats)
        print(f"{model} on {system}: one evaluation {t1 * 1e3:.3f} ms, {args.samples} samples "
              f"{tn * 1e3:.3f} ms: {tn / t1:.1f}x one evaluation "
              f"({args.samples / (tn / t1):.0f} samples per evaluation's time)", flush=True)


if __name__ == "__main__":
    main()
