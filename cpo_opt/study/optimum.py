"""The best plan of one workload on one system, as the study reports it.

``best_plan`` runs :func:`cpo_opt.search.gradient_search` (multi-start relaxed descent,
rounding, exact polish) and, when the discrete plan space holds at most ``exhaustive_max``
plans, :func:`cpo_opt.search.exhaustive_search` (every valid plan scored by the exact model).
The winner is the faster of the two (the exhaustive one when it ran: it is the true optimum);
both step times and whether they agree within ``AGREE_TOL`` are kept. The winner is then
evaluated once more by :func:`cpo_opt.analysis.evaluate.evaluate` with the training tokens, which gives
the step time, breakdown, MFU, memory, traffic and time to train in the SPEC's units.

With free hardware fields (co-design) the searched hardware values are written into the
system (:func:`cpo_opt.inputs.system_with`) before that evaluation.
"""

from __future__ import annotations

from typing import Any

from cpo_opt.model import fabric_cost
from cpo_opt.analysis.evaluate import evaluate
from cpo_opt.analysis.plan_text import plan_line
from cpo_opt.inputs.loaders import ModelSpec, PlanSpec, SystemSpec, plan_from_values
from cpo_opt.inputs import system_with
from cpo_opt.inputs.errors import InputError
from cpo_opt.search import exhaustive_search, gradient_search, make_space
from cpo_opt.search.exhaustive import plan_count
from cpo_opt.search.space import SearchResult

AGREE_TOL = 0.01
"""Relative step-time difference under which gradient and exhaustive search agree."""


def _finite(x: float) -> float | None:
    return float(x) if x == x and abs(x) != float("inf") else None


def best_plan(model: ModelSpec, system: SystemSpec, global_batch: int, dtype: str,
              tokens: float, *, starts: int, steps: int, seed: int = 0,
              exhaustive_max: int = 0, free: tuple[str, ...] = (),
              bounds: dict[str, tuple[float, float]] | None = None,
              power_budget_w: float | None = None, gradient: bool = True,
              stack=None) -> dict[str, Any]:
    """Search the best plan (and free hardware) and evaluate it.

    Args:
      model, system: loaded specs.
      global_batch: sequences per step; dtype: ``"fp8"`` or ``"bf16"``; tokens: for days.
      starts, steps, seed: gradient-search effort.
      exhaustive_max: also run the exhaustive search when the space has at most this many
        plans (0: never). Not used with free hardware fields.
      free, bounds, power_budget_w: co-design (see :func:`cpo_opt.search.make_space`).
      gradient: False skips the gradient search when the exhaustive one will run (sweeps).
      stack: the software stack (default: the default stack): its options fill the plans
        and the searches choose what it lets them choose.

    Returns:
      ``{"feasible", "plan", "step_time_s", "time_to_train_days", "breakdown_s", "mfu",
      "memory_GB_per_gpu", "traffic_GB_per_gpu_per_step", "hardware",
      "interconnect_power_kW", "search", "result"}``; ``result`` is the full ``evaluate``
      object, ``plan`` the resolved plan table (a valid input of ``plan_from_values``) and
      ``plan_line`` the plan as ``--plan`` takes it back (global batch included).
      ``search`` holds the method, both step times and their agreement. When no plan fits,
      ``feasible`` is False and the numbers are None.
    """
    space = make_space(model, system, global_batch, dtype, tuple(free), bounds=bounds,
                       power_budget_w=power_budget_w, stack=stack)
    n = plan_count(space) if exhaustive_max > 0 and not free else None
    exhaustive = n is not None and n <= exhaustive_max
    search: dict[str, Any] = {"method": None, "gradient_step_time_s": None,
                              "exhaustive_step_time_s": None, "agree": None, "space_size": n}
    grad = exh = None
    if gradient or not exhaustive:
        grad = gradient_search(space, starts=starts, steps=steps, seed=seed)
        search.update({"method": grad.method, "gradient_step_time_s": _finite(grad.step_time_s),
                       "gradient_evaluations": int(grad.evaluations),
                       "gradient_wall_s": float(grad.search_wall_s)})
    if exhaustive:
        exh = exhaustive_search(space)
        search.update({"method": "exhaustive", "exhaustive_step_time_s": _finite(exh.step_time_s),
                       "exhaustive_wall_s": float(exh.search_wall_s)})
    if grad is not None and exh is not None:
        search.update({
            "method": "exhaustive (gradient checked)",
            "agree": bool(grad.step_time_s <= exh.step_time_s * (1 + AGREE_TOL)),
            "gradient_gap": _finite(grad.step_time_s / exh.step_time_s - 1.0),
        })
    candidates = [r for r in (exh, grad) if r is not None]
    best: SearchResult = min(candidates, key=lambda r: r.step_time_s)
    out: dict[str, Any] = {"feasible": bool(best.plan_values), "search": search,
                           "hardware": dict(best.hardware)}
    if not best.plan_values:
        out.update({k: None for k in ("plan", "plan_line", "step_time_s", "time_to_train_days",
                                      "breakdown_s", "mfu", "memory_GB_per_gpu",
                                      "traffic_GB_per_gpu_per_step", "interconnect_power_kW",
                                      "result")})
        return out
    sys_at = system_with(system, best.hardware)
    plan = plan_from_values(best.plan_values, model, sys_at, "study search", space.stack,
                            space.chosen)
    return {**out, **summarize(evaluate(model, sys_at, plan, tokens), plan, sys_at)}


