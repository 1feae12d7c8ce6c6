"""``optimize``: run a plan (and hardware) search and report the winner as the SPEC's JSON object."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from cpo_opt.inputs import schema
from cpo_opt.inputs.sources import InputError
from cpo_opt.model import fabric_cost
from cpo_opt.analysis.evaluate import evaluate
from cpo_opt.inputs.loaders import (ArgumentError, ModelSpec, SystemSpec, plan_arg,
                                    plan_from_values, system_with)
from cpo_opt.search import exhaustive_search, gradient_search, make_space
from cpo_opt.search.space import SearchResult, SearchSpace


class InfeasibleError(InputError):
    """No plan or hardware point is feasible (exit 2): one line naming the binding limit and
    the key (or flag) that lifts it. ``limit`` is the limit's name (``"reach"``, ``"power"``,
    ...), ``needed`` the value that would lift it, where one number does."""

    def __init__(self, message: str, limit: str, needed: float | None = None):
        super().__init__(message)
        self.limit, self.needed = limit, needed


def _corners(space: SearchSpace):
    """Systems at every corner of the free fields' box (the fixed system when none is free).

    Each limit of :func:`cpo_opt.model.fabric_cost.violations` is a ratio monotone in every
    field, so its smallest value over the box sits at a corner: if a limit is exceeded at all
    corners, no hardware point of the search can satisfy it."""
    base = space.system.system
    if not space.free:
        return [({}, base)]
    out = []
    for combo in itertools.product(*space.bounds):
        out.append((dict(zip(space.free, combo)),
                    schema.with_fields(base, space.free, [float(v) for v in combo])))
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def check_hardware_feasible(space: SearchSpace) -> None:
    """Raise :class:`InfeasibleError` when some fabric limit is exceeded at every hardware
    point the search may visit (before the search runs: the answer, not a crash)."""
    corners = _corners(space)
    worst: dict[str, tuple[float, dict, Any]] = {}
    for hw, system in corners:
        v = fabric_cost.violations(system, space.power_budget_w)
        for name, x in v.items():
            x = float(np.asarray(x))
            if name not in worst or x < worst[name][0]:
                worst[name] = (x, hw, system)
    binding = {k: w for k, w in worst.items() if w[0] > 1e-9}
    if not binding:
        return
    vals = space.system.values
    up, out = vals["scale_up"], vals["scale_out"]
    free = set(space.free)

    def d(key, default):
        return float(binding_hw.get(key, default))

    if "reach" in binding or "radix" in binding:
        name = "reach" if "reach" in binding else "radix"
        binding_hw = binding[name][1]
        dom = d("scale_up.domain_size", up["domain_size"])
        reach = d("scale_up.max_domain_size", up["max_domain_size"])
        radix = d("scale_up.switch_radix", up["switch_radix"])
        lifts = [k for k, on in (("scale_up.max_domain_size", "reach" in binding),
                                 ("scale_up.switch_radix", "radix" in binding)) if on]
        limit = min(x for x, on in ((reach, "reach" in binding), (radix, "radix" in binding))
                    if on)
        what = ("max_domain_size" if "reach" in binding else "switch_radix")
        lift = f"raise {lifts[0]}" + (f" (and {lifts[1].split('.')[1]})" if len(lifts) > 1
                                      else "")
        lower = "" if "scale_up.domain_size" in free else \
            f", or lower scale_up.domain_size to <= {int(limit)}"
        raise InfeasibleError(
            f"infeasible: domain_size {int(dom)} > {what} {int(limit)}: {lift} to >= {int(dom)}"
            f"{lower}", name, dom)
    for tier, vals_t in (("scale_up", up), ("scale_out", out)):
        key = f"{tier}_escape"
        if key in binding:
            binding_hw = binding[key][1]
            bw = d(f"{tier}.bandwidth_GB_s", vals_t["bandwidth_GB_s"])
            esc = d(f"{tier}.escape_bandwidth_GB_s", vals_t["escape_bandwidth_GB_s"])
            raise InfeasibleError(
                f"infeasible: {tier}.bandwidth_GB_s {_fmt(bw)} > escape_bandwidth_GB_s "
                f"{_fmt(esc)}: raise {tier}.escape_bandwidth_GB_s to >= {_fmt(bw)} or lower "
                f"{tier}.bandwidth_GB_s", key, bw)
    if "power" in binding:
        x, binding_hw, system = binding["power"]
        need = float(np.asarray(fabric_cost.interconnect_power_w(system))) / 1e3
        at = " at the lowest free values" if space.free else ""
        frees = [k for k in space.free if "bandwidth" in k or "energy" in k]
        hint = "" if frees else (" (or free scale_up.bandwidth_GB_s to trade bandwidth for "
                                 "power)" if "scale_up.bandwidth_GB_s" not in free else "")
        raise InfeasibleError(
            f"infeasible: interconnect power {_fmt(need)} kW{at} > budget "
            f"{_fmt(space.power_budget_w / 1e3)} kW: raise --power-budget-kW to >= "
            f"{_fmt(need)}{hint}", "power", need)


def no_plan_message(space: SearchSpace) -> str:
    """The one line for a search that found no feasible plan although the hardware is."""
    v = space.system.values
    return (f"infeasible: no valid plan of {space.model.name} fits in gpu.hbm_GB "
            f"{_fmt(v['gpu']['hbm_GB'])} on {v['cluster']['gpus']} GPUs at global_batch "
            f"{space.global_batch}: raise gpu.hbm_GB or cluster.gpus (or try --exhaustive, "
            "which scores every plan)")


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
        check_hardware_feasible(space)
        raise InfeasibleError(no_plan_message(space), "memory")
    system = system_with(space.system, res.hardware)
    plan = plan_from_values(res.plan_values, space.model, system, where="optimize")
    result = evaluate(space.model, system, plan, tokens)
    power = float(fabric_cost.interconnect_power_w(system.system))
    out.update({
        "feasible": True,
        "plan": result["plan"],
        "plan_arg": plan_arg(plan.values, space.model, system),
        "step_time_s": result["step_time_s"],
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
    check_hardware_feasible(space)
    if exhaustive:
        res = exhaustive_search(space, progress=progress)
    else:
        res = gradient_search(space, starts=starts, steps=steps, seed=seed)
    return report(space, res, tokens)
