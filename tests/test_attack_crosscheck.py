"""benchmarks/attack_crosscheck.py: its PyTorch copy of a jaxmi LeNet computes jaxmi's logits (the
weight conversion the cross-check rests on), and a missing run directory is a clear error; a
benchmark run without its optional package stops with the install line."""

import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from optional_packages import optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import attack_crosscheck  # noqa: E402

from jaxmi import data  # noqa: E402
from jaxmi.models import apply_model, create_model, init_variables  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_torch_copy_of_a_lenet_has_the_same_logits(shape):
    torch = optional("torch")
    module = create_model("lenet")
    v = init_variables(module, jax.random.key(3), shape)
    if shape[-1] == 1:
        x = data.load_dataset("mnist", "test", max_examples=16).images.astype(np.float32) / 255
    else:
        x = np.random.default_rng(0).uniform(size=(16,) + shape).astype(np.float32)
    ours = np.asarray(apply_model(module, v["params"], v["batch_stats"], x)[0])
    model = attack_crosscheck.torch_lenet_from_jaxmi(v["params"], in_channels=shape[-1], hw=shape[0])
    with torch.no_grad():
        theirs = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=1e-5)
    # fc1 depends on the flatten order: without the NHWC -> NCHW permutation the logits differ
    with torch.no_grad():
        model.fc1.weight.copy_(torch.from_numpy(np.asarray(v["params"]["fc1"]["kernel"]).T.copy()))
        wrong = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert np.abs(wrong - ours).max() > 1e-3


def test_missing_run_directory_is_a_clear_error(tmp_path):
    optional("torch")
    optional("torchattacks")
    with pytest.raises(SystemExit, match="holds no trained models"):
        attack_crosscheck.main(["--run-dir", str(tmp_path / "nowhere")])


@pytest.mark.parametrize("script,args", [("attack_throughput.py", []),
                                         ("attack_crosscheck.py", ["--run-dir", "nowhere"])])
def test_a_benchmark_without_torch_says_how_to_install_it(script, args):
    """torch and torchattacks are blocked in the benchmark's process, as if not installed: one
    line naming the script, the package and the install line, exit status 2, no traceback."""
    code = ("import sys, runpy; sys.modules.update(torch=None, torchattacks=None); "
            f"sys.argv = {[script, *args]!r}; runpy.run_path({str(BENCHMARKS / script)!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {script} needs torch: pip install torch==2.13.0 (the CPU wheel; any torch works)"], r.stderr
