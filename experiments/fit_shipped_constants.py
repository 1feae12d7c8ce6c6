"""Regenerate the shipped fitted constants (``cpo_opt/model/fitted.py``) with ``calibrate``.

    python experiments/fit_shipped_constants.py            # fit, write, print the report
    python experiments/fit_shipped_constants.py --steps 200 --no-cv   # faster, no LOO

What it runs is the command line

    cpo-opt calibrate --prior physical \\
        --cases cpo_opt/data/megatron-a100.toml --cases cpo_opt/data/moe-fit.toml \\
        --fit ampere:gemm_eff_bf16 {hopper,blackwell}:{hbm_eff,kernel_overhead_s,
              host_launch_s,host_sync_s} --out docs/constants-shipped.toml

plus writing the fitted values and intervals into ``cpo_opt/model/fitted.py``, which
:func:`cpo_opt.model.constants.constants_for` applies over the physical defaults.

Which cases. The fit sets only: the 18 dense A100 runs (Megatron-LM) and the three BF16
Megatron-Core MoE runs of ``moe-fit.toml``. The FP8/MXFP8 runs of ``moe-heldout.toml`` never
enter; they are validated afterwards (``cpo-opt validate --cases
cpo_opt/data/moe-heldout.toml``) and reported as out-of-sample.

Which constants, and why these. ``gemm_eff_bf16`` for Ampere: the dense A100 set is GEMM-bound
and identifies it (it did before, 0.75 -> 0.725). For Hopper and Blackwell the MoE runs are
not GEMM-bound: NVIDIA's report (arXiv 2603.07685) puts GEMMs under 50% of DeepSeek-V3's step
against ~70% for a dense Llama 3 405B, the rest being routing, permutation, small kernels and
launch overhead; and a BF16 run cannot say anything about fp8 GEMMs. So the fit is given the
constants of that remainder, which every dtype shares: the achievable HBM fraction of the
memory-bound kernels (``hbm_eff``), the GPU time of a kernel launch (``kernel_overhead_s``), the
host's issue time per kernel (``host_launch_s``) and the host-device sync stall of dropless
routing (``host_sync_s``). The GEMM fractions of Hopper and Blackwell stay at their
micro-benchmark values (``GENERATION_DEFAULTS``). ``calibrate`` reports which of these the
three MoE runs actually constrain; the others keep their physical values.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import pprint

import cpo_opt
from cpo_opt.runtime import setup

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "cpo_opt" / "data"
CASES = [DATA / "megatron-a100.toml", DATA / "moe-fit.toml"]
FIT = (["ampere:gemm_eff_bf16"]
       + [f"{gen}:{name}" for gen in ("hopper", "blackwell")
          for name in ("hbm_eff", "kernel_overhead_s", "host_launch_s", "host_sync_s")])
MODULE = ROOT / "cpo_opt" / "model" / "fitted.py"
TOML = ROOT / "docs" / "constants-shipped.toml"

HEADER = '''"""Shipped constants fitted by ``calibrate`` (generated file: do not edit by hand).

Regenerate with ``python experiments/fit_shipped_constants.py`` (docs/calibration.md), which
runs ``cpo-opt calibrate --prior physical`` on the public fit sets and writes this module.
:func:`cpo_opt.model.constants.constants_for` applies these values over the physical defaults
and ``GENERATION_DEFAULTS``, and under any user constants table.
"""
'''


def module_text(table, about: dict) -> str:
    """The text of ``cpo_opt/model/fitted.py`` for a fitted :class:`ConstantsTable`."""
    values = {lvl: {n: float(v) for n, v in vals.items()} for lvl, vals in table.items()}
    intervals = {lvl: {n: (float(a), float(b)) for n, (a, b) in iv.items()}
                 for lvl, iv in table.intervals.items()}
    return (HEADER
            + "\nVALUES: dict[str, dict[str, float]] = "
            + pprint.pformat(values, width=92, sort_dicts=True) + "\n"
            + '"""``{level: {constant: value}}`` (SI units), levels as in a constants file."""\n'
            + "\nINTERVALS: dict[str, dict[str, tuple[float, float]]] = "
            + pprint.pformat(intervals, width=92, sort_dicts=True) + "\n"
            + '"""``{level: {constant: (low, high)}}``: the 90% Laplace intervals of the fit."""\n'
            + "\nABOUT: dict[str, object] = "
            + pprint.pformat(about, width=92, sort_dicts=True) + "\n"
            + '"""What produced the values: command, cases files, fitted names, errors."""\n')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--no-cv", action="store_true", help="skip leave-one-out")
    args = ap.parse_args()
    setup()
    os.chdir(ROOT)  # the written files name the cases by their path in the repository
    r = cpo_opt.calibrate([str(c.relative_to(ROOT)) for c in CASES], list(FIT),
                          out=str(TOML.relative_to(ROOT)),
                          prior="physical", steps=args.steps, cross_validate=not args.no_cv)
    d = r.to_dict()
    about = {"command": "python experiments/fit_shipped_constants.py",
             "cases_files": [str(c.relative_to(ROOT)) for c in CASES], "fit": list(FIT),
             "n_cases": d["n"], "before": d["before"], "after": d["after"],
             "cross_validation": d["cross_validation"]}
    MODULE.write_text(module_text(r.table, about))
    print(f"wrote {MODULE.relative_to(ROOT)} and {TOML.relative_to(ROOT)}")
    print("fitted:", {lvl: dict(v) for lvl, v in r.table.items()})
    print("unconstrained:", [(u["level"], u["name"]) for u in d["unconstrained"]])
    for key in ("before", "after", "cross_validation"):
        print(key, {k: v for k, v in d[key].items()})
    for c in d["cases"]:
        print(f"  {c['id']:34s} before {100 * c['error_before']:+6.1f}%  "
              f"after {100 * c['error_after']:+6.1f}%  "
              f"loo {100 * c.get('error_cross_validation', float('nan')):+6.1f}%")


if __name__ == "__main__":
    main()
