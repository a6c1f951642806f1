"""Long runs, kept out of CI: python -m pytest -m slow

* every shipped demo model retrains from the command in its card (and its map settings, train.maps, from
  the card's maps command), on phantoms regenerated from the card's provenance, its headline figures (the
  registry's `headline`) within their bands (train.spread.retrain_bands): a Student-t prediction interval over
  every measured run of the card's command, the shipped one included (card.spread, train.spread), corrected
  for the number of headline figures so that an unseen run misses one with chance 5%, widened to the
  figure's 95% bootstrap interval on the test split where that is wider (card.intervals, train.intervals).
  Every other figure is printed against its own 95% band, not asserted. On the CPU type that trained it, a
  retrain is bit-identical; across CPU types only the spread holds;
* a shuffled-label control: the training command on phantoms whose labels were shuffled must end at
  chance level (if it does not, something other than the finding carries the label);
* a soak: 1,000 sequential requests through gradio_client to `app.py` in its own process, resident
  memory growing 10% or less after the first 50.
"""
import json
import random
import shlex
import subprocess
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
def test_demo_model_retrains_from_its_card(task, tmp_path, request, monkeypatch):
    """The card's command at the card's seed (train.spread.run_command), then its maps step (train.spread
    .apply_maps). With --retrain-dir DIR the phantoms, the run and its checkpoint stay in DIR/<task>: a run paused
    by --retrain-pause-after-minutes skips this test, and the same pytest command later goes on from the
    checkpoint (bit for bit on one CPU type, train.checkpoint); the bands are read from the card at that end."""
    from train.checkpoint import PAUSED_EXIT, Checkpoint, cpu_flags
    from train.phantoms import PROVENANCE_FILE
    from train.phantoms import main as phantoms
    from train.spread import apply_maps, outside, reported_bands, retrain_bands, run_command, \
        without_the_retrains_twin

    monkeypatch.chdir(ROOT)  # the card's command names its starting weights relative to the repository
    kept = request.config.getoption("--retrain-dir")
    work = Path(kept).resolve() / task if kept else tmp_path
    data, out = work / "phantoms" / task, work / "models" / task
    shipped = ModelCard.load(ROOT / "models" / task)
    if not (data / PROVENANCE_FILE).exists():  # written last: a set cut off mid-way is made again, the same
        phantom_command = shlex.split(shipped.data["command"])[3:]  # after "python -m train.phantoms"
        phantoms(replace_option(phantom_command, "--out", work / "phantoms"))
    if not (out / "card.json").exists():  # --resume where OUT holds a checkpoint (run_command)
        pause = request.config.getoption("--retrain-pause-after-minutes")
        command = run_command(shipped, data, shipped.training["seed"], out, pause)
        code = subprocess.run(command).returncode
        if code == PAUSED_EXIT:
            pytest.skip(f"{task}'s retrain paused, its checkpoint in {Checkpoint(out).folder}: run the same "
                        f"command again to go on")
        assert code == 0, f"{task}'s retrain failed (exit {code}): {shlex.join(command)}"
    if shipped.maps is not None and ModelCard.load(out).maps is None:  # the map settings the shipped model got
        apply_maps(shipped, data, out, work)  # on the fresh set they were chosen on, regenerated
    card = json.loads((ROOT / "models" / task / "card.json").read_text())
    banded = without_the_retrains_twin(card, cpu_flags())  # a spread run this retrain repeats bit for bit
    again = json.loads((out / "card.json").read_text())
    measured = dotted(again["metrics"])
    bands = retrain_bands(banded)
    assert bands, f"{task}'s card has neither a spread nor intervals: python -m train.intervals, train.spread"
    print(f"{task} retrain: headline " + ", ".join(f"{name} {measured.get(name, float('nan')):.4f} (band "
                                                   f"{low:.4f}-{high:.4f})" for name, (low, high) in bands.items())
          + "".join(f"\n  reported only: {line}" for line in outside(reported_bands(banded), measured)))
    misses = outside(bands, measured)
    shipped_figures = dotted(card["metrics"])
    assert not misses, (f"{task}'s retrain: " + "; ".join(misses) + " (shipped: "
                        + ", ".join(f"{name} {shipped_figures[name]:.4f}" for name in bands) + ")")


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
