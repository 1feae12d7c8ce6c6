"""The adversarial corpus of issue 25 and its driver: every command fed the kinds of input
that broke the contract (SPEC.md section 2, docs/hardening.md), each answer classified.

The contract for one input: exit 0 with sane output (``--json``: one strict JSON object, every
number finite, the command's main numbers physical), or exit 2 with nothing on standard
output and exactly ONE line on standard error that names the flag or the file it is about.
Anything else is a finding, by kind:

``crash``    exit 1, a traceback, or an exception out of ``main``
``hang``     still running after the case's time limit
``absurd``   exit 0 on an input the contract refuses, or exit 0 with insane output
``refused``  exit 2 on an input the contract accepts
``unnamed``  exit 2 whose line names neither the flag nor the file
``noisy``    exit 2 with anything on stdout, or on stderr before the line or after it
             (only a note about the run, e.g. the compile cache being off, may follow it)

The corpus is derandomized: a fixed table, the same cases on every run. **Adding a flag's
cases is one entry of** :data:`FLAGS` (its values, each with what the contract expects); the
entry applies to every command whose parser has the flag (read from ``build_parser()``), so
a flag added to several commands is fuzzed on all of them. Whole-argv cases that no single
flag owns (distributed runs, environment variables, ``presets show NAME``) are in
:func:`extra_cases`. File-valued inputs are :class:`F` objects, written into the work
folder before the cases run.

Costs: the expensive commands (``calibrate``: a compilation per set of cases; ``reproduce``:
the study) run accepted inputs only where the table says ``tier="full"`` or never; every
refused input must be refused before the work starts, so those run in every tier. Cases that
may block in C code or that touch process-global state (``jax.distributed``) run in a
subprocess (``isolate``); the others in-process through ``cpo_opt.cli.main.main(argv)``
with a ``SIGALRM`` time limit.

Run the whole pass (counts by command and kind, then every finding)::

    python tests/cli_fuzz.py                 # the full corpus (a few minutes, 2 cores)
    python tests/cli_fuzz.py --tier fast     # what tests/test_fuzz.py runs in the fast loop
    python tests/cli_fuzz.py --tier fresh:7  # a fresh corpus drawn with seed 7 (same size)
    python tests/cli_fuzz.py --command calibrate --show all
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Mapping, Sequence

OK, BAD, EITHER = "ok", "bad", "either"
KINDS = ("answered", "crash", "hang", "absurd", "refused", "unnamed", "noisy")
NEVER = "never"


# --------------------------------------------------------------------------- fixtures
@dataclasses.dataclass(frozen=True)
class F:
    """A path in the work folder; written before the cases run.

    ``text``: the file's content (``bytes`` for binary); ``kind``: ``"file"``, ``"dir"``,
    ``"link"`` (to ``target``, a name in the folder or an absolute path), ``"fifo"``,
    ``"missing"`` (never created), or ``"mode000"`` (a file nobody may read)."""

    name: str
    text: Any = ""
    kind: str = "file"
    target: str | None = None


MODEL = """[model]
layers = 4
hidden = 1024
heads = 16
ffn_hidden = 4096
vocab = 32000
seq_len = 2048
"""

SYSTEM = """[gpu]
preset = "A100-SXM-80GB"
[scale_up]
domain_size = 8
bandwidth_GB_s = 300.0
latency_us = 1.0
[scale_out]
bandwidth_GB_s = 25.0
[cluster]
gpus = 8
"""

CASES = """[[case]]
id = "a"
model = "m.toml"
system = "s.toml"
plan = {{ tp = 8 }}
measured = {{ step_time_s = {a} }}

[[case]]
id = "b"
model = "m.toml"
system = "s.toml"
plan = {{ tp = 4, pp = 2 }}
measured = {{ step_time_s = {b} }}

