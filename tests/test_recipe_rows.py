"""``experiments/mb_recipe_rows.py`` and the file it wrote, ``cpo_opt/data/
moe-published-recipes.toml`` (issue 20, round 14): the published runs with the software
options of the Megatron-Bridge performance recipe that measured each. The mapping is checked
on recipe fields copied from the release tags, and the committed file against
``moe-published.toml``: the same runs and measurements, plans that differ only by the
recipe's options."""

import pathlib
import tomllib

import pytest

DATA = pathlib.Path(__file__).parent.parent / "cpo_opt" / "data"
RECIPE_KEYS = {"overlap_ep", "dispatcher", "cuda_graphs", "recompute_norm_act",
               "recompute_mla_up", "first_stage_layers", "last_stage_layers", "fp8_recipe"}


@pytest.fixture
def mod(experiment):
    return experiment("mb_recipe_rows")


def test_layout_strings_expand_to_megatron_stages(mod):
    """Megatron-Core's ``--pipeline-model-parallel-layout`` syntax: ``|`` ends a virtual
    stage, ``X*n`` and ``(...)*n`` repeat. The recipes' DeepSeek-V3 layout (Megatron-Bridge
    v0.4.2 deepseek_workload_base_configs.py) and the MCore MoE report's (arXiv 2603.07685
    sec. 9.2.2) both place DeepSeek-V3's 61 decoder layers."""
    stages = mod.layout_stages("Et*4|(t*4|)*14tmL")
    assert len(stages) == 16 and stages[0] == "Etttt" and stages[-1] == "tmL"
    assert sum(s.count("t") for s in stages) == 61
    stages = mod.layout_stages("Et*3|(tt|)*29m|L")
    assert len(stages) == 32 and stages[0].count("t") == 3 and stages[-1] == "L"
    assert sum(s.count("t") for s in stages) == 61


def test_recipe_fields_map_to_plan_options(mod):
    """Two recipes as their tags hold them: Megatron-Bridge v0.4.2
    DEEPSEEK_V3_PRETRAIN_CONFIG_GB300_FP8_MX_V2 and v0.5.1
    QWEN3_30B_A3B_PRETRAIN_CONFIG_GB200_FP8_MX_V1."""
    dsv3 = {"moe_a2a_overlap": False, "moe_flex_dispatcher_backend": "hybridep",
            "cuda_graph_impl": None, "cuda_graph_scope": [], "recompute_modules": ["mla_up_proj"],
            "pp_layout": "Et*4|(t*4|)*14tmL"}
    opts, notes = mod.plan_options(dsv3)
    assert opts == {"overlap_ep": False, "dispatcher": "deepep", "cuda_graphs": False,
                    "recompute_norm_act": False, "recompute_mla_up": True,
                    "first_stage_layers": 4, "last_stage_layers": 1}
    assert notes == []
    qwen = {"moe_a2a_overlap": True, "moe_flex_dispatcher_backend": "hybridep",
            "cuda_graph_impl": "full_iteration", "cuda_graph_scope": [],
            "recompute_modules": None, "pp_layout": None, "cutedsl_fused_grouped_mlp": True,
            "fp8_dot_product_attention": True}
    opts, notes = mod.plan_options(qwen)
    assert opts == {"overlap_ep": True, "dispatcher": "deepep", "cuda_graphs": True}
    assert any("cutedsl_fused_grouped_mlp" in n for n in notes)
    assert any("fp8_dot_product_attention" in n for n in notes)
    # no flex backend: set_workload_base_configs falls back to the alltoall dispatcher; a TE
    # graph with no scope captures nothing; an 'mlp' module has no plan key
    opts, notes = mod.plan_options({"moe_flex_dispatcher_backend": None,
                                    "cuda_graph_impl": "transformer_engine",
                                    "cuda_graph_scope": None, "recompute_modules": ["mlp"]})
    assert opts["dispatcher"] == "alltoall" and opts["cuda_graphs"] is False
    assert opts["recompute_norm_act"] is False and notes == ["recompute module mlp"]
    # the recipe's name says its fp8 recipe: *_FP8_CS_* is per-tensor current scaling
    # (Megatron-Bridge's fp8_cs precision), *_FP8_MX_* MXFP8 (the default stack's own)
    cs, _ = mod.plan_options(dsv3, "QWEN3_235B_A22B_PRETRAIN_CONFIG_H100_FP8_CS_V2")
    mx, _ = mod.plan_options(dsv3, "DEEPSEEK_V3_PRETRAIN_CONFIG_GB300_FP8_MX_V2")
    assert cs["fp8_recipe"] == "tensorwise" and "fp8_recipe" not in mx


