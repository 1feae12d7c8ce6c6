"""The whole copper-vs-Passage study (= ``cpo-opt reproduce``), with the run mode as a flag.

Measures: each config's best plan and time to train on the copper (144-GPU, 900 GB/s) and Passage (512-GPU, 2000 GB/s
optical) scale-up fabrics and their speedup, the domain-size and bandwidth sweeps with their
knees, co-design under the copper interconnect power, the power Pareto front, and the
elasticities of time to train. Writes results.md, CSVs, reproduce.json and PNGs to --out.

    python experiments/run_study.py --mode quick --out out/reproduce
"""

import argparse
import json
import sys

from cpo_opt.runtime import setup


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["full", "quick", "tiny"], default="full",
                   help="full (default, tens of minutes), quick (~2 min warm), tiny (tests)")
    p.add_argument("--out", default="out/reproduce", help="output folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the reproduce JSON object")
    args = p.parse_args()
    setup()
    from cpo_opt.cli import text
    from cpo_opt.study import reproduce
    obj = reproduce(out_dir=args.out, progress=not args.no_progress, mode=args.mode)
    if args.json:
        json.dump(obj, sys.stdout, indent=1, allow_nan=False)
        print()
        return
    print("time to train (days) of each config's best plan, copper vs Passage:")
    print(text.reproduce_table(obj))
    for k in obj["knees"]:
        print(f"knee {k['config']} {k['sweep']}: {k['knee']}")
    print("\n".join(obj["codesign"].get("text", [])))
    print(f"wall {obj['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
