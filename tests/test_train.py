"""The training command end to end on tiny phantom sets: artefacts, card, calibration folded in, fine-tuning."""
import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from radiograph.imaging import load_for_model  # noqa: E402
from radiograph.layers import load_model  # noqa: E402
from radiograph.registry import TASKS  # noqa: E402
from train.__main__ import main  # noqa: E402
from train.datasets import read_dataset  # noqa: E402
from train.evaluate import activate, predict_logits  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained_knee(tmp_path_factory, phantom_root):
    return run(tmp_path_factory.mktemp("knee"), phantom_root, "knee")


def run(tmp_path, phantom_root, task, *extra):
    out, report = tmp_path / "model", tmp_path / "report"
    main([task, "--data", str(phantom_root / task), "--backbone", "small_cnn", "--image-size", "64",
          "--epochs", "2", "--batch-size", "16", "--seed", "0", "--out", str(out), "--report", str(report), *extra])
    return out, report, json.loads((out / "card.json").read_text())


def test_train_knee_writes_a_self_describing_model(trained_knee, phantom_root):
    out, report, card = trained_knee
    spec = TASKS["knee"]
    assert card["labels"] == list(spec.labels) and card["head"] == "softmax" and card["cam_layer"] == "features"
    assert card["cam_grid"]["stride"] == [8.0, 8.0]  # small_cnn: three 2x2 poolings (placement: test_gradcam)
    assert card["input"]["size"] == 64 and card["data"]["kind"] == "synthetic phantoms"
    assert "phantom" in card["notice"] and "not a medical device" in card["notice"]
    assert card["training"]["command"].startswith("python -m train knee --data ")
    schedule = card["training"]["schedule"]  # the learning-rate schedule the run followed
    assert schedule["phases"] == [{"epochs": 2, "learning_rate": 1e-3, "backbone": "trainable"}]
    assert schedule["reduce_lr_on_plateau"]["factor"] == 0.3 and schedule["reduce_lr_on_plateau"]["min_lr"] == 1e-6
    assert set(spec.metrics) <= set(card["metrics"])
    model_file = out / "model.keras"
    assert card["files"]["model.keras"]["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert (out / "config.json").exists() and len(list(csv.DictReader((out / "history.csv").open()))) >= 1
    assert {p.name for p in report.iterdir()} >= {"metrics.json", "roc.png", "confusion_matrix.png",
                                                  "training_curves.png"}
    model = load_model(model_file)
    samples = read_dataset("knee", phantom_root / "knee").splits["test"][:6]
    logits = predict_logits(model, samples, 64)
    probabilities = model.predict(np.stack([load_for_model(s.path, 64)[0] for s in samples]), verbose=0)
    np.testing.assert_allclose(probabilities, activate("softmax", logits), atol=1e-5)  # T is inside the model


def test_train_chest14_fine_tunes_from_another_task_model(tmp_path, phantom_root):
    """As the shipped chest14 recipe does (--weights: the pneumonia model it started from); ImageNet-style weights
    files loaded into a keras.applications backbone: tests/test_pretrained_weights.py."""
    from train.backbones import build_model, save_model

    weights = tmp_path / "pneumonia.keras"
    save_model(build_model(TASKS["pneumonia"], "small_cnn", image_size=64), weights)
    out, _, card = run(tmp_path, phantom_root, "chest14", "--weights", str(weights), "--epochs", "1",
                       "--warmup-epochs", "1")
    assert len(list(csv.DictReader((out / "history.csv").open()))) == 2  # frozen head phase, then everything
    assert set(card["thresholds"]) == set(TASKS["chest14"].labels)
    assert card["training"]["thresholds"]["rule"].startswith("Youden's J on validation, at the middle")
    assert all(t < 1 - 1e-6 for t in card["thresholds"].values())  # every threshold can be met
    assert len(card["temperature"]["values"]) == 14
    assert 0 <= card["metrics"]["mean_auc"] <= 1


def test_ensemble_command_from_trained_members(tmp_path, trained_knee, phantom_root):
    from train.ensemble import main as ensemble

    member = trained_knee[0]
    out = tmp_path / "ensemble"
    ensemble(["knee", "--members", str(member), str(member), "--method", "f1",
              "--data", str(phantom_root / "knee"), "--out", str(out)])
    card = json.loads((out / "card.json").read_text())
    weights = np.asarray(card["ensemble"]["weights"])
    assert weights.shape == (2, 5) and np.allclose(weights.sum(0), 1)
    assert set(TASKS["knee"].metrics) <= set(card["metrics"]) and "F1" in card["ensemble"]["heatmap"]
    single = json.loads((member / "card.json").read_text())["metrics"]
    assert card["metrics"]["accuracy"] == pytest.approx(single["accuracy"])  # two copies: same decisions


def test_train_mura_saves_with_its_abnormality_monitor(tmp_path, phantom_root):
    out, _, card = run(tmp_path, phantom_root, "mura", "--epochs", "1")
    history = list(csv.DictReader((out / "history.csv").open()))
    assert "val_auc" in history[0] and (out / "model.keras").exists()
    assert {"study_auc", "body_part_accuracy"} <= set(card["metrics"])


def test_select_by_pointing_game_keeps_the_epoch_it_names(tmp_path, phantom_root):
    from train.selection import ValidationPointingGame, chosen_epoch

    out, _, card = run(tmp_path, phantom_root, "knee", "--epochs", "3", "--select-by", "pointing_game",
                       "--auc-tolerance", "0.05")
    history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader((out / "history.csv").open())]
    assert len(history) == 3 and all(0 <= row["val_pointing_game"] <= 1 for row in history)
    kept = card["training"]["kept"]
    assert kept["select_by"] == "pointing_game" and kept["auc_tolerance"] == 0.05
    assert kept["kept_epoch"] == chosen_epoch(history, "pointing_game", 0.05) + 1
    # the shipped weights are that epoch's: their maps score what the run logged (T > 0 only rescales them)
    index = read_dataset("knee", phantom_root / "knee")
    scorer = ValidationPointingGame(TASKS["knee"], index.boxes, index.splits["val"], 64, 16)
    scorer.set_model(load_model(out / "model.keras"))
    logs = {}
    scorer.on_epoch_end(0, logs)
    assert logs["val_pointing_game"] == pytest.approx(kept["val_pointing_game"])


