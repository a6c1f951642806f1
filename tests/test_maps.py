"""python -m train.maps: the mirror offset and shift-and-stitch chosen on boxes never trained on, the card rewritten."""
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import TINY_SIZE, tiny_model_folder  # noqa: E402
from radiograph.cam import feature_grid  # noqa: E402
from radiograph.layers import load_model  # noqa: E402


@pytest.fixture()
def mirrored_folder(tmp_path):
    """An untrained mirror-averaged chest14 model folder with the card fields train writes and train.maps reads."""
    folder = tiny_model_folder(tmp_path, "chest14", seed=4, mirror=True)
    card = json.loads((folder / "card.json").read_text())
    card.update({"backbone": "small_cnn", "mirror_average": True, "temperature": {"values": [2.0] * 14},
                 "training": {**card["training"], "kept": {"kept_epoch": 1}}})
    (folder / "card.json").write_text(json.dumps(card))
    (folder / "model.onnx").write_bytes(b"exported from the previous graph")
    return folder


def logits_of(folder, images):
    model = load_model(folder / "model.keras")
    return keras.Model(model.input, model.get_layer("logits").output)(images).numpy()


def test_maps_keeps_the_best_offset_and_the_logits(mirrored_folder, phantom_root, tmp_path):
    from train.maps import main
    from train.phantoms import generate

    fresh = generate("chest14", tmp_path / "fresh", 40, seed=11)  # never trained on
    images = np.random.default_rng(0).uniform(0, 255, (3, TINY_SIZE, TINY_SIZE, 1)).astype(np.float32)
    before = logits_of(mirrored_folder, images) * 2.0  # raw logits: the card's temperature taken out
    main(["chest14", "--data", str(phantom_root / "chest14"), "--model", str(mirrored_folder), "--offsets", "0", "1",
          "2", "--choose-on", str(fresh), "--report", str(tmp_path / "report")])
    card = json.loads((mirrored_folder / "card.json").read_text())
    maps = card["maps"]
    figures = {c["mirror_offset"]: c["pointing_game"] for c in maps["candidates"]}
    assert sorted(figures) == [0, 1, 2] and maps["stitch_shift"] == 0 and str(fresh) in maps["chosen_on"]
    assert maps["mirror_offset"] == min(o for o in figures if figures[o] == max(figures.values()))
    saved = load_model(mirrored_folder / "model.keras")
    assert card["cam_grid"] == feature_grid(saved.get_config()).as_card()
    assert saved.get_layer("mirror_average").offset == maps["mirror_offset"]
    after = logits_of(mirrored_folder, images) * np.asarray(card["temperature"]["values"])
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)  # the offset moves maps, not logits
    assert not (mirrored_folder / "model.onnx").exists() and "model.onnx" not in card["files"]


def test_maps_tries_stitching_at_a_quarter_of_the_stride(mirrored_folder, phantom_root, tmp_path):
    from radiograph.registry import TASKS
    from train.maps import main, with_maps

    model = load_model(mirrored_folder / "model.keras")
    before = feature_grid(model.get_config())
    card = json.loads((mirrored_folder / "card.json").read_text())
    stitched = feature_grid(with_maps(TASKS["chest14"], card, model, 0, int(before.stride[0]) // 4).get_config())
    assert stitched.stride == (before.stride[0] / 2, before.stride[1] / 2)
    main(["chest14", "--data", str(phantom_root / "chest14"), "--model", str(mirrored_folder), "--offsets", "0",
          "--stitch", "--report", str(tmp_path / "report")])
    card = json.loads((mirrored_folder / "card.json").read_text())
    assert {c["stitch_shift"] for c in card["maps"]["candidates"]} == {0, before.stride[0] / 4}
    assert card["cam_grid"] == (stitched if card["maps"]["stitch_shift"] else before).as_card()
    assert card["thresholds"].keys() == set(card["labels"]) and card["metrics"]["split"] == "test"


def test_maps_refuses_to_choose_on_the_training_data(mirrored_folder, phantom_root):
    from train.maps import main

    data = str(phantom_root / "chest14")
    with pytest.raises(SystemExit):
        main(["chest14", "--data", data, "--model", str(mirrored_folder), "--choose-on", data])


def test_maps_refuses_offsets_for_a_model_without_mirror_averaging(mirrored_folder, phantom_root):
    from train.maps import main

    card = json.loads((mirrored_folder / "card.json").read_text())
    (mirrored_folder / "card.json").write_text(json.dumps({**card, "mirror_average": False}))
    with pytest.raises(SystemExit):
        main(["chest14", "--data", str(phantom_root / "chest14"), "--model", str(mirrored_folder), "--offsets", "1"])
