"""The file schema: every key of the input files, its type, unit, default and rule.

This table is the single place where file units (GB/s, TFLOP/s, us, pJ/bit) meet the SI units
used inside the model. :mod:`cpo_opt.inputs.loaders` reads files against it; the README's format
section and ``sensitivity``'s field names derive from it.

A key's ``scale`` multiplies the file value into SI: ``bandwidth_GB_s = 450`` becomes
``Fabric.bandwidth = 450e9`` bytes/s.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from cpo_opt.model.config import (DISPATCHER_CODES, DTYPE_CODES, FP8_RECIPE_CODES, LAYOUT_CODES,
                                  PLACEMENT_CODES, RECOMPUTE_CODES, SCHEDULE_CODES)

GB = 1e9
TB = 1e12
TFLOP = 1e12
US = 1e-6
PJ = 1e-12


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of an input table.

    Attributes:
      name: the key as written in the file.
      attr: the attribute of the config dataclass it fills.
      kind: "int", "float", "bool", "enum" or "str".
      scale: factor from file unit to SI.
      required: a missing required key is a bad input.
      default: file-unit default, or a callable ``f(values) -> default`` of the other keys of
        the same table (already defaulted in table order); None means no default.
      minimum: smallest allowed value (file units); ``strict`` makes it exclusive.
      choices: allowed values of an "enum" key, mapped to their numeric codes.
      doc: one line for the README and ``--help``.
    """

    name: str
    attr: str
    kind: str
    doc: str
    scale: float = 1.0
    required: bool = False
    default: Any = None
    minimum: float | None = None
    strict: bool = False
    choices: dict[str, int] | None = None

    @property
    def rule(self) -> str:
        """The value rule in words, for error messages."""
        if self.kind == "enum":
            return "must be one of " + ", ".join(repr(c) for c in self.choices)
        article = "an" if self.kind[0] in "aeiou" else "a"
        if self.minimum is None:
            return f"must be {article} {self.kind}"
        op = ">" if self.strict else ">="
        return f"must be {article} {self.kind} {op} {self.minimum:g}"


def _pos_int(name, doc, **kw):
    return Key(name, kw.pop("attr", name), "int", doc, minimum=0, strict=True, **kw)


def _pos_float(name, attr, doc, **kw):
    return Key(name, attr, "float", doc, minimum=0, strict=True, **kw)


def _nonneg(name, attr, doc, kind="float", **kw):
    return Key(name, attr, kind, doc, minimum=0, **kw)


# --------------------------------------------------------------------------- model
MODEL_KEYS: tuple[Key, ...] = (
    Key("name", "name", "str", "free text", default="model"),
    _pos_int("layers", "transformer layers", required=True),
    _pos_int("hidden", "model width", required=True),
    _pos_int("heads", "query heads", required=True),
    _pos_int("kv_heads", "key/value heads (GQA/MQA when fewer than heads)",
             default=lambda v: v["heads"]),
    _pos_int("head_dim", "dimension of one head", default=lambda v: v["hidden"] / v["heads"]),
    _pos_int("ffn_hidden", "FFN inner size of a dense layer", required=True),
    Key("gated_ffn", "gated_ffn", "bool", "SwiGLU-style 3 matrices (false: 2, GPT)", default=True),
    _pos_int("vocab", "vocabulary size", required=True),
    _pos_int("seq_len", "training sequence length, tokens", required=True),
    Key("tied_embeddings", "tied_embeddings", "bool", "input and output embeddings shared",
        default=False),
    Key("dtype", "dtype", "enum", "training precision of the model's published run: the "
        "dtype of the plans optimize, compare and sensitivity choose unless told (absent: "
        "bf16); a plan's own dtype still defaults to bf16", choices=DTYPE_CODES),
)

