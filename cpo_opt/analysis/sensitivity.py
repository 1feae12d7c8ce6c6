"""Sensitivity of step time (and time to train) to every continuous system field.

``sensitivity(model, system, plan, tokens)`` differentiates the exact model that ``evaluate``
runs (:func:`cpo_opt.model.step.step_time` at temperature 0) in reverse mode (``jax.vjp``, as
``jax.grad`` does): one reverse pass per output (step time; time to train) yields the
derivatives with respect to all fields at once. The independent variables are the fields of
:func:`cpo_opt.inputs.schema.system_fields` in FILE units (GB/s, TFLOP/s, us, pJ/bit, GPUs): a vector
``x`` of those values is mapped to the SI :class:`~cpo_opt.model.config.System` by the schema's
scales, exactly as the loader does, so ``gradients`` read "seconds of step per GB/s" and so on.

What a gradient means:

* It is a partial derivative: every other field keeps the value it has in the loaded system.
  The loader fills derived defaults once, at load time (``switch_radix`` defaults to
  ``domain_size``, ``switch_bandwidth_TB_s`` to ``switch_radix x bandwidth``,
  ``escape_bandwidth_GB_s`` to ``bandwidth_GB_s``, ``vector_tflops`` to a fifteenth of the bf16
  peak); here they are fixed numbers and do not follow the field they were derived from.
* Fields the step-time model does not read (``switch_radix``, ``switch_bandwidth_TB_s``,
  ``escape_bandwidth_GB_s``, ``max_domain_size``, ``energy_pJ_per_bit``, ``power_W``,
  ``hbm_GB``, and ``matmul_tflops_fp8`` under a bf16 plan) have gradient 0, which is correct:
  they bound or price the hardware in the co-design cost model and in energy reports, but do
  not change how long a step takes. (``hbm_GB`` decides whether a plan fits, a 0/1 verdict,
  not the time.)
* Integer fields (``domain_size``, ``switch_radix``, ``max_domain_size``, ``cluster.gpus``)
  are treated as continuous. ``cluster.gpus`` moves with the plan's ``tp``, ``cp``, ``pp`` and
  global batch held fixed, so the data-parallel degree ``dp = gpus / (tp cp pp)`` grows
  continuously and each pipeline gets fewer micro-batches.
* The exact model has kinks (``max``, ``min``, ``ceil``, where a group just fills a scale-up
  domain, where a communication just hides behind compute). At a kink JAX returns one of the
  one-sided derivatives (or their mean for ``min``/``max`` ties); e.g. ``domain_size = 8``
  with ``tp = 8`` sits exactly on one.
* ``matmul_tflops_fp8`` absent from the system (A100) is reported with value 0 and listed in
  ``unset``; its gradient is 0 unless the plan runs fp8 (which the loader then rejects).

Time to train is ``tokens / tokens_per_s / 86400`` days with ``tokens_per_s = global_batch x
seq_len / step``; its derivatives come from differentiating that function too (not from the
chain rule by hand). With the global batch fixed, tokens per step do not depend on any system
field, so its elasticities equal those of step time, ``cluster.gpus`` included.

Precision: the CLI runs in float64 (``jax_enable_x64``); called without x64 the same code runs
in float32 and ``dtype`` in the result says so.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cpo_opt.inputs import schema
from cpo_opt.analysis.evaluate import SECONDS_PER_DAY, structure_of_plan
from cpo_opt.inputs.loaders import ArgumentError, ModelSpec, PlanSpec, SystemSpec
from cpo_opt.model.step import step_time
from cpo_opt.search.brief_jit import brief_jit

METHOD = "autodiff (jax.grad of the exact model)"

FIELDS: dict[str, tuple[str, str, float]] = schema.system_fields()
"""``"section.key" -> (System attribute, leaf attribute, scale to SI)``, in schema order."""

NAMES: tuple[str, ...] = tuple(FIELDS)

_UNIT_OF_KEY = {
    "matmul_tflops_bf16": "TFLOP/s", "matmul_tflops_fp8": "TFLOP/s", "vector_tflops": "TFLOP/s",
    "hbm_GB": "GB", "hbm_bandwidth_TB_s": "TB/s", "power_W": "W",
    "domain_size": "GPU", "bandwidth_GB_s": "GB/s", "latency_us": "us",
    "energy_pJ_per_bit": "pJ/bit", "switch_radix": "port", "switch_bandwidth_TB_s": "TB/s",
    "escape_bandwidth_GB_s": "GB/s", "max_domain_size": "GPU", "gpus": "GPU",
}


def unit_of(name: str) -> str:
    """The file unit of the field ``"section.key"`` (``"GB/s"``, ``"us"``, ``"GPU"``...)."""
    return _UNIT_OF_KEY.get(name.partition(".")[2], "1")


def field_values(system: SystemSpec) -> dict[str, float]:
    """The fields of ``system`` in file units; an absent optional field reads 0.0."""
    out = {}
    for name, (section, attr, scale) in FIELDS.items():
        table, _, key = name.partition(".")
        given = system.values.get(table, {}).get(key)
        if given is not None:
            out[name] = float(given)
        else:  # absent optional key (matmul_tflops_fp8): the SI leaf the loader set (0.0)
            leaf = getattr(system.system, attr) if not section else getattr(
                getattr(system.system, section), attr)
            out[name] = float(np.asarray(leaf)) / scale
    return out


@brief_jit(static_argnames="structure")
def _value_and_grads(x, model, system, plan, tokens, structure=None):
    """``(step, days, d step/dx, d days/dx)``: one forward pass, two scalar reverse passes.

    Jitted once per dtype and :class:`~cpo_opt.model.structure.Structure` (the blocks the
    model and plan have: a dense model's backward carries no MoE/MLA blocks), so every
    model/system/plan of a structure reuses the compilation. (``jax.jacrev`` of the stacked
    ``[step, days]`` vmaps the backward pass and compiles an order of magnitude slower on
    CPU; two ``jax.value_and_grad`` compile twice.)
    """
    def outputs(x):
        r = step_time(model, schema.with_fields(system, NAMES, x), plan, 0.0, stacked=True,
                      structure=structure)
        return r.step_time_s, tokens / r.tokens_per_s / SECONDS_PER_DAY

    (step, days), pullback = jax.vjp(outputs, x)
    one, zero = jnp.ones_like(step), jnp.zeros_like(step)
    return step, days, pullback((one, zero))[0], pullback((zero, one))[0]


class NonFiniteGradient(FloatingPointError):
    """The model gave a non-finite or zero value, or a non-finite gradient, at inputs that
    passed the schema's range checks: an internal error (exit 1), never printed as NaN."""


def _check_finite(what: str, value: float, grad: np.ndarray) -> None:
    """Finite gradients guard: elasticities divide by ``value`` and NaN must not reach JSON."""
    if not (math.isfinite(value) and value > 0):
        raise NonFiniteGradient(f"{what} is {value} (expected finite and > 0)")
    bad = [NAMES[i] for i in np.flatnonzero(~np.isfinite(grad))]
    if bad:
        raise NonFiniteGradient(f"gradient of {what} not finite w.r.t. {', '.join(bad)}")


def _float_dtype():
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def sensitivity(model: ModelSpec, system: SystemSpec, plan: PlanSpec,
                tokens: float | None = None) -> dict[str, Any]:
    """Gradients and elasticities of step time w.r.t. every continuous system field.

    Args:
      model, system, plan: loaded specs (``cpo_opt.inputs.loaders``).
      tokens: training tokens; adds ``time_to_train`` (days and its sensitivities).

    Returns:
      ``{"step_time_s", "values", "gradients", "elasticities", "units", "ranking", "plan",
      "method", "dtype", "unset"}`` plus ``"time_to_train"`` when ``tokens`` is given; keys of
      the per-field dicts are those of :func:`cpo_opt.inputs.schema.system_fields` (file units).
    """
    if tokens is not None:
        low, high = schema.RANGES["scenario.tokens"]
        if not low <= float(tokens) <= high:
            raise ArgumentError("tokens", f"must be between {low:g} and {high:g} (got {tokens})")
    values = field_values(system)
    dtype = _float_dtype()
    x = jnp.asarray([values[n] for n in NAMES], dtype=dtype)
    tok = jnp.asarray(1.0 if tokens is None else float(tokens), dtype=dtype)
    step, days, grad, grad_days = _value_and_grads(x, model.model, system.system, plan.plan, tok,
                                                   structure=structure_of_plan(model, plan))
    step, grad = float(step), np.asarray(grad, dtype=float)
    _check_finite("step time", step, grad)
    if tokens is not None:
        _check_finite("time to train", float(days), np.asarray(grad_days, dtype=float))

    gradients = {n: float(grad[i]) for i, n in enumerate(NAMES)}
    elasticities = {n: gradients[n] * values[n] / step for n in NAMES}
    result: dict[str, Any] = {
        "step_time_s": step,
        "values": values,
        "gradients": gradients,
        "elasticities": elasticities,
        "units": {n: f"s per {unit_of(n)}" for n in NAMES},
        "ranking": sorted(NAMES, key=lambda n: -abs(elasticities[n])),
        "unset": [n for n in NAMES
                  if system.values.get(n.partition(".")[0], {}).get(n.partition(".")[2])
                  is None],
        "plan": dict(plan.values),
        "method": METHOD,
        "dtype": np.dtype(dtype).name,
    }
    if tokens is not None:
        days, grad_days = float(days), np.asarray(grad_days, dtype=float)
        g_days = {n: float(grad_days[i]) for i, n in enumerate(NAMES)}
        result["time_to_train"] = {
            "tokens": float(tokens),
            "days": days,
            "gradients_days": g_days,
            "units": {n: f"days per {unit_of(n)}" for n in NAMES},
            "elasticities": {n: g_days[n] * values[n] / days for n in NAMES},
        }
    return result
