"""The benchmark command runs end to end and reports every figure its table promises (timings are not tested)."""
import json

import pytest

from bench.__main__ import main

pytest.importorskip("keras")


def test_bench_writes_results_and_ratios(tiny_models, tmp_path, capsys):
    models, _ = tiny_models
    out = tmp_path / "results.json"
    main(["knee", "--models", str(models), "--images", "8", "--repeats", "3", "--batch-size", "4",
          "--out", str(out), "--no-app"])
    report = json.loads(out.read_text())
    (knee,) = report["tasks"]
    assert {"keras_eager", "keras_tf_function", "onnx_fp32", "onnx_fp16", "onnx_int8", "gradcam_keras",
            "cam_onnx_extra", "cam_onnx_every_class"} <= set(knee["latency"])
    assert {"onnx_fp32_vs_keras_tf_function", "batch_command_vs_raw_onnx", "cam_onnx_extra_vs_inference",
            "cam_onnx_every_class_vs_inference", "gradcam_keras_vs_onnx_inference",
            "onnx_int8_vs_fp32"} <= set(knee["ratios"])
    assert all(value > 0 for value in knee["ratios"].values())
    assert knee["onnx_fp32_gflop_per_image"] > 0 and report["matmul_ceiling_gflops"] > 0
    assert "| knee | 32 |" in capsys.readouterr().out


def test_model_flops_counts_conv_and_matmul(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from bench.__main__ import model_flops

    weight = numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w")
    dense = numpy_helper.from_array(np.ones((256, 3), np.float32), "d")
    shape = numpy_helper.from_array(np.array([-1, 256], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
         helper.make_node("Reshape", ["conv", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "d"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], [weight, dense, shape])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    assert model_flops(path) == 2 * (4 * 8 * 8 * 9 + 256 * 3)
