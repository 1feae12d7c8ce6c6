"""``cpo_opt/data/moe-published-recipes.toml``: the published runs with the software options of
the Megatron-Bridge performance recipe each row was measured with (issue 20).

    python experiments/mb_recipe_rows.py --bridge PATH > cpo_opt/data/moe-published-recipes.toml

``PATH`` is a git clone of NVIDIA-NeMo/Megatron-Bridge holding the release tags below. The
performance summary says its rows "were obtained using performance recipes" (the page's
introduction, linking ``scripts/performance``), so a row's recipe is part of what was
published. ``moe-published.toml`` leaves every option the table does not print to the default
stack (the state of practice at Megatron-Bridge v0.6.0); this file is the same 88 runs with
the options of the recipe that ran them, where one is found:

* the release's Megatron-Bridge tag, from the Bridge's ``docs/releases/software-versions.md``
  (NeMo Framework 25.11 -> 0.2.0, 26.02 -> 0.3.0, 26.04 -> 0.4.0, 26.06 -> 0.5.0) and
  ``docs/releases/known-issues.md`` (26.02.01 = r0.3.1); the point releases 26.04.01 and
  26.06.01 -> the release line's later tags (0.4.1 and 0.4.2, 0.5.1), whichever holds a
  recipe with the row's degrees (the 26.04.01 rows' sources already name v0.4.2);
* the recipe: the ``WorkloadBaseConfig`` of ``scripts/performance/configs/<family>/
  *workload_base_configs.py`` at that tag for the row's model, GPU and precision (FP8 rows:
  ``FP8_MX`` where the table says MXFP8, ``FP8_CS`` where it says current scaling), kept only
  if its TP, PP, CP, EP, VP, MBS, GBS and GPU count equal the table's; a row with none keeps the
  table's plan and the default stack (its source says so);
* 26.08 rows: their recipes (Megatron-Bridge v0.6.0 ``src/megatron/bridge/perf_recipes/``) are
  code, not data, and are the default stack's own source: they keep the default stack;
* the mapping into plan keys (everything else stays on the default stack):

  ========================================  =================================================
  recipe field                              plan key
  ========================================  =================================================
  ``moe_a2a_overlap``                       ``overlap_ep``
  ``moe_flex_dispatcher_backend``           ``dispatcher``: ``deepep`` for hybridep / deepep;
                                            none -> ``alltoall`` (``utils/overrides.py``
                                            ``set_workload_base_configs`` sets the alltoall
                                            dispatcher when no flex backend is named)
  ``cuda_graph_impl`` / ``cuda_graph_scope``  ``cuda_graphs``: on for a TE graph with a scope
                                            or a full-iteration graph, else off
  ``recompute_modules``                     ``recompute_norm_act`` (layernorm, moe_act),
                                            ``recompute_mla_up`` (mla_up_proj); not set when
                                            the recipe leaves the modules to the model recipe
  ``pp_layout``                             ``first_stage_layers`` / ``last_stage_layers``:
                                            the decoder layers of the first and last virtual
                                            stage of Megatron's layout string
  the recipe's name: ``_FP8_CS_``            ``fp8_recipe = "tensorwise"`` (per-tensor current
                                            scaling, round 16), unless the row states it
  ========================================  =================================================

  Recipe fields with no plan key (``mlp`` recompute, CuTe-DSL fused grouped MLP, fp8
  dot-product attention, the full-iteration graph's wider capture) are listed in the row's
  source as not represented.

Nothing is evaluated here: the rows are written before the model sees them.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import importlib
import pathlib
import re
import runpy
import subprocess
import sys
import tempfile
import tomllib

DATA = pathlib.Path(__file__).resolve().parents[1] / "cpo_opt" / "data" / "moe-published.toml"

TAGS = {"25.11": ("v0.2.0",), "26.02": ("v0.3.0",), "26.02.01": ("v0.3.1",),
        "26.04.01": ("v0.4.1", "v0.4.2"), "26.06": ("v0.5.0",), "26.06.01": ("v0.5.1",)}
"""NeMo container section -> the Megatron-Bridge tags whose recipes may have run it."""

FAMILIES = {"dsv3": "DEEPSEEK_V3", "gptoss120b": "GPT_OSS_120B", "qwen3-30b": "QWEN3_30B_A3B",
            "qwen3-235b": "QWEN3_235B_A22B", "kimik2": "KIMI_K2"}
"""Case-id model token -> the recipes' config-name prefix."""

DEGREES = ("tensor_model_parallel_size", "pipeline_model_parallel_size",
           "context_parallel_size", "expert_model_parallel_size",
           "virtual_pipeline_model_parallel_size", "micro_batch_size", "global_batch_size",
           "num_gpus")
