"""A training run in several sittings (train.checkpoint) equals the same run made straight through, bit for bit;
and the checkpoint refuses what would mix two runs."""
import csv
import json
from dataclasses import asdict

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from radiograph.layers import load_model  # noqa: E402
from train.__main__ import main  # noqa: E402
from train.checkpoint import PAUSED_EXIT, Checkpoint, TrainingState, recipe  # noqa: E402

# ChestX-ray14 fine-tuned: a frozen-backbone first phase: the sittings cut at a phase's end and in a phase's middle; the kept
# epoch is chosen by the pointing game among several candidates, and the learning rate falls on plateaus. The small CNN
# (with batch normalisation and dropout, as the others) because tracing MobileNetV3's graph took most of this test's time
RECIPE = ["--backbone", "small_cnn", "--image-size", "64", "--batch-size", "16", "--warmup-epochs", "1",
          "--epochs", "3", "--patience", "2", "--learning-rate", "3e-3", "--select-by", "pointing_game",
          "--auc-tolerance", "0.2", "--seed", "0"]


def command(phantom_root, weights, out, *extra):
    return ["chest14", "--data", str(phantom_root / "chest14"), *RECIPE, "--weights", str(weights),
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def donor(tmp_path_factory):
    from radiograph.registry import TASKS
    from train.backbones import build_model, save_model

    keras.utils.set_random_seed(5)
    path = tmp_path_factory.mktemp("donor") / "pneumonia.keras"  # another task's model, as chest14's recipe has
    save_model(build_model(TASKS["pneumonia"], "small_cnn", image_size=64), path)
    return path


def paused(argv) -> None:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == PAUSED_EXIT


def test_a_run_in_three_sittings_equals_the_run_made_in_one(tmp_path, phantom_root, donor):
    straight = tmp_path / "straight"
    main(command(phantom_root, donor, straight))
    split = tmp_path / "split"
    paused(command(phantom_root, donor, split, "--pause-after-epochs", "1"))  # at the end of the frozen phase
    assert Checkpoint(split).exists() and not (split / "model.keras").exists()
    paused(command(phantom_root, donor, split, "--resume", "--pause-after-epochs", "1"))  # mid-phase: optimiser kept
    state = json.loads((split / "checkpoint" / "state.json").read_text())
    assert (state["phase"], state["epoch_in_phase"], state["epochs_done"]) == (1, 1, 2)
    main(command(phantom_root, donor, split, "--resume"))
    assert not Checkpoint(split).exists()  # a finished run keeps its card, not its checkpoint

    one, three = load_model(straight / "model.keras"), load_model(split / "model.keras")
    assert len(one.weights) == len(three.weights)
    for a, b in zip(one.weights, three.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    rows = [list(csv.reader((folder / "history.csv").open())) for folder in (straight, split)]
    assert rows[0] == rows[1] and len(rows[0]) == 1 + 4  # header and every epoch once, the same figures
    cards = [json.loads((folder / "card.json").read_text()) for folder in (straight, split)]
    assert cards[0]["metrics"] == cards[1]["metrics"]
    assert cards[0]["training"]["kept"] == cards[1]["training"]["kept"]
    assert cards[0]["training"]["command"].replace("straight", "split") == cards[1]["training"]["command"]
    assert "--resume" not in cards[1]["training"]["command"] and "--pause" not in cards[1]["training"]["command"]
    sittings = cards[1]["training"]["sittings"]
    assert [(s["from_epoch"], s["to_epoch"]) for s in sittings] == [(0, 1), (1, 2), (2, 4)]
    assert all(s["cpu"] for s in sittings) and len(cards[0]["training"]["sittings"]) == 1


def test_resume_refuses_what_would_mix_two_runs(tmp_path, phantom_root, donor):
    """Every refusal but an unreadable checkpoint's arrays comes before any data is read or any model built."""
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="holds no checkpoint.*without --resume"):
        main(command(phantom_root, donor, out, "--resume"))
    (out / "checkpoint").mkdir(parents=True)  # what a paused run leaves (its arrays are not read before training)
    state = TrainingState(recipe=recipe(command(phantom_root, donor, out, "--pause-after-epochs", "1")))
    (out / "checkpoint" / "state.json").write_text(json.dumps(asdict(state)))
    with pytest.raises(SystemExit, match="unfinished run's checkpoint.*--resume.*--overwrite"):
        main(command(phantom_root, donor, out))
    changed = command(phantom_root, donor, out, "--resume")
    changed[changed.index("--learning-rate") + 1] = "1e-3"
    with pytest.raises(SystemExit, match="(?s)from another command.*--learning-rate 3e-3"):
        main(changed)
    with pytest.raises(SystemExit, match="give one of them"):
        main(command(phantom_root, donor, out, "--resume", "--overwrite"))
    (out / "card.json").write_text("{}")
    with pytest.raises(SystemExit, match="is finished.*nothing to resume"):
        main(command(phantom_root, donor, out, "--resume"))
    (out / "card.json").unlink()
    (out / "checkpoint" / "model.npz").write_bytes(b"PK\x03\x04 cut short")  # a checkpoint written only in part
    with pytest.raises(SystemExit, match=r"model \(.*model.npz\) cannot be read.*--overwrite"):
        main(command(phantom_root, donor, out, "--resume"))
    (out / "checkpoint" / "state.json").write_text("{not json")
    with pytest.raises(SystemExit, match="cannot be read.*--overwrite"):
        main(command(phantom_root, donor, out, "--resume"))


def test_the_recipe_leaves_out_only_how_the_run_is_split_into_sittings():
    argv = ["knee", "--data", "d", "--resume", "--pause-after-minutes", "30", "--pause-after-epochs=2", "--seed", "1",
            "--overwrite"]
    assert recipe(argv) == ["knee", "--data", "d", "--seed", "1"]
    for bad in (["--pause-after-epochs", "0"], ["--pause-after-minutes", "-5"]):
        with pytest.raises(SystemExit):  # argparse: exit 2, with the message on stderr
            main(["knee", "--data", "d", *bad])
