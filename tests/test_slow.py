"""Long runs, kept out of CI: python -m pytest -m slow

* every shipped demo model retrains from the command in its card (and its map settings, train.maps, from
  the card's maps command), on phantoms regenerated from the card's provenance, each recorded figure within
  its band (train.spread.retrain_band): 3 sd of every measured run of the card's command, the shipped one
  included (card.spread, train.spread), or the figure's 95% bootstrap interval on the test split where that is
  wider (card.intervals, train.intervals). On the CPU type
  that trained it, a retrain is bit-identical; across CPU types only the spread holds;
* a shuffled-label control: the training command on phantoms whose labels were shuffled must end at
  chance level (if it does not, something other than the finding carries the label);
* a soak: 1,000 sequential requests through gradio_client to `app.py` in its own process, resident
  memory growing 10% or less after the first 50.
"""
import json
import random
import shlex
import sys
from pathlib import Path

import pytest

from radiograph.cards import ModelCard, dotted
from radiograph.registry import TASKS

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [task for task in TASKS if (ROOT / "models" / task / "card.json").exists()]


def replace_option(tokens, option, value):
    tokens = list(tokens)
    tokens[tokens.index(option) + 1] = str(value)
    return tokens


@pytest.mark.parametrize("task", SHIPPED)
def test_demo_model_retrains_from_its_card(task, tmp_path):
    from train.__main__ import main as train
    from train.phantoms import main as phantoms
    from train.checkpoint import cpu_flags
    from train.spread import check_starting_weights, retrain_band, without_the_retrains_twin

    shipped = ModelCard.load(ROOT / "models" / task)
    check_starting_weights(shipped, ROOT)  # MURA and chest14 start from another model
    card = json.loads((ROOT / "models" / task / "card.json").read_text())
    banded = without_the_retrains_twin(card, cpu_flags())  # a spread run this retrain repeats bit for bit
    phantom_command = shlex.split(card["data"]["command"])[3:]  # after "python -m train.phantoms"
    phantoms(replace_option(phantom_command, "--out", tmp_path / "phantoms"))
    command = shlex.split(card["training"]["command"])[3:]  # after "python -m train"
    command = replace_option(command, "--data", tmp_path / "phantoms" / task)
    train([*command, "--out", str(tmp_path / "models" / task), "--report", str(tmp_path / "report")])
    if shipped.maps is not None:  # the map settings the shipped model was given after training: the spread's step
        from train.maps import main as maps
        from train.spread import chooser_set, maps_command

        chooser, choose_on = chooser_set(shipped, tmp_path)  # the fresh set the settings were chosen on, regenerated
        if chooser:
            phantoms(chooser[3:])  # after "python -m train.phantoms"
        maps(maps_command(shipped, tmp_path / "phantoms" / task, tmp_path / "models" / task, choose_on)[3:])
    again = json.loads((tmp_path / "models" / task / "card.json").read_text())
    expected, measured = dotted(card["metrics"]), dotted(again["metrics"])
    bands = {name: band for name in expected if (band := retrain_band(banded, name)) is not None}
    assert bands, f"{task}'s card has neither a spread nor intervals: python -m train.intervals, train.spread"
    for name, (low, high) in bands.items():
        assert low <= measured[name] <= high, (f"{name}: retrained {measured[name]:.4f}, shipped "
                                               f"{expected[name]:.4f}, band [{low:.4f}, {high:.4f}]")


def test_shuffled_labels_end_at_chance(tmp_path):
    from train.__main__ import main as train
    from train.phantoms import generate

    root = generate("pneumonia", tmp_path, 900, seed=8)
    rng = random.Random(0)
    for split in ("train", "val", "test"):
        folders = [root / "chest_xray" / split / label for label in TASKS["pneumonia"].labels]
        files = [path for folder in folders for path in folder.iterdir()]
        for path in files:  # every image to a random class folder, keeping the class sizes roughly
            path.rename(folders[rng.random() < 0.73] / path.name)
    train(["pneumonia", "--data", str(root), "--backbone", "small_cnn", "--image-size", "96", "--epochs", "12",
           "--patience", "4", "--out", str(tmp_path / "model"), "--report", str(tmp_path / "report")])
    card = json.loads((tmp_path / "model" / "card.json").read_text())
    print(f"shuffled-label control: test AUC {card['metrics']['auc']:.3f}")
    assert abs(card["metrics"]["auc"] - 0.5) < 0.1


def test_app_memory_stays_flat_over_a_thousand_requests():
    from gradio_client import Client

    from bench.endpoints import ENDPOINTS, example_input, free_port, rss_mb, start_app

    port = free_port()
    process, _, _ = start_app(sys.executable, port, [])
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        inputs = [(endpoint, example_input(endpoint)) for endpoint in ENDPOINTS]
        for request in range(1000):
            endpoint, value = inputs[request % len(inputs)]
            client.predict(value, api_name=f"/{endpoint}")
            if request == 49:
                baseline = rss_mb(process.pid)
        final = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(f"soak: RSS {baseline:.0f} MB after 50 requests, {final:.0f} MB after 1000 ({final / baseline - 1:+.1%})")
    assert final <= 1.10 * baseline
