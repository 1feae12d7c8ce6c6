"""Fit and check the tiled GEMM model against published GEMM timings.

    python experiments/gemm_shape_fit.py           # fit, print the table and the constants
    python experiments/gemm_shape_fit.py --check   # no fit: the shipped constants' errors

The model is :func:`cpo_opt.model.compute.gemm_time` itself (tile and wave quantization over
the SMs, a fixed time per output tile, the dtype's main-loop fraction of peak; its module
docstring). The rows are ``cpo_opt/data/gemm-benchmarks.toml``: OpenXLA's sm_90 (H100) and
sm_100 (B200) bf16 matmul tables and DeepGEMM's H800 FP8 table. Fitted: one tile overhead for
every GPU and dtype (``gemm_tile_overhead_s``) and the main-loop fraction of each (GPU
generation, dtype) the table covers (Hopper bf16, Blackwell bf16, Hopper fp8); everything
else (SM counts, peaks, HBM bandwidth, the 4 us kernel overhead) is the shipped value. XLA's
timings include one kernel launch; DeepGEMM's are kernel time (no launch counted). The
clock fraction is 1: these are short benchmarks at the boost clock.

Also printed: the Blackwell MXFP8 check (NVIDIA's GB200 guide: 2,672 TFLOP/s for the grouped
GEMM at K = 7168, N = 2048 with 8192 tokens per expert, which sets ``gemm_eff_fp8`` for
Blackwell) and the leave-one-out error of each row.
"""

from __future__ import annotations

import argparse
import pathlib
import tomllib

import jax
import numpy as np
from scipy.optimize import least_squares

import cpo_opt
from cpo_opt.inputs.loaders import load_system
from cpo_opt.model import compute
from cpo_opt.model.config import Plan, replace
from cpo_opt.runtime import setup

DATA = pathlib.Path(cpo_opt.__file__).parent / "data" / "gemm-benchmarks.toml"
SYSTEMS = {"H100-SXM": "dgx-h100", "H800-SXM": "h800-cluster", "B200": "hgx-b200",
           "GB200": "gb200-nvl72"}
KEYS = (("hopper", "bf16"), ("blackwell", "bf16"), ("hopper", "fp8"))


def rows():
    return tomllib.loads(DATA.read_text())["gemm"]


def plan(fp8: bool) -> Plan:
    z = 0.0
    return Plan(tp=1.0, pp=1.0, cp=1.0, ep=1.0, etp=1.0, vpp=1.0, micro_batch=1.0,
                global_batch=1.0, sequence_parallel=z, recompute=z, zero=z,
                fp8=1.0 if fp8 else 0.0, overlap_tp=z, overlap_ep=z, overlap_p2p=z,
                overlap_dp=z, flash_attention=1.0)


def key_of(r) -> tuple[str, str]:
    gen = "blackwell" if r["gpu"] in ("B200", "GB200") else "hopper"
    return gen, r["dtype"]


def predicted_tflops(r, tile_s: float, eff: dict, system_cache: dict) -> float:
    """TFLOP/s of one row by the shipped model with these constants."""
    if r["gpu"] not in system_cache:
        system_cache[r["gpu"]] = load_system(SYSTEMS[r["gpu"]]).system
    sysm = system_cache[r["gpu"]]
    gen, dtype = key_of(r)
    k = sysm.constants
    name = "gemm_eff_fp8" if dtype == "fp8" else "gemm_eff_bf16"
    k = replace(k, gemm_tile_overhead_s=tile_s, clock_fraction=1.0,
                **{name: eff.get((gen, dtype), float(getattr(k, name)))})
    xla = r["source"].startswith("OpenXLA")
    t = compute.gemm_time(float(r["m"]), float(r["n"]), float(r["k"]), replace(sysm, constants=k),
                          plan(dtype == "fp8"), launches=1.0 if xla else 0.0,
                          groups=float(r.get("groups", 1)))
    return 2.0 * r["m"] * r["n"] * r["k"] * r.get("groups", 1) / float(t) / 1e12


