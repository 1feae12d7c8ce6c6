"""Shapes of the transformer: parameter counts and model FLOPs per token.

All functions are pure arithmetic on :class:`~cpo_opt.model.config.Model` leaves and work on floats,
numpy and JAX arrays alike. Biases and position embeddings are not counted (under 0.1% of any
model here). Conventions:

* ``d_qk``/``d_v``: per-head query/key and value dimensions (``head_dim`` without MLA,
  ``qk_nope + qk_rope`` and ``v_head_dim`` with MLA).
* A gated FFN (SwiGLU) has 3 matrices ``h x f``; an ungated one (GPT) has 2.
* Causal attention: a token at position ``i`` attends to ``i`` keys, ``s/2`` on average.

Functions whose shape depends on a block (MLA, a low-rank query, MoE layers) take
``structure=`` (:class:`~cpo_opt.model.structure.Structure`, static; default: read from the
model's concrete leaves, :func:`~cpo_opt.model.structure.resolve`).
"""

from __future__ import annotations

from cpo_opt.model.config import Model
from cpo_opt.model.structure import Structure, resolve
from cpo_opt.model.switch import branch


def ffn_matrices(m: Model):
    """Matrices of one FFN or expert: 3 when gated (SwiGLU), else 2."""
    return 2.0 + m.gated_ffn


def qk_dim(m: Model, structure: Structure | None = None):
    """Per-head query/key dimension."""
    return branch(resolve(structure, m).mla, m.mla > 0,
                  lambda: m.qk_nope_head_dim + m.qk_rope_head_dim,
                  lambda: m.head_dim)


def v_dim(m: Model, structure: Structure | None = None):
    """Per-head value dimension."""
    return branch(resolve(structure, m).mla, m.mla > 0, lambda: m.v_head_dim, lambda: m.head_dim)


def attention_norm_params(m: Model, structure: Structure | None = None):
    """Norm weights inside one attention block (MLA's two latent norms; none otherwise)."""
    return branch(resolve(structure, m).mla, m.mla > 0,
                  lambda: m.q_lora_rank + m.kv_lora_rank, lambda: 0.0)


def attention_params(m: Model, structure: Structure | None = None):
    """Weights of one attention block (projections only).

    Standard/GQA: ``h (heads + 2 kv_heads) d + heads d h``.
    MLA (DeepSeek-V2/V3, arXiv 2405.04434 sec. 2.1): query down/up projection
    ``h r_q + r_q heads d_qk`` (or ``h heads d_qk`` when ``r_q = 0``), joint key-value
    down-projection with the shared RoPE key ``h (r_kv + d_rope)``, key/value up-projection
    ``r_kv heads (d_nope + d_v)``, output ``heads d_v h``, plus the two latent norms.
    """
    h, a = m.hidden, m.heads
    s = resolve(structure, m)

    def std():
        return h * (a + 2.0 * m.kv_heads) * m.head_dim + a * m.head_dim * h

    def mla():
        dqk = m.qk_nope_head_dim + m.qk_rope_head_dim
        q = branch(s.q_lora, m.q_lora_rank > 0, lambda: h * m.q_lora_rank + m.q_lora_rank * a * dqk,
                   lambda: h * a * dqk)
        kv = h * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank * a * (
            m.qk_nope_head_dim + m.v_head_dim)
        return q + kv + a * m.v_head_dim * h + m.q_lora_rank + m.kv_lora_rank

    return branch(s.mla, m.mla > 0, mla, std)


def dense_ffn_params(m: Model):
    """Weights of one dense FFN: ``n_mat h f``."""
    return ffn_matrices(m) * m.hidden * m.ffn_hidden


def expert_params(m: Model):
    """Weights of one routed or shared expert: ``n_mat h f_e``."""
    return ffn_matrices(m) * m.hidden * m.expert_ffn_hidden


def router_params(m: Model):
    """Router weights of one MoE layer: ``h E``."""
    return m.hidden * m.experts


def moe_layers(m: Model, structure: Structure | None = None):
    """Number of layers with an MoE FFN (0 for a dense model)."""
    return branch(resolve(structure, m).moe, m.experts > 0,
                  lambda: m.layers - m.dense_layers, lambda: 0.0)


def dense_layers(m: Model, structure: Structure | None = None):
    """Number of layers with a dense FFN."""
    return m.layers - moe_layers(m, structure)


def embedding_params(m: Model):
    """Input embedding plus output projection (one matrix when tied)."""
    return m.vocab * m.hidden * (2.0 - m.tied_embeddings)


def moe_ffn_params(m: Model, experts):
    """Weights of one MoE FFN with ``experts`` routed experts counted (all or top_k)."""
    return (experts + m.shared_experts) * expert_params(m) + router_params(m)


def param_counts(m: Model, structure: Structure | None = None):
    """``(total, active)`` parameters.

    total = L (attn + 2h) + L_dense n h f + L_moe ((E + S) n h f_e + h E) + V h (2 - tied) + h

    Active parameters are those a token runs through: ``top_k`` routed experts per MoE layer,
    and not the untied input embedding (a lookup touches one row). This is the convention of
    "37B activated" for DeepSeek-V3 and makes model FLOPs about ``6 x active``.
    """
    s = resolve(structure, m)
    per_layer = attention_params(m, s) + 2.0 * m.hidden
    common = m.layers * per_layer + dense_layers(m, s) * dense_ffn_params(m)
    common = common + embedding_params(m) + m.hidden
    total = common + moe_layers(m, s) * moe_ffn_params(m, m.experts)
    active = common + moe_layers(m, s) * moe_ffn_params(m, m.top_k)
    active = active - m.vocab * m.hidden * (1.0 - m.tied_embeddings)
    return total, active


def attention_core_flops_per_token(m: Model, structure: Structure | None = None):
    """Forward FLOPs of the attention core (scores and value mix) per token per layer.

    ``2 (s/2) heads (d_qk + d_v)``: causal, each token attends to ``s/2`` keys on average.
    """
    s = resolve(structure, m)
    return m.seq_len * m.heads * (qk_dim(m, s) + v_dim(m, s))


def forward_flops_per_token(m: Model, structure: Structure | None = None):
    """Model FLOPs of one forward pass per token: ``2 x`` active matmul weights + attention.

    Counts every GEMM (projections, FFN/experts, router, output logits; the input embedding
    is a lookup) and the causal attention core. Backward is twice this.
    """
    s = resolve(structure, m)
    per_layer = 2.0 * (attention_params(m, s) - attention_norm_params(m, s))
    per_layer = per_layer + attention_core_flops_per_token(m, s)
    matmul = m.layers * per_layer
    matmul = matmul + dense_layers(m, s) * 2.0 * dense_ffn_params(m)
    matmul = matmul + moe_layers(m, s) * 2.0 * moe_ffn_params(m, m.top_k)
    return matmul + 2.0 * m.vocab * m.hidden


def flops_per_token(m: Model, structure: Structure | None = None):
    """Model FLOPs of forward plus backward per token, without recompute: ``3 x`` forward."""
    return 3.0 * forward_flops_per_token(m, structure)
