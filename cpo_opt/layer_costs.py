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
* MoE FFN: router ``Ts x h -> E``; each of the ``E / ep`` local experts is a grouped GEMM over
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
* EP: dispatch and combine all-to-alls of ``Tm k c h`` elements (dispatch in fp8 when the
  plan is fp8, combine in bf16), Megatron all-to-all dispatcher (no token de-duplication).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from cpo_opt import compute, fabric, transformer
from cpo_opt.config import Model, Plan, System
from cpo_opt.dims import Dims
from cpo_opt.fabric import Comm

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

    @property
    def fwd(self):
        return self.gemm_fwd + self.attn_fwd + self.elem_fwd

    @property
    def bwd(self):
        return self.gemm_bwd + self.attn_bwd + 2.0 * self.elem_fwd

    def __add__(self, o: "Kernels") -> "Kernels":
        return Kernels(*(getattr(self, f.name) + getattr(o, f.name)
                         for f in dataclasses.fields(self)))

    def __mul__(self, k) -> "Kernels":
        return Kernels(*(getattr(self, f.name) * k for f in dataclasses.fields(self)))

    __rmul__ = __mul__


def _linear(m, n, k, system: System, plan: Plan, count=1.0) -> Kernels:
    """``count`` GEMMs ``(m x k) @ (k x n)`` with their backward, as :class:`Kernels`."""
    fwd, bwd = compute.gemm_fwd_bwd_time(m, n, k, system.gpu, plan)
    return Kernels(gemm_fwd=count * fwd, gemm_bwd=count * bwd)


def attention(model: Model, system: System, plan: Plan, d: Dims) -> Kernels:
    """Projections, flash-attention core and memory-bound kernels of one attention block."""
    h, a, tp, t = model.hidden, model.heads, plan.tp, d.tokens
    std = (_linear(t, (a + 2.0 * model.kv_heads) * model.head_dim / tp, h, system, plan)
           + _linear(t, h, a * model.head_dim / tp, system, plan))
    q_up_in = jnp.where(model.q_lora_rank > 0, model.q_lora_rank, h)
    mla = (_linear(t, jnp.maximum(model.q_lora_rank, 1.0), h, system, plan,
                   count=jnp.where(model.q_lora_rank > 0, 1.0, 0.0))
           + _linear(t, a * d.dqk / tp, q_up_in, system, plan)
           + _linear(t, model.kv_lora_rank + model.qk_rope_head_dim, h, system, plan)
           + _linear(t, a * (model.qk_nope_head_dim + model.v_head_dim) / tp,
                     jnp.maximum(model.kv_lora_rank, 1.0), system, plan)
           + _linear(t, h, a * d.dv / tp, system, plan))
    proj = jax_select(model.mla > 0, mla, std)
    core_flops = plan.micro_batch * model.seq_len * transformer.attention_core_flops_per_token(
        model) / (plan.cp * tp)
    flash_f, flash_b = compute.attention_core_time(
        core_flops, model.seq_len / plan.cp, d.dqk, system.gpu)
    mat_f, mat_b = compute.unfused_attention_time(
        plan.micro_batch * a / tp, model.seq_len / plan.cp, model.seq_len, d.dqk, d.dv,
        UNFUSED_DROPOUT, system.gpu, plan)
    selective = jnp.where(plan.recompute == 1, 1.0, 0.0)  # recompute the materialized core
    flash = plan.flash_attention
    core_fwd = flash * flash_f + (1.0 - flash) * mat_f
    core_bwd = flash * flash_b + (1.0 - flash) * (mat_b + selective * mat_f)
    elem = (ELEM_SEQ_PASSES * BF16 * h * d.tokens_sp
            + 2.0 * BF16 * (a + model.kv_heads) * d.dqk / tp * t)
    return proj + Kernels(attn_fwd=core_fwd, attn_bwd=core_bwd,
                          elem_fwd=compute.memory_time(elem, system.gpu))


def _ffn(tokens, width, split, model: Model, system: System, plan: Plan) -> Kernels:
    """A (gated) FFN of inner ``width`` split ``split`` ways, on ``tokens`` tokens."""
    n_up = (transformer.ffn_matrices(model) - 1.0) * width / split
    k = (_linear(tokens, n_up, model.hidden, system, plan)
         + _linear(tokens, model.hidden, width / split, system, plan))
    act_bytes = BF16 * (2.0 + model.gated_ffn) * width / split * tokens
    return k + Kernels(elem_fwd=compute.memory_time(act_bytes, system.gpu))


def dense_ffn(model: Model, system: System, plan: Plan, d: Dims) -> Kernels:
    """The dense FFN of one layer."""
    return _ffn(d.tokens, model.ffn_hidden, plan.tp, model, system, plan)


def capacity(model: Model):
    """Tokens computed per routed token: ``max(1, capacity_factor)`` (padding to capacity)."""
    return jnp.maximum(model.capacity_factor, 1.0)


