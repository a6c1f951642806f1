"""The shipped models' outputs on the shipped examples, against stored reference values: a refactoring that
changes what a model says or where its map points fails here.

    python tests/test_reference_outputs.py     # rewrite tests/reference/outputs.npz (only when a model changes)

Probabilities and every class's normalised map (the ONNX CAM path, what the light install serves) are stored
for each example. ONNX Runtime's float sums differ slightly between CPU types (AVX2 against AVX-512), so the
comparison allows 1e-5: far below any change of behaviour, far above that rounding.
"""
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "tests" / "reference" / "outputs.npz"
TOLERANCE = 1e-5


def current_outputs() -> dict[str, np.ndarray]:
    from radiograph.registry import TASKS
    from radiograph.service import Service

    service = Service(ROOT / "models", cam_path="onnx")
    outputs = {}
    for task in TASKS:
        folder = ROOT / "examples" / task
        for entry in json.loads((folder / "examples.json").read_text()):
            for name in entry["files"]:
                analysis = service.analyse(task, folder / name)
                outputs[f"{task}/{name}/probabilities"] = analysis.probabilities.astype(np.float32)
                outputs[f"{task}/{name}/heatmaps"] = analysis.heatmaps.astype(np.float32)
    return outputs


def test_shipped_models_give_their_reference_outputs():
    reference = np.load(REFERENCE)
    now = current_outputs()
    assert set(now) == set(reference.files), "the examples changed: regenerate with python tests/test_reference_outputs.py"
    for key, value in now.items():
        np.testing.assert_allclose(value, reference[key], rtol=0, atol=TOLERANCE, err_msg=key)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    outputs = current_outputs()
    np.savez_compressed(REFERENCE, **outputs)
    print(f"wrote {len(outputs)} arrays to {REFERENCE} ({REFERENCE.stat().st_size / 1e6:.1f} MB)")
