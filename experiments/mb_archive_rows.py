"""Cases for ``cpo_opt/data/moe-published.toml`` from the Megatron-Bridge performance summary's
archive (issue 20: more published runs with full plans).

    python experiments/mb_archive_rows.py ARCHIVE.md --commit SHA > rows.toml

``ARCHIVE.md`` is ``docs/performance-summary-archive.md`` of NVIDIA-NeMo/Megatron-Bridge at
``SHA`` (the rows added in round 8 came from 067f987df, 2026-08-22). The script prints one
``[[case]]`` per MoE pre-training row of the releases in :data:`RELEASES`, converted as the
file's other Megatron-Bridge rows are (its header states the rules):

* one measurement per row (model, system, precision, global batch) and release: the release's
  last point release that measured the row (26.06.01 over 26.06, 26.02.01 over 26.02, its plan
  too where the point release changed it), except where that point release flags the row
  as a known regression (26.06.01's GPT OSS rows, footnote 'Performance regression in GPT-OSS
  120B pre-training is a known issue', cudnn-frontend#256: a grouped-GEMM dGeGLU kernel ten
  times slower): then the release's earlier measurement;
* models cpo_opt represents only: DeepSeek-V3, GPT OSS 120B, Qwen3-30B-A3B, Qwen3-235B-A22B,
  Kimi-K2 (Nemotron 3: hybrid Mamba-Transformer, left out); pre-training sections only;
* plan: the table's TP, PP, CP, VP (``n/a``: none), EP, MBS, GBS; precision BF16 -> ``bf16``,
  FP8 / MXFP8 -> ``fp8``; routing forced-balanced and dropless (the page's footnote) ->
  ``perfect_balance = true``; a nonzero FSDP column is refused (no row of these releases has
  one); every other software option is left to the default stack;
* model and system tables: copied from the file's 26.04.01 rows of the same model and GPU
  (the header's values), with ``cluster.gpus`` and ``scale_up.domain_size`` (GB200 / GB300:
  ``min(GPUs, 64)``, the launcher's SLURM segment) set for the row;
* step time = GBS x seq / (tokens/s/GPU x GPUs).

Nothing is evaluated here: the rows are written before the model sees them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import sys
import tomllib

from cpo_opt.inputs.constants_file import _scalar as toml_value  # calibrate's TOML writer

DATA = pathlib.Path(__file__).resolve().parents[1] / "cpo_opt" / "data" / "moe-published.toml"

RELEASES = {"mb2606": ("26.06.01", "26.06"), "mb2602": ("26.02.01", "26.02")}
"""Id prefix -> the release's sections, last point release first."""

FLAGGED = {("26.06.01", "GPT OSS 120B")}
"""(section, model) rows the page itself flags as a known regression."""

MODELS = {"DeepSeekV3": "dsv3", "GPT OSS 120B": "gptoss120b", "Qwen3_30B_a3B": "qwen3-30b",
          "Qwen3_235B_a22B": "qwen3-235b", "Kimi_K2": "kimik2"}
MODEL_NOTES = {
    "DeepSeekV3": " The run carries DeepSeek-V3's MTP module (Megatron-Bridge recipes set "
                  "mtp_num_layers = 1); cpo_opt does not model MTP (about 1/61 more layer work).",
    "GPT OSS 120B": " gpt-oss alternates 128-token sliding-window and full attention with "
                    "attention sinks (config.json sliding_window 128, layer_types); cpo_opt "
                    "counts full causal attention in every layer (over-counts attention work).",
}
"""What the model leaves out, as the file's other rows of the model say."""

SYSTEMS = {"DGX-GB300": "gb300", "DGX-GB200": "gb200", "DGX-B300": "b300", "DGX-B200": "b200",
           "DGX-H100": "h100"}


def sections(text: str) -> dict[str, dict[str, list[dict]]]:
    """``{section: {model: [row, ...]}}`` of the pre-training tables."""
    out: dict = {}
    section = model = None
    header: list[str] | None = None
    pretraining = False
    for line in text.splitlines():
        if m := re.match(r"^## (\S+) NeMo Container", line):
            section, model, pretraining = m.group(1), None, False
            out[section] = {}
        elif line.startswith("### "):
            pretraining = line.strip() == "### Pre-Training Performance"
            model = None
        elif m := re.match(r"^#### Model: (.+?)\s*$", line):
            model = m.group(1)
        elif line.startswith("| System"):
            header = [c.strip() for c in line.strip().strip("|").split("|")]
        elif line.startswith("| DGX") and section and model and pretraining and header:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            out[section].setdefault(model, []).append(dict(zip(header, cells)))
    return out


def templates() -> tuple[dict, dict]:
    """Model tables by model key and (system, overrides) by GPU key, from the 26.04.01 rows."""
    doc = tomllib.loads(DATA.read_text())
    models, systems = {}, {}
    for case in doc["case"]:
        parts = case["id"].split("-")
        if parts[0] != "mb2604":
            continue
        gpu = next(p for p in parts if p in SYSTEMS.values())
        key = "-".join(parts[1:parts.index(gpu)])
        models.setdefault(key, case["model"])
        systems.setdefault(gpu, (case["system"], case.get("overrides")))
    return models, systems


