"""Uncertainty of model outputs: sampled distributions that reach the decision, and linearised
intervals of one step time.

**Sampling** (what ``compare``, ``optimize --objective`` and the study report). A prediction
``T`` of the model is uncertain for three reasons, each sampled:

1. *Calibrated constants.* Every constant that carries a 90% interval for the system's GPU
   (the shipped fit, :mod:`cpo_opt.model.fitted`, and a ``--constants`` file on top of it;
   a constant the file sets without an interval is exact) is a normal variable in its
   unbounded coordinate ``theta`` (the logit of a fraction, the log of a positive quantity,
   :func:`cpo_opt.analysis.calibrate.to_theta`) with mean ``theta(value the system uses)``
   and ``sd = (theta(high) - theta(low)) / (2 * 1.645)``. Where the fit recorded the
   correlations of its Laplace posterior (``calibrate``'s ``posterior``, a file's
   ``about.correlation``, ``fitted.CORRELATIONS``) the draws keep them: ``theta = mean + sd *
   (C z)``, ``C`` the Cholesky factor of the correlation matrix. The same constant at the same
   level is the same draw on both sides of a comparison (one GPU software, one unknown).
2. *Model form.* The leave-one-out residuals of the fit (each case predicted by constants
   fitted without it) measure how far the model's form misses a run it was not fitted to. Each
   prediction is multiplied by ``exp(eps)``, ``eps ~ N(0, s^2)`` with ``s`` the RMS of the
   leave-one-out log residuals (``cross_validation.rms_log_error``; from an older fit, its
   mean absolute error times ``sqrt(pi/2)``, the normal relation). Two designs compared draw
   ``eps`` with the fit's within-generation residual correlation ``rho``
   (``cross_validation.within_level_correlation``; 0, independent, when the fit did not
   record it, which is the conservative choice for a ratio). One design's plans share one
   ``eps`` per sample (the error belongs to the software and GPU, not to the plan), so the
   term widens a design's distribution without reordering its plans. The leave-one-out
   residuals also carry some of the constants' own uncertainty, so items 1 and 2 together
   overstate it slightly rather than understate it.
3. *Software-stack alternatives* (only where asked for, ``alternatives=``): each named plan
   option (:data:`ALTERNATIVES`: EP overlap, pipeline layout, ...) takes each of its values
   with equal probability, the same value on both sides of a comparison.

All samples of one design are evaluated by one compiled call (``jax.vmap`` of the exact model
over the sampled constants and plan options, :func:`sampled_step_times`); a comparison stacks
both designs into the same call when their static structure agrees. A result is *exact* (zero
width) only when nothing is sampled: no constant carries an interval, the model-form term is
0 and no alternative is asked for; the outputs say so.

**Linearisation** (:func:`step_time_interval`, ``evaluate``'s ``step_time_interval_s``): the
first-order interval of one step time from the marginal intervals, ``sd(log f)^2 = sum_j (d
log f / d theta_j)^2 sd_j^2`` (one ``jax.grad``), ``f * exp(+- 1.645 sd)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cpo_opt.analysis.coordinates import Z90, from_theta, to_theta
from cpo_opt.inputs.loaders import structure_of_plan
from cpo_opt.model.step import step_time_jit
from cpo_opt.inputs.constants_file import SHIPPED, ConstantsTable, as_table
from cpo_opt.inputs.loaders import ArgumentError, ModelSpec, PlanSpec, SystemSpec
from cpo_opt.model.constants import INFO, Constants, constants_for, generation_of
from cpo_opt.model.step import step_time
from cpo_opt.model.structure import Structure

DEFAULT_SAMPLES = 256
"""Samples of a reported distribution (5th/95th percentiles from 256 draws move by about
+-1% of the interval's width from seed to seed)."""

MAX_SAMPLES = 65_536

ALTERNATIVES: dict[str, tuple[str, tuple[float, ...]]] = {
    "overlap_ep": ("overlap_ep", (0.0, 1.0)),
    "overlap_tp": ("overlap_tp", (0.0, 1.0)),
    "overlap_dp": ("overlap_dp", (0.0, 1.0)),
    "cuda_graphs": ("cuda_graphs", (0.0, 1.0)),
    "dispatcher": ("dispatcher", (0.0, 1.0)),
    "pipeline_layout": ("layout_balanced", (0.0, 1.0)),
}
"""Software options a distribution may sample (``alternatives=``): plan key -> (plan field,
codes). Each changes how a plan runs, never which plans are valid, so any plan takes any of
them (the stack issue's named alternatives: EP overlap, dispatcher, CUDA graphs, pipeline
layout; DP/TP overlap)."""

SQRT_HALF_PI = math.sqrt(math.pi / 2.0)
"""For a normal error, sd = mean |error| * sqrt(pi / 2)."""


# --------------------------------------------------------------------------- the posterior
@dataclasses.dataclass(frozen=True)
class Posterior:
    """The sampled uncertainty of one design's GPU (module docstring).

    Attributes:
      entries: ``(level, name, theta_mean, theta_sd)`` of every sampled constant.
      correlations: ``{level: (names, matrix)}`` of the constants of a level whose
        posterior correlations the fit recorded.
      model_form_sd: ``s`` of the model-form term (log step time).
      model_form_correlation: ``rho`` between two designs' model-form draws.
      sources: where each part came from, one sentence each.
    """

    entries: tuple[tuple[str, str, float, float], ...]
    correlations: Mapping[str, tuple[tuple[str, ...], np.ndarray]]
    model_form_sd: float
    model_form_correlation: float
    sources: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        return [f"{lvl}.{n}" for lvl, n, _, _ in self.entries]

    @property
    def exact(self) -> bool:
        return not self.entries and self.model_form_sd == 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"constants": {f"{lvl}.{n}": {"value": float(from_theta(n, m)),
                                             "low": float(from_theta(n, m - Z90 * s)),
                                             "high": float(from_theta(n, m + Z90 * s))}
                              for lvl, n, m, s in self.entries},
                "correlated": {lvl: list(names) for lvl, (names, _) in
                               self.correlations.items()},
                "model_form_sd": self.model_form_sd,
                "model_form_correlation": self.model_form_correlation,
                "sources": list(self.sources)}


