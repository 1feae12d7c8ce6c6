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
    """No persistent cache writes, and the global x64 flag restored: ``main(["bench", ...])``
    turns float64 off (bench runs float32), which must not leak into other tests."""
    import jax
    monkeypatch.setenv("CPO_OPT_CACHE_DIR", "")
    x64 = jax.config.jax_enable_x64
    yield
    jax.config.update("jax_enable_x64", x64)


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


@pytest.mark.slow  # compiles the sensitivity pass (~10 s idle, ~80 s on a loaded 2-core VM)
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
        "--plan", "tp=1", contains=("unusable path", "File name too long"))


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


# --------------------------------------------------------------------------- property-based
# Generated model/system/plan files and flags, each value inside its documented range
# (schema.RANGES) or, for one chosen key, beyond it. Within the ranges the answer must be exit 0
# with finite JSON; one value beyond must be exit 2 naming the file (or flag) and that key.
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROPERTY = settings(max_examples=40, deadline=None, print_blob=True, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
"""Bounded and reproducible: a fixed number of examples, derandomized (the same examples on
every run), and on failure hypothesis prints the failing example and its reproduction blob."""

DENSE_KEYS = ("layers", "hidden", "heads", "ffn_hidden", "vocab", "seq_len")
GPU_KEYS = ("matmul_tflops_bf16", "matmul_tflops_fp8", "vector_tflops", "hbm_GB",
            "hbm_bandwidth_TB_s", "power_W")
FABRIC_KEYS = ("bandwidth_GB_s", "latency_us", "energy_pJ_per_bit", "switch_radix",
               "switch_bandwidth_TB_s", "escape_bandwidth_GB_s")


def _key(dotted):
    section, _, name = dotted.rpartition(".")
    return schema.key_named(section, name)


def in_range(dotted):
    """A value of ``dotted`` inside its documented range: an end, or log-uniform inside."""
    low, high = schema.range_of(_key(dotted), dotted)
    if _key(dotted).kind == "int":
        inner = st.floats(math.log(max(low, 1)), math.log(high)).map(
            lambda x: min(max(int(round(math.exp(x))), low), high))
        return st.one_of(st.sampled_from([int(low) if low >= 1 else 1, int(high)]), inner)
    lo = max(low, 1e-12)
    inner = st.floats(math.log(lo), math.log(high)).map(lambda x: min(max(math.exp(x), lo), high))
    return st.one_of(st.sampled_from([low, high]), inner)


def beyond(dotted):
    """A value of ``dotted`` that is certainly a bad input."""
    key = _key(dotted)
    low, high = schema.range_of(key, dotted)
    values = [high * 10 + 1, -1, 1e300, -1e300, float("nan"), float("inf"), "8", True]
    if key.kind == "int":
        values += [high + 1, 10**400, 2.5, 0 if low >= 1 else -1]
    if low > 0:
        values += [low / 10, 1e-300]
    return st.sampled_from(values)


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def toml(tables: dict) -> str:
    return "".join(f"[{name}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items())
                   for name, t in tables.items())


@st.composite
def documents(draw, corrupt_keys):
    """``(model tables, system tables, corrupted dotted key or None)``: a dense model and a
    system with every GPU and fabric key given, all in range except at most one key."""
    corrupt = draw(st.sampled_from((None,) * 12 + corrupt_keys))  # ~1/3 all in range

    def value(dotted):
        return draw(beyond(dotted) if dotted == corrupt else in_range(dotted))
    model = {k: value(f"model.{k}") for k in DENSE_KEYS}
    model["kv_heads"] = model["heads"]  # heads % kv_heads == 0 is a cross-key rule
    model["head_dim"] = value("model.head_dim")
    system = {"gpu": {k: value(f"gpu.{k}") for k in GPU_KEYS},
              "scale_up": {"domain_size": value("scale_up.domain_size"),
                           **{k: value(f"scale_up.{k}") for k in FABRIC_KEYS}},
              "scale_out": {k: value(f"scale_out.{k}") for k in FABRIC_KEYS},
              "cluster": {"gpus": value("cluster.gpus")}}
    return {"model": model}, system, corrupt


CORRUPTIBLE = (tuple(f"model.{k}" for k in DENSE_KEYS + ("head_dim",))
               + tuple(f"gpu.{k}" for k in GPU_KEYS)
               + tuple(f"{t}.{k}" for t in ("scale_up", "scale_out") for k in FABRIC_KEYS)
               + ("scale_up.domain_size", "cluster.gpus"))


def check_answer(code, out, err, corrupt, names):
    """The contract for one generated case (see the section comment)."""
    event(f"exit {code}")  # pytest --hypothesis-show-statistics shows the mix
    if corrupt is None:
        assert code == 0, err
        obj = finite_json(out)
        assert obj["step_time_s"] > 0
        return obj
    assert code == 2 and out == ""
    assert err.startswith(names), err
    assert corrupt.rpartition(".")[2] in err, err
    return None


def _write(tmp_path, model, system, suffix):
    m, s = tmp_path / f"gm{suffix}", tmp_path / f"gs{suffix}"
    if suffix == ".json":
        try:
            m.write_text(json.dumps(model))
            s.write_text(json.dumps(system))
        except ValueError:  # an int of > 4300 digits: json.dumps refuses it, write it by hand
            return _write(tmp_path, model, system, ".toml")
    else:
        m.write_text(toml(model))
        s.write_text(toml(system))
    return m, s


@pytest.mark.slow  # hypothesis runs the CLI in-process on many generated files (~2 s)
@PROPERTY
@given(doc=documents(CORRUPTIBLE), suffix=st.sampled_from([".toml", ".json"]))
def test_property_evaluate_generated_files(capsys, tmp_path, doc, suffix):
    model, system, corrupt = doc
    m, s = _write(tmp_path, model, system, suffix)
    code, out, err = run(capsys, "evaluate", "--model", m, "--system", s, "--plan", "tp=1",
                         "--tokens", "1e12", "--json")
    obj = check_answer(code, out, err, corrupt, (str(m), str(s)))
    if obj is not None:
        assert obj["time_to_train_days"] > 0


PLAN_FLAGS = st.fixed_dictionaries({}, optional={
    "tp": st.sampled_from([1, 2, 3, 8, 0, -1, 2**70, 1.5, "x"]),
    "pp": st.sampled_from([1, 2, 4, 0, 10**400]),
    "cp": st.sampled_from([1, 2, 64]),
    "vpp": st.sampled_from([1, 2, 0]),
    "micro_batch": st.sampled_from([1, 4, 2**41, -3]),
    "global_batch": st.sampled_from([64, 4096, 1, 2**40, 2**41, 0]),
    "recompute": st.sampled_from(["none", "full", "selective", "bogus"]),
    "zero": st.sampled_from([0, 1, 3, 4]),
    "dtype": st.sampled_from(["bf16", "fp8", "fp4"]),
    "sequence_parallel": st.sampled_from(["true", "false", "maybe"]),
})
SET_FLAGS = st.lists(st.tuples(st.sampled_from(CORRUPTIBLE[7:] + ("scale_up.bogus", "gpu")),
                               st.sampled_from(["1", "0", "-1", "1e300", "1e-300", "nan", "inf",
                                                "9" * 500, "9" * 5000, "300", "2.5", ""])),
                     max_size=2)
TOKENS = st.one_of(st.none(), st.sampled_from(["15T", "1e12", "", "0", "1e-300", "inf", "nan",
                                               "1e30", "12Q", "450B"]))


@PROPERTY
@given(plan=PLAN_FLAGS, sets=SET_FLAGS, tokens=TOKENS)
def test_property_evaluate_flags(capsys, files, plan, sets, tokens):
    """Inline plans, ``--set`` and ``--tokens`` over a fixed valid model and system."""
    argv = ["evaluate", *base(files), "--plan",
            ",".join(f"{k}={v}" for k, v in plan.items()) or "tp=1", "--json"]
    for k, v in sets:
        argv += ["--set", f"{k}={v}"]
    if tokens is not None:
        argv += ["--tokens", tokens]
    code, out, err = run(capsys, *argv)
    event(f"exit {code}")
    if code == 0:
        finite_json(out)
    else:
        assert err.startswith(("--plan", "--set", "--tokens", str(files / "s.toml"))), err


@pytest.mark.slow
@settings(max_examples=30, deadline=None, print_blob=True, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=documents(CORRUPTIBLE))
def test_property_sensitivity_generated_files(capsys, tmp_path, doc):
    """Gradients are finite everywhere inside the documented ranges."""
    model, system, corrupt = doc
    m, s = _write(tmp_path, model, system, ".toml")
    code, out, err = run(capsys, "sensitivity", "--model", m, "--system", s, "--plan", "tp=1",
                         "--tokens", "1e12", "--json")
    obj = check_answer(code, out, err, corrupt, (str(m), str(s)))
    if obj is not None:
        assert all(math.isfinite(v) for v in obj["gradients"].values())


@pytest.mark.parametrize("flag,value", [("--n", "0"), ("--batch", str(2**40)), ("--seed", "-2")])
def test_bench_flags_out_of_range(capsys, flag, value):
    bad(capsys, "bench", flag, value, contains=(flag,))


# =========================================================================== round two
# Issue 25: the failures a second adversarial pass found, one test each (constants files:
# tests/test_constants_schema.py; writes and interrupts: tests/test_safe_writes.py; the whole
# corpus: tests/test_fuzz.py).
CASES_TOML = """[[case]]
id = "a"
model = "m.toml"
system = "{system}"
plan = {{ tp = 8 }}
measured = {{ step_time_s = 0.05 }}
"""


@pytest.mark.parametrize("plan", ["", " ", ",", "tp", "tp=", "=1", "tp=1;pp=1"])
def test_plan_text_errors_name_the_flag(capsys, files, plan):
    err = bad(capsys, "evaluate", *base(files), "--plan", plan)
    assert err.startswith("--plan"), err


@pytest.mark.parametrize("text", ["tp=1e0", "tp=1.0", "tp=1_0", "tp=\u0661"])
def test_integer_keys_take_integer_literals(capsys, files, text):
    bad(capsys, "evaluate", *base(files), "--plan", text, contains=("--plan", "plan.tp"))
    bad(capsys, "evaluate", *base(files), "--plan", "tp=1", "--set",
        "cluster.gpus=" + text.split("=")[1], contains=("--set", "cluster.gpus"))


@pytest.mark.parametrize("setting", ["scale_up.latency_us=1e-320", "scale_out.latency_us=5e-324",
                                     "scale_up.energy_pJ_per_bit=1e-300"])
def test_denormal_values_are_refused(capsys, files, setting):
    err = bad(capsys, "evaluate", *base(files), "--plan", "tp=1", "--set", setting,
              contains=("--set", setting.split("=")[0]))
    assert "must be 0 or between" in err


def test_zero_latency_is_still_accepted(capsys, files):
    code, out, err = run(capsys, "evaluate", *base(files), "--plan", "tp=1", "--set",
                         "scale_up.latency_us=0", "--json")
    assert code == 0, err


@pytest.mark.parametrize("name", ["a" * 5000, "a" * 300, "../../etc/passwd", "x/y/z", ""])
def test_presets_show_odd_names(capsys, name):
    err = bad(capsys, "presets", "show", name)
    assert "presets show" in err and len(err) < 400


def test_compile_cache_note_comes_after_the_error_line(capsys, files, monkeypatch):
    monkeypatch.setenv("CPO_OPT_CACHE_DIR", str(files / "m.toml"))  # a file: unusable
    code = main(["evaluate", *map(str, base(files)), "--plan", "tp=1", "--set", "x"])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert lines[0].startswith("--set") and lines[1].startswith("cpo-opt: compile cache off")


@pytest.mark.parametrize("ref", ["/etc/passwd", "/", "/dev/zero", "nope.toml", "m.txt"])
def test_cases_file_is_named_when_a_case_refers_to_a_bad_file(capsys, files, ref):
    (files / "m.txt").write_text(MODEL)
    path = files / "c.toml"
    path.write_text(CASES_TOML.format(system=ref))
    err = bad(capsys, "validate", "--cases", path)
    assert err.startswith(str(path)) and "system" in err, err


def test_a_loaded_plan_is_checked_again_on_another_system(files):
    """A PlanSpec checked for a 64-GPU system, used on an 8-GPU one: checked again there
    (tp = 16 does not fit 8 GPUs), and accepted where it is valid."""
    import cpo_opt
    from cpo_opt.inputs import load_plan
    m, s64, _ = cpo_opt.api.load_inputs(files / "m.toml", files / "s.toml")
    plan = load_plan("tp=16", m, s64)
    assert plan.checked_for is not None
    small = {**_system_dict(), "cluster": {"gpus": 8}}
    with pytest.raises(InputError, match="plan"):
        cpo_opt.evaluate(m, small, plan)
    ok = load_plan("tp=8", m, s64)
    r = cpo_opt.evaluate(m, small, ok).to_dict()
    assert r["plan"]["dp"] == 1  # re-derived for 8 GPUs (it was 8 on 64)


def test_calibrate_flags_refused_before_the_fit(capsys, tmp_path, monkeypatch):
    """--steps beyond its bound and an --out that cannot be written end the run before any
    compilation (the fit's functions are never built)."""
    from cpo_opt.analysis import calibrate as C
    monkeypatch.setattr(C.Batch, "functions", lambda *a: pytest.fail("the fit ran"))
    cases = "cpo_opt/data/moe-fit.toml"
    for steps in (str(2**70), "1000000000000", "10001", "0"):
        bad(capsys, "calibrate", "--cases", cases, "--steps", steps, contains=("--steps",))
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_text("x")
    (tmp_path / "mine.toml").write_text("# my notes\n")
    for out in (tmp_path / "d", tmp_path / "f" / "x.toml", "/proc/x.toml", tmp_path / "x.txt",
                tmp_path / "mine.toml", ""):
        bad(capsys, "calibrate", "--cases", cases, "--out", out, contains=("--out",))
    assert (tmp_path / "mine.toml").read_text() == "# my notes\n"


def test_calibrate_steps_bound_is_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    assert "[1..10000]" in capsys.readouterr().out


def test_bench_draws_the_same_plans_batch_by_batch(files):
    """The streamed sample equals the whole sample drawn the old way (every plan distinct,
    the same seed): a reference implementation here, independent of the streaming code."""
    from cpo_opt.analysis import bench
    from cpo_opt.search import lattice
    m, s, _ = __import__("cpo_opt").api.load_inputs(files / "m.toml", files / "s.toml")
    n = 1000
    gb = bench.default_global_batch(m, s)
    cols = lattice.enumerate_plans(m.values, s.values, gb)
    size = len(cols["tp"])
    rng = np.random.default_rng(3)
    idx = np.concatenate([rng.permutation(size) for _ in range(-(-n // size))])[:n]
    want = {k: v[idx] for k, v in cols.items()}
    want["global_batch"] = want["global_batch"] * (1 + np.arange(n) // size)
    got = list(bench.plan_batches(m, s, n, 96, seed=3))
    assert [len(g["tp"]) for g in got] == [96] * 10 + [40]
    for k in want:
        assert np.array_equal(np.concatenate([g[k] for g in got]), want[k]), k
    rows = {tuple(float(want[k][i]) for k in sorted(want)) for i in range(n)}
    assert len(rows) == n  # distinct


def test_bench_huge_n_stops_at_its_time_limit(capsys, files):
    code, out, err = run(capsys, "bench", *base(files), "--n", "10000000000", "--batch", "4096",
                         "--max-seconds", "1", "--json")
    assert code == 0, err
    r = finite_json(out)
    assert r["stopped_early"] is True and 0 < r["n"] < 10**10 and r["n_requested"] == 10**10
    assert any("stopped after" in w for w in r["warnings"])


@pytest.mark.parametrize("var, value", [("CPO_OPT_NUM_PROCESSES", "abc"),
                                        ("CPO_OPT_PROCESS_ID", "x"),
                                        ("CPO_OPT_NUM_PROCESSES", "-3"),
                                        ("SLURM_NTASKS", "abc"),
                                        ("CPO_OPT_COORDINATOR_TIMEOUT", "soon")])
def test_malformed_environment_variables_are_named(capsys, files, monkeypatch, var, value):
    """Checked before ``jax.distributed`` is touched (safe in-process)."""
    for k in ("CPO_OPT_COORDINATOR", "CPO_OPT_NUM_PROCESSES", "CPO_OPT_PROCESS_ID",
              "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(k, raising=False)
    if var.startswith("CPO_OPT_") and var != "CPO_OPT_COORDINATOR_TIMEOUT":
        monkeypatch.setenv("CPO_OPT_COORDINATOR", "127.0.0.1:9")
        monkeypatch.setenv("CPO_OPT_NUM_PROCESSES", "2")
        monkeypatch.setenv("CPO_OPT_PROCESS_ID", "1")
    if var == "SLURM_NTASKS":
        monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv(var, value)
    err = bad(capsys, "optimize", *base(files), contains=(var,))
    assert "environment variable" in err


def _cli(args, timeout, env=None):
    import subprocess
    import sys
    e = dict(os.environ, CPO_OPT_CACHE_DIR="", JAX_PLATFORMS="cpu", **(env or {}))
    for k in ("CPO_OPT_COORDINATOR", "CPO_OPT_NUM_PROCESSES", "CPO_OPT_PROCESS_ID",
              "SLURM_NTASKS", "SLURM_PROCID"):
        e.pop(k, None)
    return subprocess.run([sys.executable, "-m", "cpo_opt", *map(str, args)],
                          capture_output=True, text=True, env=e, timeout=timeout)


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("process_id", ["1", "0"])
def test_distributed_gives_up_after_its_timeout(files, process_id):
    """No coordinator at the address (process 1), or nobody joining process 0: exit 2 after
    --coordinator-timeout (3 s here) with one line naming --coordinator, not a hang and not
    jax.distributed's abort."""
    import time
    port = _free_port()
    t0 = time.perf_counter()
    r = _cli(["optimize", *base(files), "--coordinator", f"127.0.0.1:{port}",
              "--num-processes", "2", "--process-id", process_id, "--coordinator-timeout", "3",
              "--json"], timeout=120)
    wall = time.perf_counter() - t0
    assert r.returncode == 2 and r.stdout == "", r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("--coordinator:"), r.stderr
    assert ("no coordinator answered" if process_id == "1" else "only 1 of 2") in lines[0]
    assert wall < 60


@pytest.mark.parametrize("coordinator", ["nocolon", ":1234", "127.0.0.1:", "127.0.0.1:99999",
                                         "127.0.0.1:abc", "256.0.0.1:80"])
def test_malformed_coordinator_is_refused_at_once(capsys, files, coordinator):
    bad(capsys, "optimize", *base(files), "--coordinator", coordinator, "--num-processes", "2",
        "--process-id", "1", "--coordinator-timeout", "2", contains=("--coordinator",))
