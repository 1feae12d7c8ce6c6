"""What a search ranges over: the model, the system, the batch, and the free hardware fields.

A :class:`SearchSpace` fixes everything a plan search does not choose: the model, the system
(with the free fields' starting values), the global batch, the dtype and attention kernel,
and the bounds of each free hardware field (file units). Free fields are written into the
:class:`~cpo_opt.model.config.System` pytree by :func:`cpo_opt.inputs.schema.with_fields`, so the same exact and relaxed
model runs with hardware as data.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from cpo_opt.inputs import schema
from cpo_opt.model.config import System, replace
from cpo_opt.inputs.loaders import ArgumentError, InputError, ModelSpec, SystemSpec
from cpo_opt.inputs.tables import show

DEFAULT_SPAN = 16.0
"""Default bounds of a free field: its given value divided and multiplied by this factor,
further limited by the field's physical caps (see :func:`default_bounds`)."""

INTEGER_FIELDS = ("scale_up.domain_size", "scale_up.switch_radix", "scale_up.max_domain_size",
                  "scale_out.switch_radix", "scale_out.max_domain_size", "cluster.gpus")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Everything a plan/hardware search holds fixed, plus the free fields and their bounds."""

    model: ModelSpec
    system: SystemSpec
    global_batch: int
    dtype: str = "bf16"
    flash: int = 1
    free: tuple[str, ...] = ()
    bounds: tuple[tuple[float, float], ...] = ()
    power_budget_w: float | None = None

    @property
    def fp8(self) -> int:
        return int(self.dtype == "fp8")

    @property
    def attention(self) -> str:
        return "flash" if self.flash else "unfused"


@dataclasses.dataclass
class SearchResult:
    """The best plan found, with honest accounting of the search."""

    plan_values: dict[str, Any]
    hardware: dict[str, float]
    step_time_s: float
    evaluations: int
    search_wall_s: float
    method: str
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


def field_value(system: SystemSpec, key: str) -> float:
    """A system field's value in file units (``"scale_up.bandwidth_GB_s"``)."""
    section, name = key.split(".", 1)
    return float(system.values[section][name])


def default_bounds(system: SystemSpec, key: str) -> tuple[float, float]:
    """Search bounds of a free field: ``[v / 16, v * 16]``, with the domain size capped by
    the cluster and integer fields at least 1."""
    v = field_value(system, key)
    lo, hi = v / DEFAULT_SPAN, v * DEFAULT_SPAN
    if key == "scale_up.domain_size":
        hi = min(hi, float(system.values["cluster"]["gpus"]))
    if key in INTEGER_FIELDS:
        lo = max(lo, 1.0)
    return lo, max(hi, lo)


def make_space(model: ModelSpec, system: SystemSpec, global_batch: int | None = None,
               dtype: str = "bf16", free: tuple[str, ...] = (),
               bounds: dict[str, tuple[float, float]] | None = None,
               power_budget_w: float | None = None) -> SearchSpace:
    """Check the free fields and build a :class:`SearchSpace` (InputError on bad keys)."""
    known = schema.system_fields()
    for i, key in enumerate(free):
        if key not in known:
            raise ArgumentError("free", f"{key}: not a continuous system field (known: "
                             f"{', '.join(sorted(known))})")
        if key == "cluster.gpus":
            raise ArgumentError("free", "cluster.gpus: the cluster size is fixed in a search")
        if key in free[:i]:
            raise ArgumentError("free", f"{key}: given twice")
        section, name = key.split(".", 1)
        if name not in system.values.get(section, {}):
            raise ArgumentError("free", f"{key}: not set in {system.origin}, so there is no "
                                "value to search around; give it in the system file or with "
                                f"--set {key}=VALUE")
    if dtype == "fp8" and "matmul_tflops_fp8" not in system.values["gpu"]:
        raise InputError(f"{system.origin}: gpu.matmul_tflops_fp8: needed by dtype fp8")
    gpus = int(system.values["cluster"]["gpus"])
    seq = int(model.values["model"]["seq_len"])
    if global_batch is None:
        global_batch = schema.default_global_batch(gpus, seq)
    low, high = schema.RANGES["plan.global_batch"]
    if not low <= global_batch <= high:
        raise ArgumentError("global_batch", f"must be an int between {low:g} and {high:g} "
                            f"sequences (got {show(global_batch)})")
    gpu = system.values["gpu"]
    flash = schema.resolve_attention(-1, gpu["matmul_tflops_bf16"], "matmul_tflops_fp8" in gpu)
    b = []
    for key in free:
        given = key in (bounds or {})
        lo, hi = bounds[key] if given else default_bounds(system, key)
        if not (0 < lo <= hi and math.isfinite(hi)):
            if given:
                raise ArgumentError("bounds", f"{key}: need 0 < low <= high, finite (got "
                                    f"{lo}, {hi})")
            raise ArgumentError("free", f"{key}: its value in {system.origin} is "
                                f"{field_value(system, key):g}, so the search range [value / "
                                f"{DEFAULT_SPAN:g}, value x {DEFAULT_SPAN:g}] is empty; give "
                                f"a value > 0 with --set {key}=VALUE")
        b.append((float(lo), float(hi)))
    if power_budget_w is not None and not (power_budget_w > 0 and math.isfinite(power_budget_w)):
        raise ArgumentError("power_budget_kW", f"must be a positive finite number of kW "
                            f"(got {power_budget_w / 1e3})")
    return SearchSpace(model, system, int(global_batch), dtype, flash, tuple(free), tuple(b),
                       power_budget_w)


def log_bounds(space: SearchSpace) -> np.ndarray:
    """``(k, 2)`` natural-log bounds of the free fields."""
    return np.log(np.asarray(space.bounds, dtype=float).reshape(-1, 2))
