"""Hardening: every malformed or extreme input is answered per contract (issue 13).

The contract (SPEC.md section 2, docs/hardening.md): exit 0 with finite JSON, or exit 2 with ONE
line on stderr naming the file or flag and the key; never exit 1, never a traceback. The CLI is
called in-process (``cpo_opt.cli.main.main(argv)``) to keep this fast. The first part replays
each failure the fuzz of issue 13 found; the second part is a property-based suite
(hypothesis) over generated model/system/plan files and flags, within and beyond their ranges.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import stat

import numpy as np
import pytest

from cpo_opt.cli.main import main
from cpo_opt.inputs import InputError, load_model, load_scenario, load_system
from cpo_opt.inputs import schema, sources

MODEL = """[model]
layers = 4
hidden = 1024
heads = 16
ffn_hidden = 4096
vocab = 32000
seq_len = 2048
"""

MOE = MODEL + """[model.moe]
experts = 8
top_k = 2
expert_ffn_hidden = 1024
"""

SYSTEM = """[gpu]
preset = "A100-SXM-80GB"
[scale_up]
domain_size = 8
bandwidth_GB_s = 300.0
[scale_out]
bandwidth_GB_s = 25.0
[cluster]
gpus = 64
"""


@pytest.fixture(autouse=True)
def _no_compile_cache(monkeypatch):
    monkeypatch.setenv("CPO_OPT_CACHE_DIR", "")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "m.toml").write_text(MODEL)
    (tmp_path / "moe.toml").write_text(MOE)
    (tmp_path / "s.toml").write_text(SYSTEM)
    return tmp_path


def run(capsys, *argv: str):
    """``(exit status, stdout, stderr)`` of the CLI; asserts the contract's shape."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert code in (0, 2), f"exit {code}: {err}"
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
        assert out == ""
    return code, out, err.strip()


def finite_json(text: str) -> dict:
    """Parse strict JSON (NaN/Infinity refused) and return the object."""
    def refuse(name):
        raise AssertionError(f"non-finite {name} in JSON")
    return json.loads(text, parse_constant=refuse)


def bad(capsys, *argv, contains=()):
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    for part in contains:
        assert part in err, err
    return err


def base(files, model="m.toml"):
    return ["--model", files / model, "--system", files / "s.toml"]


# --------------------------------------------------------------------------- exit 1 -> 2
@pytest.mark.parametrize("digits", [400, 4400])
def test_huge_integer_in_a_file(capsys, files, digits):
    (files / "big.toml").write_text(MODEL.replace("layers = 4", "layers = " + "9" * digits))
    bad(capsys, "evaluate", "--model", files / "big.toml", "--system", files / "s.toml",
        "--plan", "tp=1", contains=("big.toml",) + (("model.layers",) if digits < 4300 else ()))


@pytest.mark.parametrize("digits", [400, 4400])
def test_huge_integer_in_a_json_file(capsys, files, digits):
    doc = '{"model": {"layers": %s, "hidden": 1024, "heads": 16, "ffn_hidden": 4096, ' \
          '"vocab": 32000, "seq_len": 2048}}' % ("9" * digits)
    (files / "big.json").write_text(doc)
    bad(capsys, "evaluate", "--model", files / "big.json", "--system", files / "s.toml",
        "--plan", "tp=1", contains=("big.json",))


@pytest.mark.parametrize("digits", [400, 4400])
def test_huge_integer_inline_plan_and_set(capsys, files, digits):
    n = "9" * digits
    bad(capsys, "evaluate", *base(files), "--plan", f"tp={n}", contains=("--plan", "plan.tp"))
    bad(capsys, "evaluate", *base(files), "--plan", "tp=1", "--set", f"cluster.gpus={n}",
        contains=("--set", "cluster.gpus"))


def test_huge_integer_from_the_api_is_shown_short():
    with pytest.raises(InputError) as info:
        load_system({**_system_dict(), "cluster": {"gpus": 10**5000}})
    assert "cluster.gpus" in str(info.value) and len(str(info.value)) < 300


def test_global_batch_out_of_range(capsys, files):
    bad(capsys, "optimize", *base(files), "--global-batch", "1" + "0" * 30,
        contains=("--global-batch",))


def test_free_field_absent_from_the_system(capsys, files):
    bad(capsys, "optimize", *base(files), "--free", "gpu.matmul_tflops_fp8",
        contains=("--free", "gpu.matmul_tflops_fp8"))


@pytest.mark.parametrize("flag,value", [("--seed", "-1"), ("--seed", str(2**64)),
                                        ("--starts", "0"), ("--steps", str(10**9))])
def test_search_flags_out_of_range(capsys, files, flag, value):
    bad(capsys, "optimize", *base(files), flag, value, contains=(flag,))


