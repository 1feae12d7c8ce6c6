"""Benchmark: gradient search vs exhaustive search (wall time, evaluations, optimum gap).

For each scenario both searches run on the same space; the gradient search's step time is
compared with the exhaustive optimum. The last scenario frees two fabric fields (scale-up
bandwidth and domain size) under a power budget: the exhaustive search then scores every plan
at every point of a 9 x 9 hardware grid, while the gradient search treats the fields as
continuous variables.

    python experiments/bench_search.py [--skip-large]

Each search runs twice (the large co-design case once): the first call includes compilation
(or loading it from the persistent cache), the second shows the compiled search.
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

from cpo_opt.model import fabric_cost  # noqa: E402
from cpo_opt.runtime import enable_compile_cache  # noqa: E402
from cpo_opt.inputs.loaders import load_model, load_system  # noqa: E402
from cpo_opt.search import exhaustive_search, gradient_search, make_space  # noqa: E402

PLAN_SCENARIOS = [
    ("megatron-1t", "dgx-a100-selene", None, 3072),
    ("llama3-405b", "dgx-h100", None, 2048),
    ("deepseek-v3", "gb200-nvl72", None, 15360),
]


def timed(fn, repeat):
    """Wall seconds of the first call (compilation or cache load included) and of the
    fastest later call (compiled), and the last result."""
    walls = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = fn()
        walls.append(time.perf_counter() - t0)
    return walls[0], min(walls[1:]) if len(walls) > 1 else walls[0], res


def run(space, label, grid=9, repeat=2):
    ex_first, ex_warm, ex = timed(lambda: exhaustive_search(space, grid=grid), repeat)
    gr_first, gr_warm, gr = timed(lambda: gradient_search(space), repeat)
    gap = gr.step_time_s / ex.step_time_s - 1
    print(f"{label}\n"
          f"  exhaustive: {ex.evaluations:>11d} evaluations  first call {ex_first:7.1f} s, "
          f"compiled {ex_warm:7.2f} s  step {ex.step_time_s:.4g} s\n"
          f"              {ex.plan_values} {ex.hardware}\n"
          f"  gradient:   {gr.evaluations:>11d} evaluations  first call {gr_first:7.1f} s, "
          f"compiled {gr_warm:7.2f} s  step {gr.step_time_s:.4g} s  gap {100 * gap:+.2f}%\n"
          f"              {gr.plan_values} {gr.hardware}\n"
          f"  gradient search faster by {ex_first / gr_first:.1f}x (first calls), "
          f"{ex_warm / gr_warm:.1f}x (compiled)", flush=True)


def codesign_space():
    """The co-design space of issue 24: DeepSeek-V3 on GB200 (domain up to 1152 GPUs, escape
    bandwidth 3600 GB/s), scale-up bandwidth and domain size free under 1.5x the NVL72
    interconnect power, global batch 15360 (234,123,696 rows on a 9 x 9 grid)."""
    m, s = load_model("deepseek-v3"), load_system("gb200-nvl72", overrides={
        "scale_up.max_domain_size": "1152", "scale_up.escape_bandwidth_GB_s": "3600"})
    free = ("scale_up.bandwidth_GB_s", "scale_up.domain_size")
    budget = 1.5 * float(fabric_cost.interconnect_power_w(s.system))
    return make_space(m, s, 15360, free=free, power_budget_w=budget,
                      bounds={free[0]: (225.0, 3600.0), free[1]: (8.0, 1152.0)})


def small_codesign_space():
    """A small co-design space (the CPU run of experiments/gpu_check.sh): Megatron-1T on
    Selene, global batch 3072, scale-up bandwidth free (default bounds) under 1.5x Selene's
    interconnect power."""
    s = load_system("dgx-a100-selene")
    free = ("scale_up.bandwidth_GB_s",)
    budget = 1.5 * float(fabric_cost.interconnect_power_w(s.system))
    return make_space(load_model("megatron-1t"), s, 3072, free=free, power_budget_w=budget)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-large", action="store_true", help="skip the co-design scenario")
    ap.add_argument("--large-only", action="store_true", help="only the co-design scenario")
    args = ap.parse_args()
    enable_compile_cache()
    print("load average", open("/proc/loadavg").read().split()[0], flush=True)
    for model, system, ov, gb in ([] if args.large_only else PLAN_SCENARIOS):
        space = make_space(load_model(model), load_system(system, overrides=ov), gb)
        run(space, f"{model} on {system}: plans only")
    if not args.skip_large:
        run(codesign_space(), "deepseek-v3 on gb200-nvl72, co-design of scale-up bandwidth "
                              "and domain size under 1.5x the NVL72 interconnect power",
            repeat=1)
    print("load average", open("/proc/loadavg").read().split()[0], flush=True)


if __name__ == "__main__":
    main()
