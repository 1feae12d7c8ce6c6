"""Print the validation tables of docs/validation.md from the shipped case sets.

    python experiments/validation_tables.py > /tmp/tables.md

Every number comes from ``cpo_opt.validate`` on the named file (the same function as
``cpo-opt validate --json``); nothing is typed by hand.
"""

import pathlib

import numpy as np

import cpo_opt
from cpo_opt.runtime import setup

DATA = pathlib.Path(cpo_opt.__file__).parent / "data"
SETS = [("megatron-a100.toml", "Dense A100 (Megatron-LM, informs the shipped constants)"),
        ("moe-fit.toml", "MoE runs that may inform constants (BF16)"),
        ("moe-heldout.toml", "MoE runs held out (FP8; never inform anything)"),
        ("modern.toml", "Out-of-sample modern set (Llama 3 405B H100, DeepSeek-V3 H800, "
                        "Megatron-Core MoE GB200/H100)")]


def main() -> None:
    setup()
    for name, title in SETS:
        r = cpo_opt.validate(DATA / name).to_dict()
        errs = np.array([abs(c["error"]) for c in r["cases"]])
        print(f"### {title}: `cpo-opt validate --cases cpo_opt/data/{name}`\n")
        print("| case | predicted s | measured s | error | memory GB/GPU | fits |")
        print("|---|---:|---:|---:|---:|---|")
        for c in r["cases"]:
            print(f"| {c['id']} | {c['predicted_step_time_s']:.3f} | "
                  f"{c['measured_step_time_s']:.3f} | {100 * c['error']:+.1f}% | "
                  f"{c.get('memory_GB_per_gpu', float('nan')):.1f} | "
                  f"{'yes' if c.get('fits_memory') else 'no'} |")
        print(f"\n{len(errs)} cases: mean |error| {100 * errs.mean():.2f}%, median "
              f"{100 * np.median(errs):.2f}%, max {100 * errs.max():.2f}%\n")


if __name__ == "__main__":
    main()