@pytest.mark.parametrize("tokens", ["1e-300", "0", "-5", "inf", "nan", "1e30", ""])
def test_tokens_out_of_range(capsys, files, tokens):
    bad(capsys, "sensitivity", *base(files), "--plan", "tp=1", "--tokens", tokens,
        contains=("--tokens",))


def test_sensitivity_api_tokens_underflow(files):
    from cpo_opt import api
    from cpo_opt.inputs import ArgumentError
    with pytest.raises(ArgumentError) as info:
        api.sensitivity(files / "m.toml", files / "s.toml", "tp=1", tokens=1e-300)
    assert info.value.argument == "tokens"


# --------------------------------------------------------------------------- NaN/inf -> 2
SI_OVERFLOW = [
    ("model.layers", "m.toml", "layers = 4", "layers = 1e300"),
    ("model.hidden", "m.toml", "hidden = 1024", "hidden = 1e300"),
    ("model.seq_len", "m.toml", "seq_len = 2048", "seq_len = 1e300"),
    ("model.moe.shared_experts", "moe.toml", "top_k = 2", "top_k = 2\nshared_experts = 1e300"),
    ("model.moe.capacity_factor", "moe.toml", "top_k = 2", "top_k = 2\ncapacity_factor = 1e300"),
    ("gpu.hbm_GB", "s.toml", 'preset = "A100-SXM-80GB"', 'preset = "A100-SXM-80GB"\nhbm_GB = 1e300'),
    ("cluster.gpus", "s.toml", "gpus = 64", "gpus = 1e300"),
    ("scale_up.latency_us", "s.toml", "domain_size = 8", "domain_size = 8\nlatency_us = 1e300"),
    ("scale_out.energy_pJ_per_bit", "s.toml", "bandwidth_GB_s = 25.0",
     "bandwidth_GB_s = 25.0\nenergy_pJ_per_bit = 1e300"),
    ("scale_out.bandwidth_GB_s", "s.toml", "bandwidth_GB_s = 25.0", "bandwidth_GB_s = 1e-300"),
]


@pytest.mark.parametrize("key,name,old,new", SI_OVERFLOW, ids=[c[0] for c in SI_OVERFLOW])
def test_values_checked_after_conversion_to_si(capsys, files, key, name, old, new):
    path = files / name
    path.write_text(path.read_text().replace(old, new, 1))
    model = "moe.toml" if name == "moe.toml" else "m.toml"
    err = bad(capsys, "evaluate", *base(files, model), "--plan", "tp=1", "--json",
              contains=(name, key))
    assert "schema.RANGES" in err or "must be" in err


@pytest.mark.parametrize("setting", ["scale_up.latency_us=1e300",
                                     "scale_out.bandwidth_GB_s=1e-300"])
def test_sensitivity_never_prints_nan(capsys, files, setting):
    bad(capsys, "sensitivity", *base(files), "--plan", "tp=1", "--set", setting,
        contains=("--set", setting.split("=")[0]))


def test_sensitivity_at_the_ends_of_the_ranges_is_finite(capsys, files):
    for setting in ("scale_up.latency_us=1e6", "scale_out.bandwidth_GB_s=1e-6",
                    "scale_up.bandwidth_GB_s=1e6", "gpu.hbm_GB=1e6"):
        code, out, err = run(capsys, "sensitivity", *base(files), "--plan", "tp=1", "--set",
                             setting, "--tokens", "1e12", "--json")
        assert code == 0, err
        finite_json(out)


def test_power_budget_inf_and_without_free(capsys, files):
    bad(capsys, "optimize", *base(files), "--free", "scale_up.bandwidth_GB_s",
        "--power-budget-kW", "inf", contains=("--power-budget-kW",))
    bad(capsys, "optimize", *base(files), "--power-budget-kW", "5",
        contains=("--power-budget-kW", "--free"))


@pytest.mark.parametrize("step", ["1e-320", "0.0", "1e300", "nan"])
def test_validate_measured_step_time(capsys, tmp_path, step):
    case = f"""[[case]]
id = "x"
model = {{ layers = 4, hidden = 1024, heads = 16, ffn_hidden = 4096, vocab = 32000, seq_len = 2048 }}
system = {{ gpu = {{ matmul_tflops_bf16 = 312.0, hbm_GB = 80.0, hbm_bandwidth_TB_s = 2.039 }}, scale_up = {{ domain_size = 8, bandwidth_GB_s = 300.0 }}, scale_out = {{ bandwidth_GB_s = 25.0 }}, cluster = {{ gpus = 8 }} }}
plan = {{ tp = 8 }}
measured = {{ step_time_s = {step} }}
"""
    (tmp_path / "c.toml").write_text(case)
    bad(capsys, "validate", "--cases", tmp_path / "c.toml",
        contains=("c.toml", "measured.step_time_s"))


