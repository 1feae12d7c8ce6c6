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
from cpo_opt.search import distributed, exhaustive_search, gradient_search, make_space
from cpo_opt.search.exhaustive import AUTO_EXHAUSTIVE_ROWS, space_size
from cpo_opt.search.lattice import PlanSpaceTooLarge
from cpo_opt.search.space import SearchResult, SearchSpace
from cpo_opt.search import robust


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


DOMAIN_TOLERANCE = 1e-3
"""A larger scale-up domain must buy at least this relative step-time gain to be kept."""


def domain_candidates(gpus: int, lo: float, hi: float, multiple: int | None = None) -> list[int]:
    """Domain sizes a co-design may settle on in ``[lo, hi]``: divisors of the cluster (whole
    domains), or multiples of ``multiple`` (a rack) when given."""
    lo_i, hi_i = max(1, math.ceil(lo - 1e-9)), int(math.floor(hi + 1e-9))
    if multiple:
        return [d for d in range(multiple, hi_i + 1, multiple) if d >= lo_i]
    return [d for d in range(lo_i, hi_i + 1) if gpus % d == 0]


def trim_domain(space: SearchSpace, plan_values: dict, hardware: dict, step_time_s: float,
                tolerance: float = DOMAIN_TOLERANCE, multiple: int | None = None
                ) -> tuple[dict, dict | None]:
    """The smallest scale-up domain that earns its cost, for a co-design winner.

    Bigger domains cost switch ports, reach (optics) and, past one switch's radix, a second
    tier (:mod:`cpo_opt.model.fabric_cost`); the search only minimizes step time, so where a
    plateau in domain size leaves the time flat it may stop anywhere on it. This walks the
    winner's plan down the candidate domain sizes (:func:`domain_candidates`) and keeps the
    smallest one whose exact step time is within ``tolerance`` of the winner's, the plan still
    valid, in HBM, and within every fabric limit and the power budget. Returns the hardware
    and a report (None when the domain size is not free).
    """
    key = "scale_up.domain_size"
    if key not in space.free or key not in hardware:
        return hardware, None
    found = float(hardware[key])
    lo = space.bounds[space.free.index(key)][0]
    gpus = int(space.system.values["cluster"]["gpus"])
    tried, chosen, chosen_step = 0, found, step_time_s
    for d in domain_candidates(gpus, lo, found, multiple):
        if d >= found:
            break
        hw = {**hardware, key: float(d)}
        try:
            system = system_with(space.system, hw)
            plan = plan_from_values(plan_values, space.model, system, "domain trim",
                                    space.stack, space.chosen)
        except InputError:
            continue
        tried += 1
        r = evaluate(space.model, system, plan)
        ok = r["fits_memory"] and float(fabric_cost.feasible(system.system,
                                                              space.power_budget_w)) > 0
        if ok and r["step_time_s"] <= step_time_s * (1 + tolerance):
            chosen, chosen_step = float(d), r["step_time_s"]
            break
    info = {"searched_domain_size": found, "chosen_domain_size": chosen,
            "tolerance": tolerance, "candidates_tried": tried,
            "step_time_searched_s": step_time_s, "step_time_chosen_s": chosen_step,
            "rule": "smallest domain (divisor of the cluster"
                    + (f", multiple of {multiple}" if multiple else "")
                    + f") whose step time is within {100 * tolerance:g}% of the search's"}
    return {**hardware, key: chosen}, info


OBJECTIVE_TEXT = {
    "point": "minimum step time (= time to train at fixed batch and tokens) at the point "
             "constants",
    "mean": "minimum mean step time over sampled constants and the model-form term",
    "p90": "minimum 90th-percentile step time over sampled constants and the model-form term",
    "worst": "minimum worst-sample step time over sampled constants and the model-form term",
}

SEARCH_SAMPLES = 32
"""Samples the robust objectives score every candidate with (exact re-scoring and the
exhaustive search); the same draws for every candidate."""

