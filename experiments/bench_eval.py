"""Benchmark: exact batched evaluations per second (``cpo-opt bench`` on several scenarios).

Prints one line per (scenario, dtype): evaluations/s of the full exact model (every field of
StepTime) on distinct valid plans, after compilation, results blocked on.

    python experiments/bench_eval.py [--n 4000000] [--batch 16384] [--dtypes float32]
                                     [--only deepseek-v3 ...]

With each rate: XLA's cost analysis per plan (flops, transcendentals, bytes accessed) and
the load average (the machine is shared).
"""

import argparse
import json

from cpo_opt.analysis.bench import bench
from cpo_opt.inputs.loaders import load_model, load_system

SCENARIOS = [
    ("megatron-1t", "dgx-a100-selene"),
    ("llama3-405b", "dgx-h100"),
    ("deepseek-v3", "gb200-nvl72"),
    ("config4", "study-passage"),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4_000_000)
    ap.add_argument("--batch", type=int, default=None, help="default: bench's (16k on CPU)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--only", nargs="+", default=None, metavar="MODEL",
                    help="run only the scenarios of these models")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = []
    for dtype in args.dtypes:  # float64 last: enabling x64 is one-way
        for model, system in SCENARIOS:
            if args.only and model not in args.only:
                continue
            try:
                m, s = load_model(model), load_system(system)
            except Exception as e:  # a preset not shipped yet
                print(f"skip {model}/{system}: {e}")
                continue
            r = bench(m, s, n=args.n, batch=args.batch, dtype=dtype)
            rows.append(r)
            if not args.json:
                c = r.get("cost_per_plan") or {}
                print(f"{model:>14s} on {system:<16s} {dtype}: {r['evaluations_per_s']:.3g} "
                      f"evaluations/s ({r['n']} plans, batch {r['batch']}, compile "
                      f"{r['compile_s']:.1f} s, space {r['lattice_size']} plans; per plan "
                      f"{c.get('flops', 0):.0f} flop, {c.get('transcendentals', 0):.0f} "
                      f"transc., {c.get('bytes', 0):.0f} B; load "
                      f"{open('/proc/loadavg').read().split()[0]})", flush=True)
    if args.json:
        print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