def fit(data, cache):
    def resid(p):
        eff = dict(zip(KEYS, p[1:]))
        return np.array([np.log(predicted_tflops(r, p[0] * 1e-6, eff, cache) / r["tflops"])
                         for r in data])
    res = least_squares(resid, [1.2, 0.8, 0.66, 0.72],
                        bounds=([0.0, 0.2, 0.2, 0.2], [10.0, 1.0, 1.0, 1.0]))
    return res.x[0] * 1e-6, dict(zip(KEYS, res.x[1:]))


def mxfp8_check(tile_s: float, eff_fp8: float, cache) -> float:
    """The GB200 guide's grouped MXFP8 GEMM (K 7168, N 2048, 8192 tokens per expert)."""
    r = {"gpu": "GB200", "dtype": "fp8", "m": 8192, "n": 2048, "k": 7168, "groups": 8,
         "source": "guide"}
    return predicted_tflops(r, tile_s, {("blackwell", "fp8"): eff_fp8}, cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="use the shipped constants, no fit")
    ap.add_argument("--no-loo", action="store_true", help="skip leave-one-out")
    args = ap.parse_args()
    setup()
    jax.config.update("jax_platform_name", "cpu")
    data, cache = rows(), {}
    if args.check:
        from cpo_opt.model.constants import constants_for
        tile_s = float(constants_for("H100-SXM").gemm_tile_overhead_s)
        eff = {("hopper", "bf16"): float(constants_for("H100-SXM").gemm_eff_bf16),
               ("hopper", "fp8"): float(constants_for("H100-SXM").gemm_eff_fp8),
               ("blackwell", "bf16"): float(constants_for("B200").gemm_eff_bf16)}
    else:
        tile_s, eff = fit(data, cache)
    print(f"gemm_tile_overhead_s = {tile_s:.4g} s; main-loop fractions: "
          + ", ".join(f"{g} {d} {v:.3f}" for (g, d), v in eff.items()))
    loo = {}
    if not args.no_loo and not args.check:
        for i in range(len(data)):
            t_i, e_i = fit(data[:i] + data[i + 1:], cache)
            loo[i] = predicted_tflops(data[i], t_i, e_i, cache) / data[i]["tflops"] - 1.0
    print("\n| GPU | dtype | m | n | k | groups | measured TFLOP/s | model | error | "
          "leave-one-out |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    errs = []
    for i, r in enumerate(data):
        p = predicted_tflops(r, tile_s, eff, cache)
        e = p / r["tflops"] - 1.0
        errs.append(e)
        lo = f"{100 * loo[i]:+.0f}%" if i in loo else ""
        print(f"| {r['gpu']} | {r['dtype']} | {r['m']} | {r['n']} | {r['k']} | "
              f"{r.get('groups', 1)} | {r['tflops']:.0f} | {p:.0f} | {100 * e:+.0f}% | {lo} |")
    a = np.abs(errs)
    print(f"\n{len(a)} rows: median |error| {100 * np.median(a):.1f}%, max {100 * a.max():.1f}%"
          + (f"; leave-one-out median {100 * np.median(np.abs(list(loo.values()))):.1f}%, "
             f"max {100 * np.max(np.abs(list(loo.values()))):.1f}%" if loo else ""))
    # Blackwell MXFP8: the eta that reproduces the guide's 2,672 TFLOP/s
    target = 2672.0
    lo_, hi_ = 0.3, 1.0
    for _ in range(40):
        mid = 0.5 * (lo_ + hi_)
        lo_, hi_ = (mid, hi_) if mxfp8_check(tile_s, mid, cache) < target else (lo_, mid)
    print(f"Blackwell MXFP8 (GB200 guide, 2,672 TFLOP/s at K 7168, N 2048): gemm_eff_fp8 = "
          f"{0.5 * (lo_ + hi_):.3f}")


if __name__ == "__main__":
    main()
