"""The cost side of fabric co-design: interconnect power and the physical limits of a fabric.

Without a cost, every bandwidth in a co-design search runs to infinity. The limits are the
ones that cap real scale-up fabrics (the study's argument, study.md):

* **power**: provisioned interconnect power of the cluster,
  ``P = gpus * 2 * 8 * (B_up e_up + B_out e_out)`` watts, with ``B`` bytes/s per GPU per
  direction and ``e`` joules per bit moved end to end (SerDes/optics + switch). Links burn
  their power whether busy or not, so provisioned bandwidth, not traffic, sets it.
* **escape bandwidth**: ``B <= escape_bandwidth`` per tier: copper SerDes leave from the
  package edge (shoreline, ~1-2 Tb/s per mm), 3D co-packaged optics from its area
  (~1 Tb/s per mm^2), which is what lifts the per-GPU bandwidth of Passage.
* **reach**: ``domain_size <= max_domain_size``: passive copper reaches ~1 m, one rack.
* **single switch tier**: every GPU of a domain needs a port on every switch plane, so
  ``domain_size <= switch_radix``.
* **switch count**: ``domain_size * B_up / switch_bandwidth`` switch chips per domain carry the
  traffic (reported, not constrained: more planes cost power, already in ``e_up``).

Violations are returned as relative excesses ``value / limit - 1`` (<= 0 is feasible), so the
exact search can mask and the relaxed search can penalize the same numbers.
"""

from __future__ import annotations

import jax.numpy as jnp

from cpo_opt.model.config import System

BITS = 8.0


def interconnect_power_w(system: System):
    """Provisioned interconnect power of the whole cluster, watts (both directions)."""
    per_gpu = 2.0 * BITS * (system.scale_up.bandwidth * system.scale_up.energy_j_per_bit
                            + system.scale_out.bandwidth * system.scale_out.energy_j_per_bit)
    return system.gpus * per_gpu


def switches_per_domain(system: System):
    """Scale-up switch chips needed to carry one domain's traffic (fractional)."""
    return (system.scale_up.domain_size * system.scale_up.bandwidth
            / system.scale_up.switch_bandwidth)


def violations(system: System, power_budget_w=None) -> dict[str, object]:
    """Relative excess over each physical limit (<= 0 feasible)."""
    up, out = system.scale_up, system.scale_out
    v = {
        "scale_up_escape": up.bandwidth / up.escape_bandwidth - 1.0,
        "scale_out_escape": out.bandwidth / out.escape_bandwidth - 1.0,
        "reach": up.domain_size / up.max_domain_size - 1.0,
        "radix": up.domain_size / up.switch_radix - 1.0,
    }
    if power_budget_w is not None:
        v["power"] = interconnect_power_w(system) / power_budget_w - 1.0
    return v


def feasible(system: System, power_budget_w=None, tol: float = 1e-9):
    """1.0 when no limit is exceeded (by more than ``tol`` relative), else 0.0."""
    worst = jnp.max(jnp.stack([jnp.asarray(x) for x in
                               violations(system, power_budget_w).values()]), axis=0)
    return jnp.where(worst <= tol, 1.0, 0.0)
