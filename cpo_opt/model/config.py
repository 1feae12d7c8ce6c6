"""Configuration pytrees: the model, the system (GPU + two-tier fabric) and the parallel plan.

Every field is a numeric leaf in SI units (seconds, bytes, bytes/s, FLOP/s, joules), so that
thousands of candidates run under one ``vmap`` and one compilation, and so that any field can be
differentiated. Choices that are discrete in reality (recompute policy, ZeRO stage, dtype,
booleans) are also numeric leaves holding small integer codes; the step-time formulas select
with ``jnp.where`` and never branch on them in Python, so one compiled function serves every
plan. Nothing here validates: input checks live in :mod:`cpo_opt.inputs.schema` and run on the host
before anything is traced (JAX rebuilds these classes on tracers).

File units (GB/s, TFLOP/s, us, pJ/bit) are converted at the edge by :mod:`cpo_opt.inputs.schema`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

Array = Any  # a float, numpy array or jax array

RECOMPUTE_CODES = {"none": 0, "selective": 1, "full": 2}
"""Numeric codes of the ``recompute`` plan field."""

DTYPE_CODES = {"bf16": 0, "fp8": 1}
"""Numeric codes of the ``dtype`` plan field (stored as ``Plan.fp8``)."""

PLACEMENT_CODES = {"contiguous": 0, "aligned": 1}
"""Numeric codes of the ``placement`` plan field (a file's ``"auto"`` is resolved to one of
them on load: :mod:`cpo_opt.inputs.plan_rules`)."""

LAYOUT_CODES = {"even": 0, "balanced": 1}
"""Numeric codes of the ``pipeline_layout`` plan field (:mod:`cpo_opt.model.pipeline`)."""

DISPATCHER_CODES = {"alltoall": 0, "deepep": 1}
"""Numeric codes of the ``dispatcher`` plan field (``deepep``: DeepEP / HybridEP-style
hierarchical dispatch with de-duplication across domains)."""

FP8_RECIPE_CODES = {"auto": 0, "tensorwise": 1, "delayed": 2, "blockwise": 3, "mxfp8": 4}
"""Numeric codes of the ``fp8_recipe`` plan field: Megatron-Core's ``--fp8-recipe`` names
(core_v0.19.0 ``enums.Fp8Recipe``), ``auto`` for the GPU generation's usual recipe (blockwise
on Hopper, MXFP8 on Blackwell: :mod:`cpo_opt.analysis.megatron`). The model tells only
``tensorwise`` (per-tensor current scaling, three kernels per quantisation) from the
one-kernel recipes (:func:`cpo_opt.model.compute.fp8_cast_time`)."""

SCHEDULE_CODES = {"1f1b": 0, "dualpipe": 1}
"""Numeric codes of the ``schedule`` plan field: Megatron's 1F1B (interleaved when
``vpp > 1``) or DeepSeek's DualPipe (bidirectional, two stages per rank)."""


def pytree(cls):
    """Register ``cls`` as a frozen dataclass pytree whose fields are all leaves."""
    return jax.tree_util.register_dataclass(dataclasses.dataclass(frozen=True)(cls))


@pytree
class Model:
    """A dense or Mixture-of-Experts decoder-only transformer.

    Dense models have ``experts == 0``; models without multi-head latent attention have
    ``mla == 0`` (the ``*_rank`` and ``*_head_dim`` MLA fields are then ignored).
    Boolean fields hold 0.0 or 1.0.
    """

    layers: Array
    hidden: Array
    heads: Array
    kv_heads: Array
    head_dim: Array
    ffn_hidden: Array
    gated_ffn: Array
    vocab: Array
    seq_len: Array
    tied_embeddings: Array
    # Mixture of experts (experts == 0: dense)
    experts: Array
    top_k: Array
    expert_ffn_hidden: Array
    shared_experts: Array
    dense_layers: Array
    capacity_factor: Array
    # Multi-head latent attention (mla == 0: standard MHA/GQA)
    mla: Array
    q_lora_rank: Array
    kv_lora_rank: Array
    qk_nope_head_dim: Array
    qk_rope_head_dim: Array
    v_head_dim: Array
    # node/domain-limited routing: a token's experts lie in at most this many EP domains
    # (DeepSeek-V3: 4 nodes); 0 = unlimited
    max_domains_per_token: Array = 0.0


