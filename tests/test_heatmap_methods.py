"""Grad-CAM++ beside Grad-CAM: both from one Jacobian, kept in every analysis on the Keras path, chosen in the app."""
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from radiograph.cam import normalise_each  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KNEE = ROOT / "examples" / "knee" / json.loads((ROOT / "examples" / "knee" / "examples.json").read_text())[3]["files"][0]


@pytest.fixture(scope="module")
def services():
    from radiograph.service import Service

    return {path: Service(ROOT / "models", ["knee"], cam_path=path) for path in ("keras", "onnx")}


def test_both_methods_come_from_one_jacobian_and_match_their_own_gradcam():
    from radiograph.gradcam import GradCam
    from radiograph.imaging import decode, model_input
    from radiograph.layers import load_model

    model = load_model(ROOT / "models" / "knee" / "model.keras")
    image = model_input(decode(KNEE), int(model.input.shape[1]))[0][None].astype(np.float32)
    plain, plus = GradCam(model), GradCam(model, "gradcam++")
    both = plain.every_class_by_method(image)
    assert set(both) == {"gradcam", "gradcam++"}
    np.testing.assert_allclose(both["gradcam"], plain.every_class(image), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(both["gradcam++"], plus.every_class(image), rtol=1e-5, atol=1e-6)
    for c in range(both["gradcam++"].shape[0]):  # the batched Jacobian agrees with one class's gradient at a time
        np.testing.assert_allclose(both["gradcam++"][c], plus(image, c)[0], rtol=1e-4, atol=1e-5)
    maps, flat = normalise_each(both["gradcam++"])
    assert not all(flat) and maps.min() >= 0 and maps.max() == pytest.approx(1.0)
    plain_maps, _ = normalise_each(both["gradcam"])
    differences = [np.abs(maps[c] - plain_maps[c]).max() for c in range(len(maps)) if not flat[c]]
    assert max(differences) > 0.05, f"Grad-CAM++ gave Grad-CAM's maps: largest difference {max(differences):.4f}"


def test_an_analysis_keeps_both_methods_on_the_keras_path_and_only_gradcam_on_onnx(services):
    keras_analysis = services["keras"].analyse("knee", KNEE)
    assert keras_analysis.methods == ["gradcam", "gradcam++"]
    assert services["keras"].explainers["knee"].methods == ("gradcam", "gradcam++")
    plain, plus = keras_analysis.overlay(), keras_analysis.overlay(method="gradcam++")
    assert plain.shape == plus.shape and not np.array_equal(plain, plus)
    result = keras_analysis.result(method="gradcam++")
    assert result["heatmap"]["method"] == "keras-gradcam++"
    assert keras_analysis.result()["heatmap"]["method"] == "keras-gradcam"  # the default stays Grad-CAM
    assert result["heatmap"]["methods_available"] == ["gradcam", "gradcam++"]

    onnx_analysis = services["onnx"].analyse("knee", KNEE)
    assert onnx_analysis.methods == ["gradcam"] and services["onnx"].explainers["knee"].methods == ("gradcam",)
    np.testing.assert_allclose(onnx_analysis.heatmaps, keras_analysis.heatmaps, atol=1e-4)  # Grad-CAM = CAM
    with pytest.raises(ValueError, match="gradcam\\+\\+.*not available.*needs TensorFlow"):
        onnx_analysis.overlay(method="gradcam++")


def method_radio(blocks, task: str):
    import gradio as gr

    return next(block for block in blocks.blocks.values()
                if isinstance(block, gr.Radio) and block.elem_id == f"{task}-method")


def test_the_method_radio_is_offered_only_on_the_keras_path_and_re_renders_the_overlay(services):
    from PIL import Image

    import app

    for path, offered in (("keras", True), ("onnx", False)):
        blocks = app.App(services[path]).build()
        radio = method_radio(blocks, "knee")
        assert radio.visible is offered and [value for _, value in radio.choices] == ["gradcam", "gradcam++"]
        overlay = next(block for block in blocks.blocks.values() if block.elem_id == "knee-overlay")
        rendering = [fn for fn in blocks.fns.values() if (radio._id, "change") in fn.targets]
        assert any(overlay in fn.outputs and radio in fn.inputs for fn in rendering)
        if path == "keras":
            render = next(fn for fn in rendering if overlay in fn.outputs).fn
            analysis = services[path].analyse("knee", KNEE)
            label = analysis.labels[analysis.shown_class]
            plain, plus = (np.asarray(Image.open(render(analysis, label, 0.6, False, "viridis", m)))
                           for m in ("gradcam", "gradcam++"))
            assert not np.array_equal(plain, plus)
