"""Train one task's model from a real dataset folder or a phantom folder.

    python -m train knee --data phantoms/knee --backbone compact --epochs 30 --seed 0
    python -m train chest14 --data /data/nih --backbone densenet121 --weights imagenet --image-size 320
    python -m train pneumonia --data /data/chest_xray --backbone small_cnn --out runs/pneumonia
    python -m train chest14 --cache /data/cache/chest14-320 --backbone densenet121   # train.prepare's cache

Writes to --out (default runs/<task>, git-ignored; the shipped demo model in
models/<task> is only replaced with --out models/<task> --overwrite): model.keras (best validation epoch,
temperature folded into its logits), card.json (labels, head, input, CAM
layer, thresholds, temperature, the exact command, data provenance, test
metrics, sha256 of the model file), config.json (every setting) and
history.csv; and --report (default <out>/report: metrics.json, ROC, confusion
matrix, training curves). A folder that already holds a model or a report is
refused unless --overwrite says to replace it.

Method: the task's augmentation policy; class weights from counts or the
weighted binary cross-entropy, by the task's imbalance policy
(train.objectives); Adam with ReduceLROnPlateau and EarlyStopping on
validation AUC (or, with --monitor loss, the validation loss; the card
records the schedule), keeping the best
epoch (or, with --select-by loss, the lowest validation loss; with
--select-by pointing_game, the one whose maps best hit the validation
boxes among those near the best AUC: train.selection); with
pretrained weights, a first phase trains the head on a frozen backbone at
the learning rate, then everything at a tenth of it. On CPU a
seed makes runs deterministic; with GPUs, mixed precision and
MirroredStrategy are switched on automatically, and where TF_CONFIG names a
cluster, MultiWorkerMirroredStrategy (--strategy; train.distribute).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from radiograph.geometry import feature_grid  # noqa: E402
from radiograph.cards import ModelCard, file_entry  # noqa: E402
from radiograph.registry import TASKS, TaskSpec, get_task  # noqa: E402
from train.backbones import BACKBONES, CUT_LAYERS, HEAD, build_model, save_model  # noqa: E402
from train.cache import Cache, stream  # noqa: E402
from train.datasets import kfold_by_patient, read_dataset  # noqa: E402
from train.distribute import (ALONE, STRATEGIES, Role, choose_strategy, patch_keras_for_replicas,  # noqa: E402
                               shard_by_data, strategy_name)
from train.evaluate import (calibrate_and_evaluate, fold_temperature, predict_logits, targets_of,  # noqa: E402
                            temperature_record, write_report)
from train.objectives import imbalance_objective, monitored_auc  # noqa: E402
from train.phantoms import provenance  # noqa: E402
from train.pipeline import augmenter, image_dataset  # noqa: E402
from train.checkpoint import (PAUSED_EXIT, Checkpoint, CheckpointError, EpochCheckpoint,  # noqa: E402
                              ResumableEarlyStopping, ResumableReduceLROnPlateau, RestoreAugmentation,
                              TrainingState, cpu_flags, fast_forward, iterators_per_epoch, recipe,
                              set_seed_states)
from train.selection import SELECT_BY, EpochCandidates, ValidationPointingGame  # noqa: E402

DEMO_NOTICE = ("Demo model trained on synthetic phantom radiographs: its metrics describe phantoms, "
               "not patients. Research software, not a medical device.")


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="dataset folder (real layout or phantoms)")
    source.add_argument("--cache", type=Path,
                        help="a cache made by python -m train.prepare, streamed from disk (memory does not grow with "
                             "the dataset; its splits and size were fixed when it was prepared)")
    parser.add_argument("--backbone", choices=sorted(BACKBONES), help="default: the task's registry backbone")
    parser.add_argument("--image-size", type=int, help="model input side (default: the task's)")
    parser.add_argument("--mirror-average", action="store_true",
                        help="features = mean of the image's and its left-right mirror's maps (a mirror-equivariant "
                             "Grad-CAM; twice the compute)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--weights", default="none",
                        help="none, imagenet (needs internet), a backbone weights file, or a trained .keras model "
                             "of this project with the same backbone (transfer)")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-epochs", type=int, default=3, help="frozen-backbone epochs with pretrained weights")
    parser.add_argument("--patience", type=int, default=6, help="epochs without validation gain before stopping")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="patients carved for validation")
    parser.add_argument("--folds", type=int, help="k-fold: pool train and val, split by patient into K folds")
    parser.add_argument("--fold", type=int, default=0, help="with --folds: which fold validates (0..K-1)")
    parser.add_argument("--select-by", choices=SELECT_BY, default="auc",
                        help="which epoch to keep: the best validation AUC, the lowest validation loss (where the "
                             "AUC saturates), or the best validation pointing game among epochs within "
                             "--auc-tolerance of the best AUC (needs validation boxes; train.selection)")
    parser.add_argument("--monitor", choices=MONITORS, default="auc",
                        help="the validation figure the learning-rate reduction and early stopping follow: the "
                             "AUC (highest), or the loss (lowest: it keeps moving after the AUC saturates, so "
                             "a saturated AUC neither cuts the learning rate nor stops the run early)")
    parser.add_argument("--auc-tolerance", type=float, default=0.01,
                        help="with --select-by pointing_game: how far below the best validation AUC a kept epoch "
                             "may be")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strategy", choices=STRATEGIES, default="auto",
                        help="auto: multiworker where TF_CONFIG names a cluster, mirrored on several GPUs, else "
                             "default (one device); see train.distribute and docs/training.md")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction,
                        help="train in mixed_float16 (default: on where there is a GPU, off on CPU)")
    parser.add_argument("--out", type=Path, help="model folder (default runs/<task>; the shipped demo models are in "
                                                 "models/<task>)")
    parser.add_argument("--report", type=Path, help="report folder (default <out>/report)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the model or report already in --out / --report (refused without it)")
    sittings = parser.add_argument_group("sittings", "a run that outlives its sitting (train.checkpoint): a "
                                         "checkpoint in OUT/checkpoint after every epoch")
    sittings.add_argument("--resume", action="store_true",
                          help="go on from OUT/checkpoint with the same command (bit for bit on the same CPU type)")
    sittings.add_argument("--pause-after-minutes", type=float, metavar="M",
                          help=f"stop after the epoch past which another would not fit in M minutes of training, "
                               f"checkpoint kept; exits {PAUSED_EXIT}")
    sittings.add_argument("--pause-after-epochs", type=int, metavar="N",
                          help=f"stop after N epochs in this sitting, checkpoint kept; exits {PAUSED_EXIT}")
    args = parser.parse_args(argv)
    for name in ("pause_after_minutes", "pause_after_epochs"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be a positive number (got {getattr(args, name)})")
    args.out = args.out or DEFAULT_RUNS / args.task
    args.report = args.report or args.out / "report"
    return args


DEFAULT_RUNS = Path("runs")  # git-ignored: a training run never lands on the shipped models/<task> by default
MODEL_FILES = ("model.keras", "card.json", "model.onnx")  # a folder holding any of these holds a model
REPORT_FILES = ("metrics.json",)  # ... and one holding this, a report


def refuse_to_overwrite(out: Path, report: Path, overwrite: bool) -> None:
    """Stop before any training when --out already holds a model or --report a report, unless --overwrite:
    the shipped demo models and reports are tracked by git and a run would silently replace them."""
    if overwrite:
        return
    for folder, names, what in ((out, MODEL_FILES, "a model"), (report, REPORT_FILES, "a report")):
        held = [name for name in names if (folder / name).exists()]
        if held:
            raise SystemExit(f"python -m train: error: {folder} already holds {what} ({', '.join(held)}); "
                             f"pass a new folder (--out {DEFAULT_RUNS}/NAME --report {DEFAULT_RUNS}/NAME/report) "
                             f"or add --overwrite to replace it")


def check_sittings(args, argv: list[str]) -> None:
    """Before any training: --resume needs OUT's checkpoint, made by this same command, and no finished model
    there; a fresh run refuses a folder holding a model, a report or an unfinished run's checkpoint (unless
    --overwrite, which removes the checkpoint)."""
    checkpoint = Checkpoint(args.out)
    if args.resume:
        if args.overwrite:
            raise SystemExit("python -m train: error: --resume goes on with the run in --out and --overwrite starts "
                             "it again; give one of them")
        if (args.out / "card.json").exists():
            raise SystemExit(f"python -m train: error: --resume: the run in {args.out} is finished (it holds "
                             f"card.json); nothing to resume")
        try:
            state = checkpoint.load(argv)
        except CheckpointError as error:
            raise SystemExit(f"python -m train: error: {error}") from None
        print(f"resuming {args.out} after epoch {state.epochs_done} (phase {state.phase + 1}, "
              f"{state.seconds:.0f} s of training so far)", flush=True)
        return
    refuse_to_overwrite(args.out, args.report, args.overwrite)
    if checkpoint.exists() and not args.overwrite:
        raise SystemExit(f"python -m train: error: {args.out} holds an unfinished run's checkpoint "
                         f"({checkpoint.folder}); add --resume to go on with it, or --overwrite to start again")
    checkpoint.remove()


def weights_provenance(weights: str) -> dict:
    """The sha256 of a local weights file or donor model, so a card pins what it started from."""
    path = Path(weights)
    return {"weights_sha256": file_entry(path)["sha256"]} if weights not in ("none", "imagenet") and path.is_file() else {}


def set_trainable_backbone(model: keras.Model, trainable: bool) -> None:
    for layer in model.layers:
        layer.trainable = trainable or layer.name in HEAD + CUT_LAYERS


# The learning-rate schedule (recorded in the card's training["schedule"] by `schedule`).
FINE_TUNE_LR_DIVISOR = 10  # with pretrained weights, the second (whole-network) phase runs at lr / 10
MONITORS = {"auc": ("val_auc", "max"), "loss": ("val_loss", "min")}  # --monitor: (Keras log key, mode)
REDUCE_LR_FACTOR = 0.3  # ReduceLROnPlateau on the monitored validation figure: lr *= 0.3 ...
REDUCE_LR_PATIENCE_DIVISOR = 3  # ... after max(1, --patience // 3) epochs without gain ...
MIN_LEARNING_RATE = 1e-6  # ... down to this floor


def schedule(args) -> dict:
    """The optimiser, phases, learning-rate reduction and early stopping `fit` runs, as the card records them."""
    phases = [{"epochs": args.epochs, "learning_rate": args.learning_rate, "backbone": "trainable"}]
    if args.weights != "none":  # fine-tuning: head first on a frozen backbone, then everything, slower
        phases = [{"epochs": args.warmup_epochs, "learning_rate": args.learning_rate, "backbone": "frozen"},
                  {"epochs": args.epochs, "learning_rate": args.learning_rate / FINE_TUNE_LR_DIVISOR,
                   "backbone": "trainable"}]
    monitor, mode = MONITORS[args.monitor]
    return {"optimizer": "Adam", "phases": phases,
            "reduce_lr_on_plateau": {"monitor": monitor, "mode": mode, "factor": REDUCE_LR_FACTOR,
                                     "patience": max(1, args.patience // REDUCE_LR_PATIENCE_DIVISOR),
                                     "min_lr": MIN_LEARNING_RATE},
            "early_stopping": {"monitor": monitor, "mode": mode, "patience": args.patience}}


def fit(spec: TaskSpec, model, train_data, val_data, loss, weights_by_class, args, out: Path,
        selector: list[keras.callbacks.Callback], augment=None, argv: list[str] | None = None) -> Fitted:
    """Train by `schedule(args)`, cutting the learning rate and stopping early on --monitor: the validation AUC
    (train.objectives.monitored_auc: for a grouped decision, of its positive score) or the validation loss; leaves
    the kept epoch's weights (train.selection: the best validation AUC, the lowest validation loss, or the best
    validation pointing game within a tolerance of the best AUC). After every epoch a
    checkpoint in OUT/checkpoint (train.checkpoint) lets `--resume` go on from there; a run paused by
    --pause-after-* returns with `paused` set and the model as it stands."""
    plan = schedule(args)
    checkpoint = Checkpoint(out)
    state = checkpoint.load(argv or []) if args.resume else TrainingState(recipe=recipe(argv or []))
    candidates = EpochCandidates(args.select_by, args.auc_tolerance)
    if args.resume:
        restore_or_stop(checkpoint.restore_model, model)
        checkpoint.restore_candidates(candidates.folder_path)
        candidates.history = list(state.history)
        truncate_history(out / "history.csv", state.epochs_done)
    sitting = {"cpu": cpu_flags(), "from_epoch": state.epochs_done, "to_epoch": state.epochs_done, "seconds": 0.0}
    state.sittings.append(sitting)
    logger = keras.callbacks.CSVLogger(str(out / "history.csv"), append=False)
    pause_seconds = None if args.pause_after_minutes is None else args.pause_after_minutes * 60
    paused = False
    for index, phase in enumerate(plan["phases"]):
        if index < state.phase:
            continue
        resuming = args.resume and index == state.phase
        mid_phase = resuming and state.epoch_in_phase > 0
        set_trainable_backbone(model, phase["backbone"] == "trainable")
        model.compile(keras.optimizers.Adam(phase["learning_rate"]), loss, metrics=[monitored_auc(spec)],
                      jit_compile=False)
        if mid_phase:
            restore_or_stop(checkpoint.restore_optimizer, model)
        early = ResumableEarlyStopping(restore=state.early_stopping if mid_phase else None, **plan["early_stopping"])
        reduce = ResumableReduceLROnPlateau(restore=state.reduce_lr if mid_phase else None,
                                            **plan["reduce_lr_on_plateau"])
        saver = EpochCheckpoint(checkpoint, state, index, phase["epochs"], candidates, early, reduce, augment,
                                sitting, args.pause_after_epochs, pause_seconds,
                                iterators_per_epoch=iterators_per_epoch(train_data), resumed_mid_phase=mid_phase)
        if resuming:
            fast_forward(train_data, state, mid_phase, model)
            set_seed_states(augment, state.augmentation_states)
        callbacks = [
            *([RestoreAugmentation(augment, state.augmentation_states)] if mid_phase else []),
            *selector,  # adds val_pointing_game to the logs the others read
            candidates,
            early,
            reduce,
            logger,
            saver,
        ]
        logger.append = index > 0 or args.resume
        model.fit(train_data, validation_data=val_data, initial_epoch=state.epoch_in_phase if resuming else 0,
                  epochs=phase["epochs"], callbacks=callbacks, class_weight=weights_by_class, verbose=2,
                  shuffle=False)  # the dataset shuffles itself
        if saver.paused:  # (after the run's last epoch there is nothing left to pause)
            paused = state.phase < len(plan["phases"])
            break
    if paused:
        return Fitted(state.epochs_done, state.seconds, {}, state.sittings, paused=True)
    return Fitted(len(candidates.history), state.seconds, candidates.keep(), state.sittings)


def restore_or_stop(restore, model) -> None:
    """A checkpoint's arrays into `model` (Checkpoint.restore_model, restore_optimizer), or the run stops with
    CheckpointError's message (what cannot be read, and --overwrite)."""
    try:
        restore(model)
    except CheckpointError as error:
        raise SystemExit(f"python -m train: error: {error}") from None