[[case]]
id = "c"
model = "m.toml"
system = "s.toml"
plan = {{ tp = 2, micro_batch = 2 }}
measured = {{ step_time_s = {c} }}
"""

CONSTANTS = """["*"]
hbm_eff = 0.8
[ampere]
gemm_eff_bf16 = { value = 0.7, low = 0.65, high = 0.75, unit = "fraction" }
"""

M, S, S2 = F("m.toml", MODEL), F("s.toml", SYSTEM), F("s2.toml", SYSTEM.replace("300.0", "900.0"))
C = F("c.toml", CASES.format(a=0.05, b=0.06, c=0.07))
K = F("k.toml", CONSTANTS)
BASE_FILES = (M, S, S2, C, K)


def edit(base: F, name: str, old: str, new: str) -> F:
    """``base`` with its first ``old`` replaced by ``new``, saved as ``name``."""
    assert old in base.text, (base.name, old)
    return F(name, base.text.replace(old, new, 1))


# --------------------------------------------------------------------------- the table
@dataclasses.dataclass(frozen=True)
class V:
    """One value of a flag and what the contract expects of it.

    ``value``: the text (``str``), a file (:class:`F`), a tuple of them (``nargs``), or None
    (a switch). ``expect``: OK, BAD or EITHER, or a mapping command -> expectation (key
    ``"*"`` for the rest; NEVER skips the command). ``extra``: more argv, each
    ``(flag, value...)`` added only where the command's parser has that flag (so the corpus
    also runs on code from before a flag existed). ``tier``: ``"full"`` keeps an accepted
    input of an expensive command out of the fast tier. ``names``: what the error line must
    name instead of the flag/file."""

    value: Any
    expect: Any
    extra: tuple = ()
    tier: str = "fast"
    names: tuple = ()
    env: tuple = ()
    timeout: float | None = None
    label: str = ""


def v(value, expect, **kw) -> V:
    return V(value, expect, **kw)


def _many(values: Sequence, expect, **kw) -> list[V]:
    return [V(x, expect, **kw) for x in values]


NUM_BAD = ["", " ", "x", "-1", "1e400", "nan", "inf", "-inf", "1.5", "0x10", "9" * 400,
           "9" * 5000]
"""Texts no integer flag accepts."""

# ------ model and system files ------
MODEL_BAD_FILES = [
    edit(M, "m_layers0.toml", "layers = 4", "layers = 0"),
    edit(M, "m_layers_big.toml", "layers = 4", "layers = " + "9" * 400),
    edit(M, "m_layers_huge.toml", "layers = 4", "layers = " + "9" * 4400),
    edit(M, "m_layers_1e300.toml", "layers = 4", "layers = 1e300"),
    edit(M, "m_layers_float.toml", "layers = 4", "layers = 4.5"),
    edit(M, "m_layers_str.toml", "layers = 4", 'layers = "4"'),
    edit(M, "m_layers_bool.toml", "layers = 4", "layers = true"),
    edit(M, "m_hidden_nan.toml", "hidden = 1024", "hidden = nan"),
    edit(M, "m_seq_inf.toml", "seq_len = 2048", "seq_len = inf"),
    edit(M, "m_unknown.toml", "vocab = 32000", "vocab = 32000\nvocabulary = 5"),
    edit(M, "m_missing.toml", "vocab = 32000\n", ""),
    edit(M, "m_heads.toml", "heads = 16", "heads = 3"),
    F("m_array.toml", "[[model]]\nlayers = 4\n"),
    F("m_empty.toml", ""),
    F("m_binary.toml", bytes(range(256)) * 4),
    F("m_deep.json", "[" * 100000 + "]" * 100000),
    F("m_list.json", "[1, 2]"),
    F("m_nan.json", '{"model": {"layers": NaN, "hidden": 1024, "heads": 16, "ffn_hidden": 4096,'
      ' "vocab": 32000, "seq_len": 2048}}'),
    F("m_dup.json", '{"model": {"layers": 4, "layers": 5, "hidden": 1024, "heads": 16, '
      '"ffn_hidden": 4096, "vocab": 32000, "seq_len": 2048}}'),
    F("m.txt", MODEL),
    F("m_dir.toml", kind="dir"),
    F("m_zero.toml", kind="link", target="/dev/zero"),
    F("m_fifo.toml", kind="fifo"),
    F("m_dangling.toml", kind="link", target="nowhere.toml"),
    F("m_big.toml", "# pad\n" * (1 << 20) + MODEL),
]

SYSTEM_BAD_FILES = [
    edit(S, "s_gpus0.toml", "gpus = 8", "gpus = 0"),
    edit(S, "s_gpus_huge.toml", "gpus = 8", f"gpus = {2**60}"),
    edit(S, "s_bw_tiny.toml", "bandwidth_GB_s = 25.0", "bandwidth_GB_s = 1e-300"),
    edit(S, "s_bw_denormal.toml", "bandwidth_GB_s = 25.0", "bandwidth_GB_s = 1e-320"),
    edit(S, "s_lat_denormal.toml", "latency_us = 1.0", "latency_us = 1e-320"),
    edit(S, "s_lat_big.toml", "latency_us = 1.0", "latency_us = 1e300"),
    edit(S, "s_lat_neg.toml", "latency_us = 1.0", "latency_us = -1.0"),
    edit(S, "s_dom0.toml", "domain_size = 8", "domain_size = 0"),
    edit(S, "s_hbm.toml", 'preset = "A100-SXM-80GB"', 'preset = "A100-SXM-80GB"\nhbm_GB = 1e300'),
    edit(S, "s_preset.toml", 'preset = "A100-SXM-80GB"', 'preset = "A100"'),
    edit(S, "s_preset_path.toml", 'preset = "A100-SXM-80GB"', 'preset = "../../../etc/passwd"'),
    edit(S, "s_unknown.toml", "gpus = 8", "gpus = 8\nnodes = 1"),
    F("s_missing.toml", SYSTEM.replace("[cluster]\ngpus = 8\n", "")),
    F("s_empty.toml", ""),
    F("s.yaml", SYSTEM),
    F("s_dir.toml", kind="dir"),
]

SYSTEM_OK_FILES = [
    edit(S, "s_lat0.toml", "latency_us = 1.0", "latency_us = 0.0"),
    edit(S, "s_dom16.toml", "domain_size = 8", "domain_size = 16"),
    edit(S, "s_hbm_top.toml", 'preset = "A100-SXM-80GB"', 'preset = "A100-SXM-80GB"\nhbm_GB = 1e6'),
    F("s_bom.toml", "\ufeff" + SYSTEM),
]

PATH_BAD = ["", " ", "nope", "nope.toml", "a" * 5000, "a" * 5000 + ".toml", "/dev/zero",
            "/dev/null", "/", "/etc/passwd", "..", "x\ty.toml"]

MODEL_VALUES = ([v(M, OK), v("config1", {"*": EITHER, "optimize": NEVER, "compare": NEVER,
                                         "bench": NEVER}, timeout=240)]
                + _many(PATH_BAD, BAD) + _many(MODEL_BAD_FILES, BAD))
SYSTEM_VALUES = ([v(S, OK)] + _many(SYSTEM_OK_FILES, {"*": OK, "bench": EITHER})
                 + _many(PATH_BAD, BAD) + _many(SYSTEM_BAD_FILES, BAD))

# ------ plans ------
PLAN_BAD = ["", " ", ",", "tp", "tp=", "=1", "tp==1", "tp=1e0", "tp=1.0", "tp=1.5", "tp=0",
            "tp=-1", "tp=1,tp=2", "bogus=1", "tp=1;pp=1", "tp=3", "tp=16", "pp=16",
            "tp=1,dtype=fp8", "tp=1,recompute=bogus", "tp=1,global_batch=0",
            "tp=1,micro_batch=0", "tp=" + "9" * 5000, "tp=1e400", "tp=nan", "tp=inf",
            "tp=0x10", "tp=1,zero=7", "tp=1,sequence_parallel=maybe", "tp=1,dp=3", "tp=1 pp",
            "tp=8,pp=2"]
PLAN_OK = ["tp=1", "tp=8", "tp=2,pp=2", "tp = 2 , pp = 2", "tp=1,,pp=1", "tp=1 pp=1",
           "tp=4,pp=2,vpp=2", "tp=1,recompute=full", "tp=1,zero=3"]
PLAN_VALUES = (_many(PLAN_OK, OK) + _many(PLAN_BAD, BAD)
               + [v(x, BAD, names=("--plan", x)) for x in ("megatron-1t-3072", "nope.toml")]
               + [v("tp=\u0661", EITHER), v("tp=1_0", EITHER), v("tp=+1", EITHER),
                  v(F("p_bad.toml", "[plan]\ntp = 0\n"), BAD),
                  v(F("p_ok.toml", "[plan]\ntp = 2\n"), OK),
                  v(F("p.txt", "[plan]\ntp = 2\n"), BAD)])

# ------ --set ------
SET_BAD = ["x", "=1", "scale_up.=1", ".x=1", "scale_up.bandwidth_GB_s=", "scale_up.bogus=1",
           "gpu=1", "cluster.gpus=0", "cluster.gpus=1e3", "cluster.gpus=" + "9" * 400,
           "cluster.gpus=" + "9" * 5000, f"cluster.gpus={2**60}",
           "scale_up.bandwidth_GB_s=1e-300", "scale_up.bandwidth_GB_s=1e-320",
           "scale_up.bandwidth_GB_s=nan", "scale_up.bandwidth_GB_s=inf",
           "scale_up.bandwidth_GB_s=-1", "scale_up.latency_us=1e300",
           "scale_up.latency_us=1e-320", "scale_out.latency_us=5e-324", "gpu.hbm_GB=1e300",
           "gpu.hbm_GB=1e-320", "scale_up.domain_size=0", "scale_up.domain_size=2.5",
           "scale_out.energy_pJ_per_bit=1e300", "gpu.matmul_tflops_bf16=0",
           "gpu.preset=nope"]
SET_OK = ["scale_up.latency_us=0", "scale_up.bandwidth_GB_s=1800", "cluster.gpus=16",
          "gpu.hbm_GB=40", "scale_up.domain_size=4", "scale_out.latency_us=1e6",
          "gpu.name=mine"]
SET_VALUES = (_many(SET_OK, OK) + _many(SET_BAD, BAD)
              + [v("cluster.gpus=8.0", EITHER), v("scale_up.domain_size=16", EITHER),
                 v(("scale_up.latency_us=1", "--set", "scale_up.latency_us=2"), BAD,
                   label="given twice")])

# ------ --tokens ------
TOKENS_VALUES = (_many(["15T", "1e12", "450B", "1e20", "1", "2.5e9"], OK)
                 + _many(["", " ", "0", "-5", "1e-300", "1e-320", "inf", "nan", "1e30", "12Q",
                          "T", "1e400", "0x10"], BAD)
                 + [v("1_000", EITHER)])


# ------ constants files ------
def _constant_cases() -> list[V]:
    """Each constant at values inside and far outside its physical range, as a plain value
    and inside an interval; files that break the schema otherwise."""
    from cpo_opt.model.constants import INFO
    out = []
    tiny = ("1e-300", "5e-324", "0", "-1")
    huge = ("1e300", str(10**22), "9" * 400, "inf", "nan")
    for name, info in INFO.items():
        d = info.default
        out.append(v(F(f"k_{name}_ok.toml", f'["*"]\n{name} = {d!r}\n'), OK))
        for i, x in enumerate(tiny + huge + ("true",)):
            out.append(v(F(f"k_{name}_{i}.toml", f'["*"]\n{name} = {x}\n'), BAD))
        if info.unit in ("fraction", "ratio"):  # a ratio (the clock) may pass 1 a little
            for i, x in enumerate(("5", "1.0000001")):
                exp = OK if (info.unit, i) == ("ratio", 1) else BAD
                out.append(v(F(f"k_{name}_f{i}.toml", f'["*"]\n{name} = {x}\n'), exp))
        else:  # a time, a size, a rate: 1e12 times its default is not a computer
            out.append(v(F(f"k_{name}_x.toml", f'["*"]\n{name} = {d * 1e12!r}\n'), BAD))
            out.append(v(F(f"k_{name}_y.toml", f'["*"]\n{name} = {d * 1e-12!r}\n'), BAD))
        lo, hi = d * 0.9, min(d * 1.1, 1.0) if info.unit == "fraction" else d * 1.1
        out.append(v(F(f"k_{name}_iv.toml", f'[ampere]\n{name} = {{ value = {d!r}, low = '
                       f'{lo!r}, high = {hi!r} }}\n'), OK))
        for i, (a, b) in enumerate(((lo, "inf"), (lo, "1e300"), ("0", hi), (hi, lo))):
            out.append(v(F(f"k_{name}_iv{i}.toml", f'[ampere]\n{name} = {{ value = {d!r}, '
                           f'low = {a}, high = {b} }}\n'), BAD))
    return out


CONSTANTS_FILES_BAD = [
    F("kb_unknown.toml", '["*"]\nhbm_efficiency = 0.8\n'),
    F("kb_level.toml", "[hoper]\nhbm_eff = 0.8\n"),
    F("kb_level_empty.toml", '[""]\nhbm_eff = 0.8\n'),
    F("kb_scalar_level.toml", "ampere = 3\n"),
    F("kb_entry_key.toml", '["*"]\nhbm_eff = { value = 0.8, sigma = 0.1 }\n'),
    F("kb_unit.toml", '["*"]\nhbm_eff = { value = 0.8, unit = "s" }\n'),
    F("kb_half.toml", '["*"]\nhbm_eff = { value = 0.8, low = 0.7 }\n'),
    F("kb_novalue.toml", '["*"]\nhbm_eff = { low = 0.7, high = 0.9 }\n'),
    F("kb_about.toml", 'about = 3\n'),
    F("kb_gens_str.toml", 'generations = "hopper"\n[hopper]\nhbm_eff = 0.8\n'),
    F("kb_gens_typo.toml", 'generations = ["hoper"]\n[hopper]\nhbm_eff = 0.8\n'),
    F("kb_gens_other.toml", 'generations = ["hopper"]\n[blackwell]\nhbm_eff = 0.8\n'),
    F("kb_nan.json", '{"*": {"hbm_eff": NaN}}'),
    F("kb_list.json", '[1]'),
    F("kb_binary.toml", b"\xff\xfe" * 100),
    F("kb.txt", '["*"]\nhbm_eff = 0.8\n'),
    F("kb_dir.toml", kind="dir"),
    F("kb_fifo.toml", kind="fifo"),
]
CONSTANTS_FILES_OK = [
    K,
    F("ko_empty.toml", ""),
    F("ko_json.json", '{"*": {"hbm_eff": 0.8}}'),
    F("ko_gpu.toml", '["A100-SXM-80GB"]\nhbm_eff = 0.8\n'),
    F("ko_hopper.toml", 'generations = ["hopper"]\n[hopper]\nhbm_eff = { value = 0.8, low = '
      '0.75, high = 0.85 }\n'),
    F("ko_point.toml", '[ampere]\nhbm_eff = { value = 0.8, low = 0.8, high = 0.8 }\n'),
]
ISSUE_CONSTANTS = ("gemm_eff_bf16_0", "hbm_eff_0", "link_eff_scale_up_0",
                   "kernel_overhead_s_4", "host_sync_s_4", "host_launch_s_4",
                   "reserved_bytes_4", "host_link_bw_y", "clock_fraction_f0",
                   "clock_fraction_0", "gemm_eff_bf16_5", "reserved_bytes_iv0",
                   "reserved_bytes_iv1")
"""The constants cases issue 25 lists (``k_<name>_<i>``), run on every command."""


def _constants_values() -> list[V]:
    """Every constant case on ``evaluate``; on the other commands the cases of the issue,
    and the file-level ones."""
    out = []
    for c in _constant_cases():
        key = c.value.name[2:-5]
        if key in ISSUE_CONSTANTS:
            exp = {"*": c.expect, "calibrate": c.expect if c.expect == BAD else NEVER,
                   "reproduce": c.expect if c.expect == BAD else NEVER}
        else:
            exp = {"evaluate": c.expect, "*": NEVER}
        out.append(dataclasses.replace(c, expect=exp))
    rest = {"calibrate": NEVER, "reproduce": NEVER}
    out += [v(f, BAD) for f in CONSTANTS_FILES_BAD]
    out += [v(f, {"*": OK, **rest}) for f in CONSTANTS_FILES_OK]
    out += [v(x, BAD, names=("--constants",)) for x in ("", " ")]
    out += [v(x, BAD) for x in ("nope.toml", "a" * 5000 + ".toml", "/dev/zero", "/")]
    return out


# ------ cases files (validate, calibrate) ------
CASES_BAD = [
    F("c_passwd.toml", C.text.replace('system = "s.toml"', 'system = "/etc/passwd"', 1)),
    F("c_dir.toml", C.text.replace('system = "s.toml"', 'system = "/"', 1)),
    F("c_zero.toml", C.text.replace('model = "m.toml"', 'model = "/dev/zero"', 1)),
    F("c_nosys.toml", C.text.replace('system = "s.toml"', 'system = "nope.toml"', 1)),
    F("c_badsys.toml", C.text.replace('system = "s.toml"', 'system = "s_gpus0.toml"', 1)),
    F("c_tiny.toml", CASES.format(a="1e-320", b=0.06, c=0.07)),
    F("c_zero_t.toml", CASES.format(a="0.0", b=0.06, c=0.07)),
    F("c_inf.toml", CASES.format(a="inf", b=0.06, c=0.07)),
    F("c_dup.toml", C.text.replace('id = "b"', 'id = "a"')),
    F("c_empty.toml", ""),
    F("c_nocase.toml", "case = []\n"),
    F("c_scalar.toml", "case = 3\n"),
    F("c_unknown.toml", C.text.replace('id = "a"', 'id = "a"\nweight = 2', 1)),
    F("c_measured.toml", C.text.replace("step_time_s = 0.05", "step_time_s = 0.05, mfu = 0.5", 1)),
    F("c_plan.toml", C.text.replace("tp = 8", "tp = 3", 1)),
    F("c.txt", C.text),
]
CASES_EXTREME = [  # inside the documented range of measured.step_time_s, far from the model
    F("c_fast.toml", CASES.format(a="1e-6", b="1e-6", c="1e-6")),
    F("c_slow.toml", CASES.format(a="1e9", b="1e9", c="1e9")),
    F("c_mixed.toml", CASES.format(a="1e-6", b="1e9", c="0.07")),
]
CASES_VALUES = ([v(C, {"*": OK, "calibrate": OK})]
                + [v(f, BAD) for f in CASES_BAD]
                + [v(x, BAD) for x in ("", " ", "nope.toml", "/dev/zero", "a" * 5000 + ".toml")]
                + [v(f, {"validate": OK, "calibrate": EITHER}, extra=(("--steps", "400"),),
                     tier="full", timeout=300) for f in CASES_EXTREME])

# ------ outputs ------
OUT_FILE_BAD = [F("o_dir", kind="dir"), F("o_foreign.toml", "# my notes\nx = 1\n"),
                F("o_link.toml", kind="link", target="k.toml"),
                F("o_dangling.toml", kind="link", target="o_elsewhere.toml"),
                F("o_file/x.toml", kind="missing"), F("o_noext", kind="missing"),
                F("o.txt", kind="missing"), F("o_fifo.toml", kind="fifo")]
OUT_VALUES = {
    "calibrate": ([v(x, BAD) for x in OUT_FILE_BAD]
                  + [v(x, BAD) for x in ("", " ", "/proc/x.toml", "/dev/null",
                                         "a" * 5000 + ".toml")]
                  + [v(x, EITHER, tier="full") for x in ("/x.toml", "/nonexistent/x.toml")]
                  + [v(F("o_new.toml", kind="missing"), OK, tier="full"),
                     v(F("o_new.json", kind="missing"), OK, tier="full"),
                     v(F("o_sub/new.toml", kind="missing"), EITHER, tier="full")]),
    "reproduce": ([v(F("r_file", "x"), BAD), v(F("r_foreign", kind="dir"), BAD),
                   v(F("r_link", kind="link", target="r_foreign"), BAD)]
                  + [v(x, BAD) for x in ("", " ", "/proc/x", "/", "a" * 5000, "/dev/null")]),
}


FLAGS: dict[str, list[V]] = {
    "--model": MODEL_VALUES,
    "--system": SYSTEM_VALUES,
    "--against": [v(S2, OK)] + _many(PATH_BAD[:6], BAD) + _many(SYSTEM_BAD_FILES[:6], BAD),
    "--scenario": ([v("megatron-1t-a100-3072", {"evaluate": OK, "sensitivity": EITHER,
                                                "*": NEVER})]
                   + _many(["", "nope", "nope.toml", "/", "a" * 5000], BAD)
                   + [v(F("sc_up.toml", '[scenario]\nmodel = "../../.."\nsystem = "s.toml"\n'),
                        BAD),
                      v(F("sc_self.toml", '[scenario]\nmodel = "sc_self.toml"\n'
                          'system = "s.toml"\n'), BAD),
                      v(F("sc_tokens.toml", '[scenario]\nmodel = "m.toml"\nsystem = "s.toml"\n'
                          'tokens = 1e-300\n'), BAD)]),
    "--plan": PLAN_VALUES,
    "--set": SET_VALUES,
    "--set-against": _many(SET_OK[:3], OK) + _many(SET_BAD[:12], BAD),
    "--tokens": TOKENS_VALUES,
    "--constants": _constants_values(),
    "--cases": CASES_VALUES,
    "--out": OUT_VALUES,
    "--global-batch": (_many(["8", "16", "64"], OK) + [v("7", EITHER)]
                       + _many(NUM_BAD + ["0", str(2**40 + 1), "1" + "0" * 30], BAD)),
    "--starts": _many(["1", "8"], OK) + _many(NUM_BAD + ["0", "4097", str(2**70)], BAD),
    "--steps": ([v("1", OK, tier="full"), v("5", {"*": OK, "calibrate": OK}),
                 v("20000", {"optimize": OK, "calibrate": NEVER}),
                 v("100000", {"optimize": OK, "calibrate": BAD})]
                + _many(NUM_BAD + ["0", "100001", "1000000000000",
                                   "1180591620717411303424"], BAD)),
    "--seed": _many(["0", "4294967295", "7"], OK) + _many(NUM_BAD + [str(2**32), str(2**64)], BAD),
    "--free": ([v("scale_up.bandwidth_GB_s", OK, tier="full")]
               + _many(["bogus", "gpu.matmul_tflops_fp8", "plan.tp", "scale_up",
                        ("scale_up.bandwidth_GB_s", "scale_up.bandwidth_GB_s"),
                        "scale_up.bandwidth_GB_s=5", ""], BAD)),
    "--power-budget-kW": ([v("50", OK, extra=(("--free", "scale_up.bandwidth_GB_s"),),
                             tier="full")]
                          + _many(["inf", "nan", "-1", "0", "1e400", "x", ""], BAD,
                                  extra=(("--free", "scale_up.bandwidth_GB_s"),))
                          + [v("5", BAD, label="no --free")]),
    "--domain-multiple": _many(NUM_BAD + ["0", str(10**30)], BAD),
    "--dtype": [v("bf16", {"*": OK, "bench": BAD}), v("float32", {"*": BAD, "bench": OK}),
                v("fp4", BAD), v("", BAD)],
    "--exhaustive": [v(None, OK)],
    # a cold compile cache compiles the whole gradient search (the relaxed scan, rounding,
    # exact re-scoring): 70 s of CPU on 2 cores, past the default limit
    "--gradient": [v(None, EITHER, extra=(("--starts", "2"), ("--steps", "3")),
                     names=("--gradient", "--exhaustive"), timeout=300)],
    "--n": (_many(["1", "64", "1000"], OK)
            + [v(x, OK, extra=(("--max-seconds", "2"),), timeout=120)
               for x in ("1000000000", "10000000000")]
            + _many(NUM_BAD + ["0", "10000000001", str(2**70)], BAD)),
    "--batch": _many(["1", "64"], OK) + _many(NUM_BAD + ["0", str(2**22 + 1)], BAD),
    "--fit": ([v("ampere:gemm_eff_bf16", OK, tier="full")]
              + _many(["warp", ":hbm_eff", "ampere:", "", "blackwell:gemm_eff_bf16",
                       "hopper:clock_fraction", "ampere:warp", "*:hbm_eff"], BAD)),
    "--hold-out": ([v("a", OK, tier="full")]
                   + _many(["zzz", ("a", "b", "c"), ""], BAD)),
    "--prior": [v("physical", OK, tier="full"), v("bogus", BAD), v("", BAD)],
    "--method": [v("gauss-newton", OK, tier="full"), v("newton", BAD), v("", BAD)],
    "--num-processes": [v(x, BAD, names=("--num-processes", "--coordinator", "--process-id"))
                        for x in NUM_BAD[:4] + ["0"]],
    "--process-id": [v(x, BAD, names=("--process-id", "--coordinator", "--num-processes"))
                     for x in NUM_BAD[:4]],
    "--stack": ([v("megatron-defaults", OK), v("deepseek-v3-published", EITHER)]
                + _many(["", "nope", "nope.toml", "/", "a" * 5000], BAD)
                + [v(F("st_bad.toml", '[options]\nschedule = { value = "zigzag", source = "x" }\n'),
                     BAD),
                   v(F("st_key.toml", '[options]\nwarp = { value = true, source = "x" }\n'), BAD),
                   v(F("st_none.toml", '[stack]\nname = "x"\n'), BAD)]),
    "--format": [v("megatron", OK), v("text", OK), v("yaml", BAD), v("", BAD)],
    "--simulate": [v(None, OK)],
    "--quick": [v(None, NEVER)],
    "--no-progress": [v(None, NEVER)],
    "--json": [v(None, NEVER)],
}
"""Flag -> its values. One entry per flag; the entry applies to every command that has it."""

PATH_FLAGS = {"--model", "--system", "--against", "--scenario", "--constants", "--cases",
              "--out", "--stack"}
"""Flags whose value is a path: an error line may name the path instead of the flag."""

COSTLY = {"calibrate": "full", "reproduce": NEVER}
"""Commands whose accepted inputs run the real work: only where a value says ``tier="full"``
(calibrate), or never (reproduce: the study); refused inputs always run."""

BASE: dict[str, list] = {
    "presets": ["presets", "--json"],
    "evaluate": ["evaluate", "--model", M, "--system", S, "--plan", "tp=1", "--json"],
    "sensitivity": ["sensitivity", "--model", M, "--system", S, "--plan", "tp=1", "--json"],
    "optimize": ["optimize", "--model", M, "--system", S, "--json"],
    "compare": ["compare", "--model", M, "--system", S, "--against", S2, "--json"],
    "validate": ["validate", "--cases", C, "--json"],
    "calibrate": ["calibrate", "--cases", C, "--steps", "5", "--json"],
    "reproduce": ["reproduce", "--quick", "--no-progress", "--out", F("r_out", kind="missing"),
                  "--json"],
    "bench": ["bench", "--model", M, "--system", S, "--n", "64", "--batch", "64", "--json"],
}
"""Each command's accepted base invocation (tiny: an 8-GPU system, a 4-layer model); a case
changes one flag of it."""

LIMITS = {"default": 120.0, "calibrate": 240.0, "reproduce": 30.0, "bench": 120.0,
          "isolate": 60.0}
"""Seconds a case may run (its ``timeout`` overrides): an in-process case past its limit
is a ``hang``. The limits find hangs, not slowness: they hold a cold compile on a loaded
2-core machine (the suite runs two workers). ``sensitivity --model config1`` (a 175B-class
model's first compile) took 37 s wall and 59 s of CPU alone here, and passed 60 s in CI
beside the other worker (stop 28), hence its own 240 s."""


# --------------------------------------------------------------------------- cases
@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    command: str
    argv: tuple
    expect: str
    names: tuple
    env: tuple = ()
    isolate: bool = False
    timeout: float = 60.0
    tier: str = "fast"


def parser_flags() -> dict[str, set[str]]:
    """Command -> the option strings its parser takes (from ``build_parser()``)."""
    from cpo_opt.cli.main import build_parser
    out = {}
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                out[name] = {o for a in sp._actions for o in a.option_strings}
    return out


def _expect(value: V, command: str) -> str:
    e = value.expect
    if isinstance(e, Mapping):
        return e.get(command, e.get("*", NEVER))
    return e


def _values(items) -> tuple:
    return items if isinstance(items, tuple) else (items,)


def _with_flag(base: list, flag: str, value: V, flags: set[str]) -> list:
    """``base`` with ``flag`` set to ``value`` (replaced where base has it), plus the
    value's extra flags the command knows."""
    argv = list(base)
    vals = () if value.value is None else _values(value.value)
    if flag in argv:
        i = argv.index(flag)
        j = i + 1
        while j < len(argv) and not (isinstance(argv[j], str) and argv[j].startswith("--")):
            j += 1
        argv[i:j] = [flag, *vals]
    else:
        argv += [flag, *vals]
    for flag2, *vals2 in value.extra:
        if flag2 in flags and flag2 not in argv:
            argv += [flag2, *vals2]
    return argv


HOME = {"--model": "evaluate", "--system": "evaluate", "--set": "evaluate",
        "--plan": "evaluate", "--tokens": "evaluate", "--constants": "evaluate",
        "--against": "compare", "--cases": "validate"}
"""A flag shared by several commands runs every value on its home command and every
:data:`SPREAD`-th value (offset per command) on the others: the parsing is shared, what
differs per command is the path to it."""
SPREAD = 3
FAST_EVERY = 12
"""The fast tier runs every ``FAST_EVERY``-th in-process case of the full corpus (and the
isolated cases marked fast)."""


def flag_cases(tier: str = "full") -> list[Case]:
    """One case per (command, flag, value) of :data:`FLAGS` (see :data:`HOME`)."""
    every = parser_flags()
    out = []
    for k, (command, base) in enumerate(BASE.items()):
        flags = every.get(command, set())
        for flag, values in FLAGS.items():
            if flag not in flags:
                continue
            if isinstance(values, Mapping):  # per-command values (--out)
                values = values.get(command, [])
            for i, value in enumerate(values):
                if flag in HOME and command != HOME[flag] and (i + k) % SPREAD:
                    continue
                expect = _expect(value, command)
                if expect == NEVER:
                    continue
                case_tier = value.tier
                if expect != BAD and command in COSTLY:
                    if COSTLY[command] == NEVER:
                        continue
                    case_tier = "full"
                if tier == "fast" and case_tier == "full":
                    continue
                vals = _values(value.value) if value.value is not None else ()
                names = value.names or (flag,) + tuple(
                    x if isinstance(x, F) else x[:40] for x in vals
                    if isinstance(x, F) or (flag in PATH_FLAGS and x.strip()))
                limit = value.timeout or LIMITS.get(command, LIMITS["default"])
                shown = value.label or _show(vals)
                out.append(Case(f"{command} {flag} {shown}", command,
                                tuple(_with_flag(base, flag, value, flags)), expect, names,
                                value.env, False, limit, case_tier))
    return out


def _show(vals) -> str:
    parts = []
    for x in vals:
        text = x.name if isinstance(x, F) else repr(x)
        parts.append(text if len(text) <= 40 else text[:30] + f"...({len(text)} chars)")
    return " ".join(parts) or "(switch)"


def extra_cases(tier: str = "full") -> list[Case]:
    """Cases no single flag owns: ``presets show NAME``, distributed runs, the environment,
    missing required flags, text output."""
    out = []
    pshow = [("config1", OK), ("CONFIG1", OK), ("models/config1", OK), ("nope", BAD),
             ("", BAD), ("a" * 5000, BAD), ("../../etc/passwd", BAD), ("models/", BAD),
             ("bogus/config1", BAD), ("/", BAD), ("x/y/z", BAD), ("a" * 300, BAD),
             ("con\x01fig1", BAD)]
    for name, exp in pshow:
        out.append(Case(f"presets show {_show((name,))}", "presets",
                        ("presets", "show", name, "--json"), exp,
                        ("presets", "NAME") + ((name[:40],) if name.strip() else ())))
    out.append(Case("presets bogus", "presets", ("presets", "bogus"), BAD, ("presets",)))
    out.append(Case("no command", "-", (), BAD, ("command",)))
    out.append(Case("unknown command", "-", ("evaluat",), BAD, ("evaluat",)))
    for command in ("evaluate", "sensitivity", "optimize", "compare", "bench"):
        base = [a for a in BASE[command] if a not in (M, "--model")]
        exp = OK if command == "bench" else BAD
        if command != "bench":
            out.append(Case(f"{command} without --model", command, tuple(base), exp,
                            ("--model", "--scenario")))
    out.append(Case("evaluate without --plan", "evaluate",
                    tuple(BASE["evaluate"][:5]) + ("--json",), BAD, ("--plan",)))
    # text output (no --json)
    for command in ("evaluate", "sensitivity", "optimize", "compare", "validate", "bench"):
        out.append(Case(f"{command} text", command,
                        tuple(a for a in BASE[command] if a != "--json"), OK, ()))
        out.append(Case(f"{command} text, bad --set", command,
                        tuple(a for a in BASE[command] if a != "--json")
                        + (("--set", "x") if command not in ("validate",) else
                           ("--constants", "nope.toml")), BAD, ("--set", "--constants")))
    # the environment
    cache_file = F("cache_is_a_file", "x")
    for command in ("evaluate", "optimize"):
        b = list(BASE[command])
        out.append(Case(f"{command} CPO_OPT_CACHE_DIR=file, bad --set", command,
                        tuple(b + ["--set", "x"]), BAD, ("--set",),
                        env=(("CPO_OPT_CACHE_DIR", cache_file),)))
    for command in ("optimize", "reproduce"):
        b = list(BASE[command])
        for var, val in (("CPO_OPT_NUM_PROCESSES", "abc"), ("CPO_OPT_NUM_PROCESSES", "-3"),
                         ("CPO_OPT_PROCESS_ID", "x"), ("CPO_OPT_NUM_PROCESSES", "9" * 400)):
            out.append(Case(f"{command} {var}={_show((val,))}", command, tuple(b), BAD,
                            (var,), env=((var, val), ("CPO_OPT_COORDINATOR", "127.0.0.1:9"),
                                         ("CPO_OPT_PROCESS_ID" if var != "CPO_OPT_PROCESS_ID"
                                          else "CPO_OPT_NUM_PROCESSES", "1")),
                            isolate=True, timeout=LIMITS["isolate"],
                            tier="fast" if (command, val) == ("optimize", "abc") else "full"))
        for var, val in (("SLURM_NTASKS", "abc"), ("OMPI_COMM_WORLD_SIZE", "x")):
            out.append(Case(f"{command} {var}={val}", command, tuple(b), BAD, (var,),
                            env=((var, val), ("SLURM_PROCID", "0")), isolate=True,
                            timeout=LIMITS["isolate"],
                            tier="fast" if (command, var) == ("optimize", "SLURM_NTASKS")
                            else "full"))
        # distributed flags (a subprocess: jax.distributed is process-global and may block)
        t = (("--coordinator-timeout", "2"),)
        for coord, n, i, exp in (("127.0.0.1:9", "2", "1", BAD), ("127.0.0.1:9", "2", "0", BAD),
                                 ("nocolon", "2", "1", BAD), (":", "2", "1", BAD),
                                 ("127.0.0.1:", "2", "1", BAD), (":1234", "2", "1", BAD),
                                 ("127.0.0.1:99999", "2", "1", BAD),
                                 ("127.0.0.1:abc", "2", "1", BAD), ("", "2", "1", BAD),
                                 ("127.0.0.1:9", "2", "2", BAD),
                                 ("127.0.0.1:9", "2", "-1", BAD),
                                 ("127.0.0.1:9", str(2**70), "1", BAD),
                                 ("256.0.0.1:80", "2", "1", BAD)):
            argv = b + ["--coordinator", coord, "--num-processes", n, "--process-id", i]
            out.append(Case(f"{command} --coordinator {coord or repr('')} N={_show((n,))} "
                            f"I={i}", command, tuple(argv), exp,
                            ("--coordinator", "--num-processes", "--process-id"),
                            isolate=True, timeout=LIMITS["isolate"],
                            tier="fast" if command == "optimize" and coord == "127.0.0.1:9"
                            and i == "1" and n == "2" else "full"))
            out[-1] = dataclasses.replace(out[-1], argv=out[-1].argv + ("--extra", t))
        if command == "optimize":  # alone: accepted, runs as one process
            out.append(Case("optimize --num-processes 1", command,
                            tuple(b + ["--coordinator", "127.0.0.1:9", "--num-processes", "1",
                                       "--process-id", "0"]), OK, (), isolate=False))
    return [c for c in out if tier == "full" or c.tier == "fast"]


def _random_constant(rng) -> str:
    """A TOML value for a constant: mostly a number of any sign and magnitude (10^-330 ..
    10^330, integer or float), sometimes a value of the wrong type."""
    kind = rng.random()
    if kind < 0.08:
        return rng.choice(["inf", "-inf", "nan", "true", '"0.5"', "[1]", "{ value = 0.5 }"])
    exp = rng.uniform(-330, 330) if rng.random() < 0.3 else rng.uniform(-14, 14)
    sign = -1 if rng.random() < 0.1 else 1
    if kind < 0.2 and exp > 0:
        return str(sign * int(10 ** min(exp, 300)) * rng.randint(1, 9))
    return repr(sign * 10.0 ** exp) if -308 < exp < 308 else f"{sign}e{int(exp)}"


def fresh_cases(seed: int = 2025, size: int | None = None) -> list[Case]:
    """A *fresh* corpus, drawn (seeded, so derandomized) rather than tabled: each case
    changes one or two flags of its command at once, with values drawn from the tables, or
    gives a constants file with a random value (any magnitude, any sign, wrong types) for a
    random constant. A combination is BAD when one of its values is, OK when all are, else
    EITHER; a random constant is EITHER, and when accepted its answer must be sane
    (:data:`SANE`: a physical step time, an MFU in (0, 1]), which needs no knowledge of the
    ranges under test. Same size per command as :func:`all_cases` ``("full")`` by default."""
    import random
    from cpo_opt.model.constants import INFO
    rng = random.Random(seed)
    every = parser_flags()
    size = size or len(all_cases("full"))
    counts = collections.Counter(c.command for c in flag_cases("full"))
    out: list[Case] = []
    for k, (command, base) in enumerate(BASE.items()):
        flags = every.get(command, set())
        pool = []
        for flag, values in FLAGS.items():
            if flag not in flags:
                continue
            if isinstance(values, Mapping):
                values = values.get(command, [])
            for value in values:
                e = _expect(value, command)
                if e != NEVER and (e == BAD or command not in COSTLY):
                    pool.append((flag, value, e))
        want = -(-size * counts[command] // sum(counts.values()))
        made = 0
        while made < want and pool:
            if "--constants" in flags and rng.random() < 0.25 and command not in COSTLY:
                name = rng.choice(list(INFO))
                text = _random_constant(rng)
                level = rng.choice(['"*"', "ampere", "hopper"])
                f = F(f"fresh_{seed}_{command}_{made}.toml", f"[{level}]\n{name} = {text}\n")
                value = V(f, EITHER)
                picks = [("--constants", value, EITHER)]
            else:
                picks = rng.sample(pool, 2 if len(pool) > 1 and rng.random() < 0.5 else 1)
                if len({p[0] for p in picks}) < len(picks):
                    picks = picks[:1]
            argv = list(base)
            names: tuple = ()
            for flag, value, _ in picks:
                argv = _with_flag(argv, flag, value, flags)
                vals = _values(value.value) if value.value is not None else ()
                names += value.names or (flag,) + tuple(
                    x if isinstance(x, F) else x[:40] for x in vals
                    if isinstance(x, F) or (flag in PATH_FLAGS and x.strip()))
            exps = [e for _, _, e in picks]
            expect = BAD if BAD in exps else OK if all(e == OK for e in exps) else EITHER
            if expect != BAD and command in COSTLY:
                continue
            label = " + ".join(f"{fl} {_show(_values(val.value)) if val.value is not None else ''}"
                               for fl, val, _ in picks)
            limit = max(value.timeout or 0 for _, value, _ in picks) or LIMITS.get(
                command, LIMITS["default"])
            out.append(Case(f"{command} {label}", command, tuple(argv), expect, names, (),
                            False, limit, "full"))
            made += 1
    return out


def all_cases(tier: str = "full") -> list[Case]:
    """The corpus of ``tier``: ``"full"`` (every case) or ``"fast"`` (a fixed sample)."""
    cases = flag_cases("full") + extra_cases("full")
    if tier == "full":
        return cases
    inproc = [c for c in cases if not c.isolate and c.tier == "fast"]
    return inproc[::FAST_EVERY] + [c for c in cases if c.isolate and c.tier == "fast"]


# --------------------------------------------------------------------------- materialising
def materialize(root: pathlib.Path, item: Any) -> str:
    """The argv text of ``item``; an :class:`F` is created under ``root`` (once)."""
    if not isinstance(item, F):
        return item
    path = root / item.name
    if path.exists() or path.is_symlink() or item.kind == "missing":
        if item.kind == "missing" and "/" in item.name:
            head = root / item.name.split("/")[0]
            if not head.exists() and item.name.startswith("o_file/"):
                head.write_text("a file, not a folder")
        return str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if item.kind == "dir":
        path.mkdir()
        if item.name == "r_foreign":
            (path / "notes.txt").write_text("mine")
    elif item.kind == "link":
        target = item.target if item.target.startswith("/") else str(root / item.target)
        path.symlink_to(target)
    elif item.kind == "fifo":
        os.mkfifo(path)
    else:
        data = item.text.encode() if isinstance(item.text, str) else item.text
        path.write_bytes(data)
        if item.kind == "mode000":
            path.chmod(0)
    return str(path)


def prepare(root: pathlib.Path, cases: Sequence[Case]) -> None:
    """Write every fixture file the cases use (the base files first: cases files refer to
    them by name)."""
    for f in BASE_FILES + tuple(MODEL_BAD_FILES) + tuple(SYSTEM_BAD_FILES):
        materialize(root, f)
    for c in cases:
        for item in c.argv + tuple(x for _, x in c.env) + c.names:
            if isinstance(item, F):
                materialize(root, item)


def _argv(root: pathlib.Path, case: Case, flags: set[str]) -> list[str]:
    out = []
    items = list(case.argv)
    extra = ()
    if "--extra" in items:  # distributed cases: (flag, value) pairs kept where known
        k = items.index("--extra")
        extra, items = items[k + 1], items[:k]
    for item in items:
        out.append(materialize(root, item))
    for flag, *vals in extra:
        if flag in flags:
            out += [flag, *vals]
    return out


# --------------------------------------------------------------------------- running
@dataclasses.dataclass
class Outcome:
    case: Case
    kind: str
    code: Any
    detail: str
    seconds: float


class CaseTimeout(BaseException):
    """Raised by the alarm inside an in-process case that ran past its limit."""


def _alarm(signum, frame):
    raise CaseTimeout()


@contextlib.contextmanager
def _environ(env: Mapping[str, str]):
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def run_in_process(argv: list[str], env: Mapping[str, str], timeout: float):
    """``(code, stdout, stderr)``; code is "timeout" or "exception: ..." when main did not
    return."""
    from cpo_opt.cli.main import main
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    # a watchdog thread signals the main thread itself: a process-directed alarm may land
    # on one of JAX's threads and never interrupt a blocking call (open() of a FIFO)
    done = threading.Event()
    main_id = threading.main_thread().ident

    def watchdog():
        if not done.wait(timeout):
            while not done.is_set():
                signal.pthread_kill(main_id, signal.SIGALRM)
                done.wait(1.0)
    threading.Thread(target=watchdog, daemon=True).start()
    try:
        with _environ(env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    except CaseTimeout:
        code = "timeout"
    except BaseException as exc:  # noqa: BLE001 - a finding, not an error of the driver
        code = f"exception: {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        done.set()
        signal.signal(signal.SIGALRM, old)
    return code, out.getvalue(), err.getvalue()


def run_subprocess(argv: list[str], env: Mapping[str, str], timeout: float, cwd: str):
    full = dict(os.environ, **env)
    proc = subprocess.Popen([sys.executable, "-m", "cpo_opt", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full, cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return "timeout", out, err


def _finite(obj) -> bool:
    if isinstance(obj, dict):
        return all(_finite(x) for x in obj.values())
    if isinstance(obj, list):
        return all(_finite(x) for x in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


def _step_ok(t) -> bool:
    return t is None or (isinstance(t, (int, float)) and 0 < t < 1e7)


SANE: dict[str, Callable[[dict], bool]] = {
    "evaluate": lambda o: _step_ok(o["step_time_s"]) and 0 < o["mfu"] <= 1,
    "sensitivity": lambda o: _step_ok(o["step_time_s"]),
    "optimize": lambda o: _step_ok(o.get("step_time_s")),
    "compare": lambda o: o.get("speedup") is None or 1e-6 < o["speedup"] < 1e6,
    "validate": lambda o: all(_step_ok(c["predicted_step_time_s"]) for c in o["cases"]),
    "calibrate": lambda o: all(0 < c["value"] < 1e20 and c["low"] <= c["value"] <= c["high"]
                               for c in o["constants"].values()),
    "bench": lambda o: o["evaluations_per_s"] > 0 and o["n"] >= 1,
}
"""Sanity of an accepted answer: the main numbers physical (a step shorter than four months,
an MFU in (0, 1], fitted constants with ordered intervals)."""


NOTES = ("cpo-opt: compile cache off", "warning: ")
"""Lines that may follow the error line (never precede it): notes about the run."""


def classify(case: Case, code, out: str, err: str) -> tuple[str, str]:
    """The kind of the answer (see the module docstring) and a one-line detail."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    first = lines[0] if lines else ""
    if code == "timeout":
        return "hang", f"past {case.timeout:.0f} s"
    if not isinstance(code, int) or code not in (0, 2) or "Traceback" in err:
        tail = (lines[-1] if lines else "") if isinstance(code, int) else code
        return "crash", f"exit {code}: {tail[:200]}"
    if code == 0:
        if case.expect == BAD:
            return "absurd", "accepted: " + out[:120].replace("\n", " ")
        if "--json" in case.argv:
            try:
                obj = json.loads(out, parse_constant=lambda c: float("nan"))
            except ValueError as exc:
                return "absurd", f"stdout is not one JSON object: {exc}"
            if not _finite(obj):
                return "absurd", "NaN or infinity in the JSON"
            check = SANE.get(case.command)
            try:
                if check and not check(obj):
                    return "absurd", "insane numbers: " + out[:120].replace("\n", " ")
            except (KeyError, TypeError) as exc:
                return "absurd", f"missing field {exc}"
        elif not out.strip():
            return "absurd", "exit 0 with nothing printed"
        return "answered", ""
    if case.expect == OK:
        return "refused", first[:200]
    notes = [ln for ln in lines[1:] if not ln.startswith(NOTES)]
    if out.strip() or not lines or notes or first.startswith(NOTES):
        return "noisy", " | ".join(ln[:100] for ln in lines[:3]) + (" (+stdout)" if out else "")
    names = [" ".join(n.split()) for n in case.names if n and n.strip()]
    if names and not any(n in first for n in names):  # (messages fold whitespace)
        return "unnamed", first[:200]
    return "answered", ""


def run_case(case: Case, root: pathlib.Path, flags: dict[str, set[str]]) -> Outcome:
    argv = _argv(root, case, flags.get(case.command, set()))
    env = {k: materialize(root, x) for k, x in case.env}
    case = dataclasses.replace(case, names=tuple(materialize(root, n) for n in case.names))
    t0 = time.perf_counter()
    if case.isolate:
        code, out, err = run_subprocess(argv, env, case.timeout, str(root))
    else:
        code, out, err = run_in_process(argv, env, case.timeout)
    kind, detail = classify(dataclasses.replace(case, argv=tuple(argv)), code, out, err)
    return Outcome(case, kind, code, detail, time.perf_counter() - t0)


RESULT = "@@cli_fuzz "
"""Prefix of a worker's result lines (anything else a case prints is ignored)."""


class Worker:
    """A subprocess running in-process cases one at a time (``cli_fuzz.py --worker``): a case
    stuck in C code (a scan of 10^12 steps, a blocking open) cannot be interrupted from
    inside, so the parent kills the worker after the case's limit plus :data:`GRACE_S`,
    records a ``hang`` and starts a fresh worker for the next case."""

    GRACE_S = 30.0

    def __init__(self, root: pathlib.Path, selector: list[str]):
        import queue
        self.proc = subprocess.Popen(
            [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", str(root),
             *selector], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True, cwd=str(root))
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith(RESULT):
                self.lines.put(line[len(RESULT):])
        self.lines.put(None)

    def run(self, index: int, limit: float) -> dict | None:
        import queue
        try:
            self.proc.stdin.write(f"{index}\n")
            self.proc.stdin.flush()
        except OSError:
            return None
        try:
            line = self.lines.get(timeout=limit + self.GRACE_S)
        except queue.Empty:
            return None
        return None if line is None else json.loads(line)

    def stop(self):
        with contextlib.suppress(OSError, ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def run_all(cases: Sequence[Case], root: pathlib.Path | None = None,
            progress: bool = False, selector: list[str] | None = None) -> list[Outcome]:
    """Run ``cases`` in a fresh work folder (the current directory of every run: reproduce's
    default output and relative paths land there). With ``selector`` (the ``--tier`` and
    ``--command`` arguments that rebuild the same list) the in-process cases run in
    :class:`Worker` subprocesses, else in this process (a case stuck in C code then stops
    the pass)."""
    with contextlib.ExitStack() as stack:
        if root is None:
            root = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="cpo-fuzz-")))
        prepare(root, cases)
        flags = parser_flags()
        cwd = os.getcwd()
        os.chdir(root)
        stack.callback(os.chdir, cwd)
        stack.callback(_unlock, root)
        worker = None
        out = []
        for i, case in enumerate(cases):
            if selector is None or case.isolate:
                o = run_case(case, root, flags)
            else:
                if worker is None:
                    worker = Worker(root, selector)
                    stack.callback(lambda: worker and worker.stop())
                t0 = time.perf_counter()
                r = worker.run(i, case.timeout)
                if r is None:  # stuck past its limit (or the worker died): a fresh worker
                    worker.stop()
                    worker = None
                    o = Outcome(case, "hang", "timeout", f"past {case.timeout:.0f} s (killed)",
                                time.perf_counter() - t0)
                else:
                    o = Outcome(case, r["kind"], r["code"], r["detail"], r["seconds"])
            out.append(o)
            if progress:
                print(f"[{i + 1}/{len(cases)}] {o.kind:8s} {o.seconds:6.1f}s {case.label[:90]}",
                      file=sys.__stderr__, flush=True)
        if worker is not None:
            worker.stop()
        return out


def worker_main(root: pathlib.Path, cases: Sequence[Case]) -> int:
    """The :class:`Worker` loop: read a case index per line, run it in-process, print one
    result line."""
    from cpo_opt import runtime
    runtime.setup()
    flags = parser_flags()
    os.chdir(root)
    channel = os.fdopen(os.dup(1), "w")
    import gc
    import jax
    for n, line in enumerate(sys.stdin, 1):
        case = cases[int(line)]
        o = run_case(case, root, flags)
        channel.write(RESULT + json.dumps({"kind": o.kind, "code": str(o.code),
                                           "detail": o.detail, "seconds": o.seconds}) + "\n")
        channel.flush()
        if n % RELEASE_EVERY == 0:  # the worker held 6 GB of compiled programs by case 1000
            jax.clear_caches()
            gc.collect()
    return 0


RELEASE_EVERY = 100
"""Cases between two releases of the worker's in-memory compiled programs (reloaded from
the persistent cache when needed again)."""


def _unlock(root: pathlib.Path) -> None:
    for p in root.rglob("*"):
        if not p.is_symlink() and p.is_file():
            p.chmod(0o600)


def table(outcomes: Sequence[Outcome]) -> str:
    """Counts by command and kind (markdown)."""
    by = collections.defaultdict(collections.Counter)
    for o in outcomes:
        by[o.case.command][o.kind] += 1
    rows = ["| command | cases | " + " | ".join(KINDS) + " |",
            "|---|---|" + "---|" * len(KINDS)]
    total = collections.Counter()
    for command in sorted(by):
        c = by[command]
        total.update(c)
        rows.append(f"| {command} | {sum(c.values())} | " + " | ".join(str(c[k]) for k in KINDS)
                    + " |")
    rows.append(f"| all | {sum(total.values())} | " + " | ".join(str(total[k]) for k in KINDS)
                + " |")
    return "\n".join(rows)


def select(tier: str, commands: Sequence[str] | None) -> list[Case]:
    """The cases of ``tier``: ``"fast"``, ``"full"``, or ``"fresh:SEED"``
    (:func:`fresh_cases`); ``TIER/N:K`` is every ``N``-th case of ``TIER`` from the ``K``-th
    (``full/2:0`` and ``full/2:1``: the two halves the suite runs side by side)."""
    part = None
    if "/" in tier:
        tier, part = tier.split("/", 1)
        n, k = (int(x) for x in part.split(":"))
        if not 0 <= k < n:
            raise ValueError(f"--tier {tier}/{part}: K must be in [0, N)")
    cases = fresh_cases(int(tier.split(":")[1])) if tier.startswith("fresh:") \
        else all_cases(tier)
    if part is not None:
        cases = cases[k::n]
    return [c for c in cases if not commands or c.command in commands]


def main_cli(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tier", default="full",
                    help="fast, full, or fresh:SEED (a drawn corpus of the same size); "
                         "TIER/N:K: every N-th case of it from the K-th")
    ap.add_argument("--command", action="append", help="only these commands")
    ap.add_argument("--show", choices=("findings", "all", "none"), default="findings")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--json", metavar="FILE", help="write every outcome there")
    ap.add_argument("--worker", metavar="ROOT", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if os.environ.get("PYTHONPATH") is None:  # the checkout this file is in
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    selector = ["--tier", a.tier] + [x for c in a.command or [] for x in ("--command", c)]
    if a.worker:
        return worker_main(pathlib.Path(a.worker), select(a.tier, a.command))
    from cpo_opt import runtime
    runtime.setup()
    cases = select(a.tier, a.command)
    t0 = time.perf_counter()
    outcomes = run_all(cases, progress=a.progress, selector=selector)
    print(table(outcomes))
    print(f"\n{len(outcomes)} cases in {time.perf_counter() - t0:.0f} s")
    if a.show != "none":
        for o in outcomes:
            if a.show == "all" or o.kind != "answered":
                print(f"- {o.kind}: `{o.case.label[:100]}`: {o.detail}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"label": o.case.label, "command": o.case.command, "kind": o.kind,
                        "code": str(o.code), "detail": o.detail, "seconds": o.seconds}
                       for o in outcomes], f, indent=1)
    return 0 if all(o.kind == "answered" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main_cli())
