"""Time of GPU kernels: GEMMs, the flash-attention core and memory-bound kernels.

GEMM (``m x k`` times ``k x n``, one kernel):

    t_flop = 2 m n k / (eta c peak f(m) f(n) f(k)),    f(d) = d / (d + GEMM_TILE_DIM)
    t_mem  = (e (m k + k n) + o m n) / (HBM_EFF hbm_bandwidth)
    t      = (t_flop^p + t_mem^p)^(1/p) + KERNEL_OVERHEAD_S

with ``eta`` the dtype's achievable fraction (``gemm_eff_*``), ``c`` the sustained clock
fraction (``clock_fraction``), ``e`` input bytes per element (2 bf16, 1 fp8), ``o`` output bytes, ``p = ROOFLINE_P = 4``.
Efficiency therefore falls smoothly for small GEMMs (fine-grained experts split by EP run at a
fraction of peak and become weight-bandwidth bound), with no step tables (style rule 7).
Backward runs two GEMMs per forward GEMM: the input gradient (``m x n`` by ``n x k``) and the
weight gradient (``k x m`` by ``m x n``), which accumulates into fp32 main gradients
(``o = 8``: read + write 4 bytes).
"""

from __future__ import annotations

import jax.numpy as jnp

from cpo_opt.model import constants as C
from cpo_opt.model.config import Plan, System


def matmul_peak(system: System, plan: Plan):
    """Achievable tensor throughput in FLOP/s for the plan's dtype (before shape effects)."""
    gpu, k = system.gpu, system.constants
    bf16 = gpu.matmul_flops_bf16 * k.gemm_eff_bf16 * k.clock_fraction
    fp8 = gpu.matmul_flops_fp8 * k.gemm_eff_fp8 * k.clock_fraction
    return jnp.where(plan.fp8 > 0, fp8, bf16)


def input_bytes(plan: Plan):
    """Bytes per GEMM input element: 1 for fp8, 2 for bf16."""
    return jnp.where(plan.fp8 > 0, 1.0, 2.0)


def shape_factor(m, n, k):
    """Tile/wave fill of a GEMM: ``prod d / (d + GEMM_TILE_DIM)`` over its three sizes."""
    d0 = C.GEMM_TILE_DIM
    return (m / (m + d0)) * (n / (n + d0)) * (k / (k + d0))


def gemm_time(m, n, k, system: System, plan: Plan, out_bytes=2.0, launches=1.0):
    """Seconds for one ``(m x k) @ (k x n)`` GEMM on one GPU (smooth roofline).

    ``t_flop = 2 m n k / (peak f(m) f(n) f(k))`` is evaluated in the equal, division-free form
    ``2 (m + d0)(n + d0)(k + d0) / peak``; this function runs ~60 times per plan, and vector
    divisions cost several multiplications. Sizes are clamped to at least 1 so that absent
    blocks, which callers weight by 0, stay finite with finite gradients.
    """
    d0 = C.GEMM_TILE_DIM
    m, n, k = jnp.maximum(m, 1.0), jnp.maximum(n, 1.0), jnp.maximum(k, 1.0)
    t_flop = 2.0 * (m + d0) * (n + d0) * (k + d0) * (1.0 / matmul_peak(system, plan))
    nbytes = input_bytes(plan) * (m * k + k * n) + out_bytes * m * n
    t_mem = nbytes * (1.0 / (system.constants.hbm_eff * system.gpu.hbm_bandwidth))
    return roofline(t_flop, t_mem) + launches * system.constants.kernel_overhead_s


def roofline(t_flop, t_mem):
    """Smooth roofline ``(t_flop^4 + t_mem^4)^(1/4)`` (``ROOFLINE_P = 4``), computed as
    ``t_max (1 + r^4)^(1/4)`` with ``r = t_min / t_max`` (in range, one division)."""
    tmax = jnp.maximum(t_flop, t_mem)
    r = jnp.minimum(t_flop, t_mem) / tmax
    r2 = r * r
    return tmax * jnp.sqrt(jnp.sqrt(1.0 + r2 * r2))