@dataclass(frozen=True)
class Fitted:
    """What `fit` did: epochs run (over every sitting), training seconds, the kept epoch (train.selection), each
    sitting's CPU and epochs, and whether it paused before the end."""

    epochs_run: int
    seconds: float
    kept: dict
    sittings: list[dict]
    paused: bool = False


def truncate_history(path: Path, epochs: int) -> None:
    """Keep history.csv's header and its first `epochs` rows: an epoch logged after the checkpoint was written
    (a run killed between the two) is run again."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:1 + epochs]))


@dataclass(frozen=True)
class Run:
    """One training run's settings: the parsed command, its task, and what the command line leaves to defaults."""

    argv: list[str]
    args: argparse.Namespace
    spec: TaskSpec
    backbone: str
    size: int
    out: Path
    gpus: list
    strategy: tf.distribute.Strategy
    role: Role = ALONE  # with several workers: only the chief's out and report are kept

    @property
    def batch(self) -> int:
        """The global batch: --batch-size per replica."""
        return self.args.batch_size * self.strategy.num_replicas_in_sync


def configure(argv: list[str]) -> Run:
    """Parse the command, refuse a folder that holds a model (without --overwrite), make the model folder, seed, and set up the devices (mixed precision and
    MirroredStrategy on GPUs; deterministic ops on CPU)."""
    args = parse(argv)
    spec = get_task(args.task)
    check_sittings(args, argv)
    gpus = tf.config.list_physical_devices("GPU")
    try:  # first: MultiWorkerMirroredStrategy must exist before the TensorFlow runtime starts
        strategy, role = choose_strategy(args.strategy, gpus)
    except ValueError as error:
        raise SystemExit(f"python -m train: error: {error}") from None
    if role.workers > 1 and (args.resume or args.pause_after_minutes or args.pause_after_epochs):
        raise SystemExit("python -m train: error: a run over several workers cannot be paused or resumed (each "
                         "worker's checkpoint lives in its own folder); run it in one sitting")
    if not role.chief:  # a worker other than the chief writes to temporary folders
        args.out, args.report = role.folder(args.out), role.folder(args.report)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision or (args.mixed_precision is None and gpus):
        keras.mixed_precision.set_global_policy("mixed_float16")
    if not gpus:
        tf.config.experimental.enable_op_determinism()
    return Run(argv, args, spec, args.backbone or spec.backbone, args.image_size or spec.image_size, out, gpus,
               strategy, role)


