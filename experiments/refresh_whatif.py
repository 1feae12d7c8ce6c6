"""Re-run every example of docs/whatif.md and paste its output in place.

    python experiments/refresh_whatif.py            # rewrites docs/whatif.md
    python experiments/refresh_whatif.py --check    # exit 1 if any output changed

Each ```text block that starts with ``$ cpo-opt ...`` is run as ``python -m cpo_opt ...``
(stderr and stdout as printed, stderr first), the ```toml block before a ``--cases
/tmp/whatif/...`` command is written to that path first, and the ```python block is run with
its output pasted into the ```text block after it. ``(wall ...)`` lines are this machine's
times. The prose around the blocks is not touched: read it again after a refresh.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import shlex
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "whatif.md"
FENCE = re.compile(r"```(\w+)\n(.*?)```", re.S)


def _run(argv: list[str], stdin: str | None = None) -> str:
    t0 = time.perf_counter()
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, input=stdin)
    wall = time.perf_counter() - t0
    err = "\n".join(line for line in p.stderr.splitlines()
                    if not line.startswith(("WARNING:", "I0000", "W0000")))
    out = (err + "\n" if err.strip() else "") + p.stdout
    return out.rstrip("\n") + f"\n(wall {wall:.2f} s)\n"


def refresh(text: str) -> str:
    blocks = list(FENCE.finditer(text))
    out, last = [], 0
    for i, b in enumerate(blocks):
        lang, body = b.group(1), b.group(2)
        new = body
        if lang == "text" and body.startswith("$ cpo-opt "):
            command = body.splitlines()[0]
            args = shlex.split(command[len("$ cpo-opt "):])
            for j, a in enumerate(args):
                if a == "--cases" and args[j + 1].startswith("/tmp/") and i > 0:
                    path = pathlib.Path(args[j + 1])
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(blocks[i - 1].group(2))
            print(command, file=sys.stderr, flush=True)
            new = command + "\n" + _run([sys.executable, "-m", "cpo_opt", *args])
        elif lang == "text" and i > 0 and blocks[i - 1].group(1) == "python":
            print("(python example)", file=sys.stderr, flush=True)
            new = _run([sys.executable, "-"], stdin=blocks[i - 1].group(2))
        out.append(text[last:b.start(2)] + new)
        last = b.end(2)
    out.append(text[last:])
    return "".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only report whether outputs changed")
    args = ap.parse_args()
    text = DOC.read_text()
    new = refresh(text)
    strip = re.compile(r"\(wall [0-9.]+ s\)|in [0-9.]+ s")
    changed = strip.sub("", new) != strip.sub("", text)
    if args.check:
        print("changed" if changed else "unchanged")
        raise SystemExit(1 if changed else 0)
    DOC.write_text(new)
    print(f"wrote {DOC} ({'outputs changed' if changed else 'outputs unchanged'})")


if __name__ == "__main__":
    main()
