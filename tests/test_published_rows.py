"""The rules by which ``experiments/mb_archive_rows.py`` turns the Megatron-Bridge archive's
tables into cases of ``cpo_opt/data/moe-published.toml`` (docs/validation.md, round 8), on a
small page written here, and the committed rows it wrote: the measured step time is the
table's throughput converted, never anything the model computed."""

import re
import tomllib

import pytest

HEAD = ("| System | #-GPUs | Precision | GBS | MBS | Sequence Length | TP | PP | CP | VP | EP "
        "| Tokens / sec / GPU | Model TFLOP / sec / GPU |\n|---|---|---|---|---|---|---|---|---|"
        "---|---|---|---|\n")

PAGE = f"""
## 26.06.01 NeMo Container
### Pre-Training Performance
#### Model: Qwen3_30B_a3B
{HEAD}| DGX-GB300 | 8 | MXFP8 | 512 | 8 | 4096 | 1 | 1 | 1 | n/a | 8 | 44544 | 1029 |
#### Model: GPT OSS 120B
{HEAD}| DGX-GB300 | 64 | MXFP8 | 1280 | 4 | 4096 | 1 | 1 | 1 | n/a | 16 | 20288 | 661 |
#### Model: Nemotron_3_Nano
{HEAD}| DGX-GB300 | 8 | MXFP8 | 512 | 4 | 8192 | 1 | 1 | 1 | n/a | 8 | 40960 | 905 |
## 26.06 NeMo Container
### Pre-Training Performance
#### Model: Qwen3_30B_a3B
{HEAD}| DGX-GB300 | 8 | MXFP8 | 512 | 8 | 4096 | 1 | 1 | 1 | n/a | 8 | 45275 | 1041 |
| DGX-H100 | 16 | FP8 | 1024 | 1 | 4096 | 1 | 1 | 1 | n/a | 16 | 8826 | 203 |
#### Model: GPT OSS 120B
{HEAD}| DGX-GB300 | 64 | MXFP8 | 1280 | 4 | 4096 | 1 | 1 | 1 | n/a | 16 | 33166 | 1081 |
### SFT Performance
#### Model: Qwen3_30B_a3B
{HEAD}| DGX-GB200 | 8 | MXFP8 | 512 | 4 | 4096 | 1 | 1 | 1 | n/a | 8 | 1 | 1 |
"""


@pytest.fixture
def rows(experiment):
    mod = experiment("mb_archive_rows")
    text = "\n".join(mod.rows(PAGE, "0" * 40))
    return {c["id"]: c for c in tomllib.loads(text)["case"]}


def test_one_row_per_release_from_its_last_point_release(rows):
    assert set(rows) == {"mb2606-qwen3-30b-gb300-mxfp8", "mb2606-qwen3-30b-h100-fp8",
                         "mb2606-gptoss120b-gb300-mxfp8"}
    q = rows["mb2606-qwen3-30b-gb300-mxfp8"]
    assert "'26.06.01 NeMo Container'" in q["source"]  # the point release's measurement
    assert q["measured"]["step_time_s"] == pytest.approx(512 * 4096 / (44544 * 8), rel=1e-4)
    assert q["plan"] == {"tp": 1, "pp": 1, "cp": 1, "ep": 8, "micro_batch": 8,
                         "global_batch": 512, "dtype": "fp8", "perfect_balance": True}
    assert q["system"]["scale_up"]["domain_size"] == 8 and q["system"]["cluster"]["gpus"] == 8


def test_a_row_the_page_flags_as_a_regression_keeps_the_earlier_measurement(rows):
    g = rows["mb2606-gptoss120b-gb300-mxfp8"]
    assert "'26.06 NeMo Container'" in g["source"]
    assert g["measured"]["step_time_s"] == pytest.approx(1280 * 4096 / (33166 * 64), rel=1e-4)
    assert g["system"]["scale_up"]["domain_size"] == 64