def read_splits(run: Run):
    """(dataset index, train, val, test samples); with --folds, train and val pooled and split by patient."""
    args = run.args
    if args.cache:
        return read_cache_splits(run)
    index = read_dataset(run.spec.id, args.data, args.val_fraction, args.seed)
    train_samples, val_samples, test_samples = (index.splits[k] for k in ("train", "val", "test"))
    if args.folds:
        train_samples, val_samples = kfold_by_patient(train_samples + val_samples, args.folds, args.fold, args.seed)
    return index, train_samples, val_samples, test_samples


def open_cache(run: Run) -> Cache:
    """The run's --cache, refused with the reason when it is unfinished or of another task or input size."""
    try:
        return Cache.open(run.args.cache, run.spec.id, run.size)
    except ValueError as error:
        raise SystemExit(f"python -m train: error: {error}") from None


def read_cache_splits(run: Run):
    """(index, train, val, test samples) of a prepared cache: the splits it was prepared with."""
    if run.args.folds:
        raise SystemExit("python -m train: error: --folds splits train and val anew, but a cache's splits were fixed "
                         "when it was prepared; train with --data for k-fold runs")
    if run.args.select_by == "pointing_game":
        raise SystemExit("python -m train: error: --select-by pointing_game reads the validation boxes from the "
                         "dataset folder, which a cache does not hold; train with --data, or --select-by auc")
    index = open_cache(run).index()
    return (index, *(index.splits[k] for k in ("train", "val", "test")))


