"""Predicted vs measured step times for a file of measured cases (``cpo-opt validate``).

The default cases file is the shipped copy of the public calibration set
(``cpo_opt/data/megatron-a100.toml``: Korthikanti et al. 2022 Table 5 and Narayanan et al. 2021
Table 1 on A100). Every case runs through the same jitted exact model with the same constants
(:mod:`cpo_opt.model.constants`); ``error = predicted / measured - 1``.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from cpo_opt.analysis.evaluate import memory_rank, pipeline_report, step_time_jit
from cpo_opt.model.step import BREAKDOWN_PARTS
from cpo_opt.inputs.loaders import Case, load_cases

DEFAULT_CASES = pathlib.Path(__file__).parent.parent / "data" / "megatron-a100.toml"


def _group(case_id: str) -> str:
    return case_id.split("-")[0]


def _summary(errors: list[float]) -> dict[str, float]:
    a = np.abs(np.asarray(errors, dtype=float))
    return {"n": int(a.size), "mean_abs_error": float(a.mean()), "max_abs_error": float(a.max())}


def validate_cases(cases: list[Case]) -> dict[str, Any]:
    """Run every case; returns the ``validate --json`` object.

    Besides the SPEC fields it reports, per case, the predicted breakdown, the model's HBM
    use per GPU (``memory_GB_per_gpu``) and whether it fits (``fits_memory``), and per source
    group (the case id up to its first ``-``) the mean and max absolute error.
    """
    rows, groups = [], {}
    for c in cases:
        r = step_time_jit(c.model.model, c.system.system, c.plan.plan)
        pred = float(r.step_time_s)
        err = pred / c.measured_step_time_s - 1.0
        rows.append({
            "id": c.id,
            "predicted_step_time_s": pred,
            "measured_step_time_s": c.measured_step_time_s,
            "error": err,
            "mfu": float(r.mfu),
            "memory_GB_per_gpu": float(r.memory.total) / 1e9,
            "fits_memory": bool(float(r.fits_memory) > 0.5),
            "breakdown_s": {k: float(getattr(r.breakdown, k)) for k in BREAKDOWN_PARTS},
            "source": c.source,
            "stack": {"name": c.plan.stack, "options": c.plan.options},
            "placement": placement_of(r, c),
            "memory_rank": memory_rank(r, c.plan),
            "pipeline": pipeline_report(r, c.plan),
        })
        groups.setdefault(_group(c.id), []).append(err)
    summary = _summary([r["error"] for r in rows])
    return {
        "cases": rows,
        "mean_abs_error": summary["mean_abs_error"],
        "max_abs_error": summary["max_abs_error"],
        "n": summary["n"],
        "groups": {g: _summary(e) for g, e in groups.items()},
    }


def placement_of(r, c: Case) -> dict[str, Any]:
    """The case's placement with the working and idle GPUs the model ran."""
    gpus = int(c.system.values["cluster"]["gpus"])
    working = int(round(float(r.working_gpus)))
    return {**c.plan.placement, "working_gpus": working, "idle_gpus": gpus - working}


def validate_file(path: str | pathlib.Path | None = None) -> dict[str, Any]:
    """Load a cases file (default: the shipped calibration set) and validate it."""
    path = DEFAULT_CASES if path is None else path
    out = validate_cases(load_cases(path))
    out["cases_file"] = str(path)
    return out