def _levels(gpu_name: str) -> tuple[str, ...]:
    return ("*", generation_of(gpu_name) or "", str(gpu_name))


def _shipped_model_form() -> tuple[float, float, str]:
    """``(s, rho, source)`` of the shipped fit's leave-one-out residuals."""
    from cpo_opt.model import fitted
    cv = dict(getattr(fitted, "ABOUT", {}).get("cross_validation", {}) or {})
    if cv.get("rms_log_error") is not None:
        s = float(cv["rms_log_error"])
        how = "RMS of the leave-one-out log residuals"
    elif cv.get("mean_abs_error") is not None:
        s = float(cv["mean_abs_error"]) * SQRT_HALF_PI
        how = "leave-one-out mean |error| x sqrt(pi/2)"
    else:
        return 0.0, 0.0, "the shipped fit records no leave-one-out errors: no model-form term"
    rho = float(cv.get("within_level_correlation") or 0.0)
    return s, rho, (f"model form: {100 * s:.1f}% ({how} of the shipped fit, "
                    f"{fitted.ABOUT.get('n_cases', '?')} cases; cpo_opt/model/fitted.py)")


def _table_model_form(table: ConstantsTable) -> tuple[float, float, str] | None:
    mf = table.about.get("model_form") if table.about else None
    if not isinstance(mf, Mapping) or mf.get("sd") is None:
        return None
    return (float(mf["sd"]), float(mf.get("correlation", 0.0) or 0.0),
            f"model form: {100 * float(mf['sd']):.1f}% (leave-one-out residuals of "
            f"{table.origin})")


def _correlation_block(raw: Any) -> tuple[tuple[str, ...], np.ndarray] | None:
    """``(names, matrix)`` from ``{"names": [...], "matrix": [[...]]}``, or None."""
    if not isinstance(raw, Mapping):
        return None
    names = tuple(str(n) for n in raw.get("names", ()))
    m = np.asarray(raw.get("matrix", ()), dtype=float)
    if not names or m.shape != (len(names), len(names)) or not np.all(np.isfinite(m)):
        return None
    return names, m