def test_rows_only_the_earlier_section_has_are_kept_with_their_own_system(rows):
    h = rows["mb2606-qwen3-30b-h100-fp8"]
    assert h["system"] == "dgx-h100" and h["overrides"] == {"cluster": {"gpus": 16}}
    assert h["plan"]["ep"] == 16 and h["plan"]["micro_batch"] == 1


def test_the_committed_rows_convert_their_quoted_throughput():
    """Every ``mb2606``/``mb2602`` case's measured step time is GBS x seq / (tokens/s/GPU x
    GPUs) of the row its source quotes."""
    from pathlib import Path
    doc = tomllib.loads((Path(__file__).parent.parent / "cpo_opt" / "data"
                         / "moe-published.toml").read_text())
    seen = 0
    for case in doc["case"]:
        if not case["id"].startswith(("mb2606-", "mb2602-")):
            continue
        m = re.search(r"= (\d+) x (\d+) / \((\d+) x (\d+)\)", case["source"])
        gbs, seq, tps, gpus = map(int, m.groups())
        assert gbs == case["plan"]["global_batch"]
        assert case["measured"]["step_time_s"] == pytest.approx(gbs * seq / (tps * gpus),
                                                                rel=1e-4)
        seen += 1
    assert seen == 34


def test_published_megatron_plans_fit_by_the_models_account():
    """Issue 20: the published runs ran, so their plans fit. On the default stack (its
    recompute modules 'fit', docs/stacks.md) every Megatron plan of the file fits by the
    model's account, and so does every other plan of the file (NeMo AutoModel's DeepSeek-V3
    on 1024 H100 with the whole-layer checkpointing its config set when the row was measured,
    docs/validation.md). Also checks that the policy, not the plan, turned the modules on."""
    import pathlib

    import cpo_opt
    from cpo_opt.inputs.loaders import load_cases
    path = pathlib.Path(cpo_opt.__file__).parent / "data" / "moe-published.toml"
    cases = cpo_opt.validate(path).to_dict()["cases"]
    misfits = {c["id"] for c in cases if not c["fits_memory"]}
    assert misfits == set()
    fit = ("recompute_norm_act", "recompute_mla_up")
    helped = [c for c in load_cases(path)
              if any(c.plan.options[k].get("note", "").startswith("on:") for k in fit)]
    assert "mb2604-gptoss120b-b200-bf16" in {c.id for c in helped}
    for c in helped:
        assert all(c.plan.options[k]["from"] == "stack" for k in fit), c.id


def _case(cid, t, ep=8, system="gb200-nvl72"):
    return {"id": cid, "model": "qwen3-30b-a3b", "system": system,
            "overrides": {"cluster": {"gpus": 8}},
            "plan": {"tp": 1, "ep": ep, "global_batch": 512, "dtype": "fp8"},
            "measured": {"step_time_s": t}}


def test_release_twins_group_only_the_same_plan_on_the_same_system_across_releases(experiment):
    mod = experiment("release_twins")
    cases = [_case("mb2604-a", 10.0), _case("mb2606-a", 6.4), _case("mb2606-b", 6.4, ep=4),
             _case("mb2604-c", 10.0, system="hgx-b200"), _case("mb2604-d", 9.0, ep=2),
             _case("mb2604-e", 9.0, ep=2)]  # same plan twice in one release: not a twin
    groups = mod.twin_groups(cases)
    assert [sorted(c["id"] for c in g) for g in groups] == [["mb2604-a", "mb2606-a"]]


def test_one_prediction_cannot_hold_two_measurements_further_apart_than_the_bar(experiment):
    mod = experiment("release_twins")
    # within 15% both ways: t_max / t_min <= 1.15 / 0.85
    assert mod.least_misses([10.0, 13.5]) == 0
    assert mod.least_misses([10.0, 13.6]) == 1
    assert mod.least_misses([10.0, 10.0, 16.0]) == 1
    assert mod.least_misses([5.0, 10.0, 20.0]) == 2


def test_the_release_twins_script_runs_on_the_shipped_rows(experiment, capsys):
    experiment("release_twins").main()
    out = capsys.readouterr().out
    assert "groups of the same model, system and plan" in out
    assert "| qwen3-30b-a3b | GB300 (8) |" in out
