"""The study re-anchored on the paper: presets, scale_up_ratio, the figure, the speedup
interval, the batch sweep's split, and the committed notebooks being current.

The figure test runs the three bars in the ``tiny`` mode (gradient search only, a few
seconds each with a warm compile cache); it is marked ``slow``.
"""

import dataclasses
import importlib.util
import math
import pathlib

import jax
import nbformat
import pytest

from cpo_opt.inputs.loaders import load_model, load_system, plan_from_values
from cpo_opt.study import load_study
from cpo_opt.study import paper_figure, sweeps, uncertainty
from cpo_opt.study.spec import aggregate_pod_bandwidth

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cache():
    from cpo_opt.runtime import enable_compile_cache
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    saved = {k: getattr(jax.config, k) for k in keys}
    enable_compile_cache()
    yield
    for k, v in saved.items():
        jax.config.update(k, v)


@pytest.fixture(scope="module")
def study():
    return load_study("tiny")


def test_presets_follow_the_paper(study):
    up = {f: s.values["scale_up"] for f, s in study.fabrics.items()}
    assert (up["copper"]["domain_size"], up["copper"]["bandwidth_GB_s"]) == (144, 900.0)
    assert (up["passage"]["domain_size"], up["passage"]["bandwidth_GB_s"]) == (512, 2000.0)
    assert up["passage"]["energy_pJ_per_bit"] == 4.3
    assert load_system("study-copper-nvl72").values["scale_up"]["domain_size"] == 72
    for name, e in (("study-optical-cpo25d", 12.0), ("study-optical-lpo", 13.0),
                    ("study-optical-pluggable", 21.0)):
        v = load_system(name).values
        assert v["scale_up"]["energy_pJ_per_bit"] == e
        assert v["scale_up"]["domain_size"] == 512 and v["scale_up"]["bandwidth_GB_s"] == 2000
    bars = study.paper_figure["bars"]
    got = [(load_system(b["system"]).values["scale_up"]["domain_size"],
            load_system(b["system"]).values["scale_up"]["bandwidth_GB_s"],
            load_system(b["system"]).values["cluster"]["gpus"]) for b in bars]
    assert got == [(128, 900.0, 512), (512, 900.0, 512), (512, 2000.0, 512)]
    for b in bars:
        assert load_system(b["system"]).values["scale_out"]["bandwidth_GB_s"] == 100.0
    # every study domain tiles the cluster
    for s in list(study.fabrics.values()) + [load_system("study-copper-nvl72")]:
        assert study.gpus % s.values["scale_up"]["domain_size"] == 0


def test_scale_up_ratio_is_the_aggregate_pod_bandwidth(study):
    cu, pa = study.fabrics["copper"], study.fabrics["passage"]
    assert study.scale_up_ratio == aggregate_pod_bandwidth(pa) / aggregate_pod_bandwidth(cu)
    assert study.scale_up_ratio == pytest.approx(7.9, abs=0.05)  # the paper's "8x"


def test_every_figure_assumption_has_a_source(study):
    a = study.assumptions
    assert a["paper_figure"]["source"].strip()
    assert [b["paper_relative_time"] for b in a["paper_figure"]["value"]["bars"]] == \
        [1.0, 0.6, 0.37]
    for b in study.paper_figure["bars"]:
        key = f"paper_figure.{b['system']}.scale_up.bandwidth_GB_s"
        assert key in a and len(a[key]["source"]) > 20, key


@pytest.mark.slow  # three gradient searches on the study's pod (10-16 s warm)
def test_figure_columns_are_computed(study, cache):
    fig = paper_figure.figure(study)
    rows = fig["rows"]
    assert [r["paper_relative_time"] for r in rows] == [1.0, 0.6, 0.37]
    assert rows[0]["model_relative_time"] == 1.0
    assert rows[0]["model_relative_time_same_plan"] == 1.0
    for r in rows:
        assert r["model_relative_time"] > 0 and r["fits_memory"]
        assert math.isclose(sum(r["breakdown_s"].values()), r["step_time_s"], rel_tol=1e-9)
    # more bandwidth on the same pod and the same plan never takes longer
    assert rows[2]["model_relative_time_same_plan"] <= rows[1]["model_relative_time_same_plan"]
    assert fig["tokens_per_gpu"] == study.tokens_per_gpu
    assert fig["explanation"]["text"]


