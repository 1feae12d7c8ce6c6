"""The GPU check of issue 24, for one short lease: bench rates, the co-design search both ways,
and the default backend's evaluate/optimize JSON against the CPU's.

    experiments/gpu_check.sh                  # full size (the goal: < 5 min on one GPU)
    SMALL=1 experiments/gpu_check.sh          # tiny batches, the small co-design (runs on CPU)
    SIZE=5 experiments/gpu_check.sh           # grid points per free field of the co-design
    python experiments/gpu_check.py [--small] [--size N]    # the same, without the wrapper

Nothing needs installing but JAX (and numpy): the wrapper puts the worktree on
``PYTHONPATH``. Every step is its own process (the bench runs float32 with float64 off, as
``cpo-opt bench`` does; the searches run float64; the CPU side of the comparison runs with
``JAX_PLATFORMS=cpu``). What it runs:

1. ``python -m cpo_opt bench --json`` float32 for Megatron-1T on DGX A100 Selene and
   DeepSeek-V3 on GB200 NVL72 at two batch sizes (1,048,576 and 4,194,304 rows; ``--small``:
   1024 and 4096), each on 8 batches (``--small``: 4) and at most 20 s of evaluation.
2. The co-design search (``experiments/bench_search.py``): DeepSeek-V3 on GB200 with scale-up
   bandwidth and domain size free under 1.5x the NVL72 interconnect power, exhaustive on a
   ``size`` x ``size`` grid (9: 234,123,696 rows) and by gradient. The exhaustive scorer is
   compiled first by a grid-2 search (same plan table and batch shape, hence the same
   executable), so the exhaustive figure is the compiled search; the gradient figure includes
   its descent's compilation (or its load from the persistent cache). ``--small``:
   Megatron-1T on Selene with the scale-up bandwidth free (``size`` default 3).
3. ``evaluate --json`` (the Megatron-1T/A100 and DeepSeek-V3/H800 scenarios) and ``optimize
   --json`` (the Megatron-1T/A100 scenario) on the default backend and with
   ``JAX_PLATFORMS=cpu``: step times equal to 1e-9 relative and the optimize plan (and
   hardware) identical, or the check fails.

Output: one line per figure, ``figure: value unit``; errors and the failing step's standard
error go to standard error. Exit status 0 when every step ran and every comparison passed,
1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BENCH = [("megatron-1t", "dgx-a100-selene"), ("deepseek-v3", "gb200-nvl72")]
COMPARE = [("evaluate", "megatron-1t-a100-3072"), ("evaluate", "deepseek-v3-h800-2048"),
           ("optimize", "megatron-1t-a100-3072")]
REL_TOL = 1e-9
"""Largest relative difference of a step time between the backends (issue 24 measured 2e-16
on an H200; 1e-9 leaves room for a different reduction order, not for a different answer)."""
STEP_TIMEOUT_S = 600


def load() -> str:
    try:
        return open("/proc/loadavg").read().split()[0]
    except OSError:
        return "n/a"


def figure(name: str, value, unit: str = "") -> None:
    print(f"{name}: {value}{' ' + unit if unit else ''}", flush=True)


def env(cpu: bool = False) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.pop("CPO_OPT_DEBUG", None)
    if cpu:
        e["JAX_PLATFORMS"] = "cpu"
    return e


class Failed(Exception):
    pass


def run(cmd: list[str], cpu: bool = False) -> str:
    """Standard output of ``cmd`` (a Python module or script and its arguments); raises
    :class:`Failed` on a non-zero exit or a timeout, after printing the stderr tail."""
    full = [sys.executable] + cmd
    try:
        r = subprocess.run(full, cwd=ROOT, env=env(cpu), capture_output=True, text=True,
                           timeout=STEP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"FAILED (timeout {STEP_TIMEOUT_S} s): {' '.join(cmd)}", file=sys.stderr)
        raise Failed(cmd)
    if r.returncode != 0:
        print(f"FAILED (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr[-3000:]}",
              file=sys.stderr)
        raise Failed(cmd)
    return r.stdout


def bench(small: bool) -> None:
    batches = (1024, 4096) if small else (1 << 20, 1 << 22)
    count = 4 if small else 8
    for model, system in BENCH:
        for b in batches:
            out = json.loads(run(["-m", "cpo_opt", "bench", "--model", model, "--system",
                                  system, "--batch", str(b), "--n", str(count * b),
                                  "--dtype", "float32", "--max-seconds", "20", "--json"]))
            tag = f"bench {model} batch {b}"
            if (model, b) == (BENCH[0][0], batches[0]):
                figure("backend", out["device"], f"x{out['devices']}")
            figure(tag, f"{out['evaluations_per_s']:.3g}", "plans/s")
            figure(f"{tag} compile", f"{out['compile_s']:.1f}", "s")
            c = out.get("cost_per_plan") or {}
            if c:
                figure(f"{tag} cost", f"{c['flops']:.0f}", "flop/plan")


def codesign(small: bool, size: int) -> None:
    """Runs in its own process (float64, as bench_search.py)."""
    sys.path.insert(0, HERE)
    import bench_search  # noqa: E402  (sets float64)
    from cpo_opt.runtime import enable_compile_cache
    from cpo_opt.search import exhaustive_search, gradient_search
    from cpo_opt.search.exhaustive import space_size

    enable_compile_cache()
    space = bench_search.small_codesign_space() if small else bench_search.codesign_space()
    t0 = time.perf_counter()
    exhaustive_search(space, grid=2)
    figure("codesign exhaustive warm-up (grid 2, compile included)",
           f"{time.perf_counter() - t0:.2f}", "s")
    ex = exhaustive_search(space, grid=size)
    figure("codesign exhaustive rows", f"{space_size(space, size)}", "rows")
    figure("codesign exhaustive", f"{ex.search_wall_s:.2f}", "s")
    figure("codesign exhaustive rate", f"{ex.evaluations / ex.search_wall_s:.3g}", "rows/s")
    figure("codesign exhaustive step", f"{ex.step_time_s:.6g}", "s")
    gr = gradient_search(space)
    figure("codesign gradient", f"{gr.search_wall_s:.2f}", "s")
    figure("codesign gradient rows", f"{gr.evaluations}", "rows")
    figure("codesign gradient step", f"{gr.step_time_s:.6g}", "s")
    gap = 100 * (gr.step_time_s / ex.step_time_s - 1)
    figure("codesign gradient vs exhaustive", f"{gap:+.2f}", "%")


def compare() -> bool:
    ok = True
    for command, scenario in COMPARE:
        args = ["-m", "cpo_opt", command, "--scenario", scenario, "--json"]
        here = json.loads(run(args))
        cpu = json.loads(run(args, cpu=True))
        name = scenario.split("-")[0] + "-" + scenario.split("-")[1]
        rel = abs(here["step_time_s"] - cpu["step_time_s"]) / abs(cpu["step_time_s"])
        good = rel <= REL_TOL
        figure(f"{command} {name} step |default-cpu|/cpu", f"{rel:.3g}",
               "relative" + ("" if good else f" FAILED (> {REL_TOL:g})"))
        ok &= good
        if command == "optimize":
            same = (here["plan"] == cpu["plan"]
                    and here.get("hardware") == cpu.get("hardware"))
            figure(f"{command} {name} plan default == cpu", "yes" if same else "no FAILED")
            ok &= same
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true",
                    default=os.environ.get("SMALL", "") not in ("", "0"),
                    help="tiny batches and the small co-design (default: env SMALL)")
    ap.add_argument("--size", type=int, default=None,
                    help="grid points per free field of the exhaustive co-design (default: "
                         "env SIZE, else 9; 3 with --small)")
    ap.add_argument("--codesign-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    size = a.size or int(os.environ.get("SIZE") or (3 if a.small else 9))
    if size < 2:
        print(f"gpu_check: --size/SIZE: must be at least 2 (got {size})", file=sys.stderr)
        return 2
    if a.codesign_only:
        codesign(a.small, size)
        return 0
    t0 = time.perf_counter()
    figure("load average", load())
    ok = True
    steps = [("bench", lambda: bench(a.small)),
             ("codesign", lambda: sys.stdout.write(run(
                 [os.path.join(HERE, "gpu_check.py"), "--codesign-only", "--size", str(size)]
                 + (["--small"] if a.small else [])))),
             ("compare", compare)]
    for name, step in steps:
        try:
            if step() is False:
                ok = False
        except Failed:
            ok = False
            figure(f"{name} step", "FAILED")
        sys.stdout.flush()
    figure("load average", load())
    figure("total wall", f"{time.perf_counter() - t0:.1f}", "s")
    figure("check", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