@pytree
class GPU:
    """One GPU package: tensor-core peaks in FLOP/s, HBM in bytes and bytes/s."""

    matmul_flops_bf16: Array
    matmul_flops_fp8: Array
    vector_flops: Array
    hbm_bytes: Array
    hbm_bandwidth: Array
    power_w: Array


@pytree
class Fabric:
    """One network tier, seen from one GPU.

    Attributes:
      domain_size: GPUs joined by this tier at full bandwidth (scale-up: the NVLink/Passage
        domain; scale-out: the whole cluster).
      bandwidth: bytes/s per GPU per direction.
      latency_s: one-hop latency of a message, seconds.
      energy_j_per_bit: link + switch energy per bit moved, joules.
      switch_radix: ports of one switch of this tier.
      switch_bandwidth: bytes/s per direction that one switch can carry (all ports).
      escape_bandwidth: most bytes/s per direction a GPU package can bring out for this tier
        (shoreline-limited for copper SerDes, area-limited for 3D co-packaged optics).
      max_domain_size: largest domain the physical medium allows (copper reach: one rack).
      port_bandwidth, port_power_w, port_cost, switch_cost: the scale-up fabric's widest
        port per plane (bytes/s per direction; 0: the GPU's bandwidth), fixed power (W) and
        cost of one switch port with its link, cost of one switch chip
        (:mod:`cpo_opt.model.fabric_cost`); 0 where not priced (the scale-out tier).
    """

    domain_size: Array
    bandwidth: Array
    latency_s: Array
    energy_j_per_bit: Array
    switch_radix: Array
    switch_bandwidth: Array
    escape_bandwidth: Array
    max_domain_size: Array
    port_bandwidth: Array = 0.0
    port_power_w: Array = 0.0
    port_cost: Array = 0.0
    switch_cost: Array = 0.0


@pytree
class System:
    """A cluster of identical GPUs on a two-tier fabric.

    ``constants`` is the :class:`~cpo_opt.model.constants.Constants` pytree of achievable
    efficiencies and overheads for this GPU (per generation; ``calibrate`` fits them).
    """

    gpu: GPU
    scale_up: Fabric
    scale_out: Fabric
    gpus: Array
    constants: Any


