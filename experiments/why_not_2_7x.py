"""What it takes to reach the paper's 2.7x: a config under alternative assumptions, at scale.

Each variant changes some fields of the copper (144 x 900 GB/s) and/or Passage (512 x 2000
GB/s) study presets, or the tokens per GPU per step, and finds each fabric's best plan by
exhaustive search (ground truth), then prints the times to train and the speedup. The spares
variant treats both fabrics alike: each runs on power-of-two groups inside its domains
(copper 128 of each 144, Passage 512 of 512) on 16,384 working GPUs; its batch is rounded
down to a power of two of sequences (data parallelism must divide it), so its time to train
uses its own tokens per step. The paper's own 512-GPU figure is experiments/paper_figure.py.

    python experiments/why_not_2_7x.py [--config config4]
"""

import argparse

from cpo_opt.runtime import enable_compile_cache
from cpo_opt.inputs.loaders import load_model, load_system
from cpo_opt.search import exhaustive_search, make_space
from cpo_opt.study import load_study

NVL72 = {k: str(v) for k, v in load_system("study-copper-nvl72").values["scale_up"].items()
         if k in ("domain_size", "switch_radix", "max_domain_size")}
NVL72 = {f"scale_up.{k}": v for k, v in NVL72.items()}  # = the study-copper-nvl72 preset
SPARES_CU = {"scale_up.domain_size": "128", "cluster.gpus": "16384"}
SPARES_PA = {"cluster.gpus": "16384"}
VARIANTS = [  # (name, copper overrides, Passage overrides, batch factor)
    ("study presets (144x900 vs 512x2000)", {}, {}, 1),
    ("copper = shipping NVL72 (72 GPUs)", NVL72, {}, 1),
    ("Passage at copper's 900 GB/s", {}, {"scale_up.bandwidth_GB_s": "900"}, 1),
    ("Passage 1024-GPU domain", {}, {"scale_up.domain_size": "1024"}, 1),
    ("scale-out 400 Gb/s for both", {"scale_out.bandwidth_GB_s": "50"},
     {"scale_out.bandwidth_GB_s": "50"}, 1),
    ("1/4 tokens per GPU per step", {}, {}, 0.25),
    ("4x tokens per GPU per step", {}, {}, 4),
    ("copper EP groups leave the domain (domain 16)", {"scale_up.domain_size": "16"}, {}, 1),
    ("both on power-of-two groups (16,384 GPUs)", SPARES_CU, SPARES_PA, 1),
]


def best(model, preset, overrides, study, batch_factor=1):
    """``(days to train, plan text)`` of the best plan on the preset with ``overrides``."""
    seq = model.values["model"]["seq_len"]
    gb = int(study.batch_tokens * batch_factor) // seq
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
    for name, oc, op, bf in VARIANTS:
        c = best(model, "study-copper", oc, study, bf)
        p = best(model, "study-passage", op, study, bf)
        print(f"{name:48s} copper {c[0]:5.2f} days ({c[1]:20s}) Passage {p[0]:5.2f} days "
              f"({p[1]:20s}) speedup {c[0] / p[0]:.2f}x", flush=True)


if __name__ == "__main__":
    main()