def gemm_fwd_bwd_time(m, n, k, system: System, plan: Plan, launches=1.0):
    """Forward and backward seconds of one linear layer applied to ``m`` tokens.

    Returns ``(t_fwd, t_bwd)`` with ``t_bwd`` = input-gradient GEMM + weight-gradient GEMM;
    ``launches`` kernel overheads per GEMM (see :func:`gemm_time`).
    """
    fwd = gemm_time(m, n, k, system, plan, launches=launches)
    dgrad = gemm_time(m, k, n, system, plan, launches=launches)
    wgrad = gemm_time(k, n, m, system, plan, out_bytes=8.0, launches=launches)
    return fwd, dgrad + wgrad


FP8_CAST_BYTES_PER_ELEMENT = 4.0
"""HBM bytes per element of one fp8 quantisation kernel: read 2 (bf16), write 1 row-wise and
1 column-wise (transposed) fp8 copy, as Transformer Engine's fused cast-transpose does for
each linear layer's input (forward) and output gradient (backward); per-tensor delayed,
blockwise and MXFP8 scaling alike (the scale/amax traffic is ~1% of it)."""


def fp8_cast_time(m, n, k, system: System, plan: Plan, launches=1.0):
    """``(forward, backward)`` seconds of the fp8 quantisation kernels around one linear
    layer of ``m`` tokens (``k`` in, ``n`` out) in fp8 plans, 0 in bf16: the input
    ``m x k`` before the forward GEMM, the output gradient ``m x n`` before the two backward
    GEMMs. Weights are quantised once per step, not per micro-batch (not counted)."""
    fp8 = jnp.where(plan.fp8 > 0, 1.0, 0.0)
    ovh = launches * system.constants.kernel_overhead_s
    fwd = memory_time(FP8_CAST_BYTES_PER_ELEMENT * m * k, system)
    bwd = memory_time(FP8_CAST_BYTES_PER_ELEMENT * m * n, system)
    return fp8 * (fwd + ovh), fp8 * (bwd + ovh)


ATTN_REF_HEAD_DIM = 128.0
"""Head dimension at which ``ATTN_EFF_FWD`` / ``ATTN_EFF_BWD`` are quoted."""


def attention_core_time(flops_fwd, q_tokens, head_dim, system: System):
    """Forward and backward seconds of the flash-attention core.

    ``t_fwd = F / (ATTN_EFF_FWD c peak_bf16 f(q_tokens) f(head_dim) / f(128))`` and
    ``t_bwd = ATTN_BWD_FLOP_RATIO F / (ATTN_EFF_BWD ...)``, ``c`` the sustained clock
    fraction: the attention core runs in bf16 (fp8 attention is not assumed) and its
    efficiency falls for short query blocks and small heads like a GEMM's. ``ATTN_EFF_*`` are
    quoted at head dimension 128 (FlashAttention-2/3 benchmarks), so the head-dimension fill is
    taken relative to 128: a 128-wide head runs at ``ATTN_EFF_*``, a 64-wide one at 0.79 of it,
    a 192-wide (MLA) one at 1.10 of it.
    """
    d0 = C.GEMM_TILE_DIM
    ref = ATTN_REF_HEAD_DIM / (ATTN_REF_HEAD_DIM + d0)
    fill = (q_tokens / (q_tokens + d0)) * (head_dim / (head_dim + d0)) / ref
    k = system.constants
    peak = system.gpu.matmul_flops_bf16 * k.clock_fraction * fill
    fwd = flops_fwd / (k.attn_eff_fwd * peak) + k.kernel_overhead_s
    bwd = C.ATTN_BWD_FLOP_RATIO * flops_fwd / (k.attn_eff_bwd * peak) + k.kernel_overhead_s
    return fwd, bwd


def memory_time(nbytes, system: System):
    """Seconds to stream ``nbytes`` through HBM (memory-bound kernels)."""
    return nbytes * (1.0 / (system.constants.hbm_eff * system.gpu.hbm_bandwidth))