MOE_KEYS: tuple[Key, ...] = (
    _pos_int("experts", "routed experts per MoE layer", required=True),
    _pos_int("top_k", "routed experts per token", required=True),
    _pos_int("expert_ffn_hidden", "FFN inner size of one expert", required=True),
    _nonneg("shared_experts", "shared_experts", "always-active experts per MoE layer",
            kind="int", default=0),
    _nonneg("dense_layers", "dense_layers", "leading layers with a dense FFN", kind="int",
            default=0),
    _nonneg("capacity_factor", "capacity_factor",
            "expert capacity factor; 0 = dropless with balanced routing", default=0.0),
    _nonneg("max_domains_per_token", "max_domains_per_token",
            "node/domain-limited routing: most EP domains a token's experts may span "
            "(DeepSeek-V3: 4); absent or 0 = unlimited", kind="int"),
)

MLA_KEYS: tuple[Key, ...] = (
    _nonneg("q_lora_rank", "q_lora_rank", "query compression rank; 0 = none", kind="int",
            default=0),
    _pos_int("kv_lora_rank", "key/value compression rank", required=True),
    _pos_int("qk_nope_head_dim", "per-head query/key dimension without RoPE", required=True),
    _nonneg("qk_rope_head_dim", "qk_rope_head_dim", "per-head decoupled RoPE dimension",
            kind="int", required=True),
    _pos_int("v_head_dim", "per-head value dimension", required=True),
)

# --------------------------------------------------------------------------- system
GPU_KEYS: tuple[Key, ...] = (
    Key("name", "name", "str", "free text", default="gpu"),
    _pos_float("matmul_tflops_bf16", "matmul_flops_bf16", "dense bf16 tensor-core peak, TFLOP/s",
               scale=TFLOP, required=True),
    _pos_float("matmul_tflops_fp8", "matmul_flops_fp8",
               "dense fp8 tensor-core peak, TFLOP/s (needed by dtype = \"fp8\")", scale=TFLOP),
    _pos_float("vector_tflops", "vector_flops", "non-tensor-core peak, TFLOP/s", scale=TFLOP,
               default=lambda v: v["matmul_tflops_bf16"] / 15.0),
    _pos_float("hbm_GB", "hbm_bytes", "HBM capacity, GB", scale=GB, required=True),
    _pos_float("hbm_bandwidth_TB_s", "hbm_bandwidth", "HBM bandwidth, TB/s", scale=TB,
               required=True),
    _pos_float("power_W", "power_w", "GPU board power, W (energy-to-train reports)",
               default=700.0),
)


def _fabric_keys(tier: str, latency_us: float, energy_pj: float) -> tuple[Key, ...]:
    keys = []
    up = tier == "scale_up"
    if up:
        keys.append(_pos_int("domain_size", "GPUs per scale-up domain", required=True))
    keys += [
        _pos_float("bandwidth_GB_s", "bandwidth", "per GPU, per direction, GB/s", scale=GB,
                   required=True),
        _nonneg("latency_us", "latency_s", "one-hop message latency, us", scale=US,
                default=latency_us),
        _nonneg("energy_pJ_per_bit", "energy_j_per_bit",
                "link + switch energy per bit moved, pJ/bit", scale=PJ, default=energy_pj),
        _pos_int("max_domain_size",
                 "largest domain the medium reaches (copper: one rack); default unlimited",
                 default=UNLIMITED),
        _pos_int("switch_radix",
                 "ports per switch; a single switch tier needs domain_size <= switch_radix "
                 "(default: max_domain_size)" if up else "ports per switch of this tier",
                 default=(lambda v: v["max_domain_size"]) if up else 64),
        _pos_float("switch_bandwidth_TB_s", "switch_bandwidth",
                   "capacity of one switch chip, per direction, TB/s (default: "
                   + ("domain_size" if up else "switch_radix") + " x bandwidth)",
                   scale=TB, default=(lambda v: v["domain_size" if up else "switch_radix"]
                                      * v["bandwidth_GB_s"] / 1e3)),
        _pos_float("escape_bandwidth_GB_s", "escape_bandwidth",
                   "most per-GPU bandwidth the package can bring out for this tier, GB/s "
                   "(shoreline for copper, area for CPO; default = bandwidth)",
                   scale=GB, default=lambda v: v["bandwidth_GB_s"]),
    ]
    if up:  # what the domain's switch ports cost (cpo_opt.model.fabric_cost)
        keys += [
            _pos_float("port_bandwidth_GB_s", "port_bandwidth",
                       "widest port one GPU has on one switch plane, per direction, GB/s (one "
                       "NVLink link, one DWDM fibre); a single tier of D GPUs narrows it to "
                       "switch_bandwidth / D (default = bandwidth)",
                       scale=GB, default=lambda v: v["bandwidth_GB_s"]),
            _nonneg("port_power_W", "port_power_w",
                    "fixed power of one switch port with its link beyond the per-bit energy "
                    "(laser comb, retimer), W (default 0: not priced)", default=0.0),
            _nonneg("port_cost_USD", "port_cost",
                    "cost of one switch port with its link (optics share, fibre or cable), "
                    "USD (default 0: not priced)", default=0.0),
            _nonneg("switch_cost_USD", "switch_cost",
                    "cost of one switch chip with its share of the tray, USD (default 0: "
                    "not priced)", default=0.0),
        ]
    return tuple(keys)


