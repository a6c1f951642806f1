"""ONNX export: parity with Keras for every head type, metadata, variants, Triton layout, refusal of bad files."""
import json
import re
import threading

import numpy as np
import pytest

keras = pytest.importorskip("keras")
onnx = pytest.importorskip("onnx")

from conftest import TINY_SIZE, tiny_model_folder  # noqa: E402
from export.__main__ import main as export_main  # noqa: E402
from export.onnx_export import ExportError, export_task  # noqa: E402
from radiograph.cards import file_entry  # noqa: E402
from radiograph.cards import ModelCard  # noqa: E402
from radiograph.decision import decide  # noqa: E402
from radiograph.inference import ModelFileError, OnnxModel, providers_for  # noqa: E402
from radiograph.layers import load_model  # noqa: E402
from radiograph.registry import TASKS  # noqa: E402

SIZE = TINY_SIZE


@pytest.mark.parametrize("task", list(TASKS))
def test_export_round_trips_within_1e_5(tiny_models, task):
    models, _ = tiny_models
    folder = models / task
    card = json.loads((folder / "card.json").read_text())
    assert card["export"]["parity"]["max_abs_diff"] <= 1e-5 and card["export"]["parity"]["decisions_equal"] == 1.0
    model = load_model(folder / "model.keras")
    images = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 1)).astype(np.float32)  # batch of 3: dynamic
    served = OnnxModel(folder, device="cpu").run(images)
    np.testing.assert_allclose(served.probabilities, np.asarray(model(images)), atol=1e-5)
    features = keras.Model(model.input, model.get_layer("features").output)(images)
    np.testing.assert_allclose(served.features, np.asarray(features), atol=1e-4)
    assert served.probabilities.shape == (3, len(TASKS[task].labels))


def test_metadata_reads_back(tiny_models):
    models, _ = tiny_models
    proto = onnx.load(str(models / "chest14" / "model.onnx"))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["task"] == "chest14" and json.loads(meta["labels"]) == list(TASKS["chest14"].labels)
    assert meta["head"] == "sigmoid" and meta["input_size"] == str(SIZE) and meta["cam_layer"] == "features"
    assert meta["model_version"] == "chest14-tiny" and meta["variant"] == "fp32" and meta["exported"]
    assert [i.name for i in proto.graph.input] == ["image"]
    assert sorted(o.name for o in proto.graph.output) == ["features", "probabilities"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 0  # dynamic batch


def test_card_records_hashes_parity_and_variants(tiny_models):
    models, _ = tiny_models
    card = json.loads((models / "knee" / "card.json").read_text())
    assert set(card["files"]) == {"model.keras", "model.onnx", "model.fp16.onnx", "model.int8.onnx"}
    for name, entry in card["files"].items():
        assert entry == file_entry(models / "knee" / name)
    for variant in ("fp16", "int8"):
        record = card["export"]["variants"][variant]
        assert {"parity", "test_metrics", "metric_change_vs_fp32", "cpu_latency_vs_fp32", "offered_on_cpu"} <= set(record)
        assert set(record["metric_change_vs_fp32"]) == {"balanced_accuracy", "quadratic_weighted_kappa"}
    fp16 = onnx.load(str(models / "knee" / "model.fp16.onnx"))
    assert fp16.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 in and out
    assert (models / "knee" / "model.fp16.onnx").stat().st_size < 0.6 * (models / "knee" / "model.onnx").stat().st_size
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(models / "knee" / "model.int8.onnx")).graph.node)
    model = OnnxModel(models / "knee", variant="int8", device="cpu")
    assert model.describe()["variant"] == "int8"


def test_triton_config_matches_the_onnx_file(tiny_models):
    _, triton = tiny_models
    folder = triton / "chest14"
    config = (folder / "config.pbtxt").read_text()
    proto = onnx.load(str(folder / "1" / "model.onnx"))
    assert 'platform: "onnxruntime_onnx"' in config and "dynamic_batching" in config
    assert int(re.search(r"max_batch_size: (\d+)", config).group(1)) > 0
    declared = {m.group(1): [int(d) for d in m.group(2).split(",")]
                for m in re.finditer(r'name: "(\w+)" data_type: TYPE_FP32 dims: \[ ([\d, ]+) \]', config)}
    actual = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim][1:]
              for v in [*proto.graph.input, *proto.graph.output]}
    assert declared == actual
    assert (folder / "labels.txt").read_text().split() == list(TASKS["chest14"].labels)