RELAXED_SAMPLES = 8
"""Samples of the relaxed descent (the first of the search's samples): the descent only
steers, the exact re-scoring decides."""

ROBUST_TOP = 16
"""Distinct best candidates the search keeps for the robustness report."""


def report(space: SearchSpace, res: SearchResult, tokens: float | None = None,
           domain_multiple: int | None = None, objective: str = "point",
           robustness: dict | None = None) -> dict[str, Any]:
    """The ``optimize --json`` object for a search result."""
    out: dict[str, Any] = {
        "stack": space.stack.name if space.stack is not None else None,
        "chosen_by_search": list(space.chosen),
        "method": res.method,
        "evaluations": int(res.evaluations),
        "search_wall_s": float(res.search_wall_s),
        "objective": objective,
        "objective_text": OBJECTIVE_TEXT[objective] + " over plans that fit in HBM and "
                          "hardware within every fabric limit",
        "global_batch": space.global_batch,
        "free": list(space.free),
        "bounds": {k: list(b) for k, b in zip(space.free, space.bounds)},
        "power_budget_kW": None if space.power_budget_w is None else space.power_budget_w / 1e3,
        "detail": res.detail,
        "processes": distributed.process_count(),
    }
    if not res.plan_values:
        check_hardware_feasible(space)
        raise InfeasibleError(no_plan_message(space), "memory")
    searched = res.step_time_s
    if objective != "point":  # the trim compares step times at the point constants
        at = system_with(space.system, dict(res.hardware))
        searched = evaluate(space.model, at, plan_from_values(
            res.plan_values, space.model, at, "optimize", space.stack, space.chosen)
        )["step_time_s"]
    hardware, trim = trim_domain(space, res.plan_values, dict(res.hardware), searched,
                                 multiple=domain_multiple)
    system = system_with(space.system, hardware)
    plan = plan_from_values(res.plan_values, space.model, system, "optimize", space.stack,
                            space.chosen)
    result = evaluate(space.model, system, plan, tokens)
    power = float(fabric_cost.interconnect_power_w(system.system))
    out["domain_trim"] = trim
    out["fabric"] = fabric_cost.report(system.system, space.power_budget_w,
                                       reference=space.system.system)
    out.update({
        "feasible": True,
        "plan": result["plan"],
        "plan_arg": plan_arg(plan.values, space.model, system, space.stack),
        "step_time_s": result["step_time_s"],
        **({"step_time_interval_s": result["step_time_interval_s"]}
           if "step_time_interval_s" in result else {}),
        "hardware": hardware,
        "interconnect_power_kW": power / 1e3,
        "result": result,
    })
    if objective != "point":
        out["objective_value_s"] = float(res.step_time_s)
    if robustness is not None:
        out["robustness"] = robustness
    return out


