"""``cpo-opt optimize``: run a search and report the winner as the SPEC's JSON object."""

from __future__ import annotations

import sys
from typing import Any

from cpo_opt import fabric_cost
from cpo_opt.evaluate import evaluate
from cpo_opt.inputs import ModelSpec, SystemSpec, load_system, plan_from_values
from cpo_opt.search import exhaustive_search, gradient_search, make_space
from cpo_opt.search.space import SearchResult, SearchSpace


def system_at(system: SystemSpec, hardware: dict[str, float]) -> SystemSpec:
    """``system`` with the searched hardware values written in (checked like a file)."""
    if not hardware:
        return system
    values = {k: dict(v) for k, v in system.values.items()}
    for key, v in hardware.items():
        section, name = key.split(".", 1)
        values[section][name] = int(round(v)) if float(v).is_integer() else float(v)
    return load_system(values, where=system.origin)


def report(space: SearchSpace, res: SearchResult, tokens: float | None = None) -> dict[str, Any]:
    """The ``optimize --json`` object for a search result."""
    out: dict[str, Any] = {
        "method": res.method,
        "evaluations": int(res.evaluations),
        "search_wall_s": float(res.search_wall_s),
        "objective": "minimum step time (= time to train at fixed batch and tokens) over "
                     "plans that fit in HBM and hardware within every fabric limit",
        "global_batch": space.global_batch,
        "free": list(space.free),
        "bounds": {k: list(b) for k, b in zip(space.free, space.bounds)},
        "power_budget_kW": None if space.power_budget_w is None else space.power_budget_w / 1e3,
        "detail": res.detail,
    }
    if not res.plan_values:
        out.update({"feasible": False, "plan": None, "step_time_s": None, "hardware": {},
                    "result": None})
        return out
    system = system_at(space.system, res.hardware)
    plan = plan_from_values(res.plan_values, space.model, system, where="optimize")
    result = evaluate(space.model, system, plan, tokens)
    power = float(fabric_cost.interconnect_power_w(system.system))
    out.update({
        "feasible": True,
        "plan": result["plan"],
        "step_time_s": result["step_time_s"],
        "hardware": res.hardware,
        "interconnect_power_kW": power / 1e3,
        "result": result,
    })
    return out


def run_optimize(model: ModelSpec, system: SystemSpec, args) -> dict[str, Any]:
    """Search as the command-line flags say (gradient by default, ``--exhaustive``)."""
    from cpo_opt.cli import UsageError, parse_count
    budget = None if args.power_budget_kw is None else args.power_budget_kw * 1e3
    if args.starts < 1 or args.steps < 1:
        raise UsageError("--starts and --steps must be >= 1")
    space = make_space(model, system, args.global_batch, args.dtype, tuple(args.free),
                       power_budget_w=budget)
    tokens = parse_count(args.tokens, "--tokens") if args.tokens else None
    if args.exhaustive:
        res = exhaustive_search(space, progress=sys.stderr.isatty())
    else:
        res = gradient_search(space, starts=args.starts, steps=args.steps, seed=args.seed)
    return report(space, res, tokens)
