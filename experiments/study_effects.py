"""How each modelled effect (round 4's physics) moves the study's speedups, plans held fixed.

Reads the optimal plans of a ``reproduce`` run (default ``out/quick/reproduce.json``), then
evaluates both fabrics' plans of every config with one effect switched off at a time (a
constants table) and prints the speedups. Plans are not re-searched (a variant's own optimum
may differ; ``reproduce --constants FILE`` re-searches), so the table isolates each effect's
share at the plans the study found.

    python experiments/study_effects.py [--run out/quick/reproduce.json]
"""

from __future__ import annotations

import argparse
import json

from cpo_opt.inputs.constants_file import as_table
from cpo_opt.inputs.loaders import plan_from_values
from cpo_opt.model.constants import GENERATION_DEFAULTS, INFO
from cpo_opt.model.step import step_time
from cpo_opt.runtime import setup
from cpo_opt.study import load_study

# (name, constants table switching one effect off; None = shipped)
VARIANTS = [
    ("shipped model", None),
    ("no host wait of the dropless sync (20 us)", {"*": {"host_sync_s": 1e-12}}),
    ("no per-remote-peer all-to-all cost (0.13 us)", {"*": {"a2a_peer_s": 1e-12}}),
    ("no fixed time per GEMM output tile", {"*": {"gemm_tile_overhead_s": 1e-12}}),
    ("datasheet tensor clock (fitted 0.85 on Blackwell)", {"blackwell": {"clock_fraction": 1.0}}),
    ("no launch cost for small kernels", {"*": {"kernel_overhead_s": 1e-12,
                                                "small_kernel_s": 1e-12}}),
    ("Blackwell fp8 GEMM at the global 0.70 (not 0.59)",
     {"blackwell": {"gemm_eff_fp8": INFO["gemm_eff_fp8"].default}}),
    ("SMs held by all-to-alls at the range floor (0.001)", {"*": {"comm_sm_fraction": 1e-3}}),
    ("the round-3 stall: 2.7 ms per MoE layer (fitted then)", {"*": {"host_sync_s": 2.675e-3}}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="out/quick/reproduce.json")
    args = ap.parse_args()
    setup()
    run = json.load(open(args.run))
    assert "blackwell" in GENERATION_DEFAULTS
    print(f"{'variant':52s} " + " ".join(f"{c['name']:>8s}" for c in run["configs"]))
    for name, table in VARIANTS:
        study = load_study(run.get("mode", "quick"),
                           constants=None if table is None else as_table(table))
        row = []
        for c in run["configs"]:
            model = study.models[c["name"]]
            t = {}
            for fabric in ("copper", "passage"):
                spec = study.fabrics[fabric]
                plan = plan_from_values(c[fabric]["plan"], model, spec, where=fabric)
                t[fabric] = float(step_time(model.model, spec.system, plan.plan).step_time_s)
            row.append(t["copper"] / t["passage"])
        print(f"{name:52s} " + " ".join(f"{s:7.2f}x" for s in row))


if __name__ == "__main__":
    main()
