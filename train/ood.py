"""Fit each shipped model's out-of-distribution score and choose its uncertainty cut (radiograph.ood).

    python -m train.ood knee mura pneumonia chest14 --data /work/data/phantoms     # DATA/<task> per task
    python -m train.ood chest14 --data /data/nih --models runs                      # one task: its dataset folder
    python -m train.ood knee mura pneumonia chest14 --data phantoms --measure heldout   # measure only

`--data` is the folder holding one dataset folder per task (DATA/<task>, as `python -m train.phantoms --out`
writes them); with a single task whose DATA/<task> does not exist, DATA is that task's dataset folder itself
(as `python -m train.evaluate --data` takes it). The model is MODELS/<task> (default models/).

For each task the dataset is split exactly as its model was trained (the card's `training` val_fraction,
seed, and folds), each image is decoded by radiograph.imaging.load_for_model at the card's input size and run
through the shipped fp32 ONNX model (radiograph.inference.OnnxModel), and its `features` map is pooled. Then:

  ood          fitted on the train split (mean and Ledoit-Wolf covariance of the pooled features), the
               threshold chosen on the validation split as the (1 - --false-alarm) quantile of its distances;
               written to MODELS/<task>/ood.npz, hashed into the card's files, and the card's `ood` section.
  uncertainty  `high_above`: the 90th percentile over the validation images of radiograph.decision.uncertainty
               (per image, also for a task that groups views into studies); the card's `uncertainty` section.

The test split is never read. model.onnx and model.keras are not touched. One line per task is printed.

`--measure HELDOUT` writes nothing: it scores every image of HELDOUT/<task> (all splits, or --split; a phantom set never
used to fit or choose anything) with every given task's model and prints, per model, the fraction of its own
task's images under its threshold and of each other task's images above it, and the score's cost.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from radiograph.cards import ModelCard, ModelFileError
from radiograph.decision import uncertainty
from radiograph.imaging import load_for_model
from radiograph.inference import OnnxModel
from radiograph.ood import FILE, METHOD, FeatureDistance, pool
from radiograph.registry import TASKS
from train.datasets import Sample, kfold_by_patient, read_dataset

UNCERTAINTY_METHOD = ("the decision margin of radiograph.decision.uncertainty: 0 as far from the card's decision "
                      "boundary as the image can be, 1 on it")
HIGH_UNCERTAINTY_PERCENTILE = 90


def dataset_folder(data: Path, task: str, tasks: list[str]) -> Path:
    folder = data / task
    if folder.is_dir():
        return folder
    if len(tasks) == 1:
        return data
    raise FileNotFoundError(f"{folder} is missing: --data holds one dataset folder per task (DATA/<task>)")


def splits_as_trained(card: ModelCard, folder: Path) -> dict[str, list[Sample]]:
    """train, val and test samples exactly as the model's training run split them."""
    training = card.training
    seed = int(training.get("seed", 0))
    index = read_dataset(card.task, folder, float(training.get("val_fraction", 0.1)), seed)
    splits = {name: list(index.splits[name]) for name in ("train", "val", "test")}
    if training.get("folds"):
        splits["train"], splits["val"] = kfold_by_patient(splits["train"] + splits["val"], int(training["folds"]),
                                                          int(training["fold"]), seed)
    return splits


