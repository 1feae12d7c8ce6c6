"""Regenerate the shipped fitted constants (``cpo_opt/model/fitted.py``) with ``calibrate``.

    python experiments/fit_shipped_constants.py            # fit, write, print the report
    python experiments/fit_shipped_constants.py --steps 200 --no-cv   # faster, no LOO

What it runs is the command line

    cpo-opt calibrate --prior physical \\
        --cases cpo_opt/data/megatron-a100.toml --cases cpo_opt/data/moe-fit.toml \\
        --cases cpo_opt/data/dense-fit.toml \\
        --fit ampere:gemm_eff_bf16 {hopper,blackwell}:{clock_fraction,small_kernel_s} \\
        --out docs/constants-shipped.toml

plus writing the fitted values and intervals into ``cpo_opt/model/fitted.py``, which
:func:`cpo_opt.model.constants.constants_for` applies over the physical defaults.

Which cases (all IN SAMPLE; every other case file is out of sample). The 18 dense A100 runs
(Megatron-LM, Selene: A100 with HDR InfiniBand between 8-GPU nodes), the three BF16
Megatron-Core MoE runs of ``moe-fit.toml`` (GB200 NVL72 racks, H100 8-GPU nodes on
InfiniBand) and the ten dense runs of ``dense-fit.toml`` (Llama 3 70B on GB300 and GB200 NVL72
racks and on H100 nodes, GPT-3 175B / Llama 2 70B / Llama 3 8B / 70B on H100 nodes): several
fabrics in each generation. ``moe-published.toml``, ``moe-heldout.toml``, ``dense-published.toml``
and ``modern.toml`` never enter; they are validated afterwards
(``python experiments/published_errors.py``) and reported as out of sample.

Which constants, and why these. The GEMM main-loop fractions of Hopper and Blackwell, the
per-tile overhead, the SM counts, the host costs, the sync wait and the all-to-all per-peer
cost are sourced (published GEMM tables, datasheets, DeepEP's tables: their docstrings in
:mod:`cpo_opt.model.constants`) and not fitted. Fitted:

* ``ampere:gemm_eff_bf16``: no published A100 GEMM table here; the dense A100 set is
  GEMM-bound and identifies it.
* ``{hopper,blackwell}:clock_fraction``: the sustained tensor-core clock of hours-long runs at
  the power limit over the short benchmarks' (physical, one per generation; the dense runs of
  ``dense-fit.toml`` identify it).
* ``{hopper,blackwell}:small_kernel_s``: the GPU time of a small (non-GEMM) kernel beyond its
  HBM traffic. This is the model's residual (no measurement of it was found): the MoE runs,
  whose layers run many more small kernels than dense ones, identify it; being a time per
  kernel of the layer's own count it does not grow with the fabric's time, and it is fitted
  on runs over NVLink racks and InfiniBand nodes alike. Its interval is in ``fitted.py`` and
  enters every study interval (:mod:`cpo_opt.study.uncertainty`).

``calibrate`` reports which of these the cases actually constrain; the others keep their
physical values.
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
CASES = [DATA / "megatron-a100.toml", DATA / "moe-fit.toml", DATA / "dense-fit.toml"]
FIT = (["ampere:gemm_eff_bf16"]
       + [f"{gen}:{name}" for gen in ("hopper", "blackwell")
          for name in ("clock_fraction", "small_kernel_s")])
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
    ap.add_argument("--method", default="gauss-newton", choices=("gauss-newton", "adam"),
                    help="gauss-newton (default): Levenberg-Marquardt from the compiled "
                         "Jacobian; adam: the scanned descent of --steps steps (on these 31 "
                         "cases it ran for over an hour on a 2-core machine)")
    args = ap.parse_args()
    setup()
    os.chdir(ROOT)  # the written files name the cases by their path in the repository
    r = cpo_opt.calibrate([str(c.relative_to(ROOT)) for c in CASES], list(FIT),
                          out=str(TOML.relative_to(ROOT)),
                          prior="physical", steps=args.steps, cross_validate=not args.no_cv,
                          method=args.method)
    d = r.to_dict()
    about = {"command": "python experiments/fit_shipped_constants.py"
                        + ("" if args.method == "gauss-newton" else f" --method {args.method}")
                        + (" --no-cv" if args.no_cv else ""),
             "method": args.method,
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
