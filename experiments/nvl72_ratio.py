"""The ratio that carries the study: the same model on NVL72 racks against 8-GPU nodes.

    python experiments/nvl72_ratio.py

Tokens per second per GPU on GB200 NVL72 over H100 8-GPU nodes, measured (NVIDIA's
Megatron-Core MoE report, arXiv 2603.07685, Table 11 rows as in the case files) and by the
model, for the two models the report ran on both: DeepSeek-V3 in fp8 (held-out rows) and
Qwen3-235B in bf16 (fit rows). Issue 14 asks for the model's ratio within 20% of measured.
"""

from __future__ import annotations

import pathlib
import tomllib

import cpo_opt
from cpo_opt.runtime import setup

DATA = pathlib.Path(cpo_opt.__file__).parent / "data"
PAIRS = [("mcoremoe-dsv3-gb200-mxfp8", "mcoremoe-dsv3-h100-fp8", "DeepSeek-V3 fp8"),
         ("mcoremoe-qwen3-gb200-bf16", "mcoremoe-qwen3-h100-bf16", "Qwen3-235B bf16")]


def cases() -> dict:
    out = {}
    for name in ("moe-fit.toml", "moe-heldout.toml"):
        out.update({c["id"]: c for c in tomllib.loads((DATA / name).read_text())["case"]})
    return out


def tokens_per_s_per_gpu(case: dict, predicted: bool) -> float:
    """Tokens per second per working GPU (aligned runs idle some GPUs of their racks)."""
    r = cpo_opt.evaluate(case["model"], case["system"], case["plan"], stack=case.get("stack"))
    t = r["step_time_s"] if predicted else case["measured"]["step_time_s"]
    tokens = case["plan"]["global_batch"] * case["model"]["seq_len"]
    return tokens / (t * r["placement"]["working_gpus"])


def ratios() -> list[tuple[str, float, float]]:
    """``(label, measured ratio, model ratio)`` per pair."""
    c = cases()
    return [(label,
             tokens_per_s_per_gpu(c[nvl], False) / tokens_per_s_per_gpu(c[h100], False),
             tokens_per_s_per_gpu(c[nvl], True) / tokens_per_s_per_gpu(c[h100], True))
            for nvl, h100, label in PAIRS]


def main() -> None:
    setup()
    print("| model | NVL72 / 8-GPU nodes, measured | model | error |")
    print("|---|---:|---:|---:|")
    for label, meas, model in ratios():
        print(f"| {label} | {meas:.2f} | {model:.2f} | {100 * (model / meas - 1):+.0f}% |")


if __name__ == "__main__":
    main()