def build(run: Run, index, train_samples, val_samples, test_samples):
    """(model, training data, validation data, epoch-selection callbacks, augmentation layers); a --select-by
    pointing_game run without validation boxes stops here, before any training."""
    spec, args = run.spec, run.args
    augment = augmenter(spec.augmentation, args.seed)  # held here so that a checkpoint can save its random state
    if args.cache:  # streamed from the shards: memory does not grow with the dataset
        cache = open_cache(run)
        train_data = stream(cache, "train", run.batch, shuffle=True, seed=args.seed, augmentation=spec.augmentation,
                            augment=augment)
        val_data = stream(cache, "val", run.batch)
    else:
        train_data = image_dataset(train_samples, run.size, run.batch, shuffle=True, seed=args.seed,
                                   augmentation=spec.augmentation, cache=True, augment=augment)
        val_data = image_dataset(val_samples, run.size, run.batch, cache=True)
    train_data, val_data = shard_by_data(train_data), shard_by_data(val_data)  # several workers: each its part
    with run.strategy.scope():
        model = build_model(spec, run.backbone, run.size, None if args.weights == "none" else args.weights,
                            mirror=args.mirror_average)
        patch_keras_for_replicas(model, run.strategy)
    print(f"{spec.id}: {run.backbone} at {run.size}px, {model.count_params():,} parameters; "
          f"train {len(train_samples)}, val {len(val_samples)}, test {len(test_samples)} images")
    try:
        selector = [ValidationPointingGame(spec, index.boxes, val_samples, run.size, run.batch)] \
            if args.select_by == "pointing_game" else []
    except ValueError as error:  # no validation boxes: say so before any training
        raise SystemExit(f"python -m train: error: {error}") from None
    return model, train_data, val_data, selector, augment


