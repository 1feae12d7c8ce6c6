"""Layer-level check against DeepSeek's published training profile.

    python experiments/deepseek_profile_check.py [path/to/train.json]

deepseek-ai/profile-data ``train.json`` (PyTorch profiler trace, 8 H800 ranks of an EP 64,
TP 1, 4K-sequence run, balanced routing) holds one DualPipe pair: the forward of one
micro-batch and the backward of another through a chunk of 4 MoE layers, overlapped. The
trace shows one sequence of 4096 tokens per micro-batch (per-token cast kernels over 4096
rows, flash-attention grid 32 x 128 heads x 1). Without the file the script uses the two
durations read from it: the ``ProfilerStep#1`` annotation (112.2 ms) and the span from the
first to the last GPU kernel (129.0 ms).

The model's figure for the same work: the DeepSeek-V3 held-out case's plan
(``deepseek-v3-2048-h800``) with balanced routing on a model of 64 MoE layers (so that every
one of the 16 stages holds 4, as the profiled chunk) and a 1,024-token vocabulary (so the
output layer is negligible), per micro-batch on the pacing rank: all of the step except the
bubble, the DP reduction, the optimizer and ``other``, divided by the micro-batches.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tomllib

import cpo_opt
from cpo_opt.runtime import setup

CASES = pathlib.Path(cpo_opt.__file__).parent / "data" / "moe-heldout.toml"
PROFILE_STEP_MS = 112.202   # ProfilerStep#1 in train.json (user annotation)
KERNEL_SPAN_MS = 129.012    # first kernel start to last kernel end in train.json


def from_trace(path: str) -> tuple[float, float]:
    """``(ProfilerStep ms, kernel span ms)`` of a PyTorch profiler trace."""
    events = json.loads(pathlib.Path(path).read_text())["traceEvents"]
    step = next(e["dur"] for e in events if e.get("name", "").startswith("ProfilerStep"))
    kernels = [e for e in events if e.get("cat") == "kernel"]
    span = max(e["ts"] + e["dur"] for e in kernels) - min(e["ts"] for e in kernels)
    return step / 1e3, span / 1e3


def model_pair() -> tuple[float, float, float]:
    """The model's ``(total, kernels and host, exposed all-to-all)`` ms of one micro-batch's
    forward + backward through 4 MoE layers (module docstring)."""
    case = next(c for c in tomllib.loads(CASES.read_text())["case"]
                if c["id"] == "deepseek-v3-2048-h800")
    model = dict(case["model"], layers=64, vocab=1024,
                 moe=dict(case["model"]["moe"], dense_layers=0))
    r = cpo_opt.evaluate(model, case["system"], dict(case["plan"], perfect_balance=True))
    b = r["breakdown_s"]
    m = r["plan"]["global_batch"] / r["plan"]["dp"]
    total = sum(b[k] for k in ("compute", "tp_comm", "cp_comm", "ep_comm", "pp_comm"))
    return 1e3 * total / m, 1e3 * b["compute"] / m, 1e3 * b["ep_comm"] / m


def main() -> None:
    setup()
    step_ms, span_ms = (from_trace(sys.argv[1]) if len(sys.argv) > 1
                        else (PROFILE_STEP_MS, KERNEL_SPAN_MS))
    total, kernels, ep = model_pair()
    print("DeepSeek-V3, H800, EP 64, TP 1, one 4096-token micro-batch, balanced routing:")
    print("forward + backward of 4 MoE layers (one DualPipe F&B pair)")
    print(f"  profile (deepseek-ai/profile-data train.json): {step_ms:.1f} ms step annotation, "
          f"{span_ms:.1f} ms kernel span")
    print(f"  model: {total:.1f} ms  ({kernels:.1f} ms kernels and host, "
          f"{ep:.1f} ms exposed all-to-all)")
    print(f"  model / profile: {total / step_ms:.2f} (annotation), "
          f"{total / span_ms:.2f} (kernel span)")


if __name__ == "__main__":
    main()