def test_a_tampered_or_missing_file_is_refused(tiny_models, tmp_path):
    models, _ = tiny_models
    folder = tmp_path / "pneumonia"  # exported without variants
    folder.mkdir()
    for name in ("card.json", "model.onnx"):
        (folder / name).write_bytes((models / "pneumonia" / name).read_bytes())
    OnnxModel(folder, device="cpu")  # intact: loads
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="sha256"):
        OnnxModel(folder)
    (folder / "model.onnx").unlink()
    with pytest.raises(ModelFileError, match="missing"):
        OnnxModel(folder)
    with pytest.raises(ModelFileError, match="not listed"):
        OnnxModel(folder, variant="fp16")


def test_provider_falls_back_to_cpu_and_reports_what_runs(tiny_models, monkeypatch):
    import onnxruntime as ort

    models, _ = tiny_models
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers_for("gpu") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    model = OnnxModel(models / "pneumonia", device="gpu")  # asks for CUDA first
    expected = "CUDAExecutionProvider" if _cuda_works() else "CPUExecutionProvider"
    assert model.provider == expected  # what the session runs on, not what was asked for
    assert OnnxModel(models / "pneumonia", device="cpu").provider == "CPUExecutionProvider"


def _cuda_works():
    import subprocess

    try:
        return subprocess.run(["nvidia-smi"], capture_output=True).returncode == 0
    except OSError:
        return False


def test_concurrent_predictions_equal_serial_ones(tiny_models):
    models, _ = tiny_models
    model = OnnxModel(models / "mura", device="cpu")
    batches = [np.random.default_rng(i).uniform(0, 255, (2, SIZE, SIZE, 1)).astype(np.float32) for i in range(12)]
    serial = [model.run(b).probabilities for b in batches]
    results = [None] * len(batches)

    def work(i):
        results[i] = model.run(batches[i]).probabilities

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for a, b in zip(serial, results):
        np.testing.assert_array_equal(a, b)


def test_export_that_misses_parity_writes_nothing(tmp_path, phantom_root, monkeypatch):
    import export.onnx_export as export_module

    folder = tiny_model_folder(tmp_path, "pneumonia")
    card_before = (folder / "card.json").read_text()
    monkeypatch.setattr(export_module, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="differs from Keras"):
        export_task("pneumonia", tmp_path, 17, False, False, None, None)
    assert not (folder / "model.onnx").exists() and (folder / "card.json").read_text() == card_before


def test_export_command_errors_are_plain(tmp_path, capsys):
    with pytest.raises(SystemExit, match="train first"):
        export_main(["knee", "--models", str(tmp_path)])
    with pytest.raises(SystemExit) as raised:
        export_main(["knee", "--opset", "19"])
    assert raised.value.code == 2 and "--opset must be 13-18" in capsys.readouterr().err


def card_of(task: str, threshold: float = 0.5) -> ModelCard:
    return ModelCard.for_task(TASKS[task], model_version="test", input={"size": 64}, backbone="test",
                              thresholds=dict.fromkeys(TASKS[task].labels, threshold))


def test_decisions_follow_the_card():
    knee = card_of("knee")
    assert decide(knee, [0.1, 0.2, 0.5, 0.1, 0.1])["label"] == "Minimal"
    mura = card_of("mura")
    p = np.zeros(14)
    p[[10, 11]] = 0.3, 0.6  # shoulder normal 0.3, shoulder abnormal 0.6
    p[1] = 0.1  # elbow abnormal
    decision = decide(mura, p)
    assert decision["body_part"] == "shoulder" and decision["abnormal"] and decision["abnormal_probability"] == pytest.approx(0.7)
    chest = card_of("chest14", 0.3)
    q = np.full(14, 0.1)
    q[2] = 0.31
    assert decide(chest, q)["positive"] == ["Effusion"]
