"""python -m train.maps: the mirror offset and shift-and-stitch chosen on boxes never trained on, the card rewritten."""
import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import TINY_SIZE, tiny_model_folder  # noqa: E402
from radiograph.geometry import feature_grid  # noqa: E402
from radiograph.cards import ModelCard, sha256_of  # noqa: E402
from radiograph.layers import load_model  # noqa: E402
from radiograph.registry import TASKS  # noqa: E402

SPEC = TASKS["chest14"]


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


class TableJudge:
    """Stands in for ValidationPointingGame: each setting's figure from a table, read off the model's layers."""

    def __init__(self, table, error=0.02):
        self.table, self.error = table, error

    def summary(self, model):
        shift = model.get_layer("stitch").shift if "stitch" in [layer.name for layer in model.layers] else 0
        return {"figure": self.table[(model.get_layer("mirror_average").offset, shift)]}

    def figure(self, summary):
        return summary["figure"]

    def standard_error(self, summary):
        return self.error


@pytest.mark.parametrize("table, kept", [
    ({(0, 0): 0.70, (1, 0): 0.75, (2, 0): 0.72}, (1, 0)),  # beats the current settings by more than 0.02
    ({(0, 0): 0.70, (1, 0): 0.71, (2, 0): 0.69}, (0, 0)),  # within their standard error: kept as they are
    ({(0, 0): 0.70, (1, 0): 0.75, (2, 0): 0.75}, (1, 0)),  # a tie: the smaller offset
])
def test_choose_keeps_the_best_only_beyond_the_standard_error(mirrored_folder, table, kept):
    from train.maps import choose

    card = ModelCard.load(mirrored_folder)
    model = load_model(mirrored_folder / "model.keras")
    offset, shift, candidates = choose(SPEC, card, model, [0, 1, 2], [0], TableJudge(table), (0, 0))
    assert (offset, shift) == kept
    assert [(c["mirror_offset"], c["pointing_game"]) for c in candidates] == [(o, table[(o, 0)]) for o in (0, 1, 2)]


def run_maps(monkeypatch, folder, data, chosen, *options):
    """train.maps' main with its choice fixed to `chosen` (offset, stitch shift)."""
    import train.maps

    monkeypatch.setattr(train.maps, "choose", lambda *args: (*chosen, [{"mirror_offset": chosen[0]}]))
    train.maps.main(["chest14", "--data", str(data), "--models", str(folder.parent), "--report", str(folder / "report"),
                     *options])
    return json.loads((folder / "card.json").read_text())


def test_a_new_offset_moves_the_maps_not_the_logits(mirrored_folder, phantom_root, monkeypatch):
    images = np.random.default_rng(0).uniform(0, 255, (3, TINY_SIZE, TINY_SIZE, 1)).astype(np.float32)
    before = logits_of(mirrored_folder, images) * 2.0  # raw logits: the card's temperature taken out
    card = run_maps(monkeypatch, mirrored_folder, phantom_root / "chest14", (2, 0))
    saved = load_model(mirrored_folder / "model.keras")
    assert saved.get_layer("mirror_average").offset == 2 == card["maps"]["mirror_offset"]
    assert card["cam_grid"] == feature_grid(saved.get_config()).as_card()
    after = logits_of(mirrored_folder, images) * np.asarray(card["temperature"]["values"])
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)
    assert card["files"]["model.keras"]["sha256"] == sha256_of(mirrored_folder / "model.keras")
    assert not (mirrored_folder / "model.onnx").exists() and "model.onnx" not in card["files"]  # export again


def test_stitching_halves_the_maps_stride_and_measures_again(mirrored_folder, phantom_root, monkeypatch):
    before = feature_grid(load_model(mirrored_folder / "model.keras").get_config())
    card = run_maps(monkeypatch, mirrored_folder, phantom_root / "chest14", (0, int(before.stride[0]) // 4),
                    "--stitch")
    assert card["cam_grid"]["stride"] == [before.stride[0] / 2, before.stride[1] / 2]
    assert card["thresholds"].keys() == set(card["labels"]) and card["metrics"]["split"] == "test"


def test_settings_kept_leave_the_model_files_alone(mirrored_folder, phantom_root, monkeypatch):
    keras_hash = sha256_of(mirrored_folder / "model.keras")
    card = run_maps(monkeypatch, mirrored_folder, phantom_root / "chest14", (0, 0))
    assert card["maps"]["mirror_offset"] == 0 and sha256_of(mirrored_folder / "model.keras") == keras_hash
    assert (mirrored_folder / "model.onnx").exists()


def test_maps_scores_every_candidate_on_a_fresh_set(mirrored_folder, phantom_root, tmp_path):
    from train.maps import main
    from train.phantoms import generate

    fresh = generate("chest14", tmp_path / "fresh", 40, seed=11)  # never trained on
    main(["chest14", "--data", str(phantom_root / "chest14"), "--models", str(mirrored_folder.parent), "--offsets", "0", "1",
          "--stitch", "--choose-on", str(fresh), "--report", str(tmp_path / "report")])
    maps = json.loads((mirrored_folder / "card.json").read_text())["maps"]
    assert {(c["mirror_offset"], c["stitch_shift"]) for c in maps["candidates"]} == {(0, 0), (1, 0), (0, 2), (1, 2)}
    assert str(fresh) in maps["chosen_on"] and maps["chosen_on_data"]["seed"] == 11


def test_maps_refuses_to_choose_on_the_training_data(mirrored_folder, phantom_root, capsys):
    from train.maps import main

    data = str(phantom_root / "chest14")
    with pytest.raises(SystemExit) as raised:
        main(["chest14", "--data", data, "--models", str(mirrored_folder.parent), "--choose-on", data])
    assert raised.value.code == 2 and "--choose-on must be a dataset the model never trained on" in capsys.readouterr().err


def test_maps_refuses_offsets_for_a_model_without_mirror_averaging(mirrored_folder, phantom_root, capsys):
    from train.maps import main

    card = json.loads((mirrored_folder / "card.json").read_text())
    (mirrored_folder / "card.json").write_text(json.dumps({**card, "mirror_average": False}))
    with pytest.raises(SystemExit) as raised:
        main(["chest14", "--data", str(phantom_root / "chest14"), "--models", str(mirrored_folder.parent), "--offsets", "1"])
    assert raised.value.code == 2 and "--offsets applies to mirror-averaged models" in capsys.readouterr().err
