"""Many plans at once: the valid combinations of a user's choices, or a random draw from the
search space, as one stacked batch for :func:`cpo_opt.evaluate_batch`::

    import cpo_opt
    batch = cpo_opt.plans.grid("deepseek-v3", "h800-cluster", tp=[1, 2, 4, 8],
                               pp=[1, 2, 4, 8, 16], ep=[8, 16, 32, 64],
                               global_batch=15360, dtype="fp8")
    len(batch), batch.rejected[:2], batch.reasons()
    r = cpo_opt.evaluate_batch(plans=batch)
    r.step_time_s, r[r.best()].to_dict()

A combination that breaks a plan rule is not in the batch: ``batch.rejected`` holds it with
the rule, in the words of ``evaluate --plan`` (the same check,
:func:`cpo_opt.inputs.plan_from_values`, on the same software stack). Valid plans are
resolved exactly as ``evaluate`` resolves them (stack options, ``placement = "auto"``), so
``evaluate_batch`` returns what ``evaluate`` returns one plan at a time.
"""

from __future__ import annotations

from typing import Any, Mapping

from cpo_opt import api
from cpo_opt.analysis.batch import MAX_COMBINATIONS, PlanBatch, Rejected
from cpo_opt.analysis import batch as _batch

__all__ = ["grid", "sample", "PlanBatch", "Rejected", "MAX_COMBINATIONS"]


def grid(model=None, system=None, *, stack=None, overrides: Mapping[str, Any] | None = None,
         constants=None, scenario=None, progress: bool = False, **choices) -> PlanBatch:
    """Every combination of ``choices`` that is a valid plan of ``model`` on ``system``.

    Args:
      model, system: preset names, files, dicts or loaded specs (as :func:`cpo_opt.evaluate`);
        ``scenario`` fills those not given; ``overrides`` (``--set``), ``constants`` and
        ``stack`` as in :func:`cpo_opt.evaluate`.
      **choices: plan keys (``tp``, ``pp``, ``cp``, ``ep``, ``etp``, ``vpp``, ``micro_batch``,
        ``global_batch``, ``recompute``, ``zero``, ``dtype``, any option of the stack, ...),
        each a value or a list of values; keys not given take the stack's or the schema's
        default, as in a plan file (``global_batch``: the default batch rule of every
        command, from ``micro_batch * dp``).
      progress: a progress bar while more than 2,000 combinations are checked.

    Returns:
      :class:`PlanBatch` of the valid plans (``batch.given[i]`` the combination,
      ``batch[i]`` its resolved plan), with ``batch.rejected`` = ``[(combination, reason)]``.

    Raises:
      :class:`~cpo_opt.inputs.ArgumentError`: an unknown key, a value of the wrong type or
      out of range, more than :data:`MAX_COMBINATIONS` combinations.
    """
    x = api._resolve(model, system, None, overrides, scenario, constants, stack)
    if x.global_batch is not None and "global_batch" not in choices:
        choices = {**choices, "global_batch": x.global_batch}
    tables = _batch.grid_tables(choices)
    with api.precision_scope("float64"):
        return _batch.plan_batch(tables, x.model, x.system, x.stack, progress=progress)


def sample(model=None, system=None, n: int = 1000, seed: int = 0, *,
           global_batch: int | None = None, dtype: str | None = None, stack=None,
           overrides: Mapping[str, Any] | None = None, constants=None,
           scenario=None) -> PlanBatch:
    """Up to ``n`` distinct valid plans drawn at random (``seed``) from the plan space that
    ``optimize`` searches (powers of two for tp/cp/ep/etp/micro_batch, every pp dividing the
    cluster, vpp 1-8, recompute, ZeRO 0-3, the stack's searchable options), at one
    ``global_batch`` (default: the batch rule of every command) and ``dtype`` (default
    ``"bf16"``). Fewer than ``n`` when the space holds fewer.

    Returns:
      :class:`PlanBatch` (``rejected`` is empty: every draw is a valid plan)."""
    x = api._resolve(model, system, None, overrides, scenario, constants, stack)
    gb = global_batch if global_batch is not None else x.global_batch
    tables = _batch.sample_tables(x.model, x.system, n, seed, gb, dtype or "bf16", x.stack)
    with api.precision_scope("float64"):
        return _batch.plan_batch(tables, x.model, x.system, x.stack, where="plans.sample")
