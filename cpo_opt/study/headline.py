"""The headline result: each config's best plan and time to train on each fabric.

For config ``c`` and fabric ``f`` the optimum is the fastest plan that fits
(:func:`cpo_opt.study.optimum.best_plan`: gradient search, checked by the exhaustive search
when the run's mode allows the plan-space size), evaluated with the study's training tokens:

    time_to_train_days = tokens / tokens_per_s / 86400,   tokens_per_s = batch_tokens / step
    speedup(c) = time_to_train_days(c, copper) / time_to_train_days(c, passage)

The speedup is computed from the two model outputs; nothing sets it.
"""

from __future__ import annotations

from typing import Any, Callable

from cpo_opt.analysis.evaluate import evaluate
from cpo_opt.inputs.loaders import plan_from_values
from cpo_opt.study.explain import explain
from cpo_opt.study.optimum import best_plan, keep_faster
from cpo_opt.study.spec import FABRICS, Study
from cpo_opt.study.uncertainty import ranges_from_table, speedup_interval

DROP = ("result", "system")
"""Keys of an optimum left out of the JSON (the full evaluate object; the system tables)."""


def optimum(study: Study, config: str, fabric: str, dtype: str | None = None) -> dict[str, Any]:
    """The best plan of ``config`` on a study fabric (full ``best_plan`` object)."""
    mode = study.mode
    return best_plan(study.models[config], study.fabrics[fabric], study.global_batch(config),
                     dtype or study.dtype, study.tokens, starts=mode.search_starts,
                     steps=mode.search_steps, exhaustive_max=mode.headline_exhaustive_max_plans,
                     stack=study.stack)


def public(opt: dict[str, Any]) -> dict[str, Any]:
    """An optimum without the bulky keys of :data:`DROP`."""
    return {k: v for k, v in opt.items() if k not in DROP}


def speedup(copper: dict[str, Any], passage: dict[str, Any]) -> float | None:
    """``copper days / passage days`` (None when either has no feasible plan)."""
    if copper["time_to_train_days"] is None or passage["time_to_train_days"] is None:
        return None
    return copper["time_to_train_days"] / passage["time_to_train_days"]


def same_plan(study: Study, config: str, plan: dict[str, Any], fabric: str = "passage"
              ) -> dict[str, Any]:
    """Copper's optimal plan evaluated on another fabric: separates the fabric's own effect
    (same plan, faster links / larger domain) from the effect of re-optimizing the plan."""
    model, system = study.models[config], study.fabrics[fabric]
    plan = {k: v for k, v in plan.items() if k not in ("dp", "edp", "microbatches")}
    # dp is derived from the GPUs the placement works, which differ between the fabrics
    r = evaluate(model, system, plan_from_values(plan, model, system, "copper plan",
                                                 study.stack), study.tokens)
    return {"fabric": fabric, "step_time_s": r["step_time_s"],
            "time_to_train_days": r["time_to_train_days"], "breakdown_s": r["breakdown_s"],
            "fits_memory": r["fits_memory"],
            "traffic_GB_per_gpu_per_step": r["traffic_GB_per_gpu_per_step"]}


def interval(study: Study, config: str, full: dict[str, dict[str, Any]],
             ranges=None) -> dict[str, Any]:
    """The speedup's interval over the constants' ranges, each fabric's optimal plan fixed
    (:func:`cpo_opt.study.uncertainty.speedup_interval`)."""
    model = study.models[config]
    if ranges is None and study.constants is not None:
        copper = study.fabrics["copper"]
        ranges = ranges_from_table(study.constants, copper.gpu_name, copper.system.constants)
    sides = []
    for f in FABRICS:
        s = study.fabrics[f]
        sides.append((s, plan_from_values(full[f]["plan"], model, s, f"{f} optimum",
                                          study.stack)))
    return speedup_interval(model, sides[0], sides[1], ranges)


def distribution(study: Study, config: str, full: dict[str, dict[str, Any]],
                 samples: int = 256) -> dict[str, Any]:
    """The speedup as a distribution (issue 22): constants drawn from their fitted posterior
    (correlations kept) and a model-form factor per fabric from the fit's leave-one-out
    residuals, all samples in one vmapped call, each fabric's optimal plan fixed
    (:func:`cpo_opt.analysis.uncertainty.speedup_distribution`): median, 90% interval and
    ``probability_passage_faster``."""
    from cpo_opt.analysis.uncertainty import speedup_distribution
    model = study.models[config]
    sides = [(study.fabrics[f], plan_from_values(full[f]["plan"], model, study.fabrics[f],
                                                 f"{f} optimum", study.stack))
             for f in FABRICS]
    step_ratio = full["copper"]["step_time_s"] / full["passage"]["step_time_s"]
    days_ratio = full["copper"]["time_to_train_days"] / full["passage"]["time_to_train_days"]
    d = speedup_distribution(model, sides[0], sides[1], samples=samples, seed=0,
                             tokens_ratio=days_ratio / step_ratio)
    return {"median": d["median"], "interval": d["interval"],
            "probability_passage_faster": d["probability_candidate_faster"],
            "samples": d["samples"], "method": d["method"],
            "model_form_sd": d["sampled"]["model_form_sd"],
            "constants": d["sampled"]["constants"]}


def cross_check(study: Study, config: str, full: dict[str, dict[str, Any]]) -> None:
    """Each fabric's optimum against the other fabric's re-scored on it (in place): where
    the search missed (the gradient search, on a space too large to enumerate) and the other
    optimum is valid there, fits and is faster, it is kept, and ``search.method`` says so."""
    for f, other in (("passage", "copper"), ("copper", "passage")):
        kept, again = keep_faster(full[f], study.models[config], study.fabrics[f],
                                  full[other].get("plan"), study.tokens, study.stack)
        if again:
            search = dict(full[f].get("search") or {})
            search["method"] = (f"{search.get('method')}; the {other} optimum re-scored here "
                                "is faster and kept")
            full[f] = {**kept, "search": search}


def config_entry(study: Study, config: str, tick: Callable[[str], None] = lambda s: None
                 ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """One ``configs[]`` entry of the JSON, and the full optima by fabric."""
    full = {}
    for f in FABRICS:
        full[f] = optimum(study, config, f)
        tick(f"{config} {f}")
    cross_check(study, config, full)
    m = study.models[config].values
    entry: dict[str, Any] = {
        "name": config,
        "params_total": study.params_total(config),
        "params_active": study.params_active(config),
        "seq_len": int(m["model"]["seq_len"]),
        "global_batch": study.global_batch(config),
        "dtype": study.dtype,
        **{f: public(full[f]) for f in FABRICS},
        "speedup": speedup(full["copper"], full["passage"]),
    }
    if entry["speedup"] is not None:
        entry["speedup_interval"] = interval(study, config, full)["interval"]
        entry["speedup_distribution"] = distribution(study, config, full)
        entry["copper_plan_on_passage"] = same_plan(study, config, full["copper"]["plan"])
        entry["explanation"] = explain(config, full["copper"], full["passage"], study.fabrics,
                                       entry["copper_plan_on_passage"])
    if study.mode.dtype_variant:
        var = {}
        for f in FABRICS:
            var[f] = public(optimum(study, config, f, study.dtype_variant))
            tick(f"{config} {f} {study.dtype_variant}")
        entry["variants"] = {study.dtype_variant: {**var, "speedup": speedup(var["copper"],
                                                                            var["passage"])}}
    return entry, full
