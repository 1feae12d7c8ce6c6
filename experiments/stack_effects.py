"""What each software-stack choice does to the study's speedups (issue 20, item 6).

For every config, both fabrics are re-searched on the default stack and on variants of it that
take one choice away (EP overlap off, an even pipeline split, contiguous placement only, Megatron's
all-to-all dispatcher, no CUDA graphs), on the plain Megatron stack, and with the per-layer
host-device sync removed from the constants; each variant's own optimum on each fabric, so the
table shows which assumptions carry the headline. Each row is a full headline search (both
fabrics, four configs); the study's quick mode sets the effort.

    python experiments/stack_effects.py [--configs config1 config4] [--mode quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

from cpo_opt.inputs.constants_file import as_table
from cpo_opt.inputs.stacks import DEFAULT_STACK, load_stack
from cpo_opt.runtime import setup
from cpo_opt.study import load_study
from cpo_opt.study.headline import optimum, speedup


def variant(change: dict | None = None, drop: tuple[str, ...] = ()) -> dict:
    """The default stack as a document with ``change`` applied to its options and ``drop``
    removed from what a search may choose."""
    st = load_stack(DEFAULT_STACK)
    options = {k: {"value": v, "source": st.sources.get(k, "")} for k, v in st.options.items()}
    for k, v in (change or {}).items():
        options[k] = {"value": v, "source": "experiments/stack_effects.py variant"}
    return {"about": {"description": f"{DEFAULT_STACK} with {change or {}} (not {drop})"},
            "options": options,
            "search": {"choose": [c for c in st.choose if c not in drop]}}


VARIANTS = [
    ("default stack (megatron-core-tuned)", None, None),
    ("no EP all-to-all overlap", variant({"overlap_ep": False}, ("overlap_ep",)), None),
    ("even pipeline split", variant({"pipeline_layout": "even"}, ("pipeline_layout",)), None),
    ("contiguous placement only", variant({"placement": "contiguous"}, ("placement",)), None),
    ("Megatron all-to-all dispatcher", variant({"dispatcher": "alltoall"}, ("dispatcher",)),
     None),
    ("no CUDA graphs", variant({"cuda_graphs": False}, ("cuda_graphs",)), None),
    ("plain Megatron stack (megatron-defaults)", "megatron-defaults", None),
    ("no host-device sync per MoE layer", None, {"*": {"host_sync_s": 1e-12}}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", nargs="+", default=["config1", "config2", "config3", "config4"])
    ap.add_argument("--mode", default="quick", choices=("quick", "tiny", "full"))
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args()
    setup()
    rows = []
    print("| variant | " + " | ".join(args.configs) + " |")
    print("|---|" + "---:|" * len(args.configs))
    for name, stack, table in VARIANTS:
        t0 = time.perf_counter()
        study = load_study(args.mode, constants=as_table(table) if table else None,
                           stack=load_stack(stack) if stack is not None else None)
        cells, row = [], {"variant": name, "configs": {}}
        for c in args.configs:
            opts = {f: optimum(study, c, f) for f in ("copper", "passage")}
            s = speedup(opts["copper"], opts["passage"])
            row["configs"][c] = {"speedup": s, **{f: {"plan": o["plan"],
                                                      "days": o["time_to_train_days"]}
                                                  for f, o in opts.items()}}
            cells.append("n/a" if s is None else f"{s:.2f}x")
        row["wall_s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1, default=str)


if __name__ == "__main__":
    main()
