"""Robust objectives: a plan's (and hardware point's) time over a batch of sampled constants.

``optimize --objective mean|p90|worst`` minimises, instead of the step time at the point
constants, a statistic of the step times ``T_s`` of one candidate over ``S`` samples ``s`` of
the model's constants (the same samples for every candidate: common random numbers, so two
candidates are compared sample by sample), each multiplied by that sample's model-form factor
``f_s`` (:mod:`cpo_opt.analysis.uncertainty`)::

    mean:  (1/S) sum_s f_s T_s        p90: the 90th percentile of f_s T_s        worst: max_s f_s T_s

The samples arrive as a :class:`~cpo_opt.model.constants.Constants` pytree with a leading
sample axis (what :func:`cpo_opt.analysis.uncertainty.constants_batch` builds); this layer
does not know where they came from.

* **Exact re-scoring** (:func:`make_robust_scorer`): :func:`cpo_opt.search.score.score_rows`'s
  row function with the exact model ``vmap``-ed over the samples inside it, then the
  statistic; the same outputs, so the exhaustive search and the gradient search's rounding and
  polish take it unchanged (their ``scorer=`` argument). A batch of rows is scored in chunks
  (``lax.map``) so that rows x samples stays the size of one point-scoring batch.
* **Relaxation** (:func:`make_robust_descent`): the gradient search's descent with the relaxed
  objective (:func:`cpo_opt.search.relaxed.objective`) evaluated at every sample and reduced
  the same way in log space (``mean``: ``logsumexp - log S``; ``p90``: the 90th percentile;
  ``worst``: the maximum), differentiated through the vmapped samples.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from cpo_opt.inputs import schema
from cpo_opt.model import fabric_cost
from cpo_opt.model.step import step_time
from cpo_opt.model.structure import Structure
from cpo_opt.search import lattice, relaxed
from cpo_opt.search import score as S
from cpo_opt.search.batching import SMALL_BATCH
from cpo_opt.search.brief_jit import brief_jit
from cpo_opt.search.space import SearchSpace

OBJECTIVES = ("point", "mean", "p90", "worst")
"""``point``: the step time at the point constants (no samples); the others: module docstring."""

QUANTILE = 0.9


def reduce(t, objective: str, axis: int = -1):
    """The statistic of ``objective`` over the sample axis."""
    if objective == "mean":
        return jnp.mean(t, axis=axis)
    if objective == "p90":
        return jnp.quantile(t, QUANTILE, axis=axis)
    if objective == "worst":
        return jnp.max(t, axis=axis)
    raise ValueError(f"objective {objective!r}: one of " + ", ".join(OBJECTIVES[1:]))


def reduce_log(v, objective: str):
    """The same statistic of ``exp(v)``, in log space (``v`` = log times)."""
    if objective == "mean":
        return jax.nn.logsumexp(v) - jnp.log(v.shape[-1])
    return reduce(v, objective)


@functools.partial(jax.jit, static_argnames=("structure", "free", "fixed", "objective",
                                             "chunk"))
def score_rows_sampled(model, system, rows, power_budget_w, constants, factor, *,
                       structure: Structure, free: tuple[str, ...],
                       fixed: tuple[tuple[str, float], ...] = (), objective: str = "mean",
                       chunk: int = 512) -> dict:
    """:func:`cpo_opt.search.score.score_rows` with ``step_time_s`` the ``objective``
    statistic over the sampled ``constants`` (leading axis S) times ``factor`` (S,)."""
    fp8, flash = structure.plan_switches()
    fixed_opts = dict(fixed)

    def one(row):
        s = schema.with_fields(system, free, [row["hw:" + k] for k in free])
        fabric_ok = fabric_cost.feasible(s, power_budget_w)
        plan = lattice.to_plan(row, fp8, flash, fixed=fixed_opts)

        def at(c):
            r = step_time(model, dataclasses.replace(s, constants=c), plan,
                          structure=structure)
            return r.step_time_s, r.fits_memory

        t, fits = jax.vmap(at)(constants)
        value = reduce(t * factor, objective)
        fit = jnp.min(fits)
        ok = fit * fabric_ok
        return {"step_time_s": jnp.where(ok > 0, value, jnp.inf),
                "raw_step_time_s": value, "feasible": ok, "fits_memory": fit,
                "placement": plan.placement + 0.0 * ok}

    n = next(iter(rows.values())).shape[0]
    return jax.lax.map(one, rows, batch_size=min(chunk, n))


def make_robust_scorer(space: SearchSpace, constants, factor, objective: str):
    """``rows -> scores`` like :func:`cpo_opt.search.score.make_exact_scorer`, scoring the
    ``objective`` statistic over the sampled ``constants`` (module docstring)."""
    if objective not in OBJECTIVES[1:]:
        raise ValueError(f"objective {objective!r}: one of " + ", ".join(OBJECTIVES[1:]))
    budget = np.inf if space.power_budget_w is None else space.power_budget_w
    n_samples = int(np.asarray(factor).shape[0])
    static = {"structure": S.structure(space), "free": tuple(space.free),
              "fixed": space.fixed, "objective": objective,
              "chunk": max(1, SMALL_BATCH // (8 * n_samples))}
    model, system = space.model.model, space.system.system
    factor = jnp.asarray(factor)

    def scorer(rows):
        return score_rows_sampled(model, system, rows, budget, constants, factor, **static)

    return scorer


@brief_jit(static_argnames=("free", "structure", "fixed", "objective"))
def _descend_sampled(z0, recompute, zero, lo, hi, temps, lr, model, system, global_batch,
                     fp8, flash, power_budget_w, constants, log_factor, *,
                     free: tuple[str, ...], structure: Structure, fixed=(),
                     objective: str = "mean"):
    """:func:`cpo_opt.search.gradient._descend` on the sampled relaxed objective (the same
    :func:`cpo_opt.search.gradient.adam_scan`)."""
    from cpo_opt.search.gradient import adam_scan

    def robust(z, rc, zr, t):
        def at(c, lf):
            v, st = relaxed.objective(z, rc, zr, t, model,
                                      dataclasses.replace(system, constants=c), global_batch,
                                      fp8, flash, power_budget_w, free, structure, fixed)
            return v + lf, st * jnp.exp(lf)
        v, st = jax.vmap(at)(constants, log_factor)
        return reduce_log(v, objective), reduce(st, objective)

    return adam_scan(robust, z0, recompute, zero, lo, hi, temps, lr)


def make_robust_descent(constants, factor, objective: str):
    """A ``descend(space, starts, steps, seed, lr)`` for
    :func:`cpo_opt.search.gradient.gradient_search` (its ``descend_fn=``) on the sampled
    relaxed objective (module docstring); same starts and annealing as
    :func:`cpo_opt.search.gradient.descend`."""
    from cpo_opt.search import gradient

    def descend(space: SearchSpace, starts: int, steps: int, seed: int, lr: float = 0.1,
                t_start: float = 0.3, t_end: float = 0.005):
        x = gradient.starting_points(space, starts, seed, t_start, t_end, steps)
        z, (vals, st) = _descend_sampled(
            jnp.asarray(x["z0"]), jnp.asarray(x["combos"][:, 0]),
            jnp.asarray(x["combos"][:, 1]), jnp.asarray(x["lo"]), jnp.asarray(x["hi"]),
            x["temps"], lr, space.model.model, space.system.system, float(space.global_batch),
            float(space.fp8), float(space.flash), x["budget"], constants,
            jnp.log(jnp.asarray(factor)), free=space.free, structure=S.structure(space),
            fixed=space.fixed, objective=objective)
        return np.asarray(z), x["combos"], np.asarray(vals), np.asarray(st)

    return descend
