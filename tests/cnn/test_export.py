"""dnas export on a tiny CNN run: the program loads where dnas cannot be imported and
predicts what the trained model predicts on the test images; ONNX where onnx is installed."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from dnas_cnn import plugin
from dnas_core.plugins.registry import make_registry
from dnas_core.runner.experiment import plan_experiment
from dnas_core.runner.export import export_run, load_trained
from dnas_core.runner.orchestrate import PoolSettings, run_experiment
from tests.export_check import run_without_dnas

TINY = ["domain.random.images=120", "domain.random.size=20", "domain.widths=[4, 8]",
        "domain.layer_strides=[1, 2]", "domain.kernels=[3, 5]", "search.batch_size=32",
        "search.warmup_epochs=1", "search.total_epochs=2", "search.arch_sampling={1: 1}",
        "train.epochs=1", "train.batch_size=32", "train.divergence.margin=1.0"]


@pytest.fixture(scope="module")
def registry():
    return make_registry([plugin], entry_points=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, registry):
    where = tmp_path_factory.mktemp("cnn-export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DNAS_PLUGINS", "cnn")
        plan = plan_experiment(registry, plugin="cnn", preset="random", overrides=[
            *TINY, f"domain.latency_cache={where / 'latency.json'}"])
        plan.baseline = "none"
        run_experiment(where / "run", plan, PoolSettings(["cpu"]))
    return where / "run"


def test_cnn_export_predicts_like_the_trained_model(run_dir, registry, tmp_path):
    out = tmp_path / "cnn.pt2"
    sidecar = export_run(registry, run_dir, out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert sidecar["arch_id"] == summary["best_arch_id"] and sidecar["domain"] == "cnn"
    assert sidecar["inputs"] == [{"dtype": "float32", "shape": ["batch", 3, 20, 20]}]
    assert sidecar["output"] == {"dtype": "float32", "shape": ["batch", 5]}
    assert sidecar["task"] == {"type": "MulticlassClassification", "primary": "loss"}
    assert sidecar["architecture"]["spec"]["classes"] == 5
    trained = load_trained(registry, run_dir)
    data = trained.built.data
    images, _ = data.table.gather(data.splits["test"])
    torch.save({"inputs": images}, tmp_path / "rows.pt")
    with torch.no_grad():
        expected = trained.model(images)
    (outputs,) = run_without_dnas([(out, tmp_path / "rows.pt")], tmp_path)
    torch.testing.assert_close(outputs, expected, rtol=1e-5, atol=1e-6)

    if importlib.util.find_spec("onnx") is None:
        assert sidecar["onnx"] is None and "onnx package is not installed" in \
            sidecar["notes"][0]
    elif sidecar["onnx"] is not None:  # the exporter also needs onnxscript
        import onnx

        onnx.checker.check_model(str(tmp_path / sidecar["onnx"]))


def test_example_inputs_follow_the_data_shape():
    info = {"channels": 3, "image_size": 20}
    images = plugin.dnas_example_inputs(domain="cnn", settings=None, data_info=info,
                                        batch_size=2)
    assert images.shape == (2, 3, 20, 20) and images.dtype == torch.float32
    assert plugin.dnas_example_inputs(domain="dlrm", settings=None, data_info=info,
                                      batch_size=2) is None