def _case(cid, plan, gpus=8, section="26.04.01", prec="MXFP8"):
    return {"id": cid, "plan": plan, "system": "gb200-nvl72",
            "overrides": {"cluster": {"gpus": gpus}},
            "source": f"x, section '{section} NeMo Container', row ... / {prec} / ... "
                      f"Plan as published: ..."}


def _cfg(**kw):
    base = {"tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1,
            "context_parallel_size": 1, "expert_model_parallel_size": 8,
            "virtual_pipeline_model_parallel_size": None,
            "micro_batch_size": 4, "global_batch_size": 512, "num_gpus": 8,
            "moe_a2a_overlap": False, "file": "f.py"}
    return {**base, **kw}


def test_a_recipe_is_taken_only_with_the_rows_degrees(mod):
    """The recipe of the row's model, GPU and precision at the release's tags, only where
    every degree, the batch and the GPU count equal the table's; where the release line's
    tags disagree, the later tag (the point release's own) wins."""
    plan = {"tp": 1, "pp": 1, "ep": 8, "micro_batch": 4, "global_batch": 512, "dtype": "fp8"}
    tables = {"v0.4.1": {"QWEN3_30B_A3B_PRETRAIN_CONFIG_GB200_FP8_MX_V1": _cfg()},
              "v0.4.2": {"QWEN3_30B_A3B_PRETRAIN_CONFIG_GB200_FP8_MX_V1":
                         _cfg(moe_a2a_overlap=True),
                         "QWEN3_30B_A3B_PRETRAIN_CONFIG_GB200_BF16_V1": _cfg(),
                         "QWEN3_30B_A3B_PRETRAIN_CONFIG_B200_FP8_MX_V1": _cfg()}}
    tag, name, cfg = mod.match(_case("mb2604-qwen3-30b-gb200-fp8", plan), tables)
    assert (tag, name, cfg["moe_a2a_overlap"]) == (
        "v0.4.2", "QWEN3_30B_A3B_PRETRAIN_CONFIG_GB200_FP8_MX_V1", True)
    assert mod.match(_case("mb2604-qwen3-30b-gb200-fp8", {**plan, "micro_batch": 8}),
                     tables) is None
    assert mod.match(_case("mb2604-qwen3-30b-gb200-fp8", plan, gpus=16), tables) is None
    assert mod.match(_case("mb2604-qwen3-30b-h100-fp8", plan), tables) is None
    # a release without tags in the map (26.08: its recipes are code) takes none
    assert mod.match(_case("mb2608-qwen3-30b-gb200-mxfp8", plan, section="26.08"),
                     tables) is None


def test_committed_recipe_rows_are_the_published_runs_with_recipe_options():
    """Same runs, models, systems and measurements as ``moe-published.toml``; each plan is
    the table's plan plus recipe options only (never a degree, batch or precision); every row
    says what was applied."""
    table = {c["id"]: c for c in tomllib.loads((DATA / "moe-published.toml").read_text())["case"]}
    recipe = tomllib.loads((DATA / "moe-published-recipes.toml").read_text())["case"]
    assert [c["id"] for c in recipe] == list(table)
    applied = 0
    for c in recipe:
        t = table[c["id"]]
        for key in ("model", "system", "measured"):
            assert c[key] == t[key], (c["id"], key)
        assert c.get("overrides") == t.get("overrides")
        extra = set(c["plan"]) - set(t["plan"])
        assert extra <= RECIPE_KEYS, (c["id"], extra)
        assert all(c["plan"][k] == v for k, v in t["plan"].items()), c["id"]
        assert c["source"].startswith(t["source"][:-1]) and "Recipe options" in c["source"]
        if extra:
            applied += 1
            assert "Megatron-Bridge v0." in c["source"] and c["id"].startswith("mb")
            assert not c["id"].startswith("mb2608")
    assert applied == 54


def test_recipe_rows_fit_and_name_the_plan_as_the_options_origin():
    """The published plans with their recipes' options fit by the model's account (the runs
    ran), and each result says the recipe's options came from the plan."""
    import cpo_opt
    cases = cpo_opt.validate(DATA / "moe-published-recipes.toml").to_dict()["cases"]
    assert {c["id"] for c in cases if not c["fits_memory"]} == set()
    row = next(c for c in cases if c["id"] == "mb2604-qwen3-30b-gb200-fp8")
    for key in ("overlap_ep", "dispatcher", "cuda_graphs"):
        assert row["stack"]["options"][key]["from"] == "plan", key
    assert row["stack"]["options"]["overlap_ep"]["value"] is False
