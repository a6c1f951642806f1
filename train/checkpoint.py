"""A training run that outlives its sitting: a checkpoint after every epoch, `--resume` to go on from it, and
`--pause-after-minutes` / `--pause-after-epochs` to stop cleanly before a sitting ends.

    python -m train chest14 --data phantoms/chest14 ... --out runs/chest14 --pause-after-minutes 150
    python -m train chest14 --data phantoms/chest14 ... --out runs/chest14 --resume   # the same command, later

After every epoch `OUT/checkpoint/` holds everything the next epoch depends on, written to a new folder and then
renamed over the old one (a run killed mid-write keeps the previous epoch's checkpoint):

- the model's variables (weights, batch-norm statistics and the dropout layer's random state) and, within a
  phase, the optimiser's (Adam's moments, step count and learning rate);
- the early-stopping and learning-rate-reduction counters, and the epochs' logs the kept-epoch rule reads
  (train.selection), with the weights of every epoch it may still keep;
- the random state of the augmentation layers, and how many times the training data has been reshuffled.

A resumed run repeats the interrupted one bit for bit on the same CPU type (tests/test_checkpoint.py trains a
run straight through and the same run in three sittings, and compares the weights). A run resumed on another CPU
type is a valid run of the same recipe but not the one an unbroken run would have made there (op results differ
across CPU types, train.spread): the card's `training.sittings` records each sitting's CPU flags and epochs.

A paused run exits with PAUSED_EXIT (75, EX_TEMPFAIL): "not done, run me again with --resume".
"""
from __future__ import annotations

import json
import platform
import re
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np

CHECKPOINT_FOLDER = "checkpoint"
PAUSED_EXIT = 75  # EX_TEMPFAIL: the run is not finished; the same command with --resume goes on
# Options that change how a run is split into sittings, not what it computes: not part of the recipe, so not
# compared on --resume and not written into the card's command
SITTING_OPTIONS = {"--resume": 0, "--pause-after-minutes": 1, "--pause-after-epochs": 1, "--overwrite": 0}


def cpu_flags() -> str:
    """The vector extensions this CPU reports (AVX2, AVX-512 ...): what bit-reproducibility depends on."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    found = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    flags = set(found.group(1).split()) if found else set()
    return " ".join(sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))) or "no AVX"


def without_options(argv: list[str], options: dict[str, int]) -> list[str]:
    """The command's words without the given options, each with its number of values (`--opt=value` too)."""
    words, skip = [], 0
    for word in argv:
        if skip:
            skip -= 1
            continue
        name = word.split("=", 1)[0]
        if name in options:
            skip = options[name] if "=" not in word else 0
            continue
        words.append(word)
    return words


def recipe(argv: list[str]) -> list[str]:
    """The command's words without the sitting options (SITTING_OPTIONS): what a resumed run must repeat."""
    return without_options(argv, SITTING_OPTIONS)


@dataclass
class TrainingState:
    """Where a run stands after an epoch: the next phase and epoch to run, and what the callbacks carry."""

    recipe: list[str]
    phase: int = 0  # the phase the next epoch belongs to
    epoch_in_phase: int = 0  # epochs of that phase already run (0: the phase starts afresh, a new optimiser)
    epochs_done: int = 0  # over all phases
    reshuffles: int = 0  # iterators made over the training data so far (each reshuffles it)
    seconds: float = 0.0  # training time over all sittings
    early_stopping: dict = field(default_factory=dict)
    reduce_lr: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)  # each epoch's logs (EpochCandidates.history)
    augmentation_states: list[list[int]] = field(default_factory=list)
    sittings: list[dict] = field(default_factory=list)