def posterior_of(system: SystemSpec, model_form: bool | float = True) -> Posterior:
    """The :class:`Posterior` of a loaded system: the shipped fit's intervals for its GPU,
    replaced by those of its constants file (``--constants``) where the file sets a constant
    (without an interval there: exact), and the model-form term (``model_form``: True the
    fit's leave-one-out term, False none, a number that sd)."""
    from cpo_opt.model import fitted
    gpu = system.gpu_name
    table = system.constants if isinstance(system.constants, ConstantsTable) else None
    user = table if table is not None and table.origin != SHIPPED else None
    intervals: dict[str, tuple[str, float, float]] = {}
    sources = []
    for level in _levels(gpu):
        for name, (lo, hi) in fitted.INTERVALS.get(level, {}).items():
            intervals[name] = (level, float(lo), float(hi))
    if intervals:
        sources.append("constants: the shipped fit's 90% intervals for "
                       f"{gpu} (cpo_opt/model/fitted.py): " + ", ".join(sorted(intervals)))
    correlations: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
    for level, raw in dict(getattr(fitted, "CORRELATIONS", {}) or {}).items():
        block = _correlation_block(raw)
        if block is not None:
            correlations[level] = block
    if user is not None:
        for level in _levels(gpu):
            for name in user.get(level, {}):
                intervals.pop(name, None)  # set by the file: its interval (below) or exact
            for name, (lo, hi) in user.intervals.get(level, {}).items():
                intervals[name] = (level, float(lo), float(hi))
            correlations.pop(level, None)
        sources.append(f"constants: {user.origin} (its intervals; a constant it sets "
                       "without one is exact)")
        for level, raw in dict(user.about.get("correlation", {}) or {}).items() \
                if isinstance(user.about.get("correlation"), Mapping) else ():
            block = _correlation_block(raw)
            if block is not None:
                correlations[level] = block
    consts = system.system.constants
    entries = []
    for name in INFO:  # field order: a stable order of draws
        if name not in intervals:
            continue
        level, lo, hi = intervals[name]
        if not hi > lo:
            continue
        sd = float(to_theta(name, hi) - to_theta(name, lo)) / (2.0 * Z90)
        mean = float(to_theta(name, float(np.asarray(getattr(consts, name)))))
        entries.append((level, name, mean, sd))
    if not entries:
        sources.append(f"constants: no constant carries an interval for {gpu}: exact")
    if model_form is True:
        mf = (_table_model_form(user) if user is not None else None) or _shipped_model_form()
        s, rho, src = mf
    elif model_form is False or model_form is None:
        s, rho, src = 0.0, 0.0, "model form: left out (model_form=False)"
    else:
        s = float(model_form)
        if not (s >= 0 and math.isfinite(s)):
            raise ArgumentError("model_form", f"must be a non-negative sd (got {model_form})")
        rho, src = 0.0, f"model form: {100 * s:.1f}% (given)"
    sources.append(src)
    used = {lvl: (names, m) for lvl, (names, m) in correlations.items()
            if sum(1 for e in entries if e[0] == lvl and e[1] in names) > 1}
    return Posterior(tuple(entries), used, float(s), float(rho), tuple(sources))


# --------------------------------------------------------------------------- draws
@dataclasses.dataclass(frozen=True)
class Draws:
    """Standard normal draws shared by every design of one comparison: ``z[(level, name)]``
    (n,), ``eps`` (designs, n) of the model form before scaling, ``alt`` {plan field: (n,)}."""

    n: int
    z: dict
    eps: np.ndarray
    alt: dict