def optimize(model: ModelSpec, system: SystemSpec, global_batch: int | None = None, *,
             exhaustive: bool | None = None, free: tuple[str, ...] = (),
             power_budget_kW: float | None = None, dtype: str = "bf16", starts: int = 32,
             steps: int = 150, seed: int = 0, tokens: float | None = None,
             progress: bool = False, domain_multiple: int | None = None,
             stack=None, objective: str = "point", samples: int | None = None
             ) -> dict[str, Any]:
    """The best plan (and free hardware values) for ``model`` on ``system``.

    Args:
      model, system: loaded specs.
      global_batch: sequences per step (default :func:`cpo_opt.inputs.schema.default_global_batch`).
      exhaustive: ``True`` enumerates every valid plan (ground truth), ``False`` runs the
        gradient search; ``None`` (default) picks the exhaustive search when the space has at
        most :data:`~cpo_opt.search.exhaustive.AUTO_EXHAUSTIVE_ROWS` rows (then it is exact
        and faster; ``method`` reads ``"exhaustive (auto)"``), else the gradient search.
      free: continuous system fields to optimize too (``"scale_up.bandwidth_GB_s"``).
      power_budget_kW: cap on provisioned interconnect power of the cluster.
      dtype: ``"bf16"`` or ``"fp8"``; starts, steps, seed: gradient-search settings.
      tokens: training tokens; adds time to train.
      progress: a progress line on stderr for searches longer than a second.
      domain_multiple: with ``scale_up.domain_size`` free, domain sizes settle on multiples
        of this (a rack) instead of divisors of the cluster (:func:`trim_domain`).
      stack: the software stack (name, file or spec; default: the default stack): its
        options fill the plan, and the search chooses what it lets it choose.
      objective: ``"point"`` (the step time at the point constants) or ``"mean"``, ``"p90"``,
        ``"worst"``: that statistic of the step time over ``samples`` (default
        :data:`SEARCH_SAMPLES`) draws of the constants' posterior and the model-form term
        (:mod:`cpo_opt.search.robust`); the result adds ``robustness``
        (:func:`robustness_of`).

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
    if objective not in robust.OBJECTIVES:
        raise ArgumentError("objective", f"must be one of {', '.join(robust.OBJECTIVES)} "
                            f"(got {objective!r})")
    budget = None if power_budget_kW is None else power_budget_kW * 1e3
    space = make_space(model, system, global_batch, dtype, tuple(free), power_budget_w=budget,
                       stack=stack)
    check_hardware_feasible(space)
    if domain_multiple is not None and domain_multiple < 1:
        raise ArgumentError("domain_multiple", f"must be >= 1 (got {domain_multiple})")
    kw: dict[str, Any] = {}
    n_samples = 1
    if objective != "point":
        from cpo_opt.analysis import uncertainty
        n_samples = uncertainty.check_samples(SEARCH_SAMPLES if samples is None else samples)
        post = uncertainty.posterior_of(space.system)
        draws = uncertainty.draw([post], n_samples, seed)
        consts = uncertainty.constants_batch(space.system.system.constants, post, draws)
        factor = uncertainty.model_form_factor(post, draws)
        k = min(RELAXED_SAMPLES, n_samples)
        kw = {"scorer": robust.make_robust_scorer(space, consts, factor, objective),
              "top": ROBUST_TOP}
        relax = (jax_head(consts, k), factor[:k], objective)
    auto = exhaustive is None
    if auto:
        try:
            exhaustive = space_size(space) * n_samples <= AUTO_EXHAUSTIVE_ROWS
        except PlanSpaceTooLarge:  # too many plans to enumerate: the gradient search
            exhaustive = False
    if exhaustive:
        res = exhaustive_search(space, progress=progress, **kw)
        if auto:
            res.method = "exhaustive (auto)"
    else:
        if objective != "point":
            kw["descend_fn"] = robust.make_robust_descent(*relax)
        with ticker(f"gradient search ({starts} starts x {steps} steps)", progress):
            res = gradient_search(space, starts=starts, steps=steps, seed=seed, **kw)
    rob = None
    if objective != "point" and res.plan_values:
        rob = robustness_of(space, res, objective, seed=seed)
    return report(space, res, tokens, domain_multiple, objective, rob)


def jax_head(tree, k: int):
    """The first ``k`` rows of every leaf of a batched pytree."""
    import jax
    return jax.tree.map(lambda x: x[:k], tree)


ROBUSTNESS_SAMPLES = 256
"""Samples of the robustness report (fresh draws, not the search's)."""


def robustness_of(space: SearchSpace, res: SearchResult, objective: str,
                  samples: int = ROBUSTNESS_SAMPLES, seed: int = 0) -> dict[str, Any]:
    """How the chosen plan (and hardware point) fares against the search's other best
    candidates over fresh samples (:func:`cpo_opt.analysis.uncertainty.choice_robustness`):
    ``best_changes_fraction`` (how often another candidate is the fastest), ``expected_regret``
    (mean relative excess over the fastest candidate of each sample), and each candidate's
    point, mean, 90th-percentile and worst step time. The candidates are the distinct plans
    of the search's ``top`` rows (re-built as plans; the winner first)."""
    from cpo_opt.analysis import uncertainty
    from cpo_opt.analysis.evaluate import evaluate as _evaluate
    tops = [{"plan": res.plan_values, "hardware": dict(res.hardware)}] + [
        t for t in res.detail.get("top", [])]
    designs, seen, described = [], set(), []
    import jax
    for t in tops:
        try:
            system = system_with(space.system, t["hardware"])
            plan = plan_from_values(t["plan"], space.model, system, "candidate", space.stack,
                                    space.chosen)
        except InputError:
            continue
        key = tuple(float(np.asarray(x)) for x in jax.tree.leaves(plan.plan)) + tuple(
            sorted(t["hardware"].items()))
        if key in seen:  # the same plan written two ways (an option at its default or not)
            continue
        seen.add(key)
        designs.append((system, plan))
        described.append({"plan_arg": plan_arg(plan.values, space.model, system, space.stack),
                          "hardware": t["hardware"]})
    posts = [uncertainty.posterior_of(s) for s, _ in designs]
    draws = uncertainty.draw(posts[:1], samples, seed + 1)  # one design's draws for all
    draws = uncertainty.Draws(draws.n, draws.z, np.repeat(draws.eps[:1], len(designs), 0),
                              draws.alt)
    times, fits = uncertainty.sampled_step_times(space.model, designs, posts, draws)
    times = np.where(fits > 0.5, times, np.inf)
    rob = uncertainty.choice_robustness(times, 0)
    for i, d in enumerate(described):
        d.update(point_step_time_s=_evaluate(space.model, *designs[i])["step_time_s"],
                 mean_s=rob["mean_s"][i], p90_s=rob["p90_s"][i], worst_s=rob["worst_s"][i],
                 fastest_fraction=rob["wins"][i])
    return {"objective": objective, "samples": int(draws.n),
            "candidates": described,
            "best_changes_fraction": rob["best_changes_fraction"],
            "expected_regret": rob["expected_regret"],
            "regret_p90": rob["regret_p90"],
            "posterior": posts[0].to_dict() if posts else None,
            "method": "the search's distinct best candidates re-evaluated on fresh samples "
                      "(same draws for all, one vmapped call per structure); regret = "
                      "T_chosen / min_k T_k - 1 per sample"}


class ticker:
    """A tqdm line on stderr with the elapsed time of a search that reports no steps; shown
    only after a second (tqdm ``delay``) and only when ``enabled``."""

    def __init__(self, desc: str, enabled: bool):
        self.desc, self.enabled = desc, enabled

    def __enter__(self):
        if not self.enabled:
            return self
        import threading
        from tqdm.auto import tqdm
        self.bar = tqdm(desc=self.desc, total=None, delay=1.0, leave=False,
                        bar_format="{desc}: {elapsed}")
        self.stop = threading.Event()

        def tick():
            while not self.stop.wait(0.5):
                self.bar.refresh()

        self.thread = threading.Thread(target=tick, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self.stop.set()
            self.thread.join()
            self.bar.close()
        return False


def power_sweep(model: ModelSpec, system: SystemSpec, budgets_kW: list[float],
                **kwargs) -> dict[str, Any]:
    """``optimize`` at each power budget; an infeasible budget is a row saying why."""
    rows = []
    for b in budgets_kW:
        try:
            r = optimize(model, system, power_budget_kW=b, **kwargs)
            rows.append({"power_budget_kW": b, "feasible": True, **r})
        except InfeasibleError as e:
            rows.append({"power_budget_kW": b, "feasible": False, "reason": str(e),
                         "limit": e.limit, "needed": e.needed})
    return {"sweep": rows, "power_budgets_kW": list(budgets_kW)}
