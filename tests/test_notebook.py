"""The Colab notebook's cells run in order on CPU with the smoke preset (no install, no Drive)."""

import json
import os
import shutil
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "experiments" / "colab_finding2.ipynb"


@pytest.fixture
def restore_compile_cache():
    """The notebook turns on JAX's persistent compilation cache (a global setting): undo it."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    before = {n: getattr(jax.config, n) for n in names}
    yield
    for n, v in before.items():
        jax.config.update(n, v)


def test_colab_notebook_cells_run_on_cpu(tmp_path, monkeypatch, restore_compile_cache):
    monkeypatch.setenv("JAXMI_NOTEBOOK_TEST", "1")
    monkeypatch.setenv("JAXMI_NOTEBOOK_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    session_cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if session_cache and os.path.isdir(session_cache):  # the smoke programs other tests compiled
        shutil.copytree(session_cache, tmp_path / "compile_cache")
    nb = json.loads(NOTEBOOK.read_text())
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(cells) >= 5
    namespace: dict = {}
    for cell in cells:
        exec(compile("".join(cell["source"]), str(NOTEBOOK), "exec"), namespace)  # noqa: S102
    out = Path(namespace["OUT"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["verdicts"]) == {"at_harder", "at_less_information", "at_less_information_matched",
                                                    "at_less_information_scale_free"}
    assert (out / "checkpoints").is_dir() and os.listdir(tmp_path / "compile_cache")
    assert (out / "metrics.jsonl").read_text().count("\n") == 2 * (summary["config"]["epochs"] + 1)  # live metrics
    # one uninterrupted run under the notebook's --time-limit (stopping and continuing under a
    # limit: tests/test_timelimit.py and tests/test_run.py)
    assert json.loads((out / "timing.json").read_text())["run"]["resumed_from"] is None
    assert namespace["status"] == 0
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "compile_cache")  # the notebook's cache is on
