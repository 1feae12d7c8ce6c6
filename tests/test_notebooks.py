"""The study notebooks execute without errors and print what they promise (nbclient).

They run in a fresh python3 kernel that uses the persistent compile cache (as the CLI does),
so with a warm cache each takes well under a minute. Skipped, with the reason, only when no
Jupyter kernel can be started here.
"""

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat not installed (pip install -e .[test])")
nbclient = pytest.importorskip("nbclient", reason="nbclient not installed (pip install -e .[test])")

pytestmark = pytest.mark.slow  # each notebook runs searches in a fresh kernel

NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
TIMEOUT_S = 600  # per cell; a cold compile cache makes the first searches slow


def _kernel_or_skip():
    try:
        from jupyter_client.kernelspec import KernelSpecManager
        KernelSpecManager().get_kernel_spec("python3")
    except Exception as e:  # no ipykernel / no kernelspec
        pytest.skip(f"no python3 Jupyter kernel can be started: {e}")


def _run(name: str) -> str:
    _kernel_or_skip()
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    stored = [c for c in nb.cells if c.cell_type == "code"]
    assert any(c.get("outputs") for c in stored), (
        f"{name}.ipynb is stored without outputs: run python notebooks/build_notebooks.py")
    for cell in stored:  # stored executed for readers; the test runs it afresh
        cell["outputs"], cell["execution_count"] = [], None
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:  # an error in a cell: fail
        pytest.fail(f"{name}.ipynb: {str(e).splitlines()[0] if str(e) else e}")
    except RuntimeError as e:  # the kernel did not start
        pytest.skip(f"kernel could not be started: {e}")
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"{name}.ipynb: {out.get('ename')}"
            texts.append(out.get("text", ""))
            data = out.get("data", {})
            texts.append(data.get("text/markdown", ""))
            texts.append(data.get("text/plain", ""))
            if "image/png" in data:
                texts.append("<image/png>")
    return "\n".join(t if isinstance(t, str) else "".join(t) for t in texts)


def test_passage_vs_copper_notebook():
    out = _run("passage_vs_copper")
    assert "speedup:" in out and "x  (copper" in out
    assert "<image/png>" in out
    assert "copper" in out and "passage" in out


def test_sensitivity_notebook():
    out = _run("sensitivity")
    assert "most important hardware knob" in out
    assert "scale_up.bandwidth_GB_s" in out
    assert "<image/png>" in out