def test_select_by_pointing_game_needs_validation_boxes(phantom_root):
    from train.selection import ValidationPointingGame

    samples = read_dataset("mura", phantom_root / "mura").splits["val"]
    with pytest.raises(ValueError, match="needs true boxes.*--select-by auc"):
        ValidationPointingGame(TASKS["mura"], [], samples, 64, 16)


def test_train_defaults_to_a_git_ignored_runs_folder_not_the_shipped_model():
    from train.__main__ import export_command, parse

    args = parse(["knee", "--data", "phantoms/knee"])
    assert args.out.as_posix() == "runs/knee" and args.report.as_posix() == "runs/knee/report"
    assert not args.overwrite
    assert "/runs/" in (ROOT / ".gitignore").read_text().splitlines()
    assert export_command("knee", args.out) == "python -m export knee --models runs"  # the README's chain
    assert "python -m export knee --models runs" in (ROOT / "README.md").read_text()


def test_train_refuses_a_folder_holding_a_model_unless_overwrite(tmp_path, monkeypatch):
    from train.__main__ import refuse_to_overwrite

    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit, match=r"models/knee already holds a model \(model.keras, card.json.*--overwrite"):
        main(["knee", "--data", str(tmp_path), "--out", "models/knee"])  # stops before reading any data
    (tmp_path / "old" / "report").mkdir(parents=True)
    (tmp_path / "old" / "report" / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit, match="already holds a report"):
        refuse_to_overwrite(tmp_path / "new", tmp_path / "old" / "report", overwrite=False)
    refuse_to_overwrite(ROOT / "models" / "knee", ROOT / "reports" / "knee", overwrite=True)  # said so: allowed
    refuse_to_overwrite(tmp_path / "new", tmp_path / "new" / "report", overwrite=False)  # a fresh folder