def test_gap_closed_measures_the_log_distance():
    base = {"rows": [{"paper_relative_time": 1.0, "model_relative_time": 1.0},
                     {"paper_relative_time": 0.5, "model_relative_time": 1.0}]}
    same = {"rows": [dict(r) for r in base["rows"]]}
    hit = {"rows": [base["rows"][0], {"paper_relative_time": 0.5, "model_relative_time": 0.5}]}
    half = {"rows": [base["rows"][0], {"paper_relative_time": 0.5,
                                       "model_relative_time": math.sqrt(0.5)}]}
    assert paper_figure.gap_closed(base, same) == [None, 0.0]
    assert paper_figure.gap_closed(base, hit) == [None, 1.0]
    assert paper_figure.gap_closed(base, half)[1] == pytest.approx(0.5)


@pytest.mark.slow  # compiles the study's interval derivatives for config1 on both fabrics
def test_speedup_interval_brackets_the_point_and_shrinks_to_it(study, cache):
    model = load_model("config1")
    plan = "tp=1,cp=1,pp=4,ep=64,micro_batch=1,global_batch=9216"
    sides = []
    for f in ("copper", "passage"):
        s = study.fabrics[f]
        vals = dict(kv.split("=") for kv in plan.split(","))
        sides.append((s, plan_from_values({k: int(v) for k, v in vals.items()}, model, s,
                                          where="test")))
    r = uncertainty.speedup_interval(model, sides[0], sides[1])
    lo, hi = r["interval"]
    assert lo <= r["at_defaults"] <= hi and lo < hi
    point = {k: (v.default, v.default) for k, v in uncertainty.INFO.items()}
    r0 = uncertainty.speedup_interval(model, sides[0], sides[1], point)
    assert r0["interval"][0] == pytest.approx(r0["at_defaults"], rel=1e-12)
    assert r0["interval"][1] == pytest.approx(r0["at_defaults"], rel=1e-12)
    for name, (a, b) in uncertainty.STATED_RANGES.items():
        assert a < b
        if uncertainty.INFO[name].unit == "fraction":
            assert b <= 1.0


def test_speedup_interval_reads_a_constants_file(tmp_path):
    """A calibrate file's interval replaces the range at its level; the others stay around
    the GPU's own constants (not the global defaults)."""
    from cpo_opt.inputs.constants_file import read_constants
    from cpo_opt.model.constants import constants_for
    f = tmp_path / "c.toml"
    f.write_text('["blackwell".gemm_eff_fp8]\nvalue = 0.6\nlow = 0.55\nhigh = 0.65\n')
    t = read_constants(f)
    base = constants_for("GB200", t)
    r = uncertainty.ranges_from_table(t, "GB200", base)
    assert r["gemm_eff_fp8"] == (0.55, 0.65)
    assert r["hbm_eff"] == uncertainty.stated_range("hbm_eff", float(base.hbm_eff))
    assert not hasattr(uncertainty, "ranges_from_constants_file")


@pytest.mark.slow  # one batch-sweep point: config4 optimized on both fabrics
def test_batch_split_adds_up_to_the_speedup(study, cache):
    row = sweeps.batch_point(study, "config4", study.tokens_per_gpu)
    assert row["speedup"] is not None
    assert sum(row["contribution"].values()) == pytest.approx(row["speedup"] - 1, rel=1e-9)
    assert row["global_batch"] == study.global_batch("config4")


def _builder():
    spec = importlib.util.spec_from_file_location("build_notebooks",
                                                  ROOT / "notebooks" / "build_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["passage_vs_copper", "sensitivity"])
def test_committed_notebooks_are_executed_and_current(name):
    """The stored notebook was executed (outputs present, no error) from the current cell
    sources and package files: rebuild with ``python notebooks/build_notebooks.py``."""
    b = _builder()
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    meta = nb.metadata.get("cpo_opt", {})
    assert meta.get("executed"), f"{name}.ipynb is stored without outputs"
    assert meta.get("inputs_sha256") == b.inputs_hash(b.NOTEBOOKS[name]), (
        f"{name}.ipynb is stale: the model, presets, study or cells changed since it was "
        "executed; run python notebooks/build_notebooks.py")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.source for c in code] == [c.source for c in b.NOTEBOOKS[name]
                                        if c.cell_type == "code"]
    assert all(c.get("outputs") for c in code), f"{name}.ipynb: a code cell has no output"
    for c in code:
        for out in c.outputs:
            assert out.get("output_type") != "error", (name, out.get("ename"))
    if name == "passage_vs_copper":
        text = "".join("".join(o.get("text", "")) for o in code[1].outputs)
        for label in ("copper 4x128", "Passage 1x512, 14.4 Tbps", "Passage 1x512, 32 Tbps"):
            assert label in text
        assert any("image/png" in o.get("data", {}) for o in code[1].outputs)
