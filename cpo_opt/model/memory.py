"""HBM use per GPU on the most loaded pipeline rank, bytes.

Model state (mixed-precision Adam, Megatron-LM): bf16 weights (2 bytes/param; fp8 plans keep
an extra 1-byte fp8 copy), fp32 main gradients (4), fp32 master weights + Adam moments (12).
ZeRO shards over the data-parallel group of each parameter (``dp cp`` ranks for dense
weights, ``edp`` for experts): stage 1 the optimizer states, 2 also gradients, 3 also weights.

Activations per layer per micro-batch follow Korthikanti et al. 2022 (sec. 4, eq. 1-2),
generalised to GQA/MLA, gated FFNs and experts, with flash attention (no ``s^2`` term; the
softmax statistics, 4 bytes per head and token, are kept instead). Per token, bf16:

* attention: norm input and QKV input ``4h`` (split by ``tp`` under SP), Q, K, V and the
  attention output ``2 (a d_qk + kv d_qk + kv d_v + a d_v) / tp``, MLA latents
  ``2 (r_q + r_kv + d_rope)``.
* dense FFN: norm input and FC1 input ``4h`` (SP-split), FC1 output and activation output
  ``2 n f / tp`` (``n`` = 3 gated, 2 not).
* MoE FFN: norm and router input ``4h`` (SP-split), per routed token copy
  ``2 (2h + n f_e / etp)`` (expert input, FC1 output, activation output, combine buffer),
  shared experts like a dense FFN of width ``S f_e``.
* ``recompute = "full"`` keeps only the layer input ``2h`` (SP-split) plus one layer's
  working set during its recomputation; ``"selective"`` equals ``"none"`` under flash
  attention (the attention core already recomputes in its backward); with materialized
  attention ``"none"`` also keeps ``5 a s^2 b / tp`` bytes of scores, mask and dropout output.

Pipelining (1F1B): the first rank holds ``min(microbatches, pp)`` micro-batches in flight;
interleaving multiplies this by ``1 + (pp - 1) / (pp vpp)`` (Korthikanti et al. sec. 4.2.3).
The last rank holds fp32 + bf16 logits for one micro-batch (6 bytes per token and vocab/tp).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from cpo_opt.model import layer_costs
from cpo_opt.model import smooth
from cpo_opt.model import transformer
from cpo_opt.model.config import Model, Plan, System
from cpo_opt.model.dims import Dims

BF16 = 2.0


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Memory:
    """HBM bytes per GPU, by kind."""

    weights: object
    gradients: object
    optimizer: object
    activations: object
    reserved: object
    total: object


def local_params(model: Model, plan: Plan, d: Dims):
    """``(dense, expert)`` parameters held by the most loaded rank (first pipeline stage)."""
    h = model.hidden
    emb = model.vocab * h / plan.tp * jnp.where(plan.pp > 1, 1.0, 2.0 - model.tied_embeddings)
    shared = model.shared_experts * transformer.expert_params(model) / plan.tp
    dense = (d.layers_rank * (transformer.attention_params(model) / plan.tp + 2.0 * h)
             + d.dense_rank * transformer.dense_ffn_params(model) / plan.tp
             + d.moe_rank * (shared + transformer.router_params(model)) + emb)
    experts = (d.moe_rank * model.experts / plan.ep
               * transformer.expert_params(model) / plan.etp)
    return dense, experts


def _zero_div(stage, group, zero):
    """Divisor of a state that ZeRO shards from ``stage`` on: ``group`` if zero >= stage."""
    return jnp.where(zero >= stage, group, 1.0)


def model_state(model: Model, plan: Plan, d: Dims):
    """``(weights, gradients, optimizer)`` bytes of the most loaded rank."""
    dense, experts = local_params(model, plan, d)
    g_dense, g_exp, z = d.dp * plan.cp, d.edp, plan.zero

    def sharded(stage):
        return dense / _zero_div(stage, g_dense, z) + experts / _zero_div(stage, g_exp, z)

    weights = (BF16 + plan.fp8) * sharded(3)
    grads = 4.0 * sharded(2)
    opt = 12.0 * sharded(1)
    return weights, grads, opt


def layer_activations(model: Model, plan: Plan, d: Dims):
    """``(dense_layer, moe_layer)`` activation bytes of one layer and micro-batch."""
    h, a, kv, tp = model.hidden, model.heads, model.kv_heads, plan.tp
    seq = 4.0 * h * d.tokens_sp
    heads = BF16 * (a * d.dqk + kv * d.dqk + kv * d.dv + a * d.dv) / tp + 4.0 * a / tp
    latents = BF16 * (model.q_lora_rank + model.kv_lora_rank + model.qk_rope_head_dim)
    attn = seq + d.tokens * (heads + model.mla * latents)
    # materialized attention keeps softmax output, dropout mask and output: 5 a s^2 b / tp
    # bytes, unless selective recompute drops them (Korthikanti et al. 2022, eq. 1-2)
    keep = (1.0 - plan.flash_attention) * jnp.where(plan.recompute == 0, 1.0, 0.0)
    attn = attn + keep * 5.0 * a / tp * d.tokens * model.seq_len
    n = transformer.ffn_matrices(model)
    dense_ffn = seq + d.tokens * BF16 * n * model.ffn_hidden / tp
    routed = (layer_costs.expert_tokens(model, plan, d) * model.experts / plan.ep
              * BF16 * (2.0 * h + n * model.expert_ffn_hidden / plan.etp))
    shared = d.tokens * BF16 * n * model.shared_experts * model.expert_ffn_hidden / tp
    moe_ffn = seq + routed + shared
    return attn + dense_ffn, attn + moe_ffn


def activations(model: Model, plan: Plan, d: Dims, temperature: float = 0.0):
    """Activation bytes of the most loaded rank (see module docstring)."""
    a_dense, a_moe = layer_activations(model, plan, d)
    per_mb = d.dense_rank * a_dense + d.moe_rank * a_moe
    full_input = BF16 * model.hidden * d.tokens_sp
    working = jnp.maximum(a_dense, jnp.where(d.moe_rank > 0, a_moe, 0.0))
    per_mb = jnp.where(plan.recompute >= 2, d.layers_rank * full_input + 0.0, per_mb)
    extra = jnp.where(plan.recompute >= 2, working, 0.0)
    interleave = jnp.where(plan.vpp > 1, 1.0 + (plan.pp - 1.0) / (plan.pp * plan.vpp), 1.0)
    in_flight = smooth.smin(d.microbatches, plan.pp, temperature) * interleave
    embed_out = BF16 * model.hidden * d.tokens_sp
    first = in_flight * (per_mb + embed_out)
    logits = 6.0 * d.tokens * model.vocab / plan.tp
    last = per_mb + logits
    staged = jnp.where(plan.pp > 1, smooth.smax(first, last, temperature), first + logits)
    a2a = 2.0 * BF16 * d.tokens_moe * model.top_k * layer_costs.capacity(model) * model.hidden
    transient = BF16 * d.tokens * model.hidden + d.is_moe * a2a
    return staged + extra + transient


def memory(model: Model, system: System, plan: Plan, d: Dims,
           temperature: float = 0.0) -> Memory:
    """HBM bytes per GPU on the most loaded rank."""
    w, g, o = model_state(model, plan, d)
    act = activations(model, plan, d, temperature)
    reserved = system.constants.reserved_bytes + 0.0 * system.gpu.hbm_bytes
    return Memory(w, g, o, act, reserved, w + g + o + act + reserved)
