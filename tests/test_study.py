"""The copper-vs-Passage study: the reproduce contract (SPEC), its files, and physics checks.

One ``reproduce(mode="tiny")`` run (config1 and config4 headline, config4 swept at two
points, one co-design budget) serves every test. It uses the persistent compilation cache
(``CPO_OPT_CACHE_DIR``, default ``~/.cache/cpo-opt/jax``, turned on in conftest.py) like the
CLI: warm it runs in about 20 s; on a machine that has never compiled the searches the first
run pays about a minute of XLA compilation per search function. Every test that reads the
run is marked ``slow``.
"""

import json
import math

import pytest

from cpo_opt.inputs.loaders import InputError, load_model, plan_from_values
from cpo_opt.inputs import system_with
from cpo_opt.study import load_study, reproduce
from cpo_opt.study.sweeps import gains_per_doubling, knee
from cpo_opt.model.transformer import param_counts

SPEC_FIELDS = ("plan", "time_to_train_days", "step_time_s", "breakdown_s", "mfu",
               "traffic_GB_per_gpu_per_step")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """``(object, out_dir)`` of one tiny study run (the compile cache is on: conftest.py)."""
    out = tmp_path_factory.mktemp("reproduce")
    return reproduce(mode="tiny", out_dir=out, progress=False), out


@pytest.fixture(scope="module")
def study():
    return load_study("tiny")


def _config(obj, name):
    return next(c for c in obj["configs"] if c["name"] == name)


@pytest.mark.slow
def test_json_has_the_spec_fields(run):
    obj, _ = run
    assert obj["scale_up_ratio"] == pytest.approx(512 * 2000 / (144 * 900))  # SPEC: aggregate pod bandwidth
    assert [c["name"] for c in obj["configs"]] == ["config1", "config4"]
    for c in obj["configs"]:
        assert c["params_total"] > 1e12
        for f in ("copper", "passage"):
            for k in SPEC_FIELDS:
                assert k in c[f], (c["name"], f, k)
            assert c[f]["time_to_train_days"] > 0
            assert math.isclose(sum(c[f]["breakdown_s"].values()), c[f]["step_time_s"],
                                rel_tol=1e-9)
        assert c["speedup"] > 0
    assert isinstance(obj["assumptions"], dict) and len(obj["assumptions"]) > 20
    for k in ("sweeps", "knees", "codesign", "pareto", "sensitivity", "out_dir", "wall_s",
              "quick"):
        assert k in obj


@pytest.mark.slow
def test_speedup_is_the_ratio_of_the_model_outputs(run):
    obj, _ = run
    for c in obj["configs"]:
        assert c["speedup"] == c["copper"]["time_to_train_days"] / c["passage"]["time_to_train_days"]
        split = c["explanation"]["numbers"]["speedup_split"]
        assert split["fabric_alone"] * split["plan_reoptimized"] == pytest.approx(c["speedup"],
                                                                                   rel=1e-12)


@pytest.mark.slow
def test_params_total_matches_param_counts(run):
    obj, _ = run
    for c in obj["configs"]:
        total, _ = param_counts(load_model(c["name"]).model)
        assert c["params_total"] == float(total)


def test_config_sizes_hit_their_targets():
    targets = {"config1": 1.0e12, "config2": 2.0e12, "config3": 3.0e12, "config4": 4.7e12}
    for name, target in targets.items():
        m = load_model(name)
        total, _ = param_counts(m.model)
        assert abs(float(total) / target - 1) < 0.03, name
        moe = m.values["model.moe"]
        assert moe["experts"] % 128 == 0 and m.values["model"]["heads"] % 8 == 0


@pytest.mark.slow
def test_every_assumption_has_a_source(run):
    obj, _ = run
    for k, v in obj["assumptions"].items():
        assert isinstance(v, dict) and "value" in v, k
        assert isinstance(v.get("source"), str) and len(v["source"].strip()) > 10, k
    for k in ("training_tokens", "global_batch_tokens", "cluster_gpus", "dtype",
              "copper.scale_up.domain_size", "passage.scale_up.domain_size",
              "passage.scale_up.bandwidth_GB_s", "gpu.matmul_tflops_fp8", "workload.config4"):
        assert k in obj["assumptions"], k


@pytest.mark.slow
def test_files_are_written(run):
    obj, out = run
    for name in ("results.md", "results.csv", "sweeps.csv", "pareto.csv", "sensitivity.csv",
                 "reproduce.json"):
        assert (out / name).stat().st_size > 100, name
    assert len(list(out.glob("*.png"))) >= 3
    md = (out / "results.md").read_text()
    for c in obj["configs"]:
        assert f"{c['speedup']:.2f}x" in md
    assert json.loads((out / "reproduce.json").read_text())["configs"] == obj["configs"]


@pytest.mark.slow
def test_json_is_strict(run):
    obj, _ = run
    text = json.dumps(obj, allow_nan=False)
    assert json.loads(text)["scale_up_ratio"] == pytest.approx(512 * 2000 / (144 * 900))


