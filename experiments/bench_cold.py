"""Benchmark: cold and warm wall time of the commands a user runs first.

Each command runs as a fresh ``python -m cpo_opt`` process, first with an empty compile cache
(``CPO_OPT_CACHE_DIR`` a new temporary folder: tracing, lowering and XLA compilation all
paid), then again with the cache that first run filled (warm: compiled executables loaded
from disk). ``JAX_LOG_COMPILES=1`` shows where the cold time goes: each jitted function's
tracing, lowering and XLA compile time, per function and batch shape. The load average is
printed with every timing: the machine is shared.

    python experiments/bench_cold.py [--only optimize]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

COMMANDS = {
    "evaluate": ["evaluate", "--model", "megatron-1t", "--system", "dgx-a100-selene",
                 "--plan", "megatron-1t-3072"],
    "optimize": ["optimize", "--model", "megatron-1t", "--system", "dgx-a100-selene"],
    "optimize-gradient": ["optimize", "--model", "megatron-1t", "--system", "dgx-a100-selene",
                          "--gradient"],
    "optimize-deepseek-h800": ["optimize", "--model", "deepseek-v3", "--system", "h800-cluster",
                               "--global-batch", "15360", "--dtype", "fp8"],
    # the README's first-run times (issue 23): the quick study, a three-run calibration, a
    # co-design
    "reproduce-quick": ["reproduce", "--quick", "--no-progress", "--out", "{tmp}/quick"],
    "calibrate-3": ["calibrate", "--cases", "cpo_opt/data/moe-fit.toml"],
    "codesign": ["optimize", "--model", "config4", "--system", "study-passage", "--free",
                 "scale_up.bandwidth_GB_s", "scale_up.domain_size", "--power-budget-kW", "6000"],
}

PAT = re.compile(r"Finished (tracing|jaxpr to MLIR module conversion|XLA compilation of) "
                 r"(?:jit\()?([\w<>]+)\)?(?: for jit)? in ([\d.eE+-]+) sec")


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def run(args, cache, log):
    env = dict(os.environ, CPO_OPT_CACHE_DIR=cache, JAX_LOG_COMPILES="1" if log else "0")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cpo_opt", *args], capture_output=True,
                         text=True, env=env)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: exit {out.returncode}: {out.stderr[-500:]}")
    spans = defaultdict(float)
    for stage, fn, sec in PAT.findall(out.stderr):
        spans[(fn, stage.split()[0])] += float(sec)
    return wall, spans, out.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    for name, cmd in COMMANDS.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as tmp:
            cmd = [c.replace("{tmp}", tmp) for c in cmd]
            la = load()
            cold, spans, out = run(cmd, cache, log=True)
            lb = load()
            warm, _, _ = run(cmd, cache, log=False)
            lc = load()
        method = next((l for l in out.splitlines() if l.startswith("method")), "")
        print(f"{name}: cold {cold:6.1f} s (load {la}->{lb})  warm {warm:6.1f} s (load {lc})"
              f"  {method}\n  python -m cpo_opt {' '.join(cmd)}", flush=True)
        for (fn, stage), sec in sorted(spans.items(), key=lambda kv: -kv[1]):
            if sec >= 0.05:
                print(f"    {fn:<22s} {stage:<8s} {sec:6.2f} s")


if __name__ == "__main__":
    main()
