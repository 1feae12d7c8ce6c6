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
from cpo_opt.inputs.schema import PLACEMENT_POLICY_KEY
from cpo_opt.inputs.stacks import FIT, StackSpec, load_stack
from cpo_opt.inputs.loaders import ArgumentError, InputError, ModelSpec, SystemSpec
from cpo_opt.inputs.tables import show, to_si
from cpo_opt.search import lattice

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
    stack: StackSpec | None = None

    @property
    def fp8(self) -> int:
        return int(self.dtype == "fp8")

    @property
    def options(self) -> dict[str, tuple[int, ...]]:
        """Option columns the search enumerates, with their codes (:func:`search_options`)."""
        return search_options(self.stack, self.fp8)[0]

    @property
    def fixed(self) -> tuple[tuple[str, float], ...]:
        """``(plan field, code)`` of every software option the rows do not carry (hashable:
        a static argument of the compiled scorers)."""
        return search_options(self.stack, self.fp8)[1]

    @property
    def chosen(self) -> tuple[str, ...]:
        """The options the search chooses (``[search] choose`` of the stack, placement when
        its policy is ``auto``): reported as chosen by the search."""
        return search_options(self.stack, self.fp8)[2]

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


DOMINANT = {"overlap_ep": 1, "cuda_graphs": 1}
"""Options a search that may choose them takes at this value without enumerating the other,
because the other is never (CUDA graphs: less host time, nothing else) or hardly ever
faster in the model and holds no less memory; :data:`DOMINANCE_TOLERANCE` says how much
faster it can be. EP all-to-all overlap is not exactly dominant: the paired micro-batches'
kernels hold SMs for the all-to-all and their host issue and dropless syncs run in one chain
(docs/simulator.md D5, D12), so on plans with little all-to-all to hide it is slower: 42 of
300 random DeepSeek-V3 plans on 1152 GB200 by up to 0.5% with the shipped constants (128 by
up to 0.8% at three times the host launch time). Enumerating it both ways doubles the
study's plan spaces past :data:`cpo_opt.search.lattice.MAX_PLAN_ROWS`; the search keeps it on
and its result may be up to :data:`DOMINANCE_TOLERANCE` slower than the exact optimum.
``tests/test_stacks.py`` checks both claims on random plans."""

DOMINANCE_TOLERANCE = {"overlap_ep": 0.01, "cuda_graphs": 0.0}
"""Largest relative step-time loss of taking a :data:`DOMINANT` value instead of the other
(0: exact)."""


def _codes(stack: StackSpec, key: str) -> float:
    """The numeric code of a stack option's value (the plan key's own encoding)."""
    k = PLACEMENT_POLICY_KEY if key == "placement" else schema.key_named("plan", key)
    return to_si((k,), {key: stack.options[key]})[k.attr]


def search_options(stack: StackSpec | None, fp8: int = 0):
    """``(enumerated, fixed, chosen)`` for a stack: the option columns a search enumerates
    (``{column: codes}``), the ``(plan field, code)`` pairs it holds fixed, and the options
    it chooses. Placement is enumerated when the stack's policy is ``auto`` or a search may
    choose it; :data:`DOMINANT` options a search may choose are fixed at their dominant
    code; every other option takes the stack's value (``fixed``; an option the stack does
    not set keeps the plan default)."""
    if stack is None:
        return {}, (), ()
    enum: dict[str, tuple[int, ...]] = {}
    fixed: dict[str, float] = {}
    chosen = list(stack.choose)
    policy = stack.options.get("placement", "contiguous")
    if policy == "auto" or "placement" in stack.choose:
        enum["placement"] = (0, 1)
        if "placement" not in chosen:
            chosen.append("placement")
    elif "placement" in stack.options:
        fixed["placement"] = _codes(stack, "placement")
    for key in lattice.OPTION_COLUMNS:
        if key == "placement":
            continue
        attr = lattice.OPTION_ATTRS.get(key, key)
        if key in stack.choose and key in DOMINANT:
            fixed[attr] = float(DOMINANT[key])
        elif key in stack.choose:
            enum[key] = (0, 1) if key != "low_precision_storage" or fp8 else (0,)
        elif key in stack.options:
            fixed[attr] = _codes(stack, key)
    for key in ("overlap_tp", "overlap_dp", "overlap_p2p", "recompute_norm_act",
                "recompute_mla_up", "bf16_moments", "offload_optimizer", "offload_expert_act",
                "bf16_main_grads", "fp8_param_gather", "ddp_bucket", "fp8_dispatch",
                "fp8_output_layer", "fp8_recipe"):
        if key in stack.options:  # a "fit" module is held off (stacks.FIT_OPTIONS)
            fixed[key] = 0.0 if stack.options[key] == FIT else _codes(stack, key)
    return enum, tuple(sorted(fixed.items())), tuple(chosen)


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
               power_budget_w: float | None = None, stack=None) -> SearchSpace:
    """Check the free fields and build a :class:`SearchSpace` (InputError on bad keys);
    ``stack``: the software stack (name, file or spec; ``None``: the default stack)."""
    stack = load_stack(stack)
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
                       power_budget_w, stack)


def log_bounds(space: SearchSpace) -> np.ndarray:
    """``(k, 2)`` natural-log bounds of the free fields."""
    return np.log(np.asarray(space.bounds, dtype=float).reshape(-1, 2))
