"""Benchmark: the batch API, checking a grid of plans and evaluating it (``cpo_opt.plans.grid``
and ``cpo_opt.evaluate_batch``).

Prints, for a DeepSeek-V3 grid on ``h800-cluster`` (tp x pp x ep x micro_batch x vpp x
recompute x zero), the valid plans, the seconds to check them and to evaluate them, first
(compilation included) and again (warm), in plans per second, and the load average (the
machine is shared).

    python experiments/bench_batch.py [--stack NAME|FILE]

Checking resolves every plan on the stack as ``evaluate`` does, the default stack's
``"fit"`` recompute modules and ``"auto"`` placement included (scored in batched calls).
"""

import argparse
import os
import time

import cpo_opt

GRID = dict(tp=[1, 2, 4, 8], pp=[1, 2, 4, 8, 16], ep=[8, 16, 32, 64], micro_batch=[1, 2, 4],
            vpp=[1, 2], recompute=["none", "selective", "full"], zero=[0, 1, 2, 3],
            global_batch=15360, dtype="fp8")


def once(stack):
    t0 = time.perf_counter()
    batch = cpo_opt.plans.grid("deepseek-v3", "h800-cluster", stack=stack, **GRID)
    t1 = time.perf_counter()
    r = cpo_opt.evaluate_batch(plans=batch)
    t2 = time.perf_counter()
    return len(batch), t1 - t0, t2 - t1, int(r.fits_memory.sum())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stack", default=None, help="default: the default stack")
    a = ap.parse_args()
    for label in ("first", "warm"):
        n, check, ev, fits = once(a.stack)
        print(f"{label}: {n} plans ({fits} fit) check {check:.1f} s ({n / check:,.0f}/s), "
              f"evaluate {ev:.2f} s ({n / ev:,.0f}/s), load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
