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

* **switch stages**: a domain larger than one switch's radix needs a second tier (a folded
  Clos: leaf and spine), so a bit crosses three switches and four links instead of one and
  two; the scale-up energy per bit then counts ``1 + 2 t`` stages, ``t`` going from 0 at
  ``domain_size = switch_radix`` to 1 one percent above it (a ramp with finite gradients),
  and the domain needs three times the switch ports (:func:`switch_chips_per_domain`). The
  single-tier limit above stays a constraint of the search (the step-time model has no
  second-tier latency), so inside the search ``t = 0``; the report shows what a second tier
  would cost.
* **optics by technology**: :data:`OPTICS_PJ_PER_BIT` gives the energy per bit of one optical
  link, host SerDes included, for the technologies the study compares.
* **ports: what a domain's size costs below the radix** (:func:`ports_per_gpu`). A single
  switch tier gives every GPU one port on each switch plane; a plane is one switch chip of
  capacity ``C`` per direction (``switch_bandwidth``), so a plane of ``D`` GPUs has ports at
  most ``C / D`` wide, and never wider than ``w_max`` (``port_bandwidth``: one NVLink link,
  one DWDM fibre). A GPU of bandwidth ``B`` therefore needs::

      ports(D) = B / min(w_max, C / min(D, R))        (single tier; R = switch_radix)

  ports: flat up to the knee ``D = C / w_max``, then growing linearly with ``D`` (narrower
  ports: fewer wavelengths per fibre, more fibres, connectors and laser combs per GPU), until
  the radix, where the port is one lane. Past the radix a leaf-spine tier keeps ports
  ``w_max`` wide but every GPU port needs three switch ports (:func:`switch_stages`). Each
  switch port (with its link: optical engine share, fibre or cable, retimers) carries a fixed
  power ``port_power_w`` on top of the per-bit energy and a cost ``port_cost``; each switch
  chip a cost ``switch_cost``. The provisioned power is then::

      P = gpus x [2 x 8 x (B_up e_up s + B_out e_out) + ports(D) x s x p_port]

  and the capital cost of the scale-up fabric (:func:`scale_up_cost`)
  ``gpus x [ports(D) x s x c_port + B s / C x c_switch]``. With ``p_port = c_port = 0`` (the
  default, and any component without a public figure) the domain size is free below the
  radix, as before; the presets state their values and sources. At a fixed budget the best
  bandwidth is linear in the budget (:func:`budget_bandwidth`), so the co-design can trade
  the domain size against the bandwidth the budget leaves (:mod:`cpo_opt.study.codesign`).

