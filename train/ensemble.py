"""Combine trained models of one task into one Keras model (the knee projects' ensembles).

    python -m train.ensemble knee --members models/knee_a models/knee_b models/knee_c --method mean
    python -m train.ensemble knee --members models/knee_a models/knee_b --method f1 --data phantoms/knee
    python -m train.ensemble knee --members ... --method mixvote --data phantoms/knee --out models/knee

Methods (radiograph.layers.EnsembleCombine): `mean` averages probabilities;
`f1` weights each member per class by its F1 on the *validation* split (never
test); `mixvote` takes the majority of the members' labels, and the mean
probabilities when all members disagree. The result is one Keras model with
the usual `image` input and `probabilities` output, so export treats it like
any other model.

Heatmaps: an ensemble has one feature map per member (layer `features`
inside each nested member model). Its Grad-CAM for a class is the combination
of the members' Grad-CAM maps for that class with the ensemble's own weights:
equal for `mean`, the member's F1 weight for that class for `f1`, and equal
among the members that voted for the class for `mixvote` (all members when all
disagree). The card lists the members and this rule.
"""
from __future__ import annotations

import argparse
import json
import shlex
from datetime import datetime, timezone
import sys
from pathlib import Path

import keras
import numpy as np
from sklearn.metrics import f1_score

import train.objectives  # noqa: F401 - registers the custom loss for loading members
from radiograph.cards import ModelCard
from radiograph.layers import ENSEMBLE_METHODS, EnsembleCombine, load_model
from radiograph.registry import TASKS, TaskSpec, get_task
from train.backbones import save_model
from train.datasets import read_dataset
from train.evaluate import activate, evaluate, predict_logits, targets_of
from train.pipeline import image_dataset

HEATMAP_RULE = {
    "mean": "mean of the members' Grad-CAM maps",
    "f1": "members' Grad-CAM maps weighted by each member's validation F1 for the class",
    "mixvote": "mean of the Grad-CAM maps of the members that voted for the class (all members when all disagree)",
}


def f1_weights(spec: TaskSpec, member_probabilities: list[np.ndarray], targets: np.ndarray,
               thresholds: list[list[float]]) -> list[list[float]]:
    """Per member and class, F1 on validation; each class's weights normalised to sum to 1."""
    scores = []
    for probabilities, member_thresholds in zip(member_probabilities, thresholds):
        if spec.multi_label:
            predicted = probabilities >= np.asarray(member_thresholds)
            scores.append([f1_score(targets[:, c], predicted[:, c], zero_division=0) for c in range(spec.num_classes)])
        else:
            scores.append(f1_score(targets.argmax(1), probabilities.argmax(1), labels=range(spec.num_classes),
                                   average=None, zero_division=0).tolist())
    scores = np.asarray(scores, np.float64)  # [M, C]
    totals = scores.sum(axis=0, keepdims=True)
    equal = np.full_like(scores, 1.0 / len(scores))
    return np.where(totals > 0, scores / np.where(totals > 0, totals, 1), equal).tolist()


def build_ensemble(spec: TaskSpec, members: list[keras.Model], method: str, weights=None) -> keras.Model:
    sizes = {tuple(member.input.shape[1:]) for member in members}
    if len(sizes) != 1:
        raise ValueError(f"members take different input sizes {sorted(sizes)}; train them at one --image-size")
    image = keras.Input(members[0].input.shape[1:], name="image")
    outputs = [keras.Model(m.input, m.output, name=f"member_{i}")(image) for i, m in enumerate(members)]
    combined = EnsembleCombine(method, weights, softmax=spec.head == "softmax", name="probabilities")(outputs)
    return keras.Model(image, combined, name=f"{spec.id}_ensemble_{method}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m train.ensemble", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--members", nargs="+", type=Path, required=True, help="model folders (model.keras + card)")
    parser.add_argument("--method", choices=ENSEMBLE_METHODS, default="mean")
    parser.add_argument("--data", type=Path, help="dataset folder: validation for f1 weights, test for metrics")
    parser.add_argument("--out", type=Path, help="default models/<task>_ensemble")
    args = parser.parse_args(argv)
    spec = get_task(args.task)
    if args.method == "f1" and args.data is None:
        parser.error("--method f1 needs --data (its weights come from the validation split)")
    cards = [ModelCard.load(folder) for folder in args.members]
    for folder, card in zip(args.members, cards):
        if card.task != spec.id or card.labels != spec.labels:
            parser.error(f"{folder} is a {card.task} model with labels {list(card.labels)}, not {spec.id}")
    members = [load_model(folder / "model.keras") for folder in args.members]
    size = cards[0].size
    index = read_dataset(spec.id, args.data, cards[0].training["val_fraction"],
                         cards[0].training["seed"]) if args.data else None
    weights = None
    if args.method == "f1":
        val = index.splits["val"]
        probabilities = [activate(spec.head, predict_logits(m, val, size)) for m in members]
        weights = f1_weights(spec, probabilities, targets_of(val), [list(c.thresholds.values()) for c in cards])
    model = build_ensemble(spec, members, args.method, weights)
    out = args.out or Path("models") / f"{spec.id}_ensemble"
    out.mkdir(parents=True, exist_ok=True)
    save_model(model, out / "model.keras")
    card = ModelCard.for_task(
        spec, title=f"{spec.title} ensemble ({args.method})",
        model_version=f"{spec.id}-ensemble-{args.method}-{datetime.now(timezone.utc):%Y%m%d}",
        backbone="ensemble of " + ", ".join(c.backbone for c in cards), input=cards[0].input,
        thresholds=cards[0].thresholds, notice=cards[0].notice, data=cards[0].data,
        ensemble={"method": args.method, "weights": weights, "heatmap": HEATMAP_RULE[args.method],
                  "members": [{"folder": str(f), "model_version": c.model_version,
                               "sha256": c.files["model.keras"]["sha256"]} for f, c in zip(args.members, cards)]},
        cam_layer="member_<i>/features", training={"command": "python -m train.ensemble " + shlex.join(argv)})
    if index is not None:
        test = index.splits["test"]
        probabilities = model.predict(image_dataset(test, size, 32), verbose=0)
        card.metrics = {"split": "test", **evaluate(spec, targets_of(test), probabilities, test,
                                                    list(cards[0].thresholds.values()))}
    card.record_file(out, "model.keras")
    card.save(out)
    print(json.dumps(card.metrics, indent=2))
    print(f"wrote {out / 'model.keras'}")


if __name__ == "__main__":
    main()
