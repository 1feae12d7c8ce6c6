"""Every code block of README.md and docs/*.md runs: Python blocks in a fresh interpreter (no
``cpo_opt.runtime.setup()``, as a reader's script), ``sh``/``bash`` blocks in bash with
``set -e`` (``cpo-opt`` is ``python -m cpo_opt``), TOML blocks parse and load as the file kind
they show (model, system, plan, scenario, cases, constants).

The blocks of one page run in order in one working folder, as a reader's terminal would: a
copy of ``cpo_opt/``, ``docs/`` and ``experiments/`` (the package imported from that copy),
so that a block that writes (``--out docs/constants-shipped.toml``, an experiment script
regenerating ``cpo_opt/model/fitted.py``) writes the copy, never the repository. Files a page
asks the reader to write themselves are stood in for by shipped ones (:data:`READER_FILES`).

Annotations, on the line before a block's opening fence:

* ``<!-- doc-test: fast -->``: runs in the fast loop (``-m "not slow"``); every other
  block is marked ``slow`` (each starts a Python process and most run a search or a fit);
* ``<!-- doc-test: skip: REASON -->``: not run, and REASON says why (the test fails on a
  skip without one); :func:`test_skips_are_few_and_say_why` lists them.
"""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
RUN = {"python": "python", "sh": "sh", "bash": "sh", "shell": "sh"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w-]*)[^\n]*$")
NOTE = re.compile(r"^\s*<!--\s*doc-test:\s*(?P<what>fast|slow|skip)\s*(?::\s*(?P<why>.*?))?"
                  r"\s*-->\s*$")
READER_FILES = {"my-runs.toml": "cpo_opt/data/moe-fit.toml",
                "other-runs.toml": "cpo_opt/data/moe-heldout.toml",
                "my-constants.toml": "docs/constants-shipped.toml"}
"""Files a page tells the reader to write (their measured runs, calibrate's output), stood in
for by shipped files of the same format."""
TIMEOUT_S = 3600
MAX_SKIPS = 10
"""The Quickstart (it runs this suite), a sketch needing a cluster (SLURM), two hand-run
scripts of the hardening report and the testing page's pytest lines, the regeneration of the
shipped fit (and the calibrate line it runs), the quick study as a command and as a library
call (the Quickstart's first line, which the acceptance checks run; 500-612 s of CI's 5,400 s
each time the suite ran it), the README's heavy command examples (the Python block after them
runs the same calls, round 13): each says which test
covers what it does. Every ``cpo-opt`` line of a skipped block is still parsed
(:func:`test_skipped_command_lines_parse`)."""


