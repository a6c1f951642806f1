"""Train, export and measure the task router (radiograph/routing.py): which task an image is for, or "none".

    python -m train.negatives --out /work/data/negatives --count 600 --seed 0 --families train
    python -m train.router --phantoms /work/data/phantoms --negatives /work/data/negatives --out models/router --seed 0
    python -m train.router --measure --models models/router --phantoms /work/data/heldout \\
        --negatives /work/data/negatives-eval --report reports/router/heldout.json

Arguments (training):
  --phantoms DIR    folder holding one phantom set per task (DIR/<task>, as `python -m train.phantoms all` writes);
                    each task's *train* split (train.datasets.read_dataset) is used, at most --per-task images
  --negatives DIR   a `python -m train.negatives` folder; only its TRAINING families are read
  --out DIR         where model.onnx and card.json go (models/router)
  --seed N          seeds the validation carve, the sampling and Keras (deterministic ops on CPU)
  --val-fraction F  share of the training data (patients of each task; images of each negative family) held
                    out as the validation split that picks the epoch
  --epochs, --batch-size, --per-task

Examples: every image goes through the one image path, `load_for_model(path, 96).display`, then
`radiograph.routing.router_batch`, the five copies serving routes (as given, turned 90 clockwise, 180, 90
anticlockwise, inverted). Labels of the copies: an upright task's film keeps its task only as given (the turned
and inverted copies are "none"); a MURA film keeps "mura" turned (MURA is photographed every way), its negative
is "none"; every copy of a negative is "none". Classes are balanced by class weights.

`--measure` routes held-out data with the exported model through `radiograph.routing.Router` (the serving code):
task accuracy on every image of each task's phantom set (all splits of a fresh seed), "none" rate per family of
a negatives folder (its evaluation families by default), the pose detection rate on turned and inverted films of
the upright tasks, and route() latency.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from radiograph.cards import file_entry
from radiograph.imaging import load_for_model
from radiograph.registry import TASKS
from radiograph.routing import (CORRECTIONS, NONE, POSE_CONFIDENCE, ROUTER_SIZE, Router, pose_of, router_batch,
                                router_labels)
from train.datasets import carve_by_patient, read_dataset
from train.negatives import EVAL_FAMILIES, PROVENANCE, TRAIN_FAMILIES, list_family

LOAD_SIZE = 96  # the model size handed to load_for_model; only its .display is used
NOTICE = ("Demo model trained on synthetic phantoms and generated images (train.phantoms, train.negatives); "
          "not a medical device, and its figures say nothing about real films.")
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)


def display_of(path) -> np.ndarray:
    return load_for_model(path, LOAD_SIZE).display


def copy_labels(task: str | None) -> list[int]:
    """The label index of each copy of `router_batch` for a film of `task` (None: a negative)."""
    labels = router_labels()
    none = labels.index(NONE)
    if task is None:
        return [none] * len(CORRECTIONS)
    keep = labels.index(task)
    if TASKS[task].upright:
        return [keep] + [none] * (len(CORRECTIONS) - 1)
    return [keep] * (len(CORRECTIONS) - 1) + [none]


def examples(items: list[tuple[Path, str | None]]) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N*5, S, S, 1] copies and their labels."""
    x, y = [], []
    for path, task in items:
        x.append(np.rint(router_batch(display_of(path))).astype(np.uint8))
        y.extend(copy_labels(task))
    return np.concatenate(x), np.asarray(y, np.int32)


def gather(phantoms: Path, negatives: Path, per_task: int, val_fraction: float, seed: int):
    """(train items, val items, data record): items are (path, task or None)."""
    rng = np.random.default_rng(seed)
    train, val, record = [], [], {"phantoms": {}, "negatives": {}}
    for task in TASKS:
        index = read_dataset(task, phantoms / task, 0.1, seed)
        samples = index.splits["train"]
        if len(samples) > per_task:
            samples = [samples[i] for i in sorted(rng.choice(len(samples), per_task, replace=False))]
        fit, held = carve_by_patient(samples, val_fraction, seed)
        train += [(s.path, task) for s in fit]
        val += [(s.path, task) for s in held]
        provenance = json.loads((phantoms / task / "PHANTOM.json").read_text())
        record["phantoms"][task] = {"path": str(phantoms / task), "seed": provenance["seed"],
                                    "generated": provenance["count"], "split": "train", "train": len(fit),
                                    "val": len(held), "command": provenance["command"]}
    for family in TRAIN_FAMILIES:
        paths = list_family(negatives, family)
        if not paths:
            raise SystemExit(f"{negatives / family} holds no images: run python -m train.negatives --families train")
        cut = len(paths) - max(1, round(len(paths) * val_fraction))
        train += [(p, None) for p in paths[:cut]]
        val += [(p, None) for p in paths[cut:]]
        record["negatives"][family] = {"train": cut, "val": len(paths) - cut}
    made = json.loads((negatives / PROVENANCE).read_text())
    record["negatives_source"] = {"path": str(negatives), "seed": made["seed"], "command": made["command"],
                                  "families": list(TRAIN_FAMILIES)}
    return train, val, record


