"""ZeRO-3 with a pipeline: the closed form against the simulator across micro-batch counts and
interleaving (docs/simulator.md, D8).

GPT-3 175B, tp 8, pp 8, cp 4, micro-batch 2, ZeRO-3, on the hgx-b200 preset (8,192 GPUs), on
the plain Megatron stack: a plan bound by its ZeRO-3 traffic, so the pipeline's fill and drain
show whether each chunk's exposure is on the critical chain.

    python experiments/zero3_fill.py          # about 2-4 minutes on two cores
"""

from __future__ import annotations

from cpo_opt.inputs.loaders import load_model, load_system, plan_from_values
from cpo_opt.model.step import step_time
from cpo_opt.sim import simulate

POINTS = [(1, 128), (1, 256), (1, 512), (1, 1024), (1, 2048), (2, 512), (2, 1024), (4, 1024),
          (8, 512), (8, 1024), (12, 1024)]


def main() -> None:
    model, system = load_model("gpt3-175b"), load_system("hgx-b200")
    print("| vpp | m | closed s | simulated s | closed / sim - 1 |")
    print("|---:|---:|---:|---:|---:|")
    for vpp, gb in POINTS:
        plan = plan_from_values(dict(tp=8, pp=8, cp=4, vpp=vpp, micro_batch=2, global_batch=gb,
                                     zero=3, recompute="none", overlap_tp=True),
                                model, system, "zero3_fill", "megatron-defaults")
        closed = step_time(model.model, system.system, plan.plan)
        sim = simulate(model.model, system.system, plan.plan)
        c = float(closed.step_time_s)
        print(f"| {vpp} | {int(float(closed.microbatches))} | {c:.3f} | {sim.step_time_s:.3f} "
              f"| {c / sim.step_time_s - 1:+.1%} |", flush=True)


if __name__ == "__main__":
    main()
