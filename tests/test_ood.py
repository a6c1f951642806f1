"""The out-of-distribution score (radiograph.ood) and the command that fits it (train.ood)."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from radiograph.cards import ModelCard, ModelFileError, card_markdown
from radiograph.inference import OnnxModel
from radiograph.ood import FILE, FeatureDistance, ledoit_wolf
from radiograph.registry import TASKS

ROOT = Path(__file__).resolve().parent.parent
MAX_FILE_BYTES = 10 * 1024 * 1024


def without_ood(source: Path, target: Path) -> Path:
    """A copy of a shipped model folder (card and fp32 ONNX file) as it was before train.ood ran."""
    target.mkdir(parents=True)
    shutil.copy(source / "model.onnx", target / "model.onnx")
    values = json.loads((source / "card.json").read_text())
    values.pop("ood", None), values.pop("uncertainty", None)
    values["files"] = {"model.onnx": values["files"]["model.onnx"]}
    (target / "card.json").write_text(json.dumps(values))
    return target


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """The shipped knee model fitted by `python -m train.ood` on a small fresh knee phantom set (seed 3)."""
    from train.ood import main
    from train.phantoms import generate

    root = tmp_path_factory.mktemp("ood")
    data = root / "data"
    generate("knee", data, 120, seed=3, workers=1)
    generate("mura", data, 16, seed=3, workers=1)
    folder = without_ood(ROOT / "models" / "knee", root / "models" / "knee")
    main(["knee", "--data", str(data), "--models", str(root / "models"), "--false-alarm", "0.05"])
    return folder, data


def test_fitting_scores_held_in_images_below_far_away_ones(fitted):
    from train.datasets import read_dataset
    from train.ood import pooled_outputs, splits_as_trained

    folder, data = fitted
    model = OnnxModel(folder, device="cpu")
    score = FeatureDistance.load(folder, model.card)
    assert score.false_alarm_rate == 0.05 and np.isfinite(score.threshold)
    test = [s.path for s in splits_as_trained(model.card, data / "knee")["test"]]
    held_in = score.distances(pooled_outputs(model, test)[0])
    noise = np.random.default_rng(0).uniform(0, 255, (8, model.size, model.size, 1)).astype(np.float32)
    far = score.scores(model.run(noise).features)
    foreign = [s.path for s in read_dataset("mura", data / "mura").splits["train"]]
    mura = score.distances(pooled_outputs(model, foreign)[0])
    assert np.median(held_in) < score.threshold < far.min(), (held_in, score.threshold, far)
    assert np.median(held_in) < np.median(mura)
    one = model.run(noise[:1]).features
    assert score.score(one[0]) == pytest.approx(score.scores(one)[0], rel=1e-5)


def test_the_threshold_is_the_stated_quantile_of_validation(fitted):
    from train.ood import pooled_outputs, splits_as_trained

    folder, data = fitted
    model = OnnxModel(folder, device="cpu")
    card = model.card
    val = [s.path for s in splits_as_trained(card, data / "knee")["val"]]
    distances = FeatureDistance.load(folder, card).distances(pooled_outputs(model, val)[0])
    assert card.ood["threshold"] == pytest.approx(np.quantile(distances, 0.95), rel=1e-5)
    assert card.ood["chosen_on"] == {"split": "val", "images": len(val)}
    assert card.ood["fitted_on"]["split"] == "train" and card.ood["validation_quantiles"]["50"] < card.ood["threshold"]
    assert 0.0 <= card.uncertainty["high_above"] <= 1.0 and card.uncertainty["chosen_on"]["images"] == len(val)
    text = card_markdown(card)
    assert "Out-of-distribution score" in text and "Uncertainty:" in text and "`ood.npz`" in text


def test_a_tampered_file_is_refused(fitted, tmp_path):
    folder = tmp_path / "knee"
    shutil.copytree(fitted[0], folder)
    raw = bytearray((folder / FILE).read_bytes())
    raw[-100] ^= 1
    (folder / FILE).write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="ood.npz has sha256 .* but its card records"):
        FeatureDistance.load(folder, ModelCard.load(folder))
    (folder / FILE).unlink()
    with pytest.raises(ModelFileError, match="ood.npz is missing"):
        FeatureDistance.load(folder, ModelCard.load(folder))


def test_a_card_without_an_ood_section_loads_and_has_no_score(tmp_path):
    folder = without_ood(ROOT / "models" / "pneumonia", tmp_path / "pneumonia")
    card = ModelCard.load(folder)
    assert card.ood is None and card.uncertainty is None
    assert FeatureDistance.load(folder, card) is None
    card.save(tmp_path)  # and is written back without the sections
    assert "ood" not in json.loads((tmp_path / "card.json").read_text())


def test_ledoit_wolf_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn.covariance")
    x = np.random.default_rng(1).gamma(1.0, 1.0, (60, 20)) * np.linspace(0.01, 3, 20)
    mean, covariance, shrinkage = ledoit_wolf(x)
    reference = sklearn.LedoitWolf().fit(x)
    assert np.allclose(covariance, reference.covariance_) and shrinkage == pytest.approx(reference.shrinkage_)
    score = FeatureDistance.fit(x)
    centred = x - x.mean(axis=0)
    expected = np.sqrt(np.einsum("ij,jk,ik->i", centred, np.linalg.inv(reference.covariance_), centred))
    assert np.allclose(score.distances(x), expected, rtol=1e-3)
    distances = score.choose_threshold(x[:40], 0.1)
    assert score.threshold == pytest.approx(np.quantile(distances, 0.9)) and score.false_alarm_rate == 0.1


def test_the_score_imports_no_tensorflow():
    code = ("import sys, radiograph.ood; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'keras', 'train', 'torch')]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("task", [t for t in TASKS if (ROOT / "models" / t / "card.json").exists()])
def test_shipped_models_carry_a_verified_score(task):
    folder = ROOT / "models" / task
    card = ModelCard.load(folder)
    assert card.ood and card.uncertainty, f"run: python -m train.ood {task} --data phantoms"
    assert (folder / card.ood["file"]).stat().st_size < MAX_FILE_BYTES
    score = FeatureDistance.load(folder, card)  # checks the sha256
    assert score.threshold == card.ood["threshold"] and score.false_alarm_rate == card.ood["false_alarm_rate"] <= 0.03
    assert score.feature_shape[-1] == score.channels
    assert card.ood["chosen_on"]["split"] == "val" and card.uncertainty["chosen_on"]["split"] == "val"
    assert score.score(np.zeros(score.feature_shape, np.float32)) > 0