UNLIMITED = 2**24
"""Default of ``max_domain_size``: no physical cap on the domain."""

SCALE_UP_KEYS = _fabric_keys("scale_up", latency_us=1.0, energy_pj=5.0)
SCALE_OUT_KEYS = _fabric_keys("scale_out", latency_us=5.0, energy_pj=16.0)
CLUSTER_KEYS: tuple[Key, ...] = (_pos_int("gpus", "GPUs in the cluster", required=True),)

# --------------------------------------------------------------------------- plan
DEFAULT_BATCH_TOKENS = 2**22
"""Tokens in the default global batch (about 4M, typical of frontier pretraining); see
:func:`default_global_batch`, the one rule every command uses."""


def default_global_batch(gpus: int, seq_len: int, unit: int = 1) -> int:
    """The default global batch, sequences: the one rule of every command.

    The smallest multiple of ``lcm(gpus, unit)`` sequences holding at least
    :data:`DEFAULT_BATCH_TOKENS` tokens. ``optimize`` passes ``unit = 1`` (a multiple of the
    GPU count), ``evaluate``/``sensitivity`` pass the plan's ``micro_batch * dp``, so a plan
    whose ``micro_batch * dp`` divides the GPU count gets the same batch from every command
    and an optimized plan re-evaluated without ``global_batch`` reproduces its step time.
    """
    step = math.lcm(int(gpus), int(unit))
    return step * max(1, -(-DEFAULT_BATCH_TOKENS // (int(seq_len) * step)))

RECOMPUTE = RECOMPUTE_CODES  # one table of codes: cpo_opt.model.config
PLACEMENT_POLICY = {**PLACEMENT_CODES, "auto": -1}
"""``placement`` choices in files: the model's two layouts and ``auto`` (resolved on load by
scoring both: :mod:`cpo_opt.inputs.plan_rules`)."""
ATTENTION = {"unfused": 0, "flash": 1, "auto": -1}
AUTO_FLASH_MIN_BF16_TFLOPS = 400.0
"""``attention = "auto"`` resolves to flash attention on Hopper-class and newer GPUs (an fp8
tensor peak is given, or the bf16 peak exceeds this many TFLOP/s) and to materialized
("unfused") attention on A100-class and older GPUs: the default stack of each generation
(Megatron-LM 2020-22 with fused scale-mask-softmax and attention dropout on A100;
Transformer Engine / cuDNN flash attention in Megatron-Core and NeMo from Hopper on)."""


def resolve_attention(code: int, matmul_tflops_bf16: float, has_fp8: bool) -> int:
    """Resolve the ``attention`` code: ``auto`` (-1) becomes flash (1) or unfused (0)."""
    if code >= 0:
        return code
    return int(has_fp8 or matmul_tflops_bf16 > AUTO_FLASH_MIN_BF16_TFLOPS)
DTYPE = DTYPE_CODES
ZERO = {"0": 0, "1": 1, "2": 2, "3": 3}

PLAN_KEYS: tuple[Key, ...] = (
    _pos_int("tp", "tensor parallel", default=1),
    _pos_int("pp", "pipeline parallel", default=1),
    _pos_int("cp", "context parallel", default=1),
    _pos_int("ep", "expert parallel", default=1),
    _pos_int("etp", "tensor parallel inside an expert", default=1),
    _pos_int("vpp", "virtual pipeline stages per rank (interleaving)", default=1),
    _pos_int("micro_batch", "sequences per micro-batch", default=1),
    _pos_int("global_batch", "sequences per optimizer step (default: >= 4M tokens)"),
    Key("sequence_parallel", "sequence_parallel", "bool",
        "sequence parallelism with TP (default: tp > 1)", default=lambda v: v["tp"] > 1),
    Key("recompute", "recompute", "enum", "activation recomputation", default="selective",
        choices=RECOMPUTE),
    Key("zero", "zero", "enum", "0 none, 1 distributed optimizer, 2 + gradients, 3 FSDP",
        default=1, choices=ZERO),
    Key("dtype", "fp8", "enum", "GEMM precision", default="bf16", choices=DTYPE),
    Key("overlap_tp", "overlap_tp", "bool", "TP communication overlapped with GEMMs",
        default=False),
    Key("overlap_ep", "overlap_ep", "bool", "EP all-to-all overlapped with expert compute",
        default=False),
    Key("overlap_p2p", "overlap_p2p", "bool",
        "PP send/recv overlapped with compute (default: vpp > 1, as Megatron)",
        default=lambda v: v["vpp"] > 1),
    Key("overlap_dp", "overlap_dp", "bool",
        "DP gradient reduce / parameter gather overlapped with backward / forward", default=True),
    Key("attention", "flash_attention", "enum",
        "attention kernel: flash, unfused (materialized softmax + dropout), or auto (by GPU "
        "generation, see schema.resolve_attention)", default="auto", choices=ATTENTION),
    Key("placement", "placement", "enum",
        "rank-to-domain placement: contiguous (every GPU works; groups may straddle domains), "
        "aligned (each domain hosts whole units of max(tp*cp, etp*ep) GPUs, the rest idle) or "
        "auto (the better of the two for the job)", default="contiguous",
        choices=PLACEMENT_POLICY),
    Key("dispatcher", "dispatcher", "enum",
        "EP token dispatcher: alltoall (Megatron, every routed copy sent) or deepep "
        "(hierarchical, one copy per remote domain, DeepEP/HybridEP)", default="alltoall",
        choices=DISPATCHER_CODES),
    Key("cuda_graphs", "cuda_graphs", "bool",
        "small per-layer kernels captured in CUDA graphs (one launch per graph)",
        default=False),
    Key("recompute_norm_act", "recompute_norm_act", "bool",
        "recompute norms and FFN/expert activations in the backward (Megatron-Core "
        "--recompute-modules layernorm moe_act)", default=False),
    Key("recompute_mla_up", "recompute_mla_up", "bool",
        "recompute MLA up-projections in the backward (--recompute-modules mla_up_proj)",
        default=False),
    Key("perfect_balance", "perfect_balance", "bool",
        "expert loads forced equal (force-balanced benchmark routing); false: the most "
        "loaded GPU of a dropless EP group paces it", default=False),
    Key("offload_optimizer", "offload_optimizer", "bool",
        "fp32 master weights and Adam moments in host memory (--optimizer-cpu-offload)",
        default=False),
    Key("offload_expert_act", "offload_expert_act", "bool",
        "routed experts' saved activations (FC1 input, activation input) offloaded to host "
        "memory between forward and backward (fine-grained activation offloading, "
        "--offload-modules expert_fc1 moe_act)", default=False),
    Key("schedule", "schedule", "enum",
        "pipeline schedule: 1f1b (Megatron; interleaved with vpp > 1) or dualpipe (DeepSeek-V3: "
        "two stages per rank, micro-batches from both ends; needs an even pp, vpp = 1 and an "
        "even number of micro-batches >= 2 pp)", default="1f1b", choices=SCHEDULE_CODES),
    Key("low_precision_storage", "low_precision_storage", "bool",
        "DeepSeek-V3 low-precision activation storage (fp8 plans): attention output cached at "
        "12 bits (E5M6), SwiGLU inputs cached in fp8 and the SwiGLU output recomputed",
        default=False),
    Key("bf16_moments", "bf16_moments", "bool",
        "Adam moments in bf16 (DeepSeek-V3; Megatron-Core --use-precision-aware-optimizer "
        "--exp-avg-dtype bf16 --exp-avg-sq-dtype bf16)", default=False),
    Key("bf16_main_grads", "bf16_main_grads", "bool",
        "gradients accumulated, kept and reduced in bf16 instead of fp32 (Megatron-Core "
        "--use-precision-aware-optimizer --main-grads-dtype bf16)", default=False),
    Key("fp8_param_gather", "fp8_param_gather", "bool",
        "fp8 plans: the model's weights kept only in fp8 (no bf16 copy) and all-gathered in "
        "fp8 (Megatron-Core --fp8-param-gather)", default=False),
    Key("fp8_dispatch", "fp8_dispatch", "bool",
        "fp8 plans: the forward EP dispatch sends fp8 tokens (DeepSeek-V3's DeepEP dispatch); "
        "off, the bf16 hidden states (every Megatron-Core dispatcher at core_v0.19.0)",
        default=False),
    Key("fp8_recipe", "fp8_recipe", "enum",
        "fp8 plans: the scaling recipe (Megatron-Core --fp8-recipe): tensorwise (per-tensor "
        "current scaling: amax, scale and cast, three kernels per quantisation), delayed, "
        "blockwise, mxfp8 (one kernel each), or auto (blockwise on Hopper, mxfp8 on Blackwell)",
        default="auto", choices=FP8_RECIPE_CODES),
    Key("fp8_output_layer", "fp8_output_layer", "bool",
        "fp8 plans: the output layer (LM head) runs in fp8 (Megatron-Core --fp8-output-proj, "
        "MXFP8 only); off, in bf16 (Megatron-Core's default: its own ColumnParallelLinear)",
        default=False),
    _nonneg("ddp_bucket", "ddp_bucket",
            "DDP gradient bucket in parameters (Megatron-Core --ddp-bucket-size); 0 = "
            "Megatron-Core's default, max(4e7, 1e6 dp)", default=0.0),
    Key("pipeline_layout", "layout_balanced", "enum",
        "layers over the pipeline's virtual stages: even (Megatron's default split, embedding "
        "and output layer on top of the first and last stage) or balanced (the output layer "
        "and loss counted as layer-equivalents: the last stage holds fewer layers)",
        default="even", choices=LAYOUT_CODES),
    _nonneg("first_stage_layers", "first_stage_layers",
            "layers of the first virtual pipeline stage (Megatron "
            "--decoder-first-pipeline-num-layers); absent: the layout decides", kind="int"),
    _nonneg("last_stage_layers", "last_stage_layers",
            "layers of the last virtual pipeline stage (Megatron "
            "--decoder-last-pipeline-num-layers); absent: the layout decides", kind="int"),
)

PLACEMENT_POLICY_KEY = Key("placement", "placement", "enum", "placement policy of a stack",
                           choices=PLACEMENT_POLICY)

SECTIONS: dict[str, tuple[Key, ...]] = {
    "model": MODEL_KEYS,
    "model.moe": MOE_KEYS,
    "model.mla": MLA_KEYS,
    "gpu": GPU_KEYS,
    "scale_up": SCALE_UP_KEYS,
    "scale_out": SCALE_OUT_KEYS,
    "cluster": CLUSTER_KEYS,
    "plan": PLAN_KEYS,
}


def system_fields() -> dict[str, tuple[str, str, float]]:
    """Every numeric system field as ``"section.key" -> (section attr, attr, scale)``.

    These are the continuous hardware fields of ``sensitivity`` and ``optimize --free``
    (integer-valued ones such as ``domain_size`` are treated as continuous there).
    """
    out = {}
    for section, attr in (("gpu", "gpu"), ("scale_up", "scale_up"), ("scale_out", "scale_out")):
        for key in SECTIONS[section]:
            if key.kind in ("int", "float"):
                out[f"{section}.{key.name}"] = (attr, key.attr, key.scale)
    out["cluster.gpus"] = ("", "gpus", 1.0)
    return out


def with_fields(system, keys, values):
    """``system`` (a :class:`~cpo_opt.model.config.System` pytree) with the fields ``keys``
    (``"section.key"`` of :func:`system_fields`) set to ``values`` in file units.

    The one function that writes hardware values into a system: ``optimize --free`` (exact and
    relaxed scoring) and ``sensitivity`` use it, and the values may be traced. Setting
    ``cluster.gpus`` also sets ``scale_out.domain_size`` (the loader's rule: the scale-out
    tier spans the cluster). For checked values on a loaded spec, see
    :func:`cpo_opt.inputs.loaders.system_with`.
    """
    fields = system_fields()
    changes: dict[str, dict[str, Any]] = {}
    gpus = system.gpus
    for key, v in zip(keys, values):
        section, attr, scale = fields[key]
        if section:
            changes.setdefault(section, {})[attr] = v * scale
        else:
            gpus = v * scale
            changes.setdefault("scale_out", {})["domain_size"] = gpus
    parts = {s: dataclasses.replace(getattr(system, s), **c) for s, c in changes.items()}
    return dataclasses.replace(system, gpus=gpus, **parts)


# --------------------------------------------------------------------------- physical ranges
INT_CEILING = 2**40
"""Largest integer any int key accepts unless :data:`RANGES` says otherwise (about 1.1e12):
far beyond any machine, small enough that products of a few such values stay exact and finite
in float64 and int64."""

FLOAT_RANGE = (1e-12, 1e12)
"""Range (file units) of a float key missing from :data:`RANGES`: a strictly positive key must
lie inside it, a non-negative one below its upper end."""

RANGES: dict[str, tuple[float, float]] = {
    # model: 10-1000x beyond the largest published models (DeepSeek-V3: 61 layers, 7168 wide,
    # 256 experts, 128K vocab; Llama 3: 128K context)
    "model.layers": (1, 100_000),
    "model.hidden": (1, 2**24),
    "model.heads": (1, 2**20),
    "model.kv_heads": (1, 2**20),
    "model.head_dim": (1, 2**20),
    "model.ffn_hidden": (1, 2**26),
    "model.vocab": (1, 2**32),
    "model.seq_len": (1, 2**30),
    "model.moe.experts": (1, 2**20),
    "model.moe.top_k": (1, 2**20),
    "model.moe.expert_ffn_hidden": (1, 2**26),
    "model.moe.shared_experts": (0, 2**20),
    "model.moe.dense_layers": (0, 100_000),
    "model.moe.capacity_factor": (0, 1_000),
    "model.mla.q_lora_rank": (0, 2**24),
    "model.mla.kv_lora_rank": (1, 2**24),
    "model.mla.qk_nope_head_dim": (1, 2**20),
    "model.mla.qk_rope_head_dim": (0, 2**20),
    "model.mla.v_head_dim": (1, 2**20),
    # one GPU: 1 GFLOP/s .. 1 EFLOP/s, 1 MB .. 1 PB of HBM at 1 GB/s .. 10 PB/s, 1 mW .. 10 MW
    "gpu.matmul_tflops_bf16": (1e-3, 1e6),
    "gpu.matmul_tflops_fp8": (1e-3, 1e6),
    "gpu.vector_tflops": (1e-5, 1e6),
    "gpu.hbm_GB": (1e-3, 1e6),
    "gpu.hbm_bandwidth_TB_s": (1e-3, 1e4),
    "gpu.power_W": (1e-3, 1e7),
    # fabrics: 1 KB/s .. 1 PB/s per GPU, latency <= 1 s, energy <= 1 uJ/bit, sizes <= 2^27
    "scale_up.domain_size": (1, 2**27),
    "scale_up.bandwidth_GB_s": (1e-6, 1e6),
    "scale_up.latency_us": (0, 1e6),
    "scale_up.energy_pJ_per_bit": (0, 1e6),
    "scale_up.max_domain_size": (1, 2**27),
    "scale_up.switch_radix": (1, 2**27),
    "scale_up.switch_bandwidth_TB_s": (1e-12, 1e12),
    "scale_up.escape_bandwidth_GB_s": (1e-6, 1e6),
    "scale_up.port_bandwidth_GB_s": (1e-6, 1e6),
    "scale_up.port_power_W": (0, 1e6),
    "scale_up.port_cost_USD": (0, 1e9),
    "scale_up.switch_cost_USD": (0, 1e9),
    "scale_out.bandwidth_GB_s": (1e-6, 1e6),
    "scale_out.latency_us": (0, 1e6),
    "scale_out.energy_pJ_per_bit": (0, 1e6),
    "scale_out.max_domain_size": (1, 2**27),
    "scale_out.switch_radix": (1, 2**27),
    "scale_out.switch_bandwidth_TB_s": (1e-12, 1e12),
    "scale_out.escape_bandwidth_GB_s": (1e-6, 1e6),
    "cluster.gpus": (1, 2**27),
    # plan: parallel degrees cannot exceed the cluster; batches up to 2^40 sequences
    "plan.tp": (1, 2**27), "plan.pp": (1, 2**27), "plan.cp": (1, 2**27), "plan.ep": (1, 2**27),
    "plan.etp": (1, 2**27), "plan.vpp": (1, 100_000), "plan.dp": (1, 2**27),
    "plan.edp": (1, 2**27), "plan.micro_batch": (1, 2**40), "plan.global_batch": (1, 2**40),
    "plan.first_stage_layers": (0, 100_000), "plan.last_stage_layers": (0, 100_000),
    # validate cases and scenarios
    "measured.step_time_s": (1e-6, 1e9),
    "scenario.global_batch": (1, 2**40),
    "scenario.tokens": (1.0, 1e20),
}
"""The documented physical range of every numeric key, ``"section.key" -> (low, high)`` in file
units, inclusive. Values outside are bad inputs (exit 2) even when finite: converted to SI and
multiplied through the model they would overflow to infinity or underflow to zero (a 1e300 GB
HBM is ``inf`` bytes; a 1e-300 GB/s link makes every transfer take ``inf`` seconds). The
ranges are generous (10-1000x beyond any machine or model built) so they never bind a real
design. Keys not listed get ``[minimum, INT_CEILING]`` (ints) or :data:`FLOAT_RANGE` (floats).
``tests/test_hardening.py`` checks that every value inside the ranges gives finite output."""


def range_of(key: Key, dotted: str) -> tuple[float, float]:
    """The accepted ``(low, high)`` of ``key`` written as ``dotted`` (file units)."""
    if dotted in RANGES:
        return RANGES[dotted]
    if key.kind == "int":
        return (0 if key.minimum is None else key.minimum, INT_CEILING)
    low = FLOAT_RANGE[0] if key.strict else (0 if key.minimum is None else key.minimum)
    return (low, FLOAT_RANGE[1])


def key_named(section: str, name: str) -> Key:
    """The :class:`Key` of ``section`` called ``name`` (KeyError when absent)."""
    for key in SECTIONS[section]:
        if key.name == name:
            return key
    raise KeyError(f"{section}.{name}")


DefaultFn = Callable[[dict], Any]