def build(size: int, classes: int):
    import keras
    from keras import layers

    def block(x, filters, strides):
        x = layers.SeparableConv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        return layers.ReLU()(layers.BatchNormalization()(x))

    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for filters in (32, 64, 96):
        x = block(x, filters, 2)
    x = block(x, 128, 1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="router")


def export(model, size: int, path: Path) -> None:
    import keras
    import tensorflow as tf
    import tf2onnx

    signature = (tf.TensorSpec((None, size, size, 1), tf.float32, name="image"),)
    wrapped = keras.Model(model.input, {"probabilities": model.output})
    proto, _ = tf2onnx.convert.from_keras(wrapped, input_signature=signature, opset=17)
    path.write_bytes(proto.SerializeToString())


def pose_figures(router: Router, displays: list[tuple[np.ndarray, str]], negatives: list[np.ndarray]) -> dict:
    """Pose detection on turned/inverted films of upright tasks and false poses on negatives, per threshold."""
    upright = [(d, t) for d, t in displays if TASKS[t].upright]
    turns = {CORRECTIONS[1]: lambda u: np.rot90(u, 1), CORRECTIONS[2]: lambda u: np.rot90(u, 2),
             CORRECTIONS[3]: lambda u: np.rot90(u, -1), CORRECTIONS[4]: lambda u: 255 - u}
    hits = {t: {c: 0 for c in turns} for t in THRESHOLDS}
    given_none = {c: 0 for c in turns}
    for display, task in upright:
        for correction, turn in turns.items():
            p = router.probabilities(router_batch(turn(display), router.size))
            if router.labels[int(np.argmax(p[0]))] != NONE:
                continue  # routed as given (a miss for every threshold)
            given_none[correction] += 1
            for threshold in THRESHOLDS:
                found = pose_of(p, router.labels, threshold)
                hits[threshold][correction] += found is not None and found[:2] == (correction, task)
    false = {t: 0 for t in THRESHOLDS}
    for display in negatives:
        p = router.probabilities(router_batch(display, router.size))
        if router.labels[int(np.argmax(p[0]))] == NONE:
            for threshold in THRESHOLDS:
                false[threshold] += pose_of(p, router.labels, threshold) is not None
    n = max(1, len(upright))
    return {"films": len(upright), "negatives": len(negatives),
            "turned_or_inverted_routed_none": {c: given_none[c] / n for c in turns},
            "detected": {str(t): {c: hits[t][c] / n for c in turns} for t in THRESHOLDS},
            "false_pose_on_negatives": {str(t): false[t] / max(1, len(negatives)) for t in THRESHOLDS}}


def latency(router: Router, side: int = 1024, repeats: int = 200) -> dict:
    rng = np.random.default_rng(0)
    display = rng.integers(0, 256, (side, side), dtype=np.uint8)
    big = rng.integers(0, 256, (2048, 2048), dtype=np.uint8)
    batch = router_batch(display, router.size)
    from radiograph.routing import router_input

    def median_ms(call, n=repeats):
        times = []
        for _ in range(n):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000)

    return {"route_1024_ms": median_ms(lambda: router.route(display)),
            "onnx_batch5_ms": median_ms(lambda: router.probabilities(batch)),
            "router_input_2048_ms": median_ms(lambda: router_input(big, router.size)),
            "router_batch_1024_ms": median_ms(lambda: router_batch(display, router.size)),
            "threads": 1, "provider": router.provider}


