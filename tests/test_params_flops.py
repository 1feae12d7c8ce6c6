"""Parameter counts and model FLOPs per token against published figures and hand formulas."""

from __future__ import annotations

import pytest

from cpo_opt.model import transformer
from cpo_opt.model.config import replace
from cpo_opt.inputs.loaders import load_model


def _counts(name):
    total, active = transformer.param_counts(load_model(name).model)
    return float(total), float(active)


def _rel(a, b):
    return abs(a - b) / abs(b)


# --------------------------------------------------------------------------- published totals
@pytest.mark.parametrize("name, published, tol", [
    ("deepseek-v3", 671e9, 0.01),        # DeepSeek-V3 report: 671B total (MTP module excluded)
    ("llama3-405b", 405e9, 0.01),        # Llama 3 herd paper: 405B
    ("gpt3-175b", 175e9, 0.01),          # Brown et al. 2020: 175B (tied embeddings)
    ("megatron-1t", 1008e9, 0.01),       # Narayanan et al. 2021 Table 1: 1008.0B
    ("mixtral-8x22b", 141e9, 0.02),      # Mistral: 141B total
    ("qwen3-235b-a22b", 235e9, 0.01),    # Qwen3: 235B total
])
def test_total_params_match_published(name, published, tol):
    total, _ = _counts(name)
    assert _rel(total, published) < tol, (name, total / 1e9)


def test_mixtral_active_params_match_published():
    _, active = _counts("mixtral-8x22b")
    assert _rel(active, 39e9) < 0.02, active / 1e9


def test_dense_model_active_equals_total_when_tied():
    # tied GPT: every weight is touched by every token (the one embedding matrix is the head)
    for name in ("gpt3-175b", "megatron-1t"):
        total, active = _counts(name)
        assert total == active


def test_untied_dense_active_excludes_input_embedding():
    m = load_model("llama3-405b").model
    total, active = transformer.param_counts(m)
    assert float(total - active) == 128256 * 16384


# --------------------------------------------------------------------------- DeepSeek-V3 by hand
def _deepseek_v3_by_hand():
    """DeepSeek-V3 from the official config.json numbers, in exact integers."""
    L, dense_l, h, a = 61, 3, 7168, 128
    rq, rkv, nope, rope, dv = 1536, 512, 128, 64, 128
    f_dense, E, k, S, f_e, V = 18432, 256, 8, 1, 2048, 129280
    attn = (h * rq + rq * a * (nope + rope)          # q down + q up
            + h * (rkv + rope)                       # joint kv down + shared rope key
            + rkv * a * (nope + dv)                  # k/v up
            + a * dv * h                             # output projection
            + rq + rkv)                              # q/kv latent RMSNorms
    norms = 2 * h                                    # pre-attention and pre-FFN RMSNorm
    dense_ffn = 3 * h * f_dense                      # SwiGLU: gate, up, down
    expert = 3 * h * f_e
    router = h * E
    moe_l = L - dense_l
    common = L * (attn + norms) + dense_l * dense_ffn + h   # + final norm
    total = common + moe_l * ((E + S) * expert + router) + 2 * V * h
    active = common + moe_l * ((k + S) * expert + router) + V * h  # head only, no input lookup
    return total, active


def test_deepseek_v3_counts_equal_hand_computation():
    total, active = _counts("deepseek-v3")
    h_total, h_active = _deepseek_v3_by_hand()
    assert _rel(total, h_total) < 1e-9, (total, h_total)
    assert _rel(active, h_active) < 1e-9, (active, h_active)


def test_deepseek_v3_matches_published_671b_total_37b_activated():
    total, active = _counts("deepseek-v3")
    assert _rel(total, 671e9) < 0.01, total / 1e9
    assert round(active / 1e9) == 37, active / 1e9


# --------------------------------------------------------------------------- FLOPs
def _gpt_closed_form(L, h, s, V):
    """Narayanan et al. 2021 with causal attention: 3 x (24 L h^2 + 2 L h s + 2 V h)."""
    return 72 * L * h ** 2 + 6 * L * h * s + 6 * V * h


@pytest.mark.parametrize("name", ["gpt3-175b", "megatron-1t"])
@pytest.mark.parametrize("tied", [1.0, 0.0])
def test_gpt_flops_match_narayanan_closed_form(name, tied):
    m = replace(load_model(name).model, tied_embeddings=tied)
    assert m.gated_ffn == 0 and m.heads == m.kv_heads and m.ffn_hidden == 4 * m.hidden
    expected = _gpt_closed_form(m.layers, m.hidden, m.seq_len, m.vocab)
    got = float(transformer.flops_per_token(m))
    assert _rel(got, expected) < 1e-3, (got, expected)


def _norm_params(m):
    """Norm weights (no GEMM FLOPs): 2 per layer, the final norm, MLA's two latent norms."""
    return m.layers * 2 * m.hidden + m.hidden + m.mla * m.layers * (m.q_lora_rank + m.kv_lora_rank)


def _attention_core(m):
    return 3 * m.layers * m.seq_len * m.heads * (float(transformer.qk_dim(m))
                                                 + float(transformer.v_dim(m)))


# Regression: MLA's latent norm weights used to be counted as GEMM FLOPs (+3.0e-6 for V3).
@pytest.mark.parametrize("name", ["deepseek-v3", "llama3-405b", "mixtral-8x22b", "gpt3-175b"])
def test_flops_are_six_active_gemm_weights_plus_causal_attention_core(name):
    """flops_per_token == 6 x (active GEMM weights) + causal attention core, exactly.

    ``active`` counts the norm weights too (as published parameter counts do), but norms run no
    GEMM, so the exact identity subtracts them; with them it holds to ~2e-5 (the norm share).
    """
    m = load_model(name).model
    _, active = transformer.param_counts(m)
    fpt = float(transformer.flops_per_token(m))
    core = _attention_core(m)
    exact = 6 * (float(active) - _norm_params(m)) + core
    assert _rel(fpt, exact) < 1e-9, (fpt, exact)


@pytest.mark.parametrize("name", ["deepseek-v3", "llama3-405b", "mixtral-8x22b", "gpt3-175b"])
def test_flops_are_about_six_active_plus_causal_attention_core(name):
    """The brief's identity ``6 active + 3 L s a (d_qk + d_v)`` holds to the norm share (~2e-5),
    not to 1e-9: ``active`` includes norm weights, which run no GEMM."""
    m = load_model(name).model
    _, active = transformer.param_counts(m)
    fpt = float(transformer.flops_per_token(m))
    approx = 6 * float(active) + _attention_core(m)
    assert 0 < approx - fpt and _rel(fpt, approx) < 1e-4, (fpt, approx)


def test_deepseek_v3_flops_per_token_value():
    # 6 x hand-counted active GEMM weights + 3 L s a (d_qk + d_v) causal core
    _, h_active = _deepseek_v3_by_hand()
    norms = 61 * 2 * 7168 + 7168 + 61 * (1536 + 512)
    expected = 6 * (h_active - norms) + 3 * 61 * 4096 * 128 * (192 + 128)
    got = float(transformer.flops_per_token(load_model("deepseek-v3").model))
    assert _rel(got, expected) < 1e-12, (got, expected)