@pytree
class Plan:
    """A parallel training plan (Megatron-style).

    ``dp`` is derived: ``gpus / (tp * cp * pp)``. MoE layers regroup the same GPUs as
    ``etp * ep * edp == tp * cp * dp``. Codes: ``recompute`` 0 none / 1 selective / 2 full;
    ``zero`` 0..3; ``fp8`` 0 bf16 / 1 fp8; ``flash_attention`` 1 flash / 0 materialized
    (the file's ``attention = "auto"`` is resolved against the GPU on load); booleans 0/1;
    ``placement`` 0 contiguous rank order over domains / 1 aligned (spare GPUs per domain
    idle, :mod:`cpo_opt.model.fabric`); ``cuda_graphs`` 1 when the layer's small kernels are
    captured in CUDA graphs (:mod:`cpo_opt.model.compute`); ``recompute_norm_act`` and
    ``recompute_mla_up`` are Megatron-Core's fine-grained ``--recompute-modules``
    (``layernorm`` + ``moe_act``/``mlp`` activation; ``mla_up_proj``), see
    :mod:`cpo_opt.model.memory`; ``perfect_balance`` 1 when routing is forced to equal
    expert loads (benchmarks), 0 for learned routing with its statistical imbalance
    (:func:`cpo_opt.model.layer_costs.imbalance`); ``dispatcher`` 0 Megatron all-to-all (every routed copy
    sent) / 1 hierarchical de-duplicating dispatch (DeepEP, HybridEP;
    :func:`cpo_opt.model.fabric.hierarchical_dispatch`); ``offload_optimizer`` keeps fp32 master weights and Adam
    moments in host memory (Megatron-Core ``--optimizer-cpu-offload``); ``offload_expert_act``
moves the routed experts' saved activations (FC1 input and activation input) to host memory
between forward and backward (Megatron-Core fine-grained activation offloading,
``--offload-modules expert_fc1 moe_act``, :mod:`cpo_opt.model.memory`); ``schedule`` 0 1F1B
(interleaved with ``vpp > 1``) / 1 DualPipe (DeepSeek-V3 report sec. 3.2.1: each rank holds
stage ``r`` and stage ``pp - 1 - r``, micro-batches enter from both ends;
:mod:`cpo_opt.model.step`, :mod:`cpo_opt.model.memory`); ``low_precision_storage``
DeepSeek-V3's low-precision activation storage (sec. 3.3.3: attention output cached at 12
bits, SwiGLU inputs cached in fp8 and its output recomputed); ``bf16_moments`` Adam moments
kept in bf16 (DeepSeek-V3 sec. 3.3.3; Megatron-Core ``--use-precision-aware-optimizer
--exp-avg-dtype bf16 --exp-avg-sq-dtype bf16``); ``layout_balanced`` 0 Megatron's even
split of layers over the ``pp vpp`` virtual stages / 1 the first and last virtual stages
hold fewer layers so that the embedding and the output layer count as layer-equivalents;
``first_stage_layers`` / ``last_stage_layers`` the layers of the first / last virtual stage
when the plan gives them (Megatron ``--decoder-first/last-pipeline-num-layers``), ``-1``
when the layout decides (:mod:`cpo_opt.model.pipeline`); ``bf16_main_grads`` gradients
accumulated, kept and reduced in bf16 (Megatron-Core ``--use-precision-aware-optimizer
--main-grads-dtype bf16``, the Megatron-Bridge DeepSeek-V3 recipe); ``fp8_param_gather``
fp8 plans keep the model's weights only in fp8 and all-gather them in fp8 (Megatron-Core
``--fp8-param-gather``, Megatron-Bridge's MXFP8 preset) (:mod:`cpo_opt.model.memory`);
``ddp_bucket`` the DDP gradient bucket in parameters (Megatron-Core ``--ddp-bucket-size``),
``0`` for Megatron-Core's own default ``max(4e7, 1e6 dp)`` (:mod:`cpo_opt.model.step`);
``fp8_dispatch`` fp8 plans send the forward EP dispatch in fp8 (DeepSeek-V3 sec. 3.3.3 with
DeepEP's fp8 dispatch; Megatron-Core's dispatchers send the bf16 hidden states,
:func:`cpo_opt.model.layer_costs.ep_moe_layer`); ``fp8_output_layer`` fp8 plans run the output
layer (LM head) in fp8 (Megatron-Core ``--fp8-output-proj``, MXFP8 only); off, it runs in bf16,
as Megatron-Core's own ``ColumnParallelLinear`` does under fp8 (:mod:`cpo_opt.model.layer_costs`);
``fp8_recipe`` the fp8 scaling recipe (:data:`FP8_RECIPE_CODES`; per-tensor current scaling
costs two more kernels and one more read per quantisation,
:func:`cpo_opt.model.compute.fp8_cast_time`). The fields after
``flash_attention`` have defaults so older constructors keep working; batched callers pass
arrays for them.
    """

    tp: Array
    pp: Array
    cp: Array
    ep: Array
    etp: Array
    vpp: Array
    micro_batch: Array
    global_batch: Array
    sequence_parallel: Array
    recompute: Array
    zero: Array
    fp8: Array
    overlap_tp: Array
    overlap_ep: Array
    overlap_p2p: Array
    overlap_dp: Array
    flash_attention: Array
    placement: Array = 0.0
    dispatcher: Array = 0.0
    cuda_graphs: Array = 0.0
    recompute_norm_act: Array = 0.0
    recompute_mla_up: Array = 0.0
    offload_optimizer: Array = 0.0
    perfect_balance: Array = 0.0
    offload_expert_act: Array = 0.0
    schedule: Array = 0.0
    low_precision_storage: Array = 0.0
    bf16_moments: Array = 0.0
    layout_balanced: Array = 0.0
    first_stage_layers: Array = -1.0
    last_stage_layers: Array = -1.0
    bf16_main_grads: Array = 0.0
    fp8_param_gather: Array = 0.0
    ddp_bucket: Array = 0.0
    fp8_dispatch: Array = 0.0
    fp8_output_layer: Array = 0.0
    fp8_recipe: Array = 0.0


def replace(obj, **changes):
    """``dataclasses.replace`` for the frozen pytrees above."""
    return dataclasses.replace(obj, **changes)


def field_names(cls) -> tuple[str, ...]:
    """Names of the dataclass fields of ``cls`` in declaration order."""
    return tuple(f.name for f in dataclasses.fields(cls))