def train(args) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    tf.config.experimental.enable_op_determinism()
    start = time.perf_counter()
    train_items, val_items, data = gather(args.phantoms, args.negatives, args.per_task, args.val_fraction, args.seed)
    x_train, y_train = examples(train_items)
    x_val, y_val = examples(val_items)
    print(f"examples: {len(x_train)} train, {len(x_val)} val ({time.perf_counter() - start:.0f} s)", flush=True)
    labels = router_labels()
    counts = np.bincount(y_train, minlength=len(labels))
    class_weight = {i: float(len(y_train) / (len(labels) * c)) for i, c in enumerate(counts)}
    model = build(ROUTER_SIZE, len(labels))
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping("val_accuracy", patience=args.epochs, restore_best_weights=True, mode="max")
    fit_start = time.perf_counter()
    history = model.fit(x_train.astype(np.float32), y_train, batch_size=args.batch_size, epochs=args.epochs,
                        validation_data=(x_val.astype(np.float32), y_val), class_weight=class_weight, shuffle=True,
                        callbacks=[stop], verbose=2)
    seconds = time.perf_counter() - fit_start
    best = int(np.argmax(history.history["val_accuracy"]))
    args.out.mkdir(parents=True, exist_ok=True)
    export(model, ROUTER_SIZE, args.out / "model.onnx")
    keras_path = args.out / "model.keras"
    model.save(keras_path)
    files = {"model.onnx": file_entry(args.out / "model.onnx")}
    if keras_path.stat().st_size < 2_000_000:
        files["model.keras"] = file_entry(keras_path)
    else:
        keras_path.unlink()
    card = {"schema_version": 2, "kind": "router", "model_version": args.model_version, "notice": NOTICE,
            "labels": labels, "input": {"name": "image", "shape": [None, ROUTER_SIZE, ROUTER_SIZE, 1],
                                        "dtype": "float32", "range": [0, 255], "size": ROUTER_SIZE},
            "output": {"name": "probabilities", "shape": [None, len(labels)]},
            "preprocessing": "radiograph.routing.router_input(load_for_model(...).display)",
            "pose_confidence": POSE_CONFIDENCE, "files": files,
            "training": {"command": "python -m train.router " + shlex.join(sys.argv[1:]), "seed": args.seed,
                         "epochs": len(history.history["loss"]), "kept_epoch": best + 1, "seconds": round(seconds, 1),
                         "examples": {"train": int(len(y_train)), "val": int(len(y_val))},
                         "class_counts": dict(zip(labels, counts.tolist())), "class_weight": "inverse frequency"},
            "data": data, "metrics": {}}
    (args.out / "card.json").write_text(json.dumps(card, indent=2))
    # validation figures from the exported model, through the serving code
    router = Router(args.out, device="cpu")
    p = np.concatenate([router.probabilities(x_val[i:i + 500].astype(np.float32)) for i in range(0, len(x_val), 500)])
    predicted = p.argmax(1)
    as_given = np.arange(len(y_val)) % len(CORRECTIONS) == 0
    per_class = {label: float((predicted[y_val == i] == i).mean()) for i, label in enumerate(labels)}
    displays = [(display_of(path), task) for path, task in val_items if task is not None]
    negatives = [display_of(path) for path, task in val_items if task is None]
    card["metrics"] = {"validation": {
        "accuracy": float((predicted == y_val).mean()), "accuracy_as_given": float((predicted == y_val)[as_given].mean()),
        "per_class_recall": per_class, "keras_best_val_accuracy": float(history.history["val_accuracy"][best]),
        "pose": pose_figures(router, displays, negatives)}}
    (args.out / "card.json").write_text(json.dumps(card, indent=2))
    print(json.dumps(card["metrics"], indent=2))
    print(f"next: python -m train.router --measure --models {args.out} --phantoms HELDOUT --negatives EVAL_NEGATIVES")


def measure(args) -> None:
    router = Router(args.models, device="cpu")
    report = {"model": str(args.models), "sha256": router.card["files"]["model.onnx"]["sha256"], "tasks": {},
              "negatives": {}}
    displays = []
    for task in TASKS:
        index = read_dataset(task, args.phantoms / task, 0.1, 0)
        samples = [s for split in ("train", "val", "test") for s in index.splits.get(split, [])][:args.per_task]
        routed = {}
        for sample in samples:
            display = display_of(sample.path)
            displays.append((display, task))
            got = router.route(display).task or NONE
            routed[got] = routed.get(got, 0) + 1
        report["tasks"][task] = {"images": len(samples), "accuracy": routed.get(task, 0) / len(samples),
                                 "routed": routed}
    total = sum(r["images"] for r in report["tasks"].values())
    report["task_accuracy"] = sum(r["accuracy"] * r["images"] for r in report["tasks"].values()) / total
    families = [f for f in (args.families or EVAL_FAMILIES) if list_family(args.negatives, f)]
    negatives, none_total, count = [], 0, 0
    for family in families:
        routed = {}
        for path in list_family(args.negatives, family):
            display = display_of(path)
            negatives.append(display)
            got = router.route(display).task or NONE
            routed[got] = routed.get(got, 0) + 1
        n = sum(routed.values())
        report["negatives"][family] = {"images": n, "none_rate": routed.get(NONE, 0) / n, "routed": routed}
        none_total, count = none_total + routed.get(NONE, 0), count + n
    report["none_rate"] = none_total / max(1, count)
    report["pose"] = pose_figures(router, displays[::args.pose_step], negatives)
    report["latency"] = latency(router)
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.router", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--phantoms", type=Path, required=True, help="folder with one phantom set per task")
    parser.add_argument("--negatives", type=Path, required=True, help="a python -m train.negatives folder")
    parser.add_argument("--out", type=Path, default=Path("models/router"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-task", type=int, default=1500, help="at most this many images per task")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--model-version", default="router-1")
    parser.add_argument("--measure", action="store_true", help="measure a trained router on held-out data")
    parser.add_argument("--models", type=Path, default=Path("models/router"), help="--measure: the router folder")
    parser.add_argument("--families", nargs="*", help="--measure: negative families (default: the evaluation ones)")
    parser.add_argument("--pose-step", type=int, default=2, help="--measure: every Nth film for the pose figures")
    parser.add_argument("--report", type=Path, help="--measure: write the figures here as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    measure(args) if args.measure else train(args)


if __name__ == "__main__":
    main()