def draw(posteriors: Sequence[Posterior], n: int = DEFAULT_SAMPLES, seed: int = 0,
         alternatives: Sequence[str] = ()) -> Draws:
    """Draw once for a set of designs (the same constant at the same level is one draw;
    correlated constants of a level are drawn through the Cholesky factor of their
    correlation matrix; model-form draws correlated by each pair's ``rho``)."""
    n = check_samples(n)
    for a in alternatives:
        if a not in ALTERNATIVES:
            raise ArgumentError("alternatives", f"unknown option {a!r}; the stack options a "
                                "distribution may sample: " + ", ".join(ALTERNATIVES))
    rng = np.random.default_rng(seed)
    z: dict[tuple[str, str], np.ndarray] = {}
    done: set[str] = set()
    for p in posteriors:
        for lvl, (names, m) in p.correlations.items():
            if lvl in done:
                continue
            done.add(lvl)
            keep = [i for i, nm in enumerate(names)
                    if any(e[0] == lvl and e[1] == nm for e in p.entries)]
            sub = m[np.ix_(keep, keep)]
            try:
                chol = np.linalg.cholesky(sub + 1e-12 * np.eye(len(keep)))
            except np.linalg.LinAlgError:
                chol = np.eye(len(keep))
            u = chol @ rng.standard_normal((len(keep), n))
            for row, i in enumerate(keep):
                z[(lvl, names[i])] = u[row]
        for lvl, name, _, _ in p.entries:
            if (lvl, name) not in z:
                z[(lvl, name)] = rng.standard_normal(n)
    k = len(posteriors)
    shared = rng.standard_normal(n)
    own = rng.standard_normal((k, n))
    rho = min([p.model_form_correlation for p in posteriors] or [0.0])
    rho = float(np.clip(rho, 0.0, 1.0))
    eps = math.sqrt(rho) * shared[None, :] + math.sqrt(1.0 - rho) * own
    alt = {ALTERNATIVES[a][0]: np.asarray(ALTERNATIVES[a][1])[
        rng.integers(0, len(ALTERNATIVES[a][1]), n)].astype(float) for a in alternatives}
    return Draws(n, z, eps, alt)