class Resumable:
    """A callback's counters (FIELDS) that can be saved and, on resuming, set back after `fit` resets them."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, restore: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.restore = restore

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for name, value in (self.restore or {}).items():
            setattr(self, name, value)

    def state(self) -> dict:
        return {name: _plain(getattr(self, name)) for name in self.FIELDS}


class ResumableEarlyStopping(Resumable, keras.callbacks.EarlyStopping):
    FIELDS = ("wait", "best", "best_epoch", "stopped_epoch")


class ResumableReduceLROnPlateau(Resumable, keras.callbacks.ReduceLROnPlateau):
    """(the learning rate itself is an optimiser variable, saved with the optimiser)"""

    FIELDS = ("wait", "best", "cooldown_counter")


def _plain(value):
    return float(value) if isinstance(value, (np.floating, np.integer, float)) else value


def seed_states(augment: keras.Model | None) -> list[list[int]]:
    """The random state of each augmentation layer (its SeedGenerator's counter)."""
    return [] if augment is None else [np.asarray(layer.generator.state).tolist() for layer in augment.layers]


def set_seed_states(augment: keras.Model | None, states: list[list[int]]) -> None:
    if augment is None or not states:
        return
    layers = list(augment.layers)
    if len(layers) != len(states):
        raise CheckpointError(f"the checkpoint holds {len(states)} augmentation states and this run has "
                              f"{len(layers)} augmentation layers")
    for layer, state in zip(layers, states):
        layer.generator.state.assign(np.asarray(state, dtype=layer.generator.state.dtype))


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or from another recipe."""


class Checkpoint:
    """OUT/checkpoint: save after an epoch, load to resume (see the module docstring)."""

    def __init__(self, out: Path):
        self.folder = out / CHECKPOINT_FOLDER

    def exists(self) -> bool:
        return (self.folder / "state.json").exists()

    def load(self, argv: list[str]) -> TrainingState:
        if not self.exists():
            raise CheckpointError(f"--resume: {self.folder} holds no checkpoint (a run writes one after every "
                                  f"epoch; start the run without --resume)")
        try:
            state = TrainingState(**json.loads((self.folder / "state.json").read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise CheckpointError(f"--resume: {self.folder / 'state.json'} cannot be read ({error}); start the "
                                  f"run again with --overwrite") from None
        if state.recipe != recipe(argv):
            raise CheckpointError("--resume: the checkpoint is from another command; resume with the same "
                                  f"command it was made by:\n  python -m train {shlex.join(state.recipe)} --resume")
        return state

    def save(self, state: TrainingState, model, candidates_folder: Path, kept_candidates: list[int],
             with_optimizer: bool) -> None:
        """Write the checkpoint to a new folder, then put it in place of the old one."""
        fresh = self.folder.with_name(CHECKPOINT_FOLDER + ".new")
        shutil.rmtree(fresh, ignore_errors=True)
        (fresh / "candidates").mkdir(parents=True)
        np.savez(fresh / "model.npz", *[np.asarray(v) for v in model.variables])
        if with_optimizer:
            np.savez(fresh / "optimizer.npz", *[np.asarray(v) for v in model.optimizer.variables])
        for index in kept_candidates:
            name = f"epoch-{index + 1}.weights.h5"
            shutil.copy2(candidates_folder / name, fresh / "candidates" / name)
        (fresh / "state.json").write_text(json.dumps(asdict(state), indent=1))
        old = self.folder.with_name(CHECKPOINT_FOLDER + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if self.folder.exists():
            self.folder.rename(old)
        fresh.rename(self.folder)
        shutil.rmtree(old, ignore_errors=True)

    def restore_model(self, model) -> None:
        _assign(model.variables, self.folder / "model.npz", "model")

    def restore_optimizer(self, model) -> None:
        model.optimizer.build(model.trainable_variables)
        _assign(model.optimizer.variables, self.folder / "optimizer.npz", "optimiser")

    def restore_candidates(self, candidates_folder: Path) -> None:
        for path in (self.folder / "candidates").glob("*.weights.h5"):
            shutil.copy2(path, candidates_folder / path.name)

    def remove(self) -> None:
        for suffix in ("", ".new", ".old"):
            shutil.rmtree(self.folder.with_name(CHECKPOINT_FOLDER + suffix), ignore_errors=True)


def _assign(variables, path: Path, what: str) -> None:
    try:
        with np.load(path) as saved:
            arrays = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    except Exception as error:  # missing, truncated or not an .npz: numpy raises OSError, ValueError, BadZipFile ...
        raise CheckpointError(f"--resume: the checkpoint's {what} ({path}) cannot be read ({type(error).__name__}: "
                              f"{error}); start the run again with --overwrite") from None
    if len(arrays) != len(variables) or any(a.shape != tuple(v.shape) for a, v in zip(arrays, variables)):
        raise CheckpointError(f"--resume: the checkpoint's {what} does not match this run's ({len(arrays)} arrays "
                              f"saved, {len(variables)} here)")
    for variable, array in zip(variables, arrays):
        variable.assign(array)


class EpochCheckpoint(keras.callbacks.Callback):
    """Last in a phase's callbacks: after each epoch, save the checkpoint, then pause if this sitting's budget
    (epochs or minutes) would not hold another epoch."""

    def __init__(self, checkpoint: Checkpoint, state: TrainingState, phase: int, phase_epochs: int, candidates,
                 early_stopping: ResumableEarlyStopping, reduce_lr: ResumableReduceLROnPlateau,
                 augment, sitting: dict, pause_after_epochs: int | None, pause_after_seconds: float | None,
                 iterators_per_epoch: int = 1, resumed_mid_phase: bool = False):
        super().__init__()
        self.iterators_per_epoch, self.resumed_mid_phase = iterators_per_epoch, resumed_mid_phase
        self.checkpoint, self.state, self.phase, self.phase_epochs = checkpoint, state, phase, phase_epochs
        self.candidates, self.early_stopping, self.reduce_lr, self.augment = candidates, early_stopping, reduce_lr, augment
        self.sitting, self.pause_after_epochs, self.pause_after_seconds = sitting, pause_after_epochs, pause_after_seconds
        self.paused = False

    def on_train_begin(self, logs=None):
        if fit_peeks(self.model) and not self.resumed_mid_phase:
            self.state.reshuffles += 1  # fit made an iterator over the training data to learn its shapes

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        state = self.state
        elapsed = time.perf_counter() - self.epoch_started
        state.reshuffles += self.iterators_per_epoch
        state.seconds += elapsed
        state.epochs_done += 1
        self.sitting["to_epoch"] = state.epochs_done
        self.sitting["seconds"] = round(self.sitting["seconds"] + elapsed, 1)
        phase_over = bool(self.model.stop_training) or epoch + 1 >= self.phase_epochs
        state.phase, state.epoch_in_phase = (self.phase + 1, 0) if phase_over else (self.phase, epoch + 1)
        state.history = self.candidates.history
        state.early_stopping = {} if phase_over else self.early_stopping.state()
        state.reduce_lr = {} if phase_over else self.reduce_lr.state()
        state.augmentation_states = seed_states(self.augment)
        self.checkpoint.save(state, self.model, self.candidates.folder_path, self.candidates.kept_indices(),
                             with_optimizer=not phase_over)
        done_here = state.epochs_done - self.sitting["from_epoch"]
        per_epoch = self.sitting["seconds"] / max(done_here, 1)
        if (self.pause_after_epochs is not None and done_here >= self.pause_after_epochs) or \
                (self.pause_after_seconds is not None and self.sitting["seconds"] + per_epoch > self.pause_after_seconds):
            self.paused = True
            self.model.stop_training = True


def fit_peeks(model) -> bool:
    """Whether Keras's `fit` takes one batch of the training data before its first epoch (its TensorFlow trainer
    does, to learn the shapes, whenever a distribution strategy is set: the default one included)."""
    return getattr(model, "_distribute_strategy", None) is not None


def iterators_per_epoch(dataset) -> int:
    """How many iterators Keras's `fit` makes over the training data per epoch: one as the epoch begins and,
    where the number of batches is known, one more as it ends, ready for an epoch that `fit` then never takes
    from it (keras.src.trainers.epoch_iterator, Keras 3). Each reshuffles a seeded shuffle; tests/test_checkpoint.py
    holds the count (a resumed run would see another order otherwise)."""
    return 2 if int(dataset.cardinality()) > 0 else 1


def fast_forward(dataset, state: TrainingState, mid_phase: bool, model) -> None:
    """Reshuffle the training data as often as the interrupted run had, so that the next epoch's order is its
    order: a tf.data shuffle with a seed draws each iterator's order from a seeded sequence. Making an iterator
    reads nothing. Resuming mid-phase, the resumed `fit`'s own first iterator stands in for the one the
    interrupted `fit` made when the phase began."""
    for _ in range(state.reshuffles - (1 if mid_phase and fit_peeks(model) else 0)):
        iter(dataset)


class RestoreAugmentation(keras.callbacks.Callback):
    """First in a resumed phase's callbacks: `fit` has taken a batch to learn the data's shapes before any
    callback runs, advancing the augmentation's random state; set it back to the checkpoint's, so the next
    epoch augments as the unbroken run's did."""

    def __init__(self, augment, states: list[list[int]]):
        super().__init__()
        self.augment, self.states = augment, states

    def on_train_begin(self, logs=None):
        set_seed_states(self.augment, self.states)