def expert_tokens(model: Model, plan: Plan, d: Dims):
    """Tokens each local expert processes per micro-batch: ``ep etp Tm k c / E``."""
    e = jnp.maximum(model.experts, 1.0)
    return plan.ep * plan.etp * d.tokens_moe * model.top_k * capacity(model) / e


def moe_ffn(model: Model, system: System, plan: Plan, d: Dims) -> Kernels:
    """Router, routed experts (grouped GEMM), shared experts and token permutation."""
    h = model.hidden
    router = _linear(d.tokens_moe, jnp.maximum(model.experts, 1.0), h, system, plan)
    m_e = expert_tokens(model, plan, d)
    local = jnp.maximum(model.experts, 1.0) / plan.ep
    n_up = (transformer.ffn_matrices(model) - 1.0) * model.expert_ffn_hidden / plan.etp
    routed = (_linear(m_e, n_up, h, system, plan, count=local)
              + _linear(m_e, h, model.expert_ffn_hidden / plan.etp, system, plan, count=local))
    act_tokens = m_e * local
    act_bytes = BF16 * (2.0 + model.gated_ffn) * model.expert_ffn_hidden / plan.etp * act_tokens
    perm_bytes = 2.0 * 2.0 * BF16 * h * act_tokens
    shared = _ffn(d.tokens, jnp.maximum(model.shared_experts, 1e-9) * model.expert_ffn_hidden,
                  plan.tp, model, system, plan) * jnp.where(model.shared_experts > 0, 1.0, 0.0)
    return router + routed + shared + Kernels(
        elem_fwd=compute.memory_time(act_bytes + perm_bytes, system.gpu))


def output_layer(model: Model, system: System, plan: Plan, d: Dims) -> Kernels:
    """Logits GEMM and fused cross-entropy (fp32 logits read/written once each way)."""
    k = _linear(d.tokens, model.vocab / plan.tp, model.hidden, system, plan)
    ce_bytes = 6.0 * d.tokens * model.vocab / plan.tp
    return k + Kernels(elem_fwd=compute.memory_time(ce_bytes, system.gpu))


def jax_select(cond, a: Kernels, b: Kernels) -> Kernels:
    """Field-wise ``where(cond, a, b)`` of two :class:`Kernels`."""
    return Kernels(*(jnp.where(cond, getattr(a, f.name), getattr(b, f.name))
                     for f in dataclasses.fields(Kernels)))


# --------------------------------------------------------------------------- communication
def tp_collective(model: Model, system: System, plan: Plan, d: Dims, t: float) -> Comm:
    """One TP all-gather or reduce-scatter of a layer activation ``T h`` (bf16)."""
    return fabric.reduce_scatter(d.tokens * model.hidden * BF16, plan.tp, 1.0, system, t)


def tp_dense_layer(model: Model, system: System, plan: Plan, d: Dims, t: float) -> Comm:
    """Forward TP communication of a dense layer: 4 reduce-scatter-sized collectives."""
    return 4.0 * tp_collective(model, system, plan, d, t)


def tp_moe_layer(model: Model, system: System, plan: Plan, d: Dims, t: float) -> Comm:
    """Forward TP communication of an MoE layer: attention pair, shared-expert pair, and the
    expert-TP pair over ``etp`` on the dispatched tokens."""
    pairs = 1.0 + jnp.where(model.shared_experts > 0, 1.0, 0.0)
    attn = 2.0 * pairs * tp_collective(model, system, plan, d, t)
    etp_bytes = plan.etp * d.tokens_moe * model.top_k * capacity(model) * model.hidden * BF16
    return attn + 2.0 * fabric.reduce_scatter(etp_bytes, plan.etp, 1.0, system, t)


def cp_layer(model: Model, system: System, plan: Plan, d: Dims, t: float) -> Comm:
    """Forward CP ring exchange of one layer: ``cp - 1`` K/V chunk transfers."""
    w_kv = jnp.where(model.mla > 0, model.heads * (d.dqk + d.dv),
                     2.0 * model.kv_heads * model.head_dim)
    chunk = d.tokens * w_kv * BF16 / plan.tp
    cross = fabric.crosses_domain(plan.cp, plan.tp, system, t)
    return (plan.cp - 1.0) * fabric.p2p(chunk, cross, system)


def ep_moe_layer(model: Model, system: System, plan: Plan, d: Dims, t: float):
    """EP all-to-alls of one MoE layer: ``(forward, backward)`` dispatch + combine."""
    elems = d.tokens_moe * model.top_k * capacity(model) * model.hidden
    dispatch = fabric.all_to_all(elems * compute.input_bytes(plan), plan.ep, plan.etp, system, t)
    combine = fabric.all_to_all(elems * BF16, plan.ep, plan.etp, system, t)
    return dispatch + combine, 2.0 * combine
