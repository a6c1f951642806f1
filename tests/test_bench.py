"""The benchmark command runs end to end and reports every figure its table promises (timings are not tested)."""
import json

import pytest

from bench.__main__ import main

pytest.importorskip("keras")


def test_bench_writes_results_and_ratios(tiny_models, tmp_path, capsys):
    models, _ = tiny_models
    out = tmp_path / "results.json"
    main(["--models", str(models), "--tasks", "knee", "--images", "8", "--repeats", "3", "--batch-size", "4",
          "--out", str(out)])
    report = json.loads(out.read_text())
    (knee,) = report["tasks"]
    assert {"keras_eager", "keras_tf_function", "onnx_fp32", "onnx_fp16", "onnx_int8", "gradcam_keras",
            "cam_onnx_extra"} <= set(knee["latency"])
    assert {"onnx_fp32_vs_keras_tf_function", "batch_command_vs_raw_onnx", "cam_onnx_extra_vs_inference",
            "onnx_int8_vs_fp32"} <= set(knee["ratios"])
    assert all(value > 0 for value in knee["ratios"].values())
    assert "| knee | 32 |" in capsys.readouterr().out