def system_for(gpu: str, gpus: int, systems: dict) -> tuple[object, dict | None]:
    system, overrides = systems[gpu]
    domain = min(gpus, 64) if gpu in ("gb200", "gb300") else None
    if isinstance(system, dict):
        system = json.loads(json.dumps(system))
        system["cluster"]["gpus"] = gpus
        if domain is not None:
            system["scale_up"]["domain_size"] = domain
        return system, None
    over = {"cluster": {"gpus": gpus}}
    if domain is not None:
        over["scale_up"] = {"domain_size": domain}
    return system, over


def rows(text: str, commit: str) -> list[str]:
    models, systems = templates()
    tables = sections(text)
    url = (f"https://github.com/NVIDIA-NeMo/Megatron-Bridge/blob/{commit}/docs/"
           "performance-summary-archive.md")
    out = []
    for prefix, names in RELEASES.items():
        chosen: dict = {}
        for name in reversed(names):  # earlier section first; a later point release replaces
            for model, table in tables.get(name, {}).items():
                if model not in MODELS or (name, model) in FLAGGED:
                    continue
                for row in table:
                    key = (model, row["System"], row["Precision"], row["GBS"])
                    chosen[key] = (name, row)
        ids = set()
        for key, (name, row) in chosen.items():
            model = key[0]
            if row.get("FSDP", "0") not in ("0", "n/a"):
                raise SystemExit(f"{name} {model} {row['System']}: FSDP {row['FSDP']} not mapped")
            gpu = SYSTEMS[row["System"]]
            mkey = MODELS[model]
            prec = row["Precision"].lower()
            gpus, gbs, mbs = int(row["#-GPUs"]), int(row["GBS"]), int(row["MBS"])
            seq, tps = int(row["Sequence Length"]), float(row["Tokens / sec / GPU"])
            mtable = models[mkey]
            mseq = mtable.get("seq_len") if isinstance(mtable, dict) else 4096
            if seq != mseq:
                raise SystemExit(f"{name} {model}: sequence {seq} != the model table's {mseq}")
            cid = f"{prefix}-{mkey}-{gpu}-{prec}"
            if cid in ids:
                cid += f"-gbs{gbs}"
            ids.add(cid)
            step = gbs * seq / (tps * gpus)
            plan = {"tp": int(row["TP"]), "pp": int(row["PP"]), "cp": int(row["CP"]),
                    "ep": int(row["EP"])}
            if row["VP"] != "n/a":
                plan["vpp"] = int(row["VP"])
            plan.update(micro_batch=mbs, global_batch=gbs,
                        dtype="bf16" if prec == "bf16" else "fp8", perfect_balance=True)
            system, over = system_for(gpu, gpus, systems)
            cols = " / ".join(f"{c} {row[c]}" for c in ("GBS", "MBS", "Sequence Length", "FSDP",
                                                      "TP", "PP", "CP", "VP", "EP") if c in row)
            source = (
                f"NVIDIA NeMo Megatron-Bridge performance summary archive, section '{name} NeMo "
                f"Container', Pre-Training Performance ({url}), row Model {model} / "
                f"{row['System']} / {gpus} / {row['Precision']} / {cols} -> "
                f"{row['Tokens / sec / GPU']} tokens/s/GPU (model TFLOP/s/GPU "
                f"{row['Model TFLOP / sec / GPU']}, not used). Step time = GBS x seq / "
                f"(tokens/s/GPU x GPUs) = {gbs} x {seq} / ({row['Tokens / sec / GPU']} x {gpus})"
                f" = {step:.3f} s. Plan as published: precision {row['Precision']} -> dtype "
                f"{plan['dtype']}; other software options not stated by the table are left to "
                "the default stack. Routing: the page's footnote 'In MoE training benchmarks, "
                "we force-balance the token distribution among experts and all benchmarks are "
                "token-dropless' -> perfect_balance true, capacity_factor 0. Model and system "
                "tables as the file's 26.04.01 rows of the same model and GPU (file header), "
                f"{gpus} GPUs. Written by experiments/mb_archive_rows.py (its docstring: which "
                "section's measurement is used).")
            source += MODEL_NOTES.get(model, "")
            if model == "Kimi_K2":
                source += " The page: 'Muon optimizer was used for pre-training Kimi-K2' " \
                          "(cpo_opt models Adam's optimizer state)."
            lines = ["[[case]]", f"id = {json.dumps(cid)}", f"source = {json.dumps(source)}",
                     f"model = {toml_value(mtable)}", f"system = {toml_value(system)}"]
            if over:
                lines.append(f"overrides = {toml_value(over)}")
            lines += [f"plan = {toml_value(plan)}",
                      f"measured = {{ step_time_s = {float(f'{step:.5g}')} }}", ""]
            out.append("\n".join(lines))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("archive", help="docs/performance-summary-archive.md of Megatron-Bridge")
    ap.add_argument("--commit", required=True, help="the commit the file was read at")
    a = ap.parse_args(argv)
    text = pathlib.Path(a.archive).read_text()
    sys.stdout.write("\n".join(rows(text, a.commit)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