def evaluate_and_save(run: Run, model, val_samples, test_samples, kept: dict):
    """Calibrate on validation, score on test, fold the temperature into the model and save it, write the
    report; returns (evaluation result, report files, report folder)."""
    cache = open_cache(run) if run.args.cache else None
    val_logits = predict_logits(model, val_samples, run.size, run.batch,
                                data=stream(cache, "val", run.batch) if cache else None)
    test_logits = predict_logits(model, test_samples, run.size, run.batch,
                                 data=stream(cache, "test", run.batch) if cache else None)
    result = calibrate_and_evaluate(run.spec, val_logits, val_samples, test_logits, test_samples)
    fold_temperature(model, np.asarray(result["temperature"], np.float32))
    save_model(model, run.out / "model.keras")
    report_folder = run.args.report
    reports = write_report(run.spec, report_folder, result, test_samples, run.out / "history.csv",
                           kept["kept_epoch"])
    return result, reports, report_folder


def write_card(run: Run, model, index, result: dict, reports: list[Path], balance: dict, epochs_run: int,
               seconds: float, kept: dict, sittings: list[dict]) -> ModelCard:
    """config.json (every setting) and card.json (with the sha256 of model.keras) in the model folder."""
    spec, args, out = run.spec, run.args, run.out
    source = cache_provenance(run) if args.cache else provenance(args.data, index.root)
    config = {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "backbone": run.backbone, "image_size": run.size, "batch_size_global": run.batch, **balance,
              "epochs_run": epochs_run, "training_seconds": round(seconds, 1),
              "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
              "devices": [d.name for d in run.gpus] or ["CPU"],
              "strategy_used": strategy_name(run.strategy), "replicas": run.strategy.num_replicas_in_sync,
              "workers": run.role.workers}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    card = ModelCard.for_task(
        spec,
        model_version=f"{spec.id}-{run.backbone}-{datetime.now(timezone.utc):%Y%m%d}",
        notice=DEMO_NOTICE if source["kind"] == "synthetic phantoms" else "Research software, not a medical device.",
        input={"name": "image", "shape": [None, run.size, run.size, 1], "dtype": "float32", "range": [0, 255],
               "size": run.size, "preprocessing": "radiograph.imaging.load_for_model (letterbox, black padding)"},
        backbone=run.backbone, mirror_average=args.mirror_average, cam_layer="features",
        cam_grid=feature_grid(model.get_config()).as_card(), thresholds=result["thresholds"],
        temperature=temperature_record(spec, result),
        training={"command": "python -m train " + shlex.join(recipe(run.argv)), "seed": args.seed,
                  "val_fraction": args.val_fraction, "folds": args.folds, "fold": args.fold,
                  "weights": args.weights, **weights_provenance(args.weights), "epochs_run": epochs_run,
                  "kept": kept, "training_seconds": round(seconds, 1), "sittings": sittings, "schedule": schedule(args),
                  "thresholds": result["threshold_rule"]},
        data={**source, "dataset": spec.dataset.name, "splits": {k: len(v) for k, v in index.splits.items()}},
        metrics={"split": "test", **result["metrics"]}, calibration=result["expected_calibration_error"],
        reports=[str(p) for p in reports])
    card.record_file(out, "model.keras")
    card.save(out)
    return card


