"""The model's hierarchical EP dispatch/combine against DeepEP's published benchmark.

    python experiments/deepep_check.py

DeepEP (deepseek-ai/DeepEP, docs/legacy.md, "Normal kernels with NVLink and RDMA
forwarding"): H800 (~160 GB/s NVLink), one CX7 400 Gb/s NIC per GPU (~50 GB/s), 4096 tokens
per batch, hidden 7168, 256 experts, top-8 experts from the top-4 node groups, FP8 dispatch
and BF16 combine. It prints a "bottleneck bandwidth": for the internode rows, bytes counted
as in tests/legacy/test_internode.py, ``num_rdma_token_sent x hidden x bytes`` with
``num_rdma_token_sent`` the (token, node) pairs of distinct nodes a token goes to, its own
node included; for the intranode row the received copies ``recv_x`` (one per token and GPU
holding one of its experts). Time = those bytes / bandwidth.

The model's time is :func:`cpo_opt.model.fabric.hierarchical_dispatch_islands` (DeepEP's
configuration: one NVLink island per node; the model's dispatcher may also split a domain
into smaller islands, :func:`~cpo_opt.model.fabric.hierarchical_dispatch`) for the same tokens on
the ``h800-cluster`` preset's links (the ``deepseek-v3-2048-h800`` case's system) and its
shipped Hopper link efficiencies, with ``max_domains_per_token = 4``. The expected numbers of
distinct nodes / GPUs per token are computed exactly (below) for DeepEP's routing: pick the
top-4 of the ``n`` nodes, then 8 of the experts on them.
"""

from __future__ import annotations

import math
import pathlib
import tomllib

import cpo_opt
from cpo_opt.model import fabric
from cpo_opt.runtime import setup

CASES = pathlib.Path(cpo_opt.__file__).parent / "data" / "moe-heldout.toml"
TOKENS, HIDDEN, EXPERTS, TOP_K, GROUPS = 4096, 7168, 256, 8, 4
FP8_BYTES = 1.0 + 4.0 / 128.0   # per element, scales included (test_internode's fp8_factor)
BF16 = 2.0
# (EP, dispatch GB/s, combine GB/s) of DeepEP's legacy table (normal kernels)
DEEPEP = [(8, 153.0, 158.0), (16, 43.0, 43.0), (32, 58.0, 57.0), (64, 51.0, 50.0)]


def distinct(units: int, per_unit: int, chosen_units: int, k: int = TOP_K) -> float:
    """Expected distinct units (nodes or GPUs) holding a token's ``k`` experts, the experts
    drawn without replacement from ``chosen_units`` units of ``per_unit`` experts each."""
    pool = chosen_units * per_unit
    miss = math.comb(pool - per_unit, k) / math.comb(pool, k)
    return chosen_units * (1.0 - miss)


def rows():
    case = next(c for c in tomllib.loads(CASES.read_text())["case"]
                if c["id"] == "deepseek-v3-2048-h800")
    spec = cpo_opt.load_inputs(case["model"], case["system"])[1]
    system = spec.system
    out = []
    for ep, bw_d, bw_c in DEEPEP:
        nodes = ep // 8
        grp = fabric.place([float(ep)], [1.0], system)[0]
        limit = float(GROUPS) if nodes > GROUPS else 0.0
        t_model = {}
        for leg, width in (("dispatch", FP8_BYTES), ("combine", BF16)):
            c = fabric.hierarchical_dispatch_islands(TOKENS * HIDDEN * width, float(TOP_K),
                                                     grp, system, limit)
            t_model[leg] = float(c.time)
        if nodes == 1:  # intranode: received copies, one per (token, GPU)
            per_gpu = EXPERTS // ep
            copies = distinct(ep, per_gpu, ep)
        else:            # internode: (token, node) pairs, own node included
            per_node = EXPERTS // nodes
            copies = distinct(nodes, per_node, min(GROUPS, nodes))
        t_meas = {leg: copies * TOKENS * HIDDEN * width / (bw * 1e9)
                  for leg, width, bw in (("dispatch", FP8_BYTES, bw_d),
                                         ("combine", BF16, bw_c))}
        out.append((ep, copies, t_meas, t_model))
    return out


def main() -> None:
    setup()
    print("| EP | DeepEP copies/token | dispatch ms DeepEP | model | combine ms DeepEP | model |")
    print("|---:|---:|---:|---:|---:|---:|")
    for ep, copies, meas, model in rows():
        print(f"| {ep} | {copies:.2f} | {1e3 * meas['dispatch']:.2f} | "
              f"{1e3 * model['dispatch']:.2f} | {1e3 * meas['combine']:.2f} | "
              f"{1e3 * model['combine']:.2f} |")


if __name__ == "__main__":
    main()
