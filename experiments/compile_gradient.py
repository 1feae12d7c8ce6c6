"""Benchmark: cold compile time and peak memory of the gradient search's descent, with and
without the compile options of :mod:`cpo_opt.search.brief_jit` (docs/speed.md, "Compiling
the gradient programs").

Each setting runs in a fresh process (nothing compiled, no persistent cache): the descent of
``gradient.descend`` (``--starts`` x ``--steps``, float64) twice, with seeds 0 and 1; the
first call pays the compilation. It prints the first call's time, the second's, the
process's peak RSS (``ru_maxrss``) and each seed's final objective values, so the two
settings can be compared to rounding. The load average is printed: the machine may be
shared.

    python experiments/compile_gradient.py [--model mixtral-8x22b] [--system dgx-h100]
"""

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import jax
jax.config.update("jax_enable_x64", True)
from cpo_opt.search import brief_jit, gradient
from cpo_opt.inputs.loaders import load_model, load_system
from cpo_opt.search.space import make_space
a = json.loads(sys.argv[1])
if not a["brief"]:
    brief_jit.OPTIONS.clear()
space = make_space(load_model(a["model"]), load_system(a["system"]))
out = {}
for seed in (0, 1):
    t0 = time.perf_counter()
    z, combos, vals, st = gradient.descend(space, starts=a["starts"], steps=a["steps"], seed=seed)
    out["s%d" % seed] = time.perf_counter() - t0
    out["final%d" % seed] = [float(v) for v in vals[:, -1]]
out["maxrss_GB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
print(json.dumps(out))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="mixtral-8x22b")
    p.add_argument("--system", default="dgx-h100")
    p.add_argument("--starts", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args()
    env = dict(os.environ, CPO_OPT_CACHE_DIR="", JAX_PLATFORMS="cpu")
    finals = {}
    for brief in (False, True):
        a = dict(vars(args), brief=brief)
        load = os.getloadavg()[0]
        r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(a)], env=env,
                           capture_output=True, text=True, check=True)
        out = json.loads(r.stdout.strip().splitlines()[-1])
        name = "without the fusion emitters" if brief else "XLA defaults"
        finals[brief] = (out["final0"], out["final1"])
        print(f"{name:28s} first call {out['s0']:6.1f} s, second {out['s1']:5.2f} s, "
              f"peak RSS {out['maxrss_GB']:.2f} GB, load {load:.2f}")
    for seed in (0, 1):
        a, b = finals[False][seed], finals[True][seed]
        worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
        print(f"seed {seed}: final objectives of {len(a)} starts, largest relative "
              f"difference {worst:.2e}")


if __name__ == "__main__":
    main()
