"""What it takes to reach the paper's 2.7x: Config4 under alternative fabric assumptions.

Each variant changes some fields of the copper and/or Passage study presets and finds each
fabric's best plan by exhaustive search (ground truth), then prints the times to train and
the speedup. One variant runs copper on 64 of each rack's 72 GPUs (rack-aligned power-of-two
groups, 8 spares per rack: 16,384 working GPUs); its batch is rounded down to a power of two
of sequences (data parallelism must divide it), so its time to train uses its own tokens per
step.

    python experiments/why_not_2_7x.py [--config config4]
"""

import argparse

from cpo_opt.runtime import enable_compile_cache
from cpo_opt.inputs.loaders import load_model, load_system
from cpo_opt.search import exhaustive_search, make_space
from cpo_opt.study import load_study

SPARES = {"scale_up.domain_size": "64", "cluster.gpus": "16384"}
VARIANTS = [  # (name, copper overrides, Passage overrides)
    ("study presets", {}, {}),
    ("Passage 12.8 Tbps read per direction (1600 GB/s)", {},
     {"scale_up.bandwidth_GB_s": "1600"}),
    ("Passage 1024-GPU domain at 1600 GB/s", {},
     {"scale_up.bandwidth_GB_s": "1600", "scale_up.domain_size": "1024"}),
    ("scale-out 400 Gb/s for both", {"scale_out.bandwidth_GB_s": "50"},
     {"scale_out.bandwidth_GB_s": "50"}),
    ("scale-out 400 Gb/s, Passage 1024 at 1600 GB/s", {"scale_out.bandwidth_GB_s": "50"},
     {"scale_out.bandwidth_GB_s": "50", "scale_up.bandwidth_GB_s": "1600",
      "scale_up.domain_size": "1024"}),
    ("copper EP groups leave the rack (domain 16)", {"scale_up.domain_size": "16"}, {}),
    ("copper EP groups leave the rack (domain 8)", {"scale_up.domain_size": "8"}, {}),
    ("copper on 64 of 72 GPUs per rack (8 spares)", SPARES, {}),
]


def best(model, preset, overrides, study):
    """``(days to train, plan text)`` of the best plan on the preset with ``overrides``."""
    seq = model.values["model"]["seq_len"]
    gb = study.batch_tokens // seq
    if overrides.get("cluster.gpus", str(study.gpus)) != str(study.gpus):
        gb = 1 << (gb.bit_length() - 1)
    space = make_space(model, load_system(preset, overrides=overrides or None), gb,
                       study.dtype, ())
    r = exhaustive_search(space)
    p = r.plan_values
    days = study.tokens / (gb * seq / r.step_time_s) / 86400.0
    return days, f"tp{p['tp']} cp{p['cp']} pp{p['pp']} ep{p['ep']}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config4")
    args = ap.parse_args()
    enable_compile_cache()
    study = load_study("full")
    model = load_model(args.config)
    for name, oc, op in VARIANTS:
        c = best(model, "study-copper", oc, study)
        p = best(model, "study-passage", op, study)
        print(f"{name:48s} copper {c[0]:5.2f} days ({c[1]:20s}) Passage {p[0]:5.2f} days "
              f"({p[1]:20s}) speedup {c[0] / p[0]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