def cache_provenance(run: Run) -> dict:
    """A cached run's data provenance: the dataset's, as recorded when the cache was prepared, and the cache's."""
    cache = open_cache(run)
    return {**cache.manifest["dataset"]["provenance"], "cache": str(cache.root),
            "cache_manifest_sha256": file_entry(cache.root / "manifest.json")["sha256"]}


def main(argv: list[str] | None = None) -> None:
    run = configure(sys.argv[1:] if argv is None else argv)
    index, train_samples, val_samples, test_samples = read_splits(run)
    loss, weights_by_class, balance = imbalance_objective(run.spec, targets_of(train_samples))
    model, train_data, val_data, selector, augment = build(run, index, train_samples, val_samples, test_samples)
    with run.strategy.scope():
        fitted = fit(run.spec, model, train_data, val_data, loss, weights_by_class, run.args, run.out, selector,
                     augment, run.argv)
    if fitted.paused:
        print(f"paused after epoch {fitted.epochs_run} ({fitted.seconds:.0f} s of training so far); the checkpoint "
              f"is in {Checkpoint(run.out).folder}. Go on with:\n  python -m train "
              f"{shlex.join(recipe(run.argv))} --resume", flush=True)
        sys.exit(PAUSED_EXIT)
    epochs_run, seconds, kept = fitted.epochs_run, fitted.seconds, fitted.kept
    result, reports, report_folder = evaluate_and_save(run, model, val_samples, test_samples, kept)
    card = write_card(run, model, index, result, reports, balance, epochs_run, seconds, kept, fitted.sittings)
    Checkpoint(run.out).remove()  # the run is finished: its card and model say everything the checkpoint did
    if not run.role.chief:  # its copies were only there so that every worker ran the same steps
        run.role.discard(run.out, report_folder)
        print(f"{run.role.task_type} {run.role.index}: done, {epochs_run} epochs; the chief wrote the model")
        return
    model_path = run.out / "model.keras"
    print(json.dumps(card.metrics, indent=2))
    print(f"wrote {model_path} ({model_path.stat().st_size / 1e6:.1f} MB) in {seconds:.0f} s of training; "
          f"report in {report_folder}")
    print(f"next: {export_command(run.spec.id, run.out)}")


def export_command(task: str, out: Path) -> str:
    """The export of the model just trained: export reads MODELS/<task>/model.keras, so --models is --out's parent
    when --out is named after the task; otherwise the model folder has to be copied into such a place first."""
    if out.name != task:
        return f"copy {out} to MODELS/{task}, then python -m export {task} --models MODELS"
    return f"python -m export {task} --models {out.parent}"


if __name__ == "__main__":
    main()
