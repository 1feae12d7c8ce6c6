"""Per-layer, per-micro-batch costs on one GPU: kernels and the collectives of TP, CP and EP.

Shapes per GPU (``T = tokens``, ``Ts = tokens_sp``, ``Tm = tokens_moe``; see :mod:`dims`):

* attention core: flash attention (``compute.attention_core_time``, causal) or, when
  ``plan.flash_attention == 0``, materialized attention (``compute.unfused_attention_time``,
  full masked square, softmax and dropout through HBM; ``recompute = "selective"`` recomputes
  its forward in the backward, Korthikanti et al. 2022 sec. 5).
* attention, standard/GQA: QKV ``T x h -> (a + 2 kv) d / tp``, output ``a d / tp -> h``.
* attention, MLA (Megatron-Core layout): down-projections replicated on every TP rank
  (``h -> r_q``, ``h -> r_kv + d_rope``), up-projections split by heads
  (``r_q -> a d_qk / tp``, ``r_kv -> a (d_nope + d_v) / tp``), output ``a d_v / tp -> h``.
* dense FFN: fused gate/up ``h -> (n-1) f / tp`` and down ``f / tp -> h``.
* MoE FFN: router ``Ts x h -> E``; the ``E / ep`` local experts run as one grouped GEMM per
  projection (one kernel launch, charged once), each expert over
  ``m_e = ep etp Tm k c / E`` tokens (``k = top_k``, ``c = max(1, capacity_factor)``) with
  ``h -> (n-1) f_e / etp`` and ``f_e / etp -> h``; shared experts run like a dense FFN of
  width ``S f_e`` split by TP.
* output layer: ``T x h -> V / tp`` and a fused cross-entropy.

Memory-bound traffic per token per layer, forward, bytes (backward moves twice as much):
``ELEM_SEQ_PASSES x 2 h`` in the sequence region (two norms read+write, two residual adds
read 2 write 1), rotary embeddings on Q and K (read + write), and the FFN activation
(gated: read 2 write 1 of width f; ungated: read 1 write 1). MoE layers add the token
permutation and un-permutation (read + write ``k h`` each way).

Communication per layer per micro-batch (forward; backward repeats it, full recompute adds
one more forward), ``B = 2`` bytes per bf16 element:

* TP: 4 reduce-scatter-sized collectives of ``T h B`` (with SP: all-gather + reduce-scatter
  around attention and around the FFN; without SP the 2 all-reduces cost the same). MoE layers
  replace the FFN pair by one pair around shared experts (if any) and, with ``etp > 1``, a
  pair of ``etp``-group collectives around the experts. Korthikanti et al. 2022, sec. 4.2.1.
  Megatron re-gathers SP inputs for weight gradients overlapped with dgrad (not counted).
* CP: ring exchange of K and V, ``cp - 1`` steps of ``b (s/cp) w_kv B / tp`` each, with
  ``w_kv = 2 kv d`` (MLA: ``a (d_qk + d_v)``, the expanded keys and values); backward sends
  K, V and their gradients (twice the bytes). Overlapped with the attention core (TE ring
  attention), so only the excess is exposed.
* EP: dispatch and combine of ``Tm k c h`` elements (dispatch in fp8 when the plan is fp8,
  combine in bf16): Megatron's all-to-all dispatcher (no token de-duplication) or the
  hierarchical de-duplicating dispatch of DeepEP/HybridEP (``plan.dispatcher``), with
  node/domain-limited routing where the model has it (``model.max_domains_per_token``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp

from cpo_opt.model import compute
from cpo_opt.model import fabric
from cpo_opt.model import transformer
from cpo_opt.model.config import Model, Plan, System, replace
from cpo_opt.model.dims import Dims
from cpo_opt.model.fabric import Comm
from cpo_opt.model.structure import Structure, resolve
from cpo_opt.model.switch import decided, known, mix, weight

ELEM_SEQ_PASSES = 10.0
"""Activation-sized (``h`` bf16) HBM passes per token per layer in the sequence region:
2 norms x (read + write) + 2 residual adds x (2 reads + 1 write)."""

BF16 = 2.0

UNFUSED_DROPOUT = 1.0
"""Materialized attention is modelled with attention dropout on (the Megatron GPT recipe,
p = 0.1), costing its mask and an extra pass over the scores; flash attention has none."""


@dataclasses.dataclass(frozen=True)
class Kernels:
    """Forward/backward kernel seconds of one block on one GPU for one micro-batch."""

    gemm_fwd: object = 0.0
    gemm_bwd: object = 0.0
    attn_fwd: object = 0.0
    attn_bwd: object = 0.0
    elem_fwd: object = 0.0
    rec_bwd: object = 0.0   # forward kernels recomputed in the backward (recompute modules)

    @property
    def fwd(self):
        return self.gemm_fwd + self.attn_fwd + self.elem_fwd

    @property
    def bwd(self):
        return self.gemm_bwd + self.attn_bwd + 2.0 * self.elem_fwd + self.rec_bwd

    def __add__(self, o: "Kernels") -> "Kernels":
        return Kernels(*(getattr(self, f.name) + getattr(o, f.name)
                         for f in dataclasses.fields(self)))

    def __mul__(self, k) -> "Kernels":
        return Kernels(*(getattr(self, f.name) * k for f in dataclasses.fields(self)))

    __rmul__ = __mul__


KERNEL_FIELDS = tuple(f.name for f in dataclasses.fields(Kernels))


GROUPED_GEMM_STREAMS = 4.0
"""CUDA streams over which Transformer Engine's grouped GEMM (``GroupedLinear``, the
``TEGroupedMLP`` experts of Megatron-Core) issues its per-expert cuBLAS GEMMs: one GEMM per
local expert, expert ``i`` on stream ``i mod 4`` (TE ``transformer_engine/common/include/
transformer_engine/gemm.h``: ``num_streams = 4``; ``cublaslt_gemm.cu``:
``nvte_multi_stream_cublas_gemm`` loops over ``num_gemms``; NVIDIA's DeepSeek-V3 GB200 guide,
Megatron-LM docs/discussions/deepseek-v3-gb200-optimization sec. 1: the MXFP8 grouped GEMM is
"multi-stream + cuBLAS"). The experts' tiles share the SMs (:mod:`cpo_opt.model.compute`
counts them together), and each stream pays one kernel's launch/tail per expert it runs:
``E_local / 4`` launch overheads in sequence."""


class _GemmTable:
    """The GEMMs of all blocks, timed by :func:`compute.gemm_fwd_bwd_time` row by row or
    stacked along a leading axis (one roofline expression instead of one per GEMM, which
    keeps compilation of the model's gradient fast)."""

    def __init__(self):
        self.rows: list[tuple] = []
        self.owner: list[str] = []

    def add(self, block: str, m, n, k, count=1.0, when=1.0, grouped=False,
            in_fp8=1.0) -> None:
        """Add ``count`` GEMMs ``(m x k) @ (k x n)`` run as one kernel (a batched GEMM) or,
        with ``grouped``, as Transformer Engine's grouped GEMM: one cuBLAS GEMM per group on
        :data:`GROUPED_GEMM_STREAMS` streams (``count / 4`` launch overheads in sequence).
        Either way their tiles share the SMs (``groups`` of :func:`compute.gemm_time`).
        ``when`` (0/1) switches the row off, and a row switched off by a Python 0 (the
        structure) is not built at all. ``in_fp8`` (0/1): whether the row runs in the plan's
        fp8 when the plan is fp8 (Transformer Engine's linear layers) or stays in bf16 (the
        layers Megatron-Core runs in plain PyTorch: the router, the output layer)."""
        if decided(when) and float(when) == 0.0:
            return
        launches = (jnp.maximum(count / GROUPED_GEMM_STREAMS, 1.0) if grouped else 1.0)
        casts = count if grouped else 1.0  # fp8: one quantisation per expert slice
        self.rows.append((m, n, k, count * when, launches * when, casts * when,
                          in_fp8))
        self.owner.append(block)

    def evaluate(self, system: System, plan: Plan, stacked: bool, structure: Structure,
                 temperature: float = 0.0) -> dict[str, Kernels]:
        """Kernels per block; ``stacked`` evaluates all rows as one array (small graph, fast
        to compile and differentiate) instead of one expression per row (fused into one
        loop under ``vmap``: fastest batched evaluation). Same formula, same numbers."""
        if not self.rows:
            return {}
        ovh = system.constants.kernel_overhead_s
        # fp8 plans: one quantisation (cast-transpose) kernel before each forward GEMM and
        # before the backward pair, on the rows' whole input / output-gradient
        # (:func:`compute.fp8_cast_time`), each one more launch
        fp8 = weight(structure.fp8, plan.fp8 > 0)
        cast = compute.fp8_cast_time if structure.fp8 is not False else (
            lambda m, *a, **k: (jnp.zeros_like(m),) * 2)

        def timed(m, n, k, count, launches, casts, in_fp8):
            on = jnp.where(count > 0, 1.0, 0.0)
            row = replace(plan, fp8=plan.fp8 * in_fp8)  # bf16 rows of an fp8 plan
            fwd, bwd = compute.gemm_fwd_bwd_time(m, n, k, system, row, launches=0.0,
                                                 groups=jnp.maximum(count, 1.0),
                                                 temperature=temperature)
            c_f, c_b = cast(m * count, n, k, system, row, launches=0.0)
            q = fp8 * in_fp8 * casts * compute.fp8_cast_kernels(plan)
            return (on * fwd + c_f + (launches + q) * ovh,
                    on * bwd + c_b + (2.0 * launches + q) * ovh)

        if stacked:
            cols = [jnp.stack(jnp.broadcast_arrays(*[r[i] for r in self.rows]))
                    for i in range(7)]
            fwd, bwd = timed(*cols)
            times = [(fwd[i], bwd[i]) for i in range(len(self.rows))]
        else:
            times = [timed(*row) for row in self.rows]
        out: dict[str, Kernels] = {}
        for (fwd, bwd), block in zip(times, self.owner):
            out[block] = out.get(block, Kernels()) + Kernels(gemm_fwd=fwd, gemm_bwd=bwd)
        return out


class Blocks(NamedTuple):
    """Kernels of one micro-batch of each block kind on one GPU."""

    attention: Kernels
    dense_ffn: Kernels
    moe_ffn: Kernels
    output: Kernels
    shared_experts: Kernels
    """The shared experts' part of ``moe_ffn`` (zero without them): Megatron-Core runs them
    before the router, so they are part of the MoE layer's work before the tokens-per-expert
    sync (:func:`host_kernels`)."""


def blocks(model: Model, system: System, plan: Plan, d: Dims, stacked: bool = False,
           structure: Structure | None = None, temperature: float = 0.0) -> Blocks:
    """Forward/backward kernel seconds of the attention block, a dense FFN, an MoE FFN and
    the output layer (shapes in the module docstring); blocks ``structure`` (default: read
    from the concrete leaves, :func:`~cpo_opt.model.structure.resolve`) lacks are not built."""
    h, a, tp, t = model.hidden, model.heads, plan.tp, d.tokens
    s = resolve(structure, model, plan)
    g = _GemmTable()
    mla = weight(s.mla, model.mla > 0)
    std = 1.0 - mla
    # attention projections: standard/GQA or MLA
    g.add("attention", t, (a + 2.0 * model.kv_heads) * model.head_dim / tp, h, when=std)
    g.add("attention", t, h, a * model.head_dim / tp, when=std)
    q_lora = weight(s.q_lora, model.q_lora_rank > 0)
    g.add("attention", t, model.q_lora_rank, h, when=mla * q_lora)
    g.add("mla_up", t, a * d.dqk / tp, q_lora * model.q_lora_rank + (1.0 - q_lora) * h,
          when=mla)
    g.add("attention", t, model.kv_lora_rank + model.qk_rope_head_dim, h, when=mla)
    g.add("mla_up", t, a * (model.qk_nope_head_dim + model.v_head_dim) / tp,
          model.kv_lora_rank, when=mla)
    g.add("attention", t, h, a * d.dv / tp, when=mla)
    # materialized attention core: batched Q K^T and P V over (micro-batch x local heads)
    flash = plan.flash_attention if s.flash is None else float(s.flash)
    unfused = 1.0 - flash
    b_heads = plan.micro_batch * a / tp
    s_q = model.seq_len / plan.cp
    g.add("core", s_q, model.seq_len, d.dqk, b_heads, when=unfused)
    g.add("core", s_q, d.dv, model.seq_len, b_heads, when=unfused)
    # dense FFN, MoE FFN, output layer
    n_up = transformer.ffn_matrices(model) - 1.0
    g.add("dense_ffn", t, n_up * model.ffn_hidden / tp, h)
    g.add("dense_ffn", t, h, model.ffn_hidden / tp)
    moe = d.is_moe
    m_e = expert_tokens(model, plan, d)
    local = model.experts / plan.ep
    shared = model.shared_experts * model.expert_ffn_hidden
    has_shared = moe * weight(s.shared_experts, model.shared_experts > 0)
    # the router and the output layer are Megatron-Core's own PyTorch layers (``TopKRouter``'s
    # gating linear, ``tensor_parallel.ColumnParallelLinear``): bf16 in fp8 plans, the output
    # layer in fp8 only with ``fp8_output_layer`` (Megatron-Core --fp8-output-proj, MXFP8)
    g.add("moe_ffn", d.tokens_moe, model.experts, h, when=moe, in_fp8=0.0)
    g.add("moe_ffn", m_e, n_up * model.expert_ffn_hidden / plan.etp, h, local, when=moe,
          grouped=True)
    g.add("moe_ffn", m_e, h, model.expert_ffn_hidden / plan.etp, local, when=moe,
          grouped=True)
    g.add("shared", t, n_up * shared / tp, h, when=has_shared)
    g.add("shared", t, h, shared / tp, when=has_shared)
    g.add("output", t, model.vocab / tp, h, in_fp8=plan.fp8_output_layer)
    k = g.evaluate(system, plan, stacked, s, temperature)
    for block in ("attention", "mla_up", "core", "dense_ffn", "moe_ffn", "shared", "output"):
        k.setdefault(block, Kernels())

    # attention core: flash (causal) or materialized (GEMMs above + softmax/dropout traffic)
    def flash_core():
        flops = plan.micro_batch * model.seq_len * transformer.attention_core_flops_per_token(
            model, s) / (plan.cp * tp)
        f, b = compute.attention_core_time(flops, s_q, d.dqk, system)
        return Kernels(attn_fwd=f, attn_bwd=b)

    def materialized_core():
        scores = b_heads * s_q * model.seq_len
        f = k["core"].gemm_fwd + compute.memory_time(
            scores * (4.0 + 5.0 * UNFUSED_DROPOUT), system)
        b = k["core"].gemm_bwd + compute.memory_time(
            scores * (6.0 + 5.0 * UNFUSED_DROPOUT), system)
        selective = jnp.where(plan.recompute == 1, 1.0, 0.0)  # recompute the core forward
        return Kernels(attn_fwd=f, attn_bwd=b + selective * f)

    attn_elem = (ELEM_SEQ_PASSES * BF16 * h * d.tokens_sp
                 + 2.0 * BF16 * (a + model.kv_heads) * d.dqk / tp * t)
    # every small (non-GEMM) kernel also costs its fixed launch/tail time on the GPU
    ovh = system.constants.small_kernel_s
    n_attn, n_dense, n_moe = small_kernels(model, s, plan)
    # recompute modules (Megatron-Core --recompute-modules): the norm of each block
    # (read + write 2h per token) and the FFN/expert activation are re-run in the backward
    # (``recompute_norm_act``); the MLA up-projections' forward GEMMs (``recompute_mla_up``)
    r_na, r_mla = plan.recompute_norm_act, plan.recompute_mla_up
    norm_rec = r_na * compute.memory_time(2.0 * BF16 * h * d.tokens_sp, system)
    attention = (k["attention"] + k["mla_up"] + mix(flash, flash_core, materialized_core)
                 + Kernels(elem_fwd=compute.memory_time(attn_elem, system) + n_attn * ovh,
                           rec_bwd=norm_rec + r_mla * k["mla_up"].gemm_fwd))

    act = BF16 * (2.0 + model.gated_ffn)
    dense_act = compute.memory_time(act * model.ffn_hidden / tp * t, system)
    dense = k["dense_ffn"] + Kernels(elem_fwd=dense_act + n_dense * ovh,
                                     rec_bwd=norm_rec + r_na * dense_act)

    def moe_elementwise():
        act_tokens = m_e * local
        act_bytes = (act * model.expert_ffn_hidden / plan.etp * act_tokens
                     + has_shared * act * shared / tp * t)
        nbytes = act_bytes + 2.0 * 2.0 * BF16 * h * act_tokens
        # the expert activation is also recomputed under low_precision_storage (its fp8
        # input cached, its output not: DeepSeek-V3 sec. 3.3.3)
        r_act = jnp.maximum(r_na, plan.low_precision_storage)
        return Kernels(elem_fwd=compute.memory_time(nbytes, system) + n_moe * ovh,
                       rec_bwd=norm_rec + r_act * compute.memory_time(act_bytes, system))

    moe_ffn = k["moe_ffn"] + k["shared"] + mix(moe, moe_elementwise, Kernels)
    output = k["output"] + Kernels(elem_fwd=compute.memory_time(
        6.0 * t * model.vocab / tp, system))
    # the shared experts' part of moe_ffn: their GEMMs, activation and its small kernel
    shared_experts = k["shared"] + mix(has_shared, lambda: Kernels(
        elem_fwd=compute.memory_time(act * shared / tp * t, system) + ovh), Kernels)
    return Blocks(attention, dense, moe_ffn, output, shared_experts)


# --------------------------------------------------------------------------- host issue
NORM_KERNELS = 1.0
"""Kernels of one RMSNorm/LayerNorm forward (TE fused norm; fused into the next GEMM's
quantisation in fp8 plans is not assumed)."""

ATTN_OTHER_KERNELS = 4.0
"""Non-GEMM kernels of an attention block's forward besides its norms: two RoPE applications
(Q, K), the flash-attention kernel, the residual add (Megatron-Core ``SelfAttention`` /
``MLASelfAttention`` with TE)."""

ROUTER_KERNELS = 16.0
"""Kernels of the router and token preprocessing in an MoE layer's forward, besides the
router GEMM: score function, top-k, probability normalisation, auxiliary-loss terms,
tokens-per-expert histogram, routing map and the permutation index (Megatron-Core
``TopKRouter`` and the dispatcher's preprocess). NVIDIA's DeepSeek-V3 GB200 guide
(Megatron-LM docs/discussions/deepseek-v3-gb200-optimization, sec. 2.1.4 and 2.2.1) counts 72
router kernels unfused, 31 with ``--moe-router-fusion``, and 17 for router and preprocess
together with the fused DeepEP preprocess: 17 less the router GEMM."""

DISPATCH_KERNELS = 6.0
"""Kernels of dispatch and combine in an MoE layer's forward: permute, all-to-all dispatch,
sort by local expert, unsort, all-to-all combine, unpermute."""

FP8_CAST_KERNELS_PER_GEMM = 1.0
"""Quantisations per GEMM input activation in fp8 plans (Transformer Engine quantises each
linear layer's input), each :func:`compute.fp8_cast_kernels` kernels (one; three under
per-tensor current scaling); weights are quantised once per step (not counted per layer)."""


def host_kernels(model: Model, plan: Plan, structure: Structure | None = None):
    """``(dense layer, MoE layer)`` kernels issued by the host per forward, and the share of
    them that CUDA graphs capture (attention, router and preprocessing, with the shared
    experts that run before the router; Megatron-Core's ``--cuda-graph-scope attn`` plus
    router/preprocess, arXiv 2603.07685 B.2; core_v0.19.0 ``cuda_graph_modules``:
    "moe_router ... including the shared experts if they are not overlapped with EP comm").
    The captured share is also what the host issues before a dropless MoE layer's
    tokens-per-expert sync. Backward
    issues about twice the forward's kernels. The small kernels are :func:`small_kernels`'
    count; added here: the attention core, each GEMM with its fp8 cast, the router GEMM, the
    two all-to-all kernels, and the experts' grouped GEMMs, which Transformer Engine issues
    as one cuBLAS GEMM per local expert (``E / ep`` of them, :data:`GROUPED_GEMM_STREAMS`),
    each expert's slice quantised by its own cast in fp8 (TE ``split_quantize``, one
    quantizer per split).

    Returns ``((dense_total, dense_captured), (moe_total, moe_captured))``.
    """
    s = resolve(structure, model, plan)
    n_attn, n_dense, n_moe = small_kernels(model, s, plan)
    mla = weight(s.mla, model.mla > 0)
    q_lora = weight(s.q_lora, model.q_lora_rank > 0)
    attn_gemms = (1.0 - mla) * 2.0 + mla * (4.0 + q_lora)
    cast = plan.fp8 * FP8_CAST_KERNELS_PER_GEMM * compute.fp8_cast_kernels(plan)
    attn = n_attn + 1.0 + attn_gemms * (1.0 + cast)  # + the attention core
    ffn = n_dense + 2.0 * (1.0 + cast)  # + 2 GEMMs
    has_shared = weight(s.shared_experts, model.shared_experts > 0)
    router = 1.0 + ROUTER_KERNELS
    local = jnp.maximum(model.experts / plan.ep, 1.0)
    # + router GEMM, the two all-to-alls, two grouped GEMMs of one GEMM (and one cast) per
    # local expert; shared experts count 3 kernels with casts in all, their activation
    # already among the small ones
    moe = (n_moe + 1.0 + 2.0 + 2.0 * local * (1.0 + cast)
           + has_shared * (3.0 * (1.0 + cast) - 1.0))
    # Megatron-Core (core_v0.19.0 MoELayer.forward, shared_experts_compute) runs the shared
    # experts before the router unless they overlap the dispatch (moe_shared_expert_overlap,
    # off by default and under DeepEP/HybridEP), so they are issued before the sync
    shared = has_shared * 3.0 * (1.0 + cast)
    return (attn + ffn, attn), (attn + moe, attn + router + shared)


def host_issue_parts(model: Model, system: System, plan: Plan,
                     structure: Structure | None = None):
    """Host seconds to issue one layer's forward, by part: ``(attention, dense FFN, router,
    MoE rest)`` (:func:`host_kernels` times ``HOST_LAUNCH_S``; kernels captured in CUDA graphs
    at ``graph_launch_fraction`` of it). The router part (with the shared experts, which run
    before the router) runs up to the tokens-per-expert sync of a dropless MoE layer; the MoE
    rest (dispatch, experts, combine) after it."""
    k = system.constants
    (d_all, d_cap), (m_all, m_cap) = host_kernels(model, plan, structure)
    saved = 1.0 - plan.cuda_graphs * (1.0 - k.graph_launch_fraction)
    launch = k.host_launch_s
    return (d_cap * saved * launch, (d_all - d_cap) * launch,
            (m_cap - d_cap) * saved * launch, (m_all - m_cap) * launch)


def router_kernels(model: Model, system: System, plan: Plan, d: Dims,
                   temperature: float = 0.0) -> Kernels:
    """GPU seconds of an MoE layer's router and preprocessing (the part before the
    tokens-per-expert sync): the router GEMM ``Ts x h -> E``, in bf16 in fp8 plans too
    (Megatron-Core's ``TopKRouter`` is a PyTorch linear, outside Transformer Engine's fp8: no
    cast), and the :data:`ROUTER_KERNELS` small kernels' fixed cost. Part of
    :func:`blocks`' MoE FFN."""
    f, b = compute.gemm_fwd_bwd_time(d.tokens_moe, model.experts, model.hidden, system,
                                     replace(plan, fp8=0.0), launches=1.0,
                                     temperature=temperature)
    small = ROUTER_KERNELS * system.constants.small_kernel_s
    return Kernels(gemm_fwd=f, gemm_bwd=b, elem_fwd=small)


def small_kernels(model: Model, structure: Structure | None = None, plan: Plan | None = None):
    """``(attention, dense FFN, MoE FFN)`` forward kernels of a layer that are neither GEMMs,
    fp8 casts nor the flash-attention core (those carry their own ``KERNEL_OVERHEAD_S``):
    norms, RoPE, residual adds, activations, the router's and the dispatcher's small kernels
    (the all-to-all kernels themselves are timed as communication). Each costs the fixed
    time ``SMALL_KERNEL_S`` on the GPU besides its HBM traffic; the backward
    runs about twice as many (charged through ``elem_fwd``, which the backward counts twice).
    Counts of Megatron-Core with Transformer Engine; :func:`host_kernels` adds the GEMMs."""
    s = resolve(structure, model, plan)
    mla = weight(s.mla, model.mla > 0)
    q_lora = weight(s.q_lora, model.q_lora_rank > 0)
    attn = NORM_KERNELS * (1.0 + mla * (1.0 + q_lora)) + ATTN_OTHER_KERNELS - 1.0
    dense = NORM_KERNELS + 2.0  # activation, residual add
    shared = weight(s.shared_experts, model.shared_experts > 0)
    moe = (NORM_KERNELS + ROUTER_KERNELS + (DISPATCH_KERNELS - 2.0) + 1.0 + shared + 1.0)
    return attn, dense, moe


def dropless(model: Model):
    """1 for dropless routing (no capacity factor: dynamic shapes, a host sync per MoE layer
    forward), 0 with a capacity factor (static shapes)."""
    return jnp.where(model.capacity_factor > 0, 0.0, 1.0)


def sync_stall(model: Model, system: System):
    """Seconds the host waits per dropless MoE layer forward on the device-to-host copy of the
    tokens-per-expert counts beyond the GPU work before it (``HOST_SYNC_S``; none with a
    capacity factor, whose shapes are static). What the sync costs besides this latency (the
    host work behind it cannot overlap the GPU work before it) is :mod:`cpo_opt.model.step`'s
    host chain."""
    return dropless(model) * system.constants.host_sync_s


def host_issue_time(model: Model, system: System, plan: Plan,
                    structure: Structure | None = None):
    """``(dense layer, MoE layer)`` host seconds to issue one layer's forward kernels
    (:func:`host_issue_parts` summed)."""
    att, ffn, router, rest = host_issue_parts(model, system, plan, structure)
    return att + ffn, att + router + rest


def capacity(model: Model):
    """Tokens computed per routed token: ``max(1, capacity_factor)`` (padding to capacity)."""
    return jnp.maximum(model.capacity_factor, 1.0)


def imbalance(model: Model, plan: Plan, d: Dims):
    """Load of the most loaded GPU of an EP group over the mean, dropless routing.

    Each of the ``N = ep Tm k`` routed copies of the group lands on a given GPU with
    probability ``1 / ep`` (balanced routing, the auxiliary loss's target), so a GPU's load
    is binomial with mean ``lam = Tm k`` copies and the expected maximum over ``ep`` GPUs is
    ``lam + sqrt(2 lam ln ep)`` (Gaussian extreme value): factor
    ``1 + sqrt(2 ln(ep) / lam)``. The most loaded GPU paces the grouped GEMM, its
    activations and the all-to-all that fills it. With a capacity factor (token dropping,
    padding to capacity) or ``plan.perfect_balance`` the factor is 1. This is the floor of
    the imbalance of learned routing (real routers add correlation between tokens)."""
    lam = jnp.maximum(d.tokens_moe * model.top_k, 1.0)
    x = 2.0 * jnp.log(jnp.maximum(plan.ep, 1.0)) / lam
    f = 1.0 + jnp.sqrt(x + 1e-12) - 1e-6  # finite slope at ep = 1 (relaxed model)
    dropless = jnp.where(model.capacity_factor > 0, 0.0, 1.0)
    return 1.0 + dropless * (1.0 - plan.perfect_balance) * (f - 1.0)


def expert_tokens(model: Model, plan: Plan, d: Dims):
    """Tokens each local expert processes per micro-batch on the most loaded GPU:
    ``ep etp Tm k c / E`` times :func:`imbalance`."""
    e = jnp.maximum(model.experts, 1.0)
    return (plan.ep * plan.etp * d.tokens_moe * model.top_k * capacity(model) / e
            * imbalance(model, plan, d))


# --------------------------------------------------------------------------- communication
class Placement(NamedTuple):
    """Every parallel group of the plan placed on the fabric (Megatron rank order)."""

    tp: fabric.Group        # tp ranks, stride 1
    etp: fabric.Group       # expert-TP ranks, stride 1
    dp: fabric.Group        # dense-gradient group dp * cp, stride tp
    edp: fabric.Group       # expert-gradient group edp, stride etp * ep
    world: fabric.Group     # all GPUs (loss / gradient-norm reductions)
    cp: fabric.Group        # cp ranks, stride tp
    pp: fabric.Group        # pipeline stages, stride tp * cp * dp
    ep: fabric.Group        # ep ranks, stride etp


def placement(system: System, plan: Plan, d: Dims, t: float, stacked: bool = False
              ) -> Placement:
    """Place all groups (:func:`fabric.place`; ``stacked``: one vectorized expression),
    contiguously or aligned as ``plan.placement`` says."""
    sizes = (plan.tp, plan.etp, d.dp * plan.cp, d.edp, d.fill.world, plan.cp, plan.pp, plan.ep)
    strides = (1.0, 1.0, plan.tp, plan.etp * plan.ep, 1.0, plan.tp,
               plan.tp * plan.cp * d.dp, plan.etp)
    # the world group and the pipeline group (pp x tp cp dp) each span every working GPU
    whole = (False, False, False, False, True, False, True, False)
    return Placement(*fabric.place(sizes, strides, system, t, stacked, d.fill, whole))


def tp_collective(model: Model, system: System, d: Dims, pl: Placement) -> Comm:
    """One TP all-gather or reduce-scatter of a layer activation ``T h`` (bf16)."""
    return fabric.reduce_scatter_on(d.tokens * model.hidden * BF16, pl.tp, system)


def tp_dense_layer(model: Model, system: System, d: Dims, pl: Placement) -> Comm:
    """Forward TP communication of a dense layer: 4 reduce-scatter-sized collectives."""
    return 4.0 * tp_collective(model, system, d, pl)


def etp_pair(model: Model, plan: Plan, system: System, d: Dims, pl: Placement) -> Comm:
    """The expert-TP pair of an MoE layer's forward over ``etp`` on the dispatched tokens:
    the dispatcher's all-gather after the dispatch and reduce-scatter before the combine
    (Megatron-Core ``MoEAlltoAllTokenDispatcher``), part of the EP exchange's time."""
    etp_bytes = plan.etp * d.tokens_moe * model.top_k * capacity(model) * model.hidden * BF16
    return 2.0 * fabric.reduce_scatter_on(etp_bytes, pl.etp, system)


def tp_moe_layer(model: Model, system: System, plan: Plan, d: Dims, pl: Placement) -> Comm:
    """Forward TP communication of an MoE layer: attention pair, shared-expert pair, and the
    expert-TP pair over ``etp`` on the dispatched tokens (:func:`etp_pair`)."""
    pairs = 1.0 + weight(d.structure.shared_experts, model.shared_experts > 0)
    attn = 2.0 * pairs * tp_collective(model, system, d, pl)
    return attn + etp_pair(model, plan, system, d, pl)


def cp_layer(model: Model, system: System, plan: Plan, d: Dims, pl: Placement,
             t: float) -> Comm:
    """Forward CP ring exchange of one layer: ``cp - 1`` K/V chunk transfers."""
    w_kv = mix(weight(d.structure.mla, model.mla > 0), lambda: model.heads * (d.dqk + d.dv),
               lambda: 2.0 * model.kv_heads * model.head_dim)
    chunk = d.tokens * w_kv * BF16 / plan.tp
    return (plan.cp - 1.0) * fabric.p2p(chunk, fabric.crosses(pl.cp, t), system)


def ep_moe_layer(model: Model, system: System, plan: Plan, d: Dims, pl: Placement, t: float):
    """EP all-to-alls of one MoE layer: ``(forward, backward)`` dispatch + combine.

    Precision of each leg: the forward dispatch moves fp8 tokens in fp8 plans with
    ``fp8_dispatch`` (DeepSeek-V3 sec. 3.3.3: the activations are quantised before the
    dispatch, DeepEP's fp8 path; scales are ~1/128 of the bytes, not counted) and the bf16
    hidden states otherwise: every Megatron-Core dispatcher sends them as they are in fp8
    plans too (core_v0.19.0 ``moe/fused_a2a.py``: HybridEP's ``fp8_dispatch`` is fixed off,
    "HybridEP dispatcher does not support fp8 dispatch now"; DeepEP's ``FusedDispatch``
    passes the bf16 input to ``buffer.dispatch``; the all-to-all dispatcher permutes bf16
    tokens), each expert slice quantised after it arrives. The forward combine is bf16;
    the backward runs the reverse legs on bf16 gradients (dispatch-backward is a combine,
    combine-backward a dispatch of gradients).
    ``plan.dispatcher`` selects Megatron's all-to-all (every routed copy sent,
    :func:`fabric.all_to_all_on`) or the hierarchical de-duplicating dispatch
    (:func:`fabric.hierarchical_dispatch`)."""
    copies = model.top_k * capacity(model)
    tokens = d.tokens_moe * model.hidden * imbalance(model, plan, d)  # most loaded receiver
    sent = jnp.where((plan.fp8 > 0) & (plan.fp8_dispatch > 0), 1.0, BF16)  # bytes/element

    def flat():
        dispatch = fabric.all_to_all_on(tokens * copies * sent, pl.ep, system, t)
        combine = fabric.all_to_all_on(tokens * copies * BF16, pl.ep, system, t)
        return dispatch, combine

    def hier():
        args = (copies, pl.ep, system, model.max_domains_per_token, t)
        dispatch = fabric.hierarchical_dispatch(tokens * sent, *args)
        combine = fabric.hierarchical_dispatch(tokens * BF16, *args)
        return dispatch, combine

    if known(plan.dispatcher):
        dispatch, combine = hier() if float(plan.dispatcher) > 0 else flat()
    else:
        (d0, c0), (d1, c1) = flat(), hier()
        w = jnp.where(plan.dispatcher > 0, 1.0, 0.0)
        dispatch, combine = d0 * (1.0 - w) + d1 * w, c0 * (1.0 - w) + c1 * w
    return dispatch + combine, 2.0 * combine
