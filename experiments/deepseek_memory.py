"""DeepSeek-V3's published H800 plan, HBM per GPU as each documented mechanism is added.

    python experiments/deepseek_memory.py

The plan is the held-out case ``deepseek-v3-2048-h800`` (cpo_opt/data/moe-heldout.toml):
PP 16, EP 64, ZeRO-1, FP8, RMSNorm and MLA up-projection recompute. Each row adds one
mechanism of the DeepSeek-V3 report (sec. 3.2.1 DualPipe, sec. 3.3.3 low-precision storage
and bf16 AdamW moments) and prints the model's memory breakdown of the most loaded rank, so
the remaining gap to 80 GB is visible term by term.
"""

from __future__ import annotations

import pathlib
import tomllib

import cpo_opt
from cpo_opt.runtime import setup

CASES = pathlib.Path(cpo_opt.__file__).parent / "data" / "moe-heldout.toml"
LADDER = [
    ("interleaved 1F1B stand-in (vpp 2), TE fp8 storage", dict(vpp=2, schedule="1f1b",
                                                            low_precision_storage=False,
                                                            bf16_moments=False)),
    ("+ DualPipe (vpp 1: two stages per rank, PP+1 in flight)",
     dict(vpp=1, schedule="dualpipe", low_precision_storage=False, bf16_moments=False)),
    ("+ low-precision storage (E5M6 attention output, fp8 SwiGLU input)",
     dict(vpp=1, schedule="dualpipe", low_precision_storage=True, bf16_moments=False)),
    ("+ bf16 Adam moments (the published plan)",
     dict(vpp=1, schedule="dualpipe", low_precision_storage=True, bf16_moments=True)),
]


def main() -> None:
    setup()
    case = next(c for c in tomllib.loads(CASES.read_text())["case"]
                if c["id"] == "deepseek-v3-2048-h800")
    parts = ("weights", "gradients", "optimizer", "activations", "reserved")
    print("| plan | " + " | ".join(parts) + " | total GB | fits 80 GB | step s |")
    print("|---|" + "---:|" * (len(parts) + 3))
    for label, change in LADDER:
        r = cpo_opt.evaluate(case["model"], case["system"], dict(case["plan"], **change))
        b = r["memory_breakdown_GB"]
        print(f"| {label} | " + " | ".join(f"{b[p]:.1f}" for p in parts)
              + f" | {r['memory_GB_per_gpu']:.1f} | {'yes' if r['fits_memory'] else 'no'}"
              f" | {r['step_time_s']:.2f} |")


if __name__ == "__main__":
    main()