def rescore(model: ModelSpec, system: SystemSpec, plan_values: dict[str, Any],
            tokens: float, stack=None) -> dict[str, Any] | None:
    """A resolved plan table (``best_plan``'s ``plan``) evaluated on another system, in
    ``best_plan``'s form (``search`` empty), or None where the plan is not valid there or
    does not fit in memory."""
    try:
        plan = plan_from_values(plan_values, model, system, "study rescore", stack)
    except InputError:
        return None
    out = summarize(evaluate(model, system, plan, tokens), plan, system)
    if not out["fits_memory"]:
        return None
    return {"feasible": True, "search": {"method": None}, "hardware": {}, **out}


DERIVED = ("dp", "edp", "microbatches")
"""Fields of a resolved plan table derived from the working GPUs (re-derived on re-scoring)."""


def keep_faster(found: dict[str, Any], model: ModelSpec, system: SystemSpec,
                plan_values: dict[str, Any] | None, tokens: float, stack=None
                ) -> tuple[dict[str, Any], bool]:
    """``found`` (a ``best_plan`` result on ``system``) or ``plan_values`` re-scored there,
    whichever is faster; the flag is True when the re-scored plan is kept.

    A search on a space too large to enumerate can miss a plan that is valid, fits and is
    faster; the study re-scores the plan it already holds (the other fabric's optimum, the
    previous sweep point's) rather than report the miss."""
    if plan_values is None:
        return found, False
    again = rescore(model, system, {k: v for k, v in plan_values.items() if k not in DERIVED},
                    tokens, stack)
    if again is None or (found["step_time_s"] is not None
                         and again["step_time_s"] >= found["step_time_s"]):
        return found, False
    return again, True


def summarize(result: dict[str, Any], plan: PlanSpec, system: SystemSpec) -> dict[str, Any]:
    """The study's fields of one ``evaluate`` object (plan = the resolved plan table)."""
    return {
        "plan": dict(plan.values),
        "plan_line": plan_line(result["plan"], result["stack"]["options"]),
        "microbatches": result["plan"].get("microbatches"),
        "step_time_s": result["step_time_s"],
        "time_to_train_days": result["time_to_train_days"],
        "breakdown_s": result["breakdown_s"],
        "mfu": result["mfu"],
        "model_tflops_per_gpu": result["model_tflops_per_gpu"],
        "tokens_per_s": result["tokens_per_s"],
        "memory_GB_per_gpu": result["memory_GB_per_gpu"],
        "fits_memory": result["fits_memory"],
        "traffic_GB_per_gpu_per_step": result["traffic_GB_per_gpu_per_step"],
        "interconnect_power_kW": float(fabric_cost.interconnect_power_w(system.system)) / 1e3,
        "system": {k: dict(v) for k, v in system.values.items() if k != "gpu"},
        "result": result,
    }