@pytest.mark.slow
def test_plans_are_valid_inputs(run, study):
    obj, _ = run
    for c in obj["configs"]:
        model = study.models[c["name"]]
        for f in ("copper", "passage"):
            plan_from_values(c[f]["plan"], model, study.fabrics[f], where="test")
    for row in obj["sweeps"]:
        sys = system_with(study.fabrics["passage"], {row["field"]: row["value"]})
        plan_from_values(row["plan"], study.models[row["config"]], sys, where="test")
    cd = obj["codesign"]
    hw = {"scale_up.domain_size": cd["domain_size"], "scale_up.bandwidth_GB_s": cd["bandwidth_GB_s"]}
    plan_from_values(cd["plan"], study.models[cd["config"]],
                     system_with(study.fabrics["passage"], hw), where="test")


@pytest.mark.slow
def test_larger_domain_takes_traffic_off_scale_out_at_a_fixed_plan(run):
    """Physics: copper's optimal plan run on the 8x larger Passage domain sends fewer bytes
    per GPU over scale-out (groups that spanned racks now fit), for config4.

    (The literal check 'Passage's optimum sends fewer scale-out bytes than copper's optimum'
    does not hold and need not: the Passage optimum drops pipeline parallelism, so each GPU
    reduces the gradients of all layers over a data-parallel group that spans domains; that
    traffic overlaps the backward pass. The fixed-plan comparison isolates the fabric.)"""
    obj, _ = run
    c = _config(obj, "config4")
    same = c["copper_plan_on_passage"]["traffic_GB_per_gpu_per_step"]["scale_out"]
    assert same < c["copper"]["traffic_GB_per_gpu_per_step"]["scale_out"]


@pytest.mark.slow
def test_passage_optimum_beats_copper_plan_on_passage(run):
    """The search on Passage finds a plan at least as fast as copper's plan on Passage (it is
    one of the candidates), and config4 trains faster on Passage."""
    obj, _ = run
    for c in obj["configs"]:
        assert c["passage"]["step_time_s"] <= c["copper_plan_on_passage"]["step_time_s"] * (1 + 1e-9)
    assert _config(obj, "config4")["speedup"] > 1.0


@pytest.mark.slow
def test_domain_sweep_never_increases_time_to_train(run):
    obj, _ = run
    for k in obj["knees"]:
        if k["sweep"] != "domain":
            continue
        days = k["days"]
        assert len(days) >= 2
        for d0, d1 in zip(days, days[1:]):
            assert d1 <= d0 * 1.01, (k["config"], days)
        assert k["non_increasing_within_1pct"]


@pytest.mark.slow
def test_codesign_respects_the_copper_power_budget(run):
    obj, _ = run
    cd = obj["codesign"]
    assert cd["feasible"]
    assert cd["power_kW"] <= cd["budget_kW"] * (1 + 1e-6)
    assert cd["domain_size"] <= 1024 and cd["bandwidth_GB_s"] <= 12500
    c4 = _config(obj, "config4")
    # freeing hardware under the copper budget can only do as well as the Passage preset,
    # which draws less power and lies inside the bounds
    assert cd["time_to_train_days"] <= c4["passage"]["time_to_train_days"] * 1.01


@pytest.mark.slow
def test_explanation_is_derived_from_numbers(run):
    obj, _ = run
    for c in obj["configs"]:
        text = c["explanation"]["text"]
        assert f"{c['speedup']:.2f}x" in text[0]
        assert f"{c['passage']['time_to_train_days']:.2f} days" in text[0]
        so = c["passage"]["traffic_GB_per_gpu_per_step"]["scale_out"]
        assert any(f"{so:.1f} GB (Passage)" in t for t in text)


@pytest.mark.slow
def test_sensitivity_ranks_knobs(run):
    obj, _ = run
    assert len(obj["sensitivity"]) == 4
    for e in obj["sensitivity"]:
        assert len(e["top"]) == 5
        mags = [abs(r["elasticity"]) for r in e["top"]]
        assert mags == sorted(mags, reverse=True)
        assert e["most_important"] != "cluster.gpus"


def test_knee_definition():
    assert knee([8, 16, 32, 64], [10.0, 5.0, 4.9, 4.85], 0.05) == 16
    assert knee([8, 16, 32], [10.0, 5.0, 2.0], 0.05) is None
    assert knee([8, 16], [10.0, 9.9], 0.05) == 8
    g = gains_per_doubling([32, 72], [2.0, 1.0])
    assert g[0] == pytest.approx(1 - 0.5 ** (1 / math.log2(72 / 32)))


def test_study_spec_checks_its_inputs():
    with pytest.raises(InputError):
        load_study("huge")
    s = load_study("quick")
    assert s.scale_up_ratio == pytest.approx(512 * 2000 / (144 * 900))
    assert [s.global_batch(c) for c in ("config1", "config3", "config4")] == [9216, 4608, 2304]
    assert s.tokens == 15e12 and s.gpus == 18432


@pytest.mark.slow
def test_reproduce_table_prints(run):
    from cpo_opt.cli import text
    out = text.reproduce_table(run[0])
    assert "config4" in out and "x" in out