def test_hbm_at_the_top_of_its_range_fits(capsys, files):
    code, out, err = run(capsys, "evaluate", *base(files), "--plan", "tp=1", "--set",
                         "gpu.hbm_GB=1e6", "--json")
    assert code == 0, err
    assert finite_json(out)["fits_memory"] is True


# --------------------------------------------------------------------------- smaller
def test_no_command_is_one_line(capsys):
    err = bad(capsys)
    assert "command" in err and "evaluate" in err


def test_duplicated_free_and_set(capsys, files):
    bad(capsys, "optimize", *base(files), "--free", "scale_up.bandwidth_GB_s",
        "scale_up.bandwidth_GB_s", contains=("--free", "twice"))
    bad(capsys, "evaluate", *base(files), "--plan", "tp=1", "--set", "scale_up.latency_us=1",
        "--set", "scale_up.latency_us=2", contains=("--set", "twice"))


def test_zero_valued_free_field_names_the_flag(capsys, files):
    err = bad(capsys, "optimize", *base(files), "--free", "scale_up.latency_us", "--set",
              "scale_up.latency_us=0", contains=("--free", "scale_up.latency_us"))
    assert not err.startswith("bounds")


def test_error_under_a_derived_key_names_the_keys_it_came_from(capsys, files):
    path = files / "wide.toml"
    path.write_text(MODEL.replace("hidden = 1024", f"hidden = {2**24}").replace(
        "heads = 16", "heads = 1"))
    err = bad(capsys, "evaluate", "--model", path, "--system", files / "s.toml", "--plan",
              "tp=1", contains=("wide.toml", "model.head_dim", "model.hidden", "set head_dim"))
    assert "not given" in err


def test_not_a_regular_file(capsys, files):
    err = bad(capsys, "evaluate", "--model", "/dev/zero", "--system", files / "s.toml",
              "--plan", "tp=1", contains=("/dev/zero", "not a regular file"))
    assert "no such file" not in err
    bad(capsys, "evaluate", "--model", files, "--system", files / "s.toml", "--plan", "tp=1",
        contains=("directory",))


def test_unusable_path(capsys, files):
    bad(capsys, "evaluate", "--model", "a" * 5000 + ".toml", "--system", files / "s.toml",
        "--plan", "tp=1", contains=("--model",) if False else ("unusable path",))