MAPPED = {"moe_a2a_overlap", "moe_flex_dispatcher_backend", "cuda_graph_impl",
          "cuda_graph_scope", "recompute_modules", "pp_layout"}
IGNORED = set(DEGREES) | {"expert_tensor_parallel_size",
                          "peft", "nccl_ub"}


def recipes(bridge: pathlib.Path, tag: str, tmp: pathlib.Path) -> dict[str, dict]:
    """Every pre-training ``WorkloadBaseConfig`` of ``tag``: name -> its fields."""
    root = tmp / tag
    root.mkdir()
    archive = subprocess.run(["git", "-C", str(bridge), "archive", tag, "scripts/performance"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive, check=True)
    perf = root / "scripts" / "performance"
    for name in [m for m in sys.modules if m == "utils" or m.startswith("utils.")]:
        del sys.modules[name]
    sys.path.insert(0, str(perf))
    try:
        importlib.import_module("utils.utils")
        out = {}
        for path in sorted(glob.glob(str(perf / "configs" / "*" / "*workload_base_configs.py"))):
            for name, value in runpy.run_path(path).items():
                if (dataclasses.is_dataclass(value) and not name.startswith("BASE_")
                        and ("PRETRAIN_CONFIG" in name or name.endswith("_BASE_CONFIG"))):
                    rel = pathlib.Path(path).relative_to(root).as_posix()
                    out[name] = {"file": rel, **dataclasses.asdict(value)}
        return out
    finally:
        sys.path.remove(str(perf))


def layout_stages(layout: str) -> list[str]:
    """Megatron's ``--pipeline-model-parallel-layout`` string -> one string per virtual stage
    (``t`` a decoder layer, ``E`` embedding, ``m`` MTP, ``L`` loss)."""
    s = layout
    while True:
        new = re.sub(r"\(([^()]*)\)\*(\d+)", lambda m: m.group(1) * int(m.group(2)), s)
        if new == s:
            break
        s = new
    s = re.sub(r"([A-Za-z])\*(\d+)", lambda m: m.group(1) * int(m.group(2)), s)
    return [st for st in s.split("|")]


def plan_options(cfg: dict, name: str = "") -> tuple[dict, list[str]]:
    """A recipe's fields (and its name, which says the fp8 recipe) -> (plan keys, notes on
    what the plan cannot say)."""
    opts, notes = {}, []
    opts["overlap_ep"] = bool(cfg.get("moe_a2a_overlap"))
    backend = cfg.get("moe_flex_dispatcher_backend")
    opts["dispatcher"] = "deepep" if backend in ("deepep", "hybridep") else "alltoall"
    impl, scope = cfg.get("cuda_graph_impl"), cfg.get("cuda_graph_scope") or []
    opts["cuda_graphs"] = bool(impl and impl != "none" and (scope or impl == "full_iteration"))
    if impl == "full_iteration":
        notes.append("the full-iteration CUDA graph's wider capture (cuda_graphs = true)")
    mods = cfg.get("recompute_modules")
    if mods is not None:
        opts["recompute_norm_act"] = bool({"layernorm", "moe_act"} & set(mods))
        opts["recompute_mla_up"] = "mla_up_proj" in mods
        if "mlp" in mods:
            notes.append("recompute module mlp")
    layout = cfg.get("pp_layout")
    if layout:
        stages = layout_stages(layout)
        opts["first_stage_layers"] = stages[0].count("t")
        opts["last_stage_layers"] = stages[-1].count("t")
    if "_FP8_CS_" in name + "_":
        opts["fp8_recipe"] = "tensorwise"
    for key, value in cfg.items():
        if key in MAPPED or key in IGNORED or key == "file" or value in (None, False, [], 0):
            continue
        notes.append(f"{key} = {value!r}")
    return opts, notes


def toml_inline(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def match(case: dict, tables: dict[str, dict[str, dict]]) -> tuple[str, str, dict] | None:
    """The recipe (tag, name, fields) with the row's degrees, or None."""
    cid, src, plan = case["id"], case["source"], case["plan"]
    section = re.search(r"section '([^']*) NeMo Container'", src).group(1)
    if section not in TAGS:
        return None
    token = next(t for t in FAMILIES if cid.split("-", 1)[1].startswith(t + "-"))
    gpu = cid.split("-", 1)[1][len(token) + 1:].split("-")[0].upper()
    system = case["system"] if isinstance(case["system"], dict) else {}
    gpus = (case.get("overrides", {}).get("cluster", {}).get("gpus")
            or system.get("cluster", {}).get("gpus"))
    table = src.split("Plan as published")[0]
    if plan.get("dtype", "bf16") == "bf16":
        precisions = ("BF16",)
    elif "MXFP8" in table or "FP8-MX" in src or "block scaling" in src:
        precisions = ("FP8_MX",)
    elif "current scaling" in src or "FP8-CS" in src:
        precisions = ("FP8_CS",)
    else:
        precisions = ("FP8_CS", "FP8_MX")
    want = (plan.get("tp", 1), plan.get("pp", 1), plan.get("cp", 1), plan.get("ep", 1),
            plan.get("vpp", 1), plan.get("micro_batch", 1), plan["global_batch"], gpus)
    found = []
    for tag in TAGS[section]:
        for name, cfg in tables[tag].items():
            if not name.startswith(FAMILIES[token] + "_") or f"_{gpu}_" not in name:
                continue
            if not any(f"_{p}_" in name + "_" for p in precisions):
                continue
            got = tuple(cfg[k] or 1 if k == "virtual_pipeline_model_parallel_size" else cfg[k]
                        for k in DEGREES)
            if got == want:
                found.append((tag, name, cfg))
    # where the release line's tags disagree, the later tag (the point release's own) wins
    return found[-1] if found else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bridge", required=True, help="a git clone of NVIDIA-NeMo/Megatron-Bridge")
    args = ap.parse_args()
    text = DATA.read_text()
    cases = {c["id"]: c for c in tomllib.loads(text)["case"]}
    with tempfile.TemporaryDirectory() as tmp:
        tables = {tag: recipes(pathlib.Path(args.bridge), tag, pathlib.Path(tmp))
                  for tags in TAGS.values() for tag in tags}
    blocks = re.split(r"(?m)^(?=\[\[case\]\]\n)", text)
    out = [HEADER]
    counts = {"recipe": 0, "none": 0, "default": 0}
    for block in blocks[1:]:
        cid = re.search(r'(?m)^id = "([^"]+)"', block).group(1)
        case = cases[cid]
        if not cid.startswith("mb") or cid.startswith("mb2608"):
            note = ("Recipe options: none applied (26.08 rows: the recipes are the default "
                    "stack's own source, Megatron-Bridge v0.6.0)" if cid.startswith("mb2608")
                    else "Recipe options: none (not a Megatron-Bridge performance-summary row)")
            counts["default"] += 1
        else:
            found = match(case, tables)
            if found is None:
                note = ("Recipe options: none applied (no performance recipe at the release's "
                        "Megatron-Bridge tag has this row's degrees; the default stack's "
                        "options apply)")
                counts["none"] += 1
            else:
                tag, name, cfg = found
                opts, notes = plan_options(cfg, name)
                opts = {k: v for k, v in opts.items() if k not in case["plan"]}
                plan_line = re.search(r"(?m)^plan = \{ (.*) \}$", block)
                extra = ", ".join(f"{k} = {toml_inline(v)}" for k, v in opts.items())
                block = (block[:plan_line.start()] + f"plan = {{ {plan_line.group(1)}, {extra} }}"
                         + block[plan_line.end():])
                fields = ", ".join(f"{k}={cfg.get(k)!r}" for k in sorted(MAPPED))
                note = (f"Recipe options in the plan (round 14, experiments/mb_recipe_rows.py): "
                        f"Megatron-Bridge {tag} {cfg['file']} {name} ({fields}) -> "
                        + extra.replace('"', "'")
                        + (f"; not represented: {'; '.join(notes)}" if notes else ""))
                counts["recipe"] += 1
        src_line = re.search(r'(?m)^source = "(.*)"$', block)
        block = (block[:src_line.start()] + f'source = "{src_line.group(1)} {note}."'
                 + block[src_line.end():])
        out.append(block)
    sys.stdout.write("".join(out))
    print(f"# rows: {counts['recipe']} with their recipe's options, {counts['none']} with no "
          f"matching recipe, {counts['default']} not applicable", file=sys.stderr)


HEADER = """\
# The published MoE runs of moe-published.toml, each with the software options of the
# Megatron-Bridge performance recipe that measured it (issue 20, round 14). Written by
# experiments/mb_recipe_rows.py from moe-published.toml and the Megatron-Bridge release tags
# (its docstring gives the release -> tag map and the option mapping); do not edit by hand.
#
# OUT OF SAMPLE, as moe-published.toml: no constant of cpo_opt was fitted on these runs.
#
# moe-published.toml holds what the performance table prints and leaves every other software
# option to the default stack (Megatron-Bridge v0.6.0's tuned practice). The page states that
# its rows "were obtained using performance recipes" (scripts/performance of the release), so
# the recipe is part of the published plan: here each Megatron-Bridge row (25.11 to 26.06)
# whose recipe at the release's tag has the row's degrees carries that recipe's EP overlap,
# dispatcher, CUDA graphs, recompute modules and pipeline layout in its plan; the rest is as
# in moe-published.toml, and each row's source ends with what was applied.

"""

if __name__ == "__main__":
    main()