def pooled_outputs(model: OnnxModel, paths: list[Path], batch_size: int = 16,
                   cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pooled features [N, K], probabilities [N, C]) of the images at `paths`; the next batch is decoded while
    the model runs on this one. With `cache`, kept in and reused from a file named by the model's sha256 and
    the paths."""
    if cache is not None:
        key = hashlib.sha256((model.card.files[model.path.name]["sha256"] + "\n"
                              + "\n".join(str(Path(p).resolve()) for p in paths)).encode()).hexdigest()[:16]
        stored = Path(cache) / f"{model.card.task}-{key}.npz"
        if stored.is_file():
            with np.load(stored) as values:
                return values["pooled"], values["probabilities"]
    batches = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    pooled, probabilities = [], []

    def decode(batch):
        return np.stack([load_for_model(path, model.size).tensor for path in batch]).astype(np.float32)

    with ThreadPoolExecutor(max_workers=1) as pool_:
        pending = pool_.submit(decode, batches[0]) if batches else None
        for i in range(len(batches)):
            images = pending.result()
            pending = pool_.submit(decode, batches[i + 1]) if i + 1 < len(batches) else None
            output = model.run(images)
            if output.features is None:
                raise ModelFileError(f"{model.path} has no `features` output: export it again (python -m export)")
            pooled.append(pool(output.features))
            probabilities.append(output.probabilities)
    k = model.session.get_outputs()[[o.name for o in model.session.get_outputs()].index("features")].shape[-1]
    pooled_array = np.concatenate(pooled) if pooled else np.zeros((0, k), np.float32)
    probabilities_array = np.concatenate(probabilities) if probabilities else np.zeros((0, len(model.labels)))
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        np.savez(stored, pooled=pooled_array, probabilities=probabilities_array)
    return pooled_array, probabilities_array


def feature_shape(model: OnnxModel) -> list[int]:
    features = model.run(np.zeros((1, model.size, model.size, 1), np.float32)).features
    return [int(v) for v in features.shape[1:]]


def fit_task(folder: Path, data: Path, false_alarm: float, command: str, batch_size: int = 16,
             cache: Path | None = None) -> str:
    """Fits, chooses and writes one model folder's score and cuts; returns its summary line."""
    start = time.perf_counter()
    model = OnnxModel(folder, "fp32", device="auto")
    card = model.card
    splits = splits_as_trained(card, data)
    if len(splits["train"]) < 2 or not splits["val"]:
        raise ValueError(f"{data}: {card.task} needs train and validation images, got "
                         f"{len(splits['train'])} and {len(splits['val'])}")
    train_pooled, _ = pooled_outputs(model, [s.path for s in splits["train"]], batch_size, cache)
    val_pooled, val_probabilities = pooled_outputs(model, [s.path for s in splits["val"]], batch_size, cache)
    score = FeatureDistance.fit(train_pooled, tuple(feature_shape(model)))
    distances = score.choose_threshold(val_pooled, false_alarm)
    score.save(folder / FILE)
    margins = np.array([uncertainty(card, p) for p in val_probabilities])
    high_above = float(np.percentile(margins, HIGH_UNCERTAINTY_PERCENTILE))
    card.record_file(folder, FILE)
    card.ood = {"file": FILE, "method": METHOD + f"; shrinkage {score.shrinkage:.3f}", "threshold": score.threshold,
                "false_alarm_rate": false_alarm,
                "fitted_on": {"split": "train", "images": len(train_pooled)},
                "chosen_on": {"split": "val", "images": len(val_pooled)},
                "validation_quantiles": {str(q): float(np.percentile(distances, q)) for q in (50, 90, 99)},
                "command": command}
    card.uncertainty = {"method": UNCERTAINTY_METHOD, "high_above": high_above,
                        "chosen_on": {"split": "val", "images": len(margins)}, "command": command}
    card.save(folder)
    return (f"{card.task}: K={score.channels}, fitted on {len(train_pooled)} train images (shrinkage "
            f"{score.shrinkage:.3f}), threshold {score.threshold:.2f} = the {1 - false_alarm:.0%} quantile of "
            f"{len(val_pooled)} val distances (median {np.median(distances):.2f}); uncertainty high above "
            f"{high_above:.3f}; {(folder / FILE).stat().st_size / 1e6:.2f} MB, {time.perf_counter() - start:.0f} s")


def measure(models: Path, heldout: Path, tasks: list[str], batch_size: int = 16, cache: Path | None = None,
            split: str = "all") -> dict:
    """Per model: the fraction of its own task's held-out images under its threshold, the fraction of every
    other task's above it, and the score's cost per image in microseconds."""
    sets = {}
    for task in tasks:
        index = read_dataset(task, heldout / task)
        names = ("train", "val", "test") if split == "all" else (split,)
        sets[task] = [s.path for name in names for s in index.splits[name]]
    results = {}
    for task in tasks:
        model = OnnxModel(models / task, "fp32", device="auto")
        score = FeatureDistance.load(models / task, model.card)
        if score is None:
            print(f"{task}: skipped, its card has no ood section (run python -m train.ood {task})", flush=True)
            continue
        row = {"threshold": score.threshold}
        for other in tasks:
            distances = score.distances(pooled_outputs(model, sets[other], batch_size, cache)[0])
            if other == task:
                row["in_distribution_below"] = float(np.mean(distances <= score.threshold))
                row["images"] = len(distances)
            else:
                row[f"{other}_above"] = float(np.mean(distances > score.threshold))
            row[f"{other}_median_distance"] = float(np.median(distances))
        features = model.run(np.zeros((1, model.size, model.size, 1), np.float32)).features[0]
        repeats = 2000
        start = time.perf_counter()
        for _ in range(repeats):
            score.score(features)
        row["score_microseconds"] = (time.perf_counter() - start) / repeats * 1e6
        results[task] = row
        print(f"{task}: " + json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}),
              flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.ood", description=__doc__.split("\n")[0])
    parser.add_argument("tasks", nargs="+", choices=list(TASKS), metavar="TASK")
    parser.add_argument("--data", required=True, type=Path,
                        help="folder holding DATA/<task> dataset folders (with one task: or that task's folder)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="models root: MODELS/<task>")
    parser.add_argument("--false-alarm", type=float, default=0.01,
                        help="fraction of validation images the threshold flags (default 0.01)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cache", type=Path, help="keep pooled features here and reuse them (keyed by model hash "
                                                    "and image paths)")
    parser.add_argument("--measure", type=Path, metavar="HELDOUT",
                        help="write nothing: score HELDOUT/<task> (all splits) with every given task's model")
    parser.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                        help="with --measure: which split of each held-out set to score (default all)")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    recorded = [a for i, a in enumerate(argv) if a != "--cache" and (i == 0 or argv[i - 1] != "--cache")
                and not a.startswith("--cache=")]  # the cache changes nothing the command writes
    command = "python -m train.ood " + shlex.join(recorded)
    try:
        if args.measure:
            results = measure(args.models, args.measure, args.tasks, args.batch_size, args.cache, args.split)
            print(json.dumps(results, indent=2))
            return
        if not 0.0 < args.false_alarm < 1.0:
            parser.error(f"--false-alarm must lie strictly between 0 and 1, got {args.false_alarm}")
        for task in args.tasks:
            folder = dataset_folder(args.data, task, args.tasks)
            print(fit_task(args.models / task, folder, args.false_alarm, command, args.batch_size, args.cache),
                  flush=True)
    except (ModelFileError, FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