def test_input_size_cap(files):
    path = files / "huge.toml"
    with open(path, "wb") as f:
        f.write(b"# padding\n" * (sources.MAX_INPUT_BYTES // 10 + 10) + MODEL.encode())
    with pytest.raises(InputError, match="huge.toml: file larger than 4 MiB"):
        load_model(path)
    path.write_bytes(b"#" * (sources.MAX_INPUT_BYTES - len(MODEL) - 2) + b"\n" + MODEL.encode())
    assert load_model(path).values["model"]["layers"] == 4  # just under the cap: read


def _scenario(tmp_path, name, model):
    (tmp_path / "sc").mkdir(exist_ok=True)
    path = tmp_path / "sc" / name
    path.write_text(f'[scenario]\nmodel = "{model}"\nsystem = "dgx-a100-selene"\n')
    return path


@pytest.mark.parametrize("ref", ["../../..", "/etc/passwd.toml", "/", "self", "../m.toml"])
def test_scenario_references_name_the_scenario_key(files, ref):
    (files / "m.toml").write_text(MODEL.replace("layers = 4", "layers = 0"))
    ref = "s.toml" if ref == "self" else ref
    path = _scenario(files, "s.toml", ref)
    with pytest.raises(InputError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: scenario.model"), msg
    assert "\n" not in msg


def test_json_output_refuses_nan():
    from cpo_opt.cli.main import NonFiniteOutput, to_json
    assert json.loads(to_json({"a": [1.0, np.float64(2.5)]})) == {"a": [1.0, 2.5]}
    for value in (float("nan"), float("inf"), np.float64("nan"), np.float32("-inf")):
        with pytest.raises(NonFiniteOutput, match=r"at x\.y\[1\]"):
            to_json({"x": {"y": [0.0, value]}})


def test_internal_nan_is_exit_1_not_printed(capsys, monkeypatch, files):
    from cpo_opt.analysis import evaluate as ev
    real = ev.evaluate

    def poisoned(*a, **k):
        r = real(*a, **k)
        r["step_time_s"] = float("nan")
        return r
    monkeypatch.setattr(ev, "evaluate", poisoned)
    code = main(["evaluate", *map(str, base(files)), "--plan", "tp=1", "--json"])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and "non-finite" in err and "step_time_s" in err


def _system_dict():
    return {"gpu": {"matmul_tflops_bf16": 312.0, "hbm_GB": 80.0, "hbm_bandwidth_TB_s": 2.0},
            "scale_up": {"domain_size": 8, "bandwidth_GB_s": 300.0},
            "scale_out": {"bandwidth_GB_s": 25.0}, "cluster": {"gpus": 64}}


def test_ranges_cover_every_numeric_key():
    """Every numeric key of the schema has a documented range containing its default."""
    for section, keys in schema.SECTIONS.items():
        for key in keys:
            if key.kind not in ("int", "float"):
                continue
            low, high = schema.range_of(key, f"{section}.{key.name}")
            assert 0 <= low < high and math.isfinite(high)
            assert math.isfinite(high * key.scale)
            if key.default is not None and not callable(key.default):
                assert low <= key.default <= high, (section, key.name)


# --------------------------------------------------------------------------- plan-space size
def test_divisors_refuses_huge_numbers():
    from cpo_opt.search import lattice
    assert list(lattice.divisors(12)) == [1, 2, 3, 4, 6, 12]
    with pytest.raises(InputError, match="cluster.gpus"):
        lattice.divisors(2**60)


def test_cluster_of_2_pow_60_is_refused_before_allocating(capsys, files):
    bad(capsys, "optimize", *base(files), "--set", f"cluster.gpus={2**60}", "--exhaustive",
        contains=("--set", "cluster.gpus"))


def test_plan_space_guard_names_size_and_flag(capsys, files, monkeypatch):
    from cpo_opt.search import lattice
    monkeypatch.setattr(lattice, "MAX_PLAN_ROWS", 50)
    err = bad(capsys, "optimize", *base(files), "--exhaustive",
              contains=("plan space", "candidate plans", "--set cluster.gpus"))
    assert any(ch.isdigit() for ch in err)


# --------------------------------------------------------------------------- output safety
def _earlier_result(path):
    path.mkdir()
    (path / "results.md").write_text("old\n")
    (path / "reproduce.json").write_text("{}\n")


def test_out_file_is_refused_before_the_study_runs(capsys, tmp_path, monkeypatch):
    import importlib
    rep = importlib.import_module("cpo_opt.study.reproduce")  # the module, not the function

    def never(*a, **k):
        raise AssertionError("the study ran")
    monkeypatch.setattr(rep, "load_study", never)
    (tmp_path / "f").write_text("x")
    bad(capsys, "reproduce", "--out", tmp_path / "f", "--no-progress", contains=("--out", "file"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("mine")
    bad(capsys, "reproduce", "--out", tmp_path / "d", "--no-progress",
        contains=("--out", "notes.txt"))
    (tmp_path / "link").symlink_to(tmp_path / "d")
    bad(capsys, "reproduce", "--out", tmp_path / "link", "--no-progress",
        contains=("--out", "symbolic link"))


@pytest.mark.parametrize("dangling", [False, True])
def test_links_inside_out_are_refused(tmp_path, dangling):
    from cpo_opt.inputs import ArgumentError
    from cpo_opt.study import outputs
    outside = tmp_path / "outside.md"
    if not dangling:
        outside.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.md").symlink_to(outside)
    with pytest.raises(ArgumentError, match="results.md"):
        outputs.check_target(out)
    assert (outside.read_text() == "keep") if not dangling else not outside.exists()


def test_staged_write_replaces_an_earlier_result_atomically(tmp_path):
    from cpo_opt.study import outputs
    out = tmp_path / "new" / "reproduce"
    with outputs.staged(out) as stage:  # parent created, target created by rename
        assert stage.parent == out.parent and not out.exists()
        (stage / "results.md").write_text("first\n")
    assert (out / "results.md").read_text() == "first\n"
    assert outputs.check_target(out) is True
    with pytest.raises(RuntimeError):  # a failed run leaves the earlier result untouched
        with outputs.staged(out) as stage:
            (stage / "results.md").write_text("broken\n")
            raise RuntimeError("study failed")
    assert (out / "results.md").read_text() == "first\n"
    with outputs.staged(out) as stage:
        (stage / "reproduce.json").write_text("{}\n")
    assert sorted(p.name for p in out.iterdir()) == ["reproduce.json"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["reproduce"]  # no leftovers


def test_study_json_is_strict(tmp_path):
    from cpo_opt.study import outputs
    assert outputs.clean({"a": float("nan"), "b": [np.float32(1.5)]}) == {"a": None, "b": [1.5]}


# --------------------------------------------------------------------------- compile cache
def test_compile_cache_directory_is_private(tmp_path):
    from cpo_opt import runtime
    path = tmp_path / "cache" / "jax"
    assert runtime.private_directory(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    os.chmod(path, 0o777)
    assert runtime.private_directory(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    link = tmp_path / "link"
    link.symlink_to(path)
    assert not runtime.private_directory(str(link))