def blocks(page: pathlib.Path) -> list[dict]:
    """The fenced blocks of a page: ``{"page", "line", "lang", "code", "note", "why"}``."""
    lines = page.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group("indent"), m.group("lang").lower(), i
        j = i + 1
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}```\s*$", lines[j]):
            j += 1
        body = [ln[len(indent):] if ln.startswith(indent) else ln.lstrip()
                for ln in lines[i + 1:j]]
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        note = NOTE.match(lines[k]) if k >= 0 else None
        out.append({"page": page.relative_to(ROOT).as_posix(), "line": start + 1, "lang": lang,
                    "code": "\n".join(body) + "\n",
                    "note": note.group("what") if note else None,
                    "why": (note.group("why") or "").strip() if note else ""})
        i = j + 1
    return out


ALL = [b for p in PAGES for b in blocks(p)]
RUNNABLE = [b for b in ALL if b["lang"] in RUN]


def _param(b):
    marks = []
    if b["note"] == "skip":
        marks.append(pytest.mark.skip(reason=b["why"] or "(no reason given)"))
    elif b["note"] != "fast":
        marks.append(pytest.mark.slow)
    return pytest.param(b, id=f"{b['page']}:{b['line']}", marks=marks)


_WORKSPACES: dict[str, pathlib.Path] = {}


def workspace(page: str, tmp_root: pathlib.Path) -> pathlib.Path:
    """The page's working folder (made on its first block): copies of the package, docs and
    experiments, the reader's files, and ``bin/cpo-opt``."""
    if page in _WORKSPACES:
        return _WORKSPACES[page]
    ws = tmp_root / re.sub(r"\W", "_", page)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for d in ("cpo_opt", "docs", "experiments"):
        shutil.copytree(ROOT / d, ws / d, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", ws)
    for name, src in READER_FILES.items():
        shutil.copy(ROOT / src, ws / name)
    (ws / "bin").mkdir()
    shim = ws / "bin" / "cpo-opt"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m cpo_opt "$@"\n')
    shim.chmod(0o755)
    _WORKSPACES[page] = ws
    return ws


def run_block(b: dict, ws: pathlib.Path) -> subprocess.CompletedProcess:
    from conftest import release_memory
    release_memory()  # the block's process gets the memory this worker no longer needs
    env = dict(os.environ, PYTHONPATH=str(ws),
               PATH=os.pathsep.join([str(ws / "bin"), str(pathlib.Path(sys.executable).parent),
                                     os.environ.get("PATH", "")]))
    env.pop("CPO_OPT_DEBUG", None)
    if RUN[b["lang"]] == "python":
        cmd = [sys.executable, "-c", b["code"]]
    else:
        cmd = ["bash", "-e", "-o", "pipefail", "-c", b["code"]]
    return subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT_S)


@pytest.fixture(scope="session")
def doc_root(tmp_path_factory):
    return tmp_path_factory.mktemp("doc-blocks")


@pytest.mark.parametrize("block", [_param(b) for b in RUNNABLE])
def test_block_runs(block, doc_root):
    ws = workspace(block["page"], doc_root)
    r = run_block(block, ws)
    assert r.returncode == 0, (f"{block['page']}:{block['line']} exited {r.returncode}\n"
                               f"--- stderr (end)\n{r.stderr[-3000:]}\n"
                               f"--- stdout (end)\n{r.stdout[-1500:]}")
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    if RUN[block["lang"]] == "sh":  # the command line keeps XLA's banners off the terminal
        assert "Very slow compile" not in r.stderr


def test_skips_are_few_and_say_why():
    skips = [b for b in RUNNABLE if b["note"] == "skip"]
    for b in skips:
        assert len(b["why"]) >= 20, f"{b['page']}:{b['line']}: a skip must say why"
    assert len(skips) <= MAX_SKIPS, [(b["page"], b["line"], b["why"]) for b in skips]


def _command_lines(code: str) -> list[list[str]]:
    """Each ``cpo-opt`` command of a shell block, as its argument list (``&&`` and ``|``
    split a line into commands; comments and continuation lines handled by ``shlex``)."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        cmd: list[str] = []
        for w in words + ["&&"]:
            if w in ("&&", "||", "|", ";"):
                if cmd and cmd[0] == "cpo-opt":
                    out.append(cmd[1:])
                cmd = []
            else:
                cmd.append(w)
    return out


def test_skipped_command_lines_parse():
    """A skipped shell block is not run, but each of its ``cpo-opt`` commands must get past
    the real argument parser (a renamed flag or command fails here: exit 2 on the command
    line)."""
    from cpo_opt.cli.main import UsageError, build_parser
    seen = 0
    for b in RUNNABLE:
        if b["note"] != "skip" or RUN[b["lang"]] != "sh":
            continue
        for argv in _command_lines(b["code"]):
            try:
                build_parser().parse_args(argv)
            except (SystemExit, UsageError) as e:
                raise AssertionError(f"{b['page']}:{b['line']}: cpo-opt {' '.join(argv)} "
                                     f"does not parse: {e}") from None
            seen += 1
    assert seen >= 4  # the README's heavy examples and the quick study at least


def test_every_block_is_classified():
    """A block is code of a known language, TOML, or text/output (unlabelled or ``text``):
    a ``shell``-like block labelled otherwise would escape this test."""
    for b in ALL:
        assert b["lang"] in set(RUN) | {"toml", "", "text", "json", "console"}, (
            f"{b['page']}:{b['line']}: unknown block language {b['lang']!r}")
        if b["lang"] in ("", "text"):
            first = b["code"].lstrip().splitlines()[0] if b["code"].strip() else ""
            assert not first.startswith(("cpo-opt ", "python ", "import ")), (
                f"{b['page']}:{b['line']}: looks like code; label it sh or python "
                "(output blocks show a command as '$ cpo-opt ...')")


# --------------------------------------------------------------------------- TOML blocks
def _load_toml(b: dict, tmp: pathlib.Path) -> None:
    from cpo_opt.api import load_constants
    from cpo_opt.inputs import load_cases, load_model, load_scenario, load_system
    from cpo_opt.inputs.loaders import DERIVED_KEYS
    from cpo_opt.inputs.tables import check_value, key_of
    doc = tomllib.loads(b["code"])
    for name, src in READER_FILES.items():
        shutil.copy(ROOT / src, tmp / name)
    path = tmp / f"block{b['line']}.toml"
    path.write_text(b["code"])
    if "model" in doc:
        load_model(str(path))
    elif "gpu" in doc and "cluster" in doc:
        load_system(str(path))
    elif "plan" in doc:
        for k, v in doc["plan"].items():
            check_value(key_of("plan", k, str(path), DERIVED_KEYS), v, str(path), f"plan.{k}")
    elif "scenario" in doc:
        load_scenario(str(path))
    elif "case" in doc:
        load_cases(str(path))
    elif {"options", "stack", "search"} & set(doc):
        from cpo_opt.inputs.stacks import load_stack
        load_stack(str(path))
    else:  # a constants file (tables per GPU, generation or "*")
        load_constants(str(path))


@pytest.mark.parametrize("block", [pytest.param(b, id=f"{b['page']}:{b['line']}")
                                   for b in ALL if b["lang"] == "toml"])
def test_toml_block_loads(block, tmp_path):
    _load_toml(block, tmp_path)
