"""``optimize``: run a plan (and hardware) search and report the winner as the SPEC's JSON object."""

from __future__ import annotations

import math
from typing import Any

from cpo_opt.model import fabric_cost
from cpo_opt.analysis.evaluate import evaluate
from cpo_opt.inputs.loaders import (ArgumentError, ModelSpec, SystemSpec, plan_from_values,
                                    system_with)
from cpo_opt.search import exhaustive_search, gradient_search, make_space
from cpo_opt.search.space import SearchResult, SearchSpace


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
    system = system_with(space.system, res.hardware)
    plan = plan_from_values(res.plan_values, space.model, system, where="optimize")
    result = evaluate(space.model, system, plan, tokens)
    power = float(fabric_cost.interconnect_power_w(system.system))
    out.update({
        "feasible": True,
        "plan": result["plan"],
        "step_time_s": result["step_time_s"],
        **({"step_time_interval_s": result["step_time_interval_s"]}
           if "step_time_interval_s" in result else {}),
        "hardware": res.hardware,
        "interconnect_power_kW": power / 1e3,
        "result": result,
    })
    return out


def optimize(model: ModelSpec, system: SystemSpec, global_batch: int | None = None, *,
             exhaustive: bool = False, free: tuple[str, ...] = (),
             power_budget_kW: float | None = None, dtype: str = "bf16", starts: int = 32,
             steps: int = 150, seed: int = 0, tokens: float | None = None,
             progress: bool = False) -> dict[str, Any]:
    """The best plan (and free hardware values) for ``model`` on ``system``.

    Args:
      model, system: loaded specs.
      global_batch: sequences per step (default :func:`cpo_opt.inputs.schema.default_global_batch`).
      exhaustive: enumerate every valid plan (ground truth) instead of the gradient search.
      free: continuous system fields to optimize too (``"scale_up.bandwidth_GB_s"``).
      power_budget_kW: cap on provisioned interconnect power of the cluster.
      dtype: ``"bf16"`` or ``"fp8"``; starts, steps, seed: gradient-search settings.
      tokens: training tokens; adds time to train.

    Returns:
      The ``optimize --json`` object. Raises :class:`~cpo_opt.inputs.ArgumentError` naming
      the argument on bad values.
    """
    if starts < 1:
        raise ArgumentError("starts", f"must be >= 1 (got {starts})")
    if steps < 1:
        raise ArgumentError("steps", f"must be >= 1 (got {steps})")
    if tokens is not None and not (tokens > 0 and math.isfinite(tokens)):
        raise ArgumentError("tokens", f"must be a positive finite number (got {tokens})")
    budget = None if power_budget_kW is None else power_budget_kW * 1e3
    space = make_space(model, system, global_batch, dtype, tuple(free), power_budget_w=budget)
    if exhaustive:
        res = exhaustive_search(space, progress=progress)
    else:
        res = gradient_search(space, starts=starts, steps=steps, seed=seed)
    return report(space, res, tokens)
