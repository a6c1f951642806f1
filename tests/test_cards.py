"""The typed model card: round trip, schema-1 migration, consistency checks, the migrate-cards command."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from radiograph.cards import SCHEMA_VERSION, ModelCard, ModelFileError, migrate_cards
from radiograph.registry import TASKS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("task", list(TASKS))
def test_shipped_cards_round_trip_and_carry_what_serving_needs(task, tmp_path):
    card = ModelCard.load(ROOT / "models" / task)
    assert card.schema_version == SCHEMA_VERSION and card.labels == TASKS[task].labels
    assert card.decision == TASKS[task].decision and card.study == TASKS[task].study
    assert card.heatmap_versus == TASKS[task].heatmap_versus
    card.save(tmp_path)
    assert json.loads((tmp_path / "card.json").read_text()) == json.loads((ROOT / "models" / task / "card.json").read_text())


def schema_one(task: str) -> dict:
    """A card as written before the card had a type: no schema version, decision, study or heatmap scores."""
    values = ModelCard.load(ROOT / "models" / task).to_dict()
    for key in ("schema_version", "decision", "study", "heatmap_versus"):
        values.pop(key)
    return values


def test_a_schema_one_card_loads_and_the_command_migrates_it(tmp_path):
    folder = tmp_path / "mura"
    shutil.copytree(ROOT / "models" / "mura", folder)
    (folder / "card.json").write_text(json.dumps(schema_one("mura")))
    assert ModelCard.load(folder).decision.kind == "grouped"  # migrated in memory from the registry
    done = subprocess.run([sys.executable, "-m", "radiograph", "migrate-cards", str(folder), str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "none/card.json is missing" in done.stderr
    assert migrate_cards([folder]) == [f"{folder}: schema 1 -> {SCHEMA_VERSION}"]
    assert json.loads((folder / "card.json").read_text()) == ModelCard.load(ROOT / "models" / "mura").to_dict()
    assert migrate_cards([folder]) == [f"{folder}: already schema {SCHEMA_VERSION}"]


def test_a_schema_one_ensemble_card_loads():
    """Ensembles of schema 1 recorded no question, model version or backbone."""
    values = schema_one("knee")
    for key in ("question", "model_version", "backbone"):
        values.pop(key)
    values["ensemble"] = {"method": "mean", "members": []}
    card = ModelCard.from_dict(values)
    assert card.model_version == "knee-ensemble-unversioned" and card.backbone == "ensemble"


@pytest.mark.parametrize("change, problem", [
    ({"thresholds": {"Healthy": 0.5}}, "thresholds do not name exactly the labels"),
    ({"heatmap_versus": [["Healthy", "Unknown"]]}, "a heatmap score names a label"),
    ({"study": {"rule": "mean_over_views", "noun": "study"}}, "a study grouping needs a grouped decision"),
    ({"schema_version": SCHEMA_VERSION + 1}, "newer than this code reads"),
    ({"colour": "blue"}, "keys this code does not know: colour"),
])
def test_an_inconsistent_card_is_refused_with_the_reason(change, problem):
    values = {**ModelCard.load(ROOT / "models" / "knee").to_dict(), **change}
    with pytest.raises(ModelFileError, match=problem):
        ModelCard.from_dict(values)


def test_unreachable_thresholds_of_the_shipped_cards_are_said_where_thresholds_are_shown():
    """chest14's shipped Effusion and Edema thresholds (1.0, 0.9999999997) are met only by a saturated probability:
    the card markdown and every decision say so; no other shipped card has such a threshold."""
    import numpy as np

    from radiograph.cards import card_markdown
    from radiograph.decision import decide

    unreachable = {task: ModelCard.load(ROOT / "models" / task).unreachable_thresholds for task in TASKS}
    assert unreachable == {task: ["Effusion", "Edema"] if task == "chest14" else [] for task in TASKS}
    card = ModelCard.load(ROOT / "models" / "chest14")
    text = card_markdown(card)
    assert "**Unreachable thresholds: Effusion, Edema.**" in text and "calls these findings positive only then" in text
    assert "| Effusion | 1.000 (1.000-1.000) | 1.000 (1.000-1.000) | 1.000 (unreachable) |" in text
    assert "| Fibrosis | 0.995 (0.986-1.000) | 0.984 (0.948-1.000) | 1.000 |" in text  # test and fresh, intervals
    decision = decide(card, np.full(len(card.labels), 0.9999))
    assert decision["unreachable_thresholds"] == ["Effusion", "Edema"]
    assert "Effusion" not in decision["positive"] and "Edema" not in decision["positive"]
    pneumonia = card_markdown(ModelCard.load(ROOT / "models" / "pneumonia"))
    assert "Unreachable" not in pneumonia
    assert "Calibration: temperature [1.0]" in pneumonia
    assert ("Temperature kept at 1 for all classes, where the validation NLL has no minimum: the logits call every "
            "validation image right") in pneumonia
