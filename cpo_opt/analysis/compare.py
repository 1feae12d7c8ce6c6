"""``compare``: one workload on a baseline system A and a candidate system B.

1. The best plan on each system (the same search as ``optimize``, same objective, same global
   batch rule: :func:`cpo_opt.inputs.schema.default_global_batch` of each cluster unless given).
2. A's best plan run unchanged on B (``speedup_same_plan``: what the fabric alone buys), when
   that plan is valid on B (same divisibility rules; it may not fit B's HBM, which is reported).
3. Speedups both ways: ``speedup = T_A / T_B`` in time to train at equal tokens (the ratio of
   cluster throughputs), ``speedup_same_plan = T_A / T_(A's plan on B)``, and
   ``speedup_plan_reoptimized = T_(A's plan on B) / T_B``; their product is ``speedup``.
4. The breakdown of the exposed step time side by side, with the difference.
5. The sentences of :func:`cpo_opt.analysis.explain.explain_pair`, computed from these numbers.
6. The speedup's distribution with each side's best plan fixed
   (:func:`cpo_opt.analysis.uncertainty.speedup_distribution`: the constants' fitted posterior,
   the model-form term, and the stack alternatives asked for; one vmapped call):
   ``speedup_interval`` [5th, 95th percentile], ``probability_faster`` = P(the baseline,
   ``--system``, is faster than the candidate, ``--against``) = P(speedup < 1), and its
   complement ``probability_candidate_faster``; each side's provisioned interconnect power
   (:func:`cpo_opt.model.fabric_cost.interconnect_power_w`).
"""

from __future__ import annotations

from typing import Any

from cpo_opt.analysis.evaluate import evaluate
from cpo_opt.analysis.explain import explain_pair
from cpo_opt.analysis.optimize import InfeasibleError, optimize
from cpo_opt.inputs.loaders import InputError, ModelSpec, SystemSpec, load_plan, system_with
from cpo_opt.analysis import uncertainty
from cpo_opt.model.step import BREAKDOWN_PARTS


def labels_of(a: SystemSpec, b: SystemSpec, a_over: dict | None, b_over: dict | None
              ) -> tuple[str, str]:
    """Names of the two sides in sentences: the system names, marked when overridden, and
    told apart when equal."""
    la = a.name + (" (overridden)" if a_over else "")
    lb = b.name + (" (overridden)" if b_over else "")
    if la == lb:
        la, lb = f"{la} (baseline)", f"{lb} (candidate)"
    return la, lb


def _side(label: str, model, system, global_batch, kw) -> dict[str, Any]:
    """``optimize`` on one side; an infeasible side says which it is."""
    try:
        return optimize(model, system, global_batch, **kw)
    except InfeasibleError as e:
        raise InfeasibleError(f"{label} {system.name}: {e}", e.limit, e.needed) from None


def compare(model: ModelSpec, baseline: SystemSpec, candidate: SystemSpec,
            global_batch: int | None = None, *, tokens: float | None = None,
            exhaustive: bool | None = None, dtype: str = "bf16", starts: int = 32, steps: int = 150,
            seed: int = 0, labels: tuple[str, str] | None = None,
            progress: bool = False, stack=None, samples: int = uncertainty.DEFAULT_SAMPLES,
            alternatives: tuple[str, ...] = (), model_form: bool | float = True
            ) -> dict[str, Any]:
    """The ``compare --json`` object (see the module docstring); both sides run on the same
    software ``stack``. ``samples``, ``alternatives`` and ``model_form`` shape the speedup's
    distribution (:func:`cpo_opt.analysis.uncertainty.speedup_distribution`); ``seed`` seeds
    it too."""
    samples = uncertainty.check_samples(samples)
    for k in alternatives:
        if k not in uncertainty.ALTERNATIVES:
            raise uncertainty.ArgumentError(
                "alternatives", f"unknown option {k!r}; the stack options a distribution "
                "may sample: " + ", ".join(uncertainty.ALTERNATIVES))
    kw = dict(exhaustive=exhaustive, dtype=dtype, starts=starts, steps=steps, seed=seed,
              tokens=tokens, progress=progress, stack=stack)
    a = _side("baseline", model, baseline, global_batch, kw)
    b = _side("candidate", model, candidate, global_batch, kw)
    sys_a = system_with(baseline, a["hardware"])
    sys_b = system_with(candidate, b["hardware"])
    same, same_error = None, None
    try:
        plan = load_plan(a["plan_arg"], model, sys_b, where="--plan", stack=stack)
        same = evaluate(model, sys_b, plan, tokens)
    except InputError as e:
        same_error = str(e)
    ra, rb = a["result"], b["result"]
    la, lb = labels or (baseline.name, candidate.name)
    why = explain_pair(model.name, ra, rb, {"baseline": sys_a, "candidate": sys_b}, same,
                       labels=(la, lb))
    split = why["numbers"]["speedup_split"] or {}
    step_a, step_b = ra["step_time_s"], rb["step_time_s"]
    breakdown = {k: {"baseline": ra["breakdown_s"][k], "candidate": rb["breakdown_s"][k],
                     "difference": rb["breakdown_s"][k] - ra["breakdown_s"][k],
                     "baseline_share": ra["breakdown_s"][k] / step_a,
                     "candidate_share": rb["breakdown_s"][k] / step_b}
                 for k in BREAKDOWN_PARTS}
    speed = why["numbers"]["speedup"]
    dist = uncertainty.speedup_distribution(
        model, (sys_a, load_plan(a["plan_arg"], model, sys_a, where="baseline plan",
                                 stack=stack)),
        (sys_b, load_plan(b["plan_arg"], model, sys_b, where="candidate plan", stack=stack)),
        samples=samples, seed=seed, alternatives=tuple(alternatives), model_form=model_form,
        tokens_ratio=(rb["tokens_per_s"] * rb["step_time_s"])
        / (ra["tokens_per_s"] * ra["step_time_s"]))
    out: dict[str, Any] = {
        "model": model.name,
        "labels": {"baseline": la, "candidate": lb},
        "baseline": a,
        "candidate": b,
        "speedup": speed,
        "speedup_interval": dist["interval"],
        "speedup_median": dist["median"],
        "probability_faster": dist["probability_baseline_faster"],
        "probability_candidate_faster": dist["probability_candidate_faster"],
        "interconnect_power_kW": {"baseline": a["interconnect_power_kW"],
                                  "candidate": b["interconnect_power_kW"]},
        "speedup_same_plan": split.get("fabric_alone"),
        "speedup_plan_reoptimized": split.get("plan_reoptimized"),
        "slowdown": 1.0 / why["numbers"]["speedup"],
        "baseline_plan_on_candidate": same,
        "baseline_plan_on_candidate_error": same_error,
        "breakdown_s": breakdown,
        "why": why["text"],
        "why_numbers": why["numbers"],
        "basis": "speedup = time to train on baseline / on candidate at equal tokens "
                 "(= ratio of cluster tokens/s); each system runs its own best plan",
        "uncertainty": {**{k: v for k, v in dist.items() if k not in ("interval", "median")},
                        "probability_faster_is": "P(baseline --system faster than candidate "
                                                 "--against) = P(speedup < 1)"},
    }
    return out