Violations are returned as relative excesses ``value / limit - 1`` (<= 0 is feasible), so the
exact search can mask and the relaxed search can penalize the same numbers.
"""

from __future__ import annotations

import math

import jax.numpy as jnp

from cpo_opt.model.config import System

BITS = 8.0


OPTICS_PJ_PER_BIT = {"passage_3d": 4.3, "cpo_2.5d": 12.0, "linear_pluggable": 13.0,
                     "pluggable": 21.0}
"""pJ/bit of one optical link including host SerDes, by technology: the study paper's Tables
II-III as cited in /work/shared/reference/study.md (Passage 3D: 3.2 in package + 1.1 off)."""

SECOND_TIER_RAMP = 0.01
"""Relative width of the ramp from one to three switch stages above the radix."""


def second_tier(system: System):
    """0 while the domain fits one switch tier (``domain_size <= switch_radix``), rising
    linearly to 1 at ``1.01 x switch_radix`` (finite gradients everywhere)."""
    up = system.scale_up
    return jnp.clip((up.domain_size / up.switch_radix - 1.0) / SECOND_TIER_RAMP, 0.0, 1.0)


def switch_stages(system: System):
    """Switch chips a scale-up bit crosses: 1 (one tier) to 3 (leaf, spine, leaf)."""
    return 1.0 + 2.0 * second_tier(system)


def port_width(system: System):
    """Bytes/s per direction of one GPU port on one switch plane (module docstring): the
    widest port (``port_bandwidth``; unset, 0: the GPU's whole bandwidth), narrowed to
    ``C / D`` so that one chip of capacity ``C`` holds a port of each of the ``D`` GPUs of a
    single tier (``D`` capped at the radix: past it the tiers carry the rest)."""
    up = system.scale_up
    widest = jnp.where(up.port_bandwidth > 0, up.port_bandwidth, up.bandwidth)
    d = jnp.minimum(up.domain_size, up.switch_radix)
    single = jnp.minimum(widest, up.switch_bandwidth / d)
    t = second_tier(system)
    return (1.0 - t) * single + t * widest


def ports_per_gpu(system: System):
    """GPU ports (links to switch planes) per GPU: ``B / port_width`` (module docstring)."""
    return system.scale_up.bandwidth / port_width(system)


def switch_ports_per_gpu(system: System):
    """Switch ports per GPU: one per GPU port on one tier, three (leaf down, leaf up, spine)
    past the radix."""
    return ports_per_gpu(system) * switch_stages(system)


def port_power_w(system: System):
    """Fixed power of the scale-up ports of the cluster, watts: ``gpus x ports x s x
    p_port``."""
    return system.gpus * switch_ports_per_gpu(system) * system.scale_up.port_power_w


def bit_power_w(system: System):
    """Per-bit power of the cluster, watts: ``gpus x 2 x 8 x (B_up e_up s + B_out e_out)``."""
    per_gpu = 2.0 * BITS * (system.scale_up.bandwidth * system.scale_up.energy_j_per_bit
                            * switch_stages(system)
                            + system.scale_out.bandwidth * system.scale_out.energy_j_per_bit)
    return system.gpus * per_gpu


def interconnect_power_w(system: System):
    """Provisioned interconnect power of the whole cluster, watts (both directions).

    ``P = gpus * [2 * 8 * (B_up e_up s + B_out e_out) + ports * s * p_port]`` with ``s`` the
    switch stages of the scale-up domain (:func:`switch_stages`: each extra stage is one more
    link and switch at the tier's energy per bit) and ``ports`` the GPU's scale-up ports
    (:func:`ports_per_gpu`, each with a fixed ``port_power_w``)."""
    return bit_power_w(system) + port_power_w(system)


def scale_up_cost(system: System):
    """Capital cost of the cluster's scale-up fabric (the preset's currency, USD): switch
    ports with their links at ``port_cost`` and switch chips at ``switch_cost``
    (module docstring); 0 where the preset prices neither."""
    up = system.scale_up
    chips = system.gpus * up.bandwidth * switch_stages(system) / up.switch_bandwidth
    return system.gpus * switch_ports_per_gpu(system) * up.port_cost + chips * up.switch_cost


def budget_bandwidth(system: System, power_budget_w=None, cost_budget=None):
    """The largest scale-up bandwidth (bytes/s per GPU per direction) a power budget (W) and
    a cost budget leave at this system's domain size, with everything else as it is.

    Both are linear in ``B_up`` at a fixed domain (``ports`` is ``B_up`` over the port width,
    which does not depend on ``B_up``), so ``B = (budget - fixed part) / slope``; returns
    ``{"power": B_p, "cost": B_c}`` (``inf`` for no budget; a negative value: not even the
    fixed part fits)."""
    up = system.scale_up
    s = switch_stages(system)
    w = port_width(system)
    out = {}
    if power_budget_w is not None:
        slope = system.gpus * (2.0 * BITS * up.energy_j_per_bit * s + s * up.port_power_w / w)
        fixed = system.gpus * 2.0 * BITS * system.scale_out.bandwidth \
            * system.scale_out.energy_j_per_bit
        out["power"] = (power_budget_w - fixed) / slope
    else:
        out["power"] = jnp.inf
    if cost_budget is not None:
        slope = system.gpus * s * (up.port_cost / w + up.switch_cost / up.switch_bandwidth)
        out["cost"] = jnp.where(slope > 0, cost_budget / jnp.maximum(slope, 1e-300), jnp.inf)
    else:
        out["cost"] = jnp.inf
    return out


def switches_per_domain(system: System):
    """Scale-up switch chips needed to carry one domain's traffic (fractional, one tier)."""
    return (system.scale_up.domain_size * system.scale_up.bandwidth
            / system.scale_up.switch_bandwidth)


def switch_chips_per_domain(system: System):
    """Switch chips of one domain with its tiers: ``D B / C`` for one tier, three times that
    for a leaf-spine domain (every GPU port needs a leaf down port, a leaf up port and a
    spine port), ``C`` one chip's capacity per direction."""
    return switches_per_domain(system) * switch_stages(system)


def report(system: System, power_budget_w=None, reference: System | None = None) -> dict:
    """Host numbers of a fabric for the reports: power used against the budget and against a
    reference system (the one given, before free values), switch stages and chips, and how
    close each physical limit is (``value / limit``)."""
    p = float(interconnect_power_w(system))
    up = system.scale_up
    d = float(up.domain_size)
    out = {
        "interconnect_power_kW": p / 1e3,
        "port_power_kW": float(port_power_w(system)) / 1e3,
        "ports_per_gpu": float(ports_per_gpu(system)),
        "port_width_GB_s": float(port_width(system)) / 1e9,
        "switch_ports_per_gpu": float(switch_ports_per_gpu(system)),
        "switch_tiers": 1 if d <= float(up.switch_radix) else 2,
        "switch_chips_per_domain_whole": math.ceil(
            d * float(up.bandwidth) * float(switch_stages(system))
            / float(up.switch_bandwidth) - 1e-9),
        "scale_up_cost_USD": float(scale_up_cost(system)),
        "power_budget_kW": None if power_budget_w is None else float(power_budget_w) / 1e3,
        "power_share_of_budget": None if power_budget_w is None else p / float(power_budget_w),
        "switch_stages": float(switch_stages(system)),
        "switch_chips_per_domain": float(switch_chips_per_domain(system)),
        "domains": float(system.gpus / up.domain_size),
        "limits_used": {"reach": float(up.domain_size / up.max_domain_size),
                        "radix": float(up.domain_size / up.switch_radix),
                        "scale_up_escape": float(up.bandwidth / up.escape_bandwidth),
                        "scale_out_escape": float(system.scale_out.bandwidth
                                                  / system.scale_out.escape_bandwidth)},
    }
    if reference is not None:
        out["reference_power_kW"] = float(interconnect_power_w(reference)) / 1e3
    return out


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
