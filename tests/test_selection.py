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


RETRAIN = [  # a pneumonia retrain's validation AUC and loss (207 films): the AUC at its ceiling from epoch 3 on
    (0.5165, 0.9345), (0.9826, 0.1791), (0.99964, 0.0577), (0.9965, 0.0753), (0.9988, 0.0500), (0.9991, 0.0487),
    (0.99949, 0.0356), (0.9992, 0.0448)]


def test_by_loss_keeps_the_lowest_validation_loss_where_the_auc_has_saturated():
    history = [{"val_auc": auc, "val_loss": loss} for auc, loss in RETRAIN]
    assert chosen_epoch(history, "auc", 0.01) == 2  # the first epoch at the ceiling
    assert chosen_epoch(history, "loss", 0.01) == 6
    assert chosen_epoch(history + [{"val_auc": 0.99, "val_loss": 0.0356}], "loss", 0.0) == 6  # ties: the earlier


def test_candidates_by_loss_hold_only_the_lowest_loss_so_far_and_keep_its_weights():
    import keras
    import numpy as np

    from train.selection import EpochCandidates

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    candidates = EpochCandidates("loss", 0.01)
    candidates.set_model(model)
    for epoch, (auc, loss) in enumerate(RETRAIN):
        model.layers[0].kernel.assign(np.full((2, 1), epoch, np.float32))  # epoch k's weights: all k
        candidates.on_epoch_end(epoch, {"val_auc": auc, "val_loss": loss})
    assert candidates.kept_indices() == [6]
    kept = candidates.keep()
    assert kept["kept_epoch"] == 7 and kept["select_by"] == "loss" and kept["auc_tolerance"] is None
    assert kept["val_loss"] == 0.0356 and np.all(model.layers[0].kernel.numpy() == 6)


@pytest.mark.parametrize("monitor, cut_after, stopped", [
    ("auc", [3, 4, 5, 6, 7], 7),  # the run as it went: no AUC beat epoch 2, so every epoch from 3 cut the rate
    ("loss", [3, 7], None),  # the loss fell again at epochs 4-6: one cut, at the rise, and no early stop
])
def test_the_schedule_follows_the_monitored_figure(monitor, cut_after, stopped):
    """The learning-rate reduction and early stopping `python -m train --monitor` builds, replayed over the
    retrain's validation history (its patience 5: the rate is cut after 1 epoch without gain)."""
    import argparse

    import keras

    from train.__main__ import schedule
    from train.checkpoint import ResumableEarlyStopping, ResumableReduceLROnPlateau

    plan = schedule(argparse.Namespace(epochs=16, learning_rate=1e-3, weights="none", patience=5, monitor=monitor))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    early = ResumableEarlyStopping(**plan["early_stopping"])
    reduce = ResumableReduceLROnPlateau(**plan["reduce_lr_on_plateau"])
    cuts, stop = [], None
    for callback in (early, reduce):
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, (auc, loss) in enumerate(RETRAIN):
        before = float(model.optimizer.learning_rate)
        logs = {"val_auc": auc, "val_loss": loss}
        reduce.on_epoch_end(epoch, logs)
        early.on_epoch_end(epoch, logs)
        if float(model.optimizer.learning_rate) < before:
            cuts.append(epoch)
        if model.stop_training and stop is None:
            stop = epoch
    assert cuts == cut_after and stop == stopped
