"""Train one task's model from a real dataset folder or a phantom folder.

    python -m train knee --data phantoms/knee --backbone compact --epochs 30 --seed 0
    python -m train chest14 --data /data/nih --backbone densenet121 --weights imagenet --image-size 320
    python -m train pneumonia --data /data/chest_xray --backbone small_cnn --out models/pneumonia

Writes to --out (default models/<task>): model.keras (best validation epoch,
temperature folded into its logits), card.json (labels, head, input, CAM
layer, thresholds, temperature, the exact command, data provenance, test
metrics, sha256 of the model file), config.json (every setting) and
history.csv; and reports/<task>/ (metrics.json, ROC, confusion matrix,
training curves).

Method: the task's augmentation policy; class weights from counts (softmax
heads) or the weighted binary cross-entropy (sigmoid heads); Adam with
ReduceLROnPlateau and EarlyStopping on validation AUC, keeping the best
epoch (or, with --select-by pointing_game, the one whose maps best hit the
validation boxes among those near the best AUC: train.selection); with
pretrained weights, a first phase trains the head on a frozen backbone at
the learning rate, then everything at a tenth of it. On CPU a
seed makes runs deterministic; with GPUs, mixed precision and
MirroredStrategy are switched on automatically.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
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
from train.datasets import kfold_by_patient, read_dataset  # noqa: E402
from train.evaluate import (calibrate_and_evaluate, fold_temperature, predict_logits, targets_of,  # noqa: E402
                            write_report)
from train.objectives import WeightedBinaryCrossentropy, class_weights, monitored_auc, positive_fraction  # noqa: E402
from train.phantoms import provenance  # noqa: E402
from train.pipeline import image_dataset  # noqa: E402
from train.selection import SELECT_BY, EpochCandidates, ValidationPointingGame  # noqa: E402

DEMO_NOTICE = ("Demo model trained on synthetic phantom radiographs: its metrics describe phantoms, "
               "not patients. Research software, not a medical device.")


def parse(argv):
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("--data", required=True, type=Path, help="dataset folder (real layout or phantoms)")
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
                        help="which epoch to keep: the best validation AUC, or the best validation pointing game "
                             "among epochs within --auc-tolerance of it (needs validation boxes; train.selection)")
    parser.add_argument("--auc-tolerance", type=float, default=0.01,
                        help="with --select-by pointing_game: how far below the best validation AUC a kept epoch "
                             "may be")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="model folder (default models/<task>)")
    parser.add_argument("--report", type=Path, help="report folder (default reports/<task>)")
    return parser.parse_args(argv)


def weights_provenance(weights: str) -> dict:
    """The sha256 of a local weights file or donor model, so a card pins what it started from."""
    path = Path(weights)
    return {"weights_sha256": file_entry(path)["sha256"]} if weights not in ("none", "imagenet") and path.is_file() else {}


def set_trainable_backbone(model: keras.Model, trainable: bool) -> None:
    for layer in model.layers:
        layer.trainable = trainable or layer.name in HEAD + CUT_LAYERS


def fit(spec: TaskSpec, model, train_data, val_data, loss, weights_by_class, args, out: Path,
        selector: list[keras.callbacks.Callback]) -> tuple[int, float, dict]:
    """Train with early stopping on validation AUC (MURA: of P(abnormal)); leaves the kept epoch's weights
    (train.selection: the best validation AUC, or the best validation pointing game within a tolerance of it)."""
    phases = [(args.epochs, args.learning_rate, True)]
    if args.weights != "none":  # fine-tuning: head first on a frozen backbone, then everything, slower
        phases = [(args.warmup_epochs, args.learning_rate, False), (args.epochs, args.learning_rate / 10, True)]
    logger = keras.callbacks.CSVLogger(str(out / "history.csv"), append=False)
    candidates = EpochCandidates(args.select_by, args.auc_tolerance)
    start = time.perf_counter()
    for index, (epochs, learning_rate, backbone_trainable) in enumerate(phases):
        set_trainable_backbone(model, backbone_trainable)
        model.compile(keras.optimizers.Adam(learning_rate), loss,
                      metrics=[monitored_auc(spec.id, spec.multi_label)], jit_compile=False)
        callbacks = [
            *selector,  # adds val_pointing_game to the logs the others read
            candidates,
            keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=args.patience),
            keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.3,
                                              patience=max(1, args.patience // 3), min_lr=1e-6),
            logger,
        ]
        logger.append = index > 0
        model.fit(train_data, validation_data=val_data, epochs=epochs, callbacks=callbacks,
                  class_weight=weights_by_class, verbose=2)
    epochs_run = len(candidates.history)
    return epochs_run, time.perf_counter() - start, candidates.keep()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    spec = get_task(args.task)
    backbone = args.backbone or spec.backbone
    size = args.image_size or spec.image_size
    out = args.out or Path("models") / spec.id
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    else:
        tf.config.experimental.enable_op_determinism()
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()

    index = read_dataset(spec.id, args.data, args.val_fraction, args.seed)
    train_samples, val_samples, test_samples = (index.splits[k] for k in ("train", "val", "test"))
    if args.folds:
        train_samples, val_samples = kfold_by_patient(train_samples + val_samples, args.folds, args.fold, args.seed)
    train_targets = targets_of(train_samples)
    if spec.multi_label:
        fractions = positive_fraction(train_targets)
        loss, weights_by_class, balance = WeightedBinaryCrossentropy(fractions), None, {
            "positive_fraction": dict(zip(spec.labels, fractions.tolist()))}
    else:
        weights_by_class = class_weights(train_targets.sum(0))
        loss, balance = keras.losses.CategoricalCrossentropy(), {
            "class_weight": {spec.labels[i]: w for i, w in weights_by_class.items()}}
    batch = args.batch_size * strategy.num_replicas_in_sync
    train_data = image_dataset(train_samples, size, batch, shuffle=True, seed=args.seed,
                               augmentation=spec.augmentation, cache=True)
    val_data = image_dataset(val_samples, size, batch, cache=True)
    with strategy.scope():
        model = build_model(spec, backbone, size, None if args.weights == "none" else args.weights,
                            mirror=args.mirror_average)
    print(f"{spec.id}: {backbone} at {size}px, {model.count_params():,} parameters; "
          f"train {len(train_samples)}, val {len(val_samples)}, test {len(test_samples)} images")
    try:
        selector = [ValidationPointingGame(spec, index.boxes, val_samples, size, batch)] \
            if args.select_by == "pointing_game" else []
    except ValueError as error:  # no validation boxes: say so before any training
        raise SystemExit(f"python -m train: error: {error}") from None
    with strategy.scope():
        epochs_run, seconds, kept = fit(spec, model, train_data, val_data, loss, weights_by_class, args, out,
                                        selector)

    val_logits = predict_logits(model, val_samples, size, batch)
    test_logits = predict_logits(model, test_samples, size, batch)
    result = calibrate_and_evaluate(spec, val_logits, val_samples, test_logits, test_samples)
    fold_temperature(model, np.asarray(result["temperature"], np.float32))
    model_path = out / "model.keras"
    save_model(model, model_path)
    report_folder = args.report or Path("reports") / spec.id
    reports = write_report(spec, report_folder, result, test_samples, out / "history.csv", kept["kept_epoch"])

    source = provenance(args.data, index.root)
    config = {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "backbone": backbone, "image_size": size, "batch_size_global": batch, **balance,
              "epochs_run": epochs_run, "training_seconds": round(seconds, 1),
              "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__},
              "devices": [d.name for d in gpus] or ["CPU"]}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    card = ModelCard.for_task(
        spec,
        model_version=f"{spec.id}-{backbone}-{datetime.now(timezone.utc):%Y%m%d}",
        notice=DEMO_NOTICE if source["kind"] == "synthetic phantoms" else "Research software, not a medical device.",
        input={"name": "image", "shape": [None, size, size, 1], "dtype": "float32", "range": [0, 255],
               "size": size, "preprocessing": "radiograph.imaging.load_for_model (letterbox, black padding)"},
        backbone=backbone, mirror_average=args.mirror_average, cam_layer="features",
        cam_grid=feature_grid(model.get_config()).as_card(), thresholds=result["thresholds"],
        temperature={"values": result["temperature"], "applied": "folded into the logits layer"},
        training={"command": "python -m train " + shlex.join(argv), "seed": args.seed,
                  "val_fraction": args.val_fraction, "folds": args.folds, "fold": args.fold,
                  "weights": args.weights, **weights_provenance(args.weights), "epochs_run": epochs_run,
                  "kept": kept, "training_seconds": round(seconds, 1)},
        data={**source, "dataset": spec.dataset.name, "splits": {k: len(v) for k, v in index.splits.items()}},
        metrics={"split": "test", **result["metrics"]}, calibration=result["expected_calibration_error"],
        reports=[str(p) for p in reports])
    card.record_file(out, "model.keras")
    card.save(out)
    print(json.dumps(card.metrics, indent=2))
    print(f"wrote {model_path} ({model_path.stat().st_size / 1e6:.1f} MB) in {seconds:.0f} s of training; "
          f"report in {report_folder}")


if __name__ == "__main__":
    main()