def check_samples(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= MAX_SAMPLES:
        raise ArgumentError("samples", f"must be an integer between 1 and {MAX_SAMPLES} "
                            f"(got {n!r})")
    return int(n)


def constants_batch(base: Constants, posterior: Posterior, draws: Draws) -> Constants:
    """A :class:`Constants` pytree with a leading sample axis: ``base`` with every sampled
    constant at ``from_theta(mean + sd z)``."""
    values = {}
    for name in INFO:
        values[name] = np.full(draws.n, float(np.asarray(getattr(base, name))))
    for lvl, name, mean, sd in posterior.entries:
        theta = mean + sd * np.asarray(draws.z[(lvl, name)], dtype=float)
        # from_theta on the host (numpy): a logistic for fractions, exp otherwise; host
        # arrays, one transfer in the compiled call (jnp here cost a dispatch per leaf)
        values[name] = (1.0 / (1.0 + np.exp(-theta)) if INFO[name].unit == "fraction"
                        else np.exp(theta))
    return Constants(**values)


def model_form_factor(posterior: Posterior, draws: Draws, side: int = 0) -> np.ndarray:
    """``exp(s * eps_side)`` per sample."""
    return np.exp(posterior.model_form_sd * draws.eps[side])


# --------------------------------------------------------------------------- evaluation
@functools.partial(jax.jit, static_argnames=("structure",))
def _sampled(model, systems, plans, constants, *, structure: Structure):
    """Step times ``(designs, samples)``: ``vmap`` over designs of ``vmap`` over samples of
    the exact model. ``systems``/``plans`` carry a leading design axis (``plans`` also a
    sample axis); ``constants`` a design and a sample axis."""
    def design(system, plan, consts):
        def one(p, c):
            r = step_time(model, dataclasses.replace(system, constants=c), p,
                          structure=structure)
            return r.step_time_s, r.fits_memory
        return jax.vmap(one)(plan, consts)
    return jax.vmap(design)(systems, plans, constants)


def _plan_batch(plan, draws: Draws):
    """``plan`` with a leading sample axis; the sampled alternatives replace their fields."""
    leaves = {f.name: np.full(draws.n, float(np.asarray(getattr(plan, f.name))))
              for f in dataclasses.fields(plan)}
    for field, values in draws.alt.items():
        leaves[field] = np.asarray(values, dtype=float)
    return type(plan)(**leaves)


def sampled_step_times(model: ModelSpec, designs: Sequence[tuple[SystemSpec, PlanSpec]],
                       posteriors: Sequence[Posterior], draws: Draws,
                       model_form: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(step times (designs, samples), fits in memory (designs, samples))`` of each
    ``(system, plan)`` under the draws, the model-form factor applied (``model_form``).
    Designs that share the static structure run in one compiled call."""
    n = draws.n
    out_t = np.zeros((len(designs), n))
    out_f = np.zeros((len(designs), n))
    groups: dict[Structure, list[int]] = {}
    for i, (_, plan) in enumerate(designs):
        groups.setdefault(structure_of_plan(model, plan), []).append(i)
    for structure, idx in groups.items():
        systems = _stack([designs[i][0].system for i in idx])
        plans = _stack([_plan_batch(designs[i][1].plan, draws) for i in idx])
        consts = _stack([constants_batch(designs[i][0].system.constants, posteriors[i], draws)
                         for i in idx])
        t, f = _sampled(model.model, systems, plans, consts, structure=structure)
        out_t[idx] = np.asarray(t)
        out_f[idx] = np.asarray(f)
    if model_form:
        for i, p in enumerate(posteriors):
            out_t[i] *= model_form_factor(p, draws, i)
    return out_t, out_f


def _stack(trees):
    """Stack pytrees on a new leading axis, on the host (numpy: no device dispatch per
    leaf; the compiled call transfers the stacked arrays once)."""
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x, dtype=float) for x in xs]),
                        *trees)


# --------------------------------------------------------------------------- summaries
def percentiles(x: np.ndarray, qs=(5.0, 50.0, 95.0)) -> list[float]:
    return [float(v) for v in np.percentile(np.asarray(x, dtype=float), qs)]


def speedup_distribution(model: ModelSpec, baseline: tuple[SystemSpec, PlanSpec],
                         candidate: tuple[SystemSpec, PlanSpec], *,
                         samples: int = DEFAULT_SAMPLES, seed: int = 0,
                         alternatives: Sequence[str] = (), model_form: bool | float = True,
                         tokens_ratio: float = 1.0) -> dict[str, Any]:
    """The distribution of ``speedup = T_baseline / T_candidate`` (each design's plan fixed):
    ``{"point", "median", "interval" [5th, 95th], "probability_candidate_faster",
    "probability_baseline_faster", "samples", "exact", "sampled", ...}``. ``tokens_ratio``
    multiplies the ratio when the two steps carry different tokens."""
    posts = [posterior_of(baseline[0], model_form), posterior_of(candidate[0], model_form)]
    draws = draw(posts, samples, seed, alternatives)
    t, fits = sampled_step_times(model, [baseline, candidate], posts, draws)
    s = t[0] / t[1] * tokens_ratio
    point = _point_ratio(model, baseline, candidate) * tokens_ratio
    exact = all(p.exact for p in posts) and not alternatives
    ok = np.isfinite(s)
    lo, med, hi = percentiles(s[ok]) if ok.any() else [float("nan")] * 3
    out = {
        "point": point, "median": med, "interval": [lo, hi],
        "probability_candidate_faster": float(np.mean(s[ok] > 1.0)) if ok.any() else None,
        "probability_baseline_faster": float(np.mean(s[ok] < 1.0)) if ok.any() else None,
        "samples": int(draws.n), "seed": int(seed), "exact": bool(exact),
        "sampled": {"constants": sorted(set(posts[0].names) | set(posts[1].names)),
                    "model_form_sd": [p.model_form_sd for p in posts],
                    "model_form_correlation": min(p.model_form_correlation for p in posts),
                    "alternatives": list(alternatives)},
        "fits_memory_fraction": [float(np.mean(f > 0.5)) for f in fits],
        "sources": list(dict.fromkeys(posts[0].sources + posts[1].sources)),
        "method": "Monte Carlo: constants from their fitted posterior, a model-form factor "
                  "per design from the fit's leave-one-out residuals"
                  + (", stack alternatives " + ", ".join(alternatives) if alternatives else "")
                  + "; plans fixed; all samples in one vmapped call "
                    "(cpo_opt.analysis.uncertainty)",
    }
    if exact:
        out["note"] = ("every sampled quantity is exact (no constant carries an interval, no "
                       "model-form term, no alternative): the interval has zero width")
    return out


def _point_ratio(model, baseline, candidate) -> float:
    ta = step_time_jit(model.model, baseline[0].system, baseline[1].plan,
                       structure=structure_of_plan(model, baseline[1])).step_time_s
    tb = step_time_jit(model.model, candidate[0].system, candidate[1].plan,
                       structure=structure_of_plan(model, candidate[1])).step_time_s
    return float(ta) / float(tb)


def choice_robustness(times: np.ndarray, chosen: int = 0) -> dict[str, Any]:
    """How robust a choice among candidates is, from sampled times ``(candidates,
    samples)`` (each sample a row of the same draws): the fraction of samples in which
    another candidate is fastest (``best_changes_fraction``), the expected relative regret
    ``E[T_chosen / min_k T_k - 1]`` (``expected_regret``), and per candidate the mean, the
    90th percentile and the worst of its time and how often it is the fastest."""
    t = np.asarray(times, dtype=float)
    t = np.where(np.isfinite(t), t, np.inf)
    best = np.argmin(t, axis=0)
    tmin = t[best, np.arange(t.shape[1])]
    regret = t[chosen] / tmin - 1.0
    ok = np.isfinite(regret)
    return {
        "best_changes_fraction": float(np.mean(best != chosen)),
        "expected_regret": float(np.mean(regret[ok])) if ok.any() else None,
        "regret_p90": float(np.percentile(regret[ok], 90)) if ok.any() else None,
        "wins": [float(np.mean(best == k)) for k in range(t.shape[0])],
        "mean_s": [float(np.mean(r)) for r in t],
        "p90_s": [float(np.percentile(r, 90)) for r in t],
        "worst_s": [float(np.max(r)) for r in t],
    }


# --------------------------------------------------------------------------- linearised
@dataclasses.dataclass(frozen=True)
class Interval:
    """A point value and its (90%) interval."""

    value: float
    low: float
    high: float

    def as_list(self) -> list[float]:
        return [self.low, self.high]


def intervals_of(table: Any) -> list[tuple[str, str, float, float]]:
    """``(level, name, theta, sd)`` of every constant of ``table`` that carries an interval."""
    t = as_table(table)
    out = []
    if t is None:
        return out
    for level, names in t.intervals.items():
        for name, (low, high) in names.items():
            value = t[level][name]
            sd = float(to_theta(name, high) - to_theta(name, low)) / (2.0 * Z90)
            out.append((level, name, float(to_theta(name, value)), sd))
    return out


def interval_of(fn: Callable[[dict], Any], constants: Any, z: float = Z90) -> Interval:
    """The linearised interval of ``fn(table)`` (> 0) from the intervals of a constants table.

    Args:
      fn: maps a plain constants table ``{level: {name: value}}`` (values may be JAX tracers)
        to one positive scalar; build systems inside it with :func:`with_table` so that the
        constants reach the model.
      constants: a :class:`~cpo_opt.inputs.constants_file.ConstantsTable`, a path or a dict.
      z: the normal quantile (1.645: a 90% interval).

    Returns:
      :class:`Interval` (low == high == value when no constant carries an interval).
    """
    table = as_table(constants) or ConstantsTable()
    keys = intervals_of(table)
    plain = {lvl: dict(v) for lvl, v in table.items()}
    if not keys:
        v = float(fn(plain))
        return Interval(v, v, v)
    theta = jnp.asarray([k[2] for k in keys])
    sd = jnp.asarray([k[3] for k in keys])

    def log_f(th):
        t = {lvl: dict(v) for lvl, v in plain.items()}
        for k, (level, name, _, _) in enumerate(keys):
            t[level][name] = from_theta(name, th[k])
        return jnp.log(fn(t))

    value, grad = jax.value_and_grad(log_f)(theta)
    s = float(jnp.sqrt(jnp.sum((grad * sd) ** 2)))
    v = float(value)
    return Interval(math.exp(v), math.exp(v - z * s), math.exp(v + z * s))


def with_table(system: SystemSpec, table: Mapping[str, Mapping[str, Any]]):
    """``system.system`` (the System pytree) with its constants taken from ``table``."""
    return dataclasses.replace(system.system,
                               constants=constants_for(system.gpu_name, table))


def has_intervals(system: SystemSpec) -> bool:
    """Whether the system was loaded with a constants table that carries intervals at the
    levels of its own GPU (an interval of another generation's constant would give a
    zero-width interval, which would claim a certainty nobody measured)."""
    c = system.constants
    return isinstance(c, ConstantsTable) and bool(c.intervals_for(system.gpu_name))


def step_time_interval(model: ModelSpec, system: SystemSpec, plan: PlanSpec,
                       z: float = Z90) -> Interval:
    """The linearised interval of the step time of one plan from the system's constants
    intervals (the marginal intervals of its constants table; no model-form term)."""
    return interval_of(
        lambda t: step_time_jit(model.model, with_table(system, t), plan.plan).step_time_s,
        system.constants, z)
