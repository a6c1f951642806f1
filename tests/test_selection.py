"""Which epoch a training run keeps (train.selection.chosen_epoch), on hand-made histories."""
import pytest

pytest.importorskip("keras")

from train.selection import chosen_epoch  # noqa: E402

HISTORY = [  # epoch: val AUC, val pointing game
    {"val_auc": 0.950, "val_pointing_game": 0.95},  # best maps, AUC too far below the best
    {"val_auc": 0.979, "val_pointing_game": 0.86},
    {"val_auc": 0.988, "val_pointing_game": 0.79},  # best AUC
    {"val_auc": 0.985, "val_pointing_game": 0.86},  # ties epoch 1's maps with a higher AUC
    {"val_auc": 0.988, "val_pointing_game": 0.70},  # ties the best AUC later
]


def test_by_auc_keeps_the_first_best_auc():
    assert chosen_epoch(HISTORY, "auc", 0.01) == 2


def test_by_pointing_game_keeps_the_best_maps_within_the_auc_tolerance():
    assert chosen_epoch(HISTORY, "pointing_game", 0.01) == 3  # epoch 0 is out; epochs 1 and 3 tie, 3 has more AUC
    assert chosen_epoch(HISTORY, "pointing_game", 0.05) == 0
    assert chosen_epoch(HISTORY, "pointing_game", 0.0) == 2
