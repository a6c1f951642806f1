"""Evaluation, operating thresholds, calibration and reports for a trained model.

    python -m train.evaluate knee --data phantoms/knee                        # the model in models/knee
    python -m train.evaluate chest14 --data /data/nih --models runs --split test   # runs/chest14

Metrics are computed with scikit-learn on the held-out split (the official
test split where the dataset has one) and are the ones the task's registry
entry names (`TaskSpec.metrics`), looked up in `METRICS`. Thresholds (Youden's
J per class, sigmoid heads) and the temperature are chosen on the validation
split, never on test. Figures go to reports/<task>/ and a summary into the
model's card.json. `--localisation` scores the class activation maps against
the split's true boxes with radiograph.localisation's metrics.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from sklearn import metrics as skm

from radiograph.cards import UNREACHABLE_ABOVE, ModelCard
from radiograph.decision import group_indices, positive_scores, study_probabilities
from radiograph.registry import TASKS, Decision, TaskSpec, get_task
from train.datasets import Sample

ECE_BINS = 15


# ----------------------------------------------------------------------------- decision-driven quantities

def _studies(samples, values):
    """Each study's value by the study rule (registry.Study, `study_probabilities`: the mean over its views) of
    per-image `values`; an image without a study stands alone. Returns (study ids, values)."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for sample, value in zip(samples, values):
        grouped[sample.study or str(sample.path)].append(value)
    ids = sorted(grouped)
    return ids, np.array([study_probabilities(grouped[i]) for i in ids])


def _image_truth_and_score(decision: Decision, targets, probabilities):
    """Per image: whether the positive member is true (0/1), and its summed probability (the decision's score)."""
    return positive_scores(decision, targets).round(), positive_scores(decision, probabilities)


def _study_truth_and_score(decision: Decision, targets, probabilities, samples):
    _, truth = _studies(samples, positive_scores(decision, targets))
    _, score = _studies(samples, positive_scores(decision, probabilities))
    return truth.round().astype(int), score


def _study_decisions(decision: Decision, targets, probabilities, samples):
    """Per study: the true call and the decision's call (score at or above `decision.cut`)."""
    truth, score = _study_truth_and_score(decision, targets, probabilities, samples)
    return truth, (score >= decision.cut).astype(int)


def _per_class_auc(targets, probabilities, labels):
    result = {}
    for index, label in enumerate(labels):
        column = targets[:, index]
        result[label] = float(skm.roc_auc_score(column, probabilities[:, index])) if 0 < column.sum() < len(column) else None
    return result


def _mean_auc(targets, probabilities, labels, **_):
    values = [v for v in _per_class_auc(targets, probabilities, labels).values() if v is not None]
    return float(np.mean(values)) if values else None


def _binary(targets, probabilities, threshold=0.5):
    truth = targets.argmax(1)
    predicted = (probabilities[:, 1] >= threshold).astype(int)
    return truth, predicted


def _sensitivity(targets, probabilities, **_):
    truth, predicted = _binary(targets, probabilities)
    return float(skm.recall_score(truth, predicted, pos_label=1, zero_division=0))


def _specificity(targets, probabilities, **_):
    truth, predicted = _binary(targets, probabilities)
    return float(skm.recall_score(truth, predicted, pos_label=0, zero_division=0))


def _group_accuracy(targets, probabilities, samples, spec: TaskSpec, **_):
    """A grouped decision's group (MURA: body part): image accuracy of the decided group, and per true group the
    study accuracy of the positive call."""
    decision = spec.decision
    true_group = group_indices(decision, targets)
    overall = float(np.mean(true_group == group_indices(decision, probabilities)))
    truth, score = _study_truth_and_score(decision, targets, probabilities, samples)
    _, groups = _studies(samples, true_group)
    per_group = {group: float(np.mean((score[groups == i] >= decision.cut) == truth[groups == i]))
                 for i, group in enumerate(decision.groups) if np.any(groups == i)}
    return dict(zip(_group_accuracy_names(spec), (overall, per_group)))


def _group_accuracy_names(spec: TaskSpec) -> tuple[str, str]:
    """The keys of `_group_accuracy` as cards have them (body_part: image_body_part_accuracy,
    study_accuracy_per_part)."""
    noun = spec.study.noun if spec.study else "image"
    short = spec.decision.group_name.rsplit("_", 1)[-1]
    return f"image_{spec.decision.group_name}_accuracy", f"{noun}_accuracy_per_{short}"


def _group_trials(targets, samples, spec: TaskSpec, **_):
    """The images and, per true group, the studies `_group_accuracy`'s figures are shares of."""
    _, groups = _studies(samples, group_indices(spec.decision, targets))
    per_group = {group: int(np.sum(groups == i)) for i, group in enumerate(spec.decision.groups) if np.any(groups == i)}
    return dict(zip(_group_accuracy_names(spec), (len(targets), per_group)))


def _f1_at_thresholds(targets, probabilities, labels, thresholds, **_):
    return {label: float(skm.f1_score(targets[:, i], probabilities[:, i] >= thresholds[i], zero_division=0))
            for i, label in enumerate(labels)}


# name -> function(targets [N,C], probabilities [N,C], labels, samples, thresholds, spec) -> JSON value;
# the grouped figures (image_auc, study_*, body_part_accuracy) read the task's decision (registry.Decision)
METRICS = {
    "accuracy": lambda t, p, **_: float(skm.accuracy_score(t.argmax(1), p.argmax(1))),
    "balanced_accuracy": lambda t, p, **_: float(skm.balanced_accuracy_score(t.argmax(1), p.argmax(1))),
    "macro_f1": lambda t, p, **_: float(skm.f1_score(t.argmax(1), p.argmax(1), average="macro")),
    "quadratic_weighted_kappa": lambda t, p, **_: float(skm.cohen_kappa_score(t.argmax(1), p.argmax(1),
                                                                               weights="quadratic")),
    "mean_absolute_error": lambda t, p, **_: float(np.mean(np.abs(t.argmax(1) - p.argmax(1)))),
    "confusion_matrix": lambda t, p, labels, **_: skm.confusion_matrix(t.argmax(1), p.argmax(1),
                                                                       labels=range(len(labels))).tolist(),
    "per_class_auc": lambda t, p, labels, **_: _per_class_auc(t, p, labels),
    "mean_auc": _mean_auc,
    "auc": lambda t, p, **_: float(skm.roc_auc_score(t[:, 1], p[:, 1])),
    "sensitivity": _sensitivity,
    "specificity": _specificity,
    "f1": lambda t, p, **_: float(skm.f1_score(*_binary(t, p), zero_division=0)),
    "image_auc": lambda t, p, spec, **_: float(skm.roc_auc_score(*_image_truth_and_score(spec.decision, t, p))),
    "study_auc": lambda t, p, samples, spec, **_: float(skm.roc_auc_score(
        *_study_truth_and_score(spec.decision, t, p, samples))),
    "study_cohen_kappa": lambda t, p, samples, spec, **_: float(skm.cohen_kappa_score(
        *_study_decisions(spec.decision, t, p, samples))),
    "study_accuracy": lambda t, p, samples, spec, **_: float(skm.accuracy_score(
        *_study_decisions(spec.decision, t, p, samples))),
    "body_part_accuracy": _group_accuracy,
    "per_class_f1_at_threshold": _f1_at_thresholds,
}

# the figures among METRICS that are a share of trials (images or studies, each right or wrong): name ->
# function(targets, samples, spec) -> the number of trials, the same shape as the figure. train.intervals gives
# such a figure of 0 or 1, whose bootstrap interval is a point, its exact binomial interval over them.
TRIALS = {
    "accuracy": lambda t, **_: len(t),
    "sensitivity": lambda t, **_: int(np.sum(t.argmax(1) == 1)),
    "specificity": lambda t, **_: int(np.sum(t.argmax(1) == 0)),
    "study_accuracy": lambda t, samples, **_: len(_studies(samples, np.zeros(len(t)))[0]),
    "body_part_accuracy": _group_trials,
}


def evaluate(spec: TaskSpec, targets, probabilities, samples: list[Sample], thresholds=None) -> dict:
    """The task's metrics (spec.metrics) on one split."""
    targets, probabilities = np.asarray(targets, np.float64), np.asarray(probabilities, np.float64)
    thresholds = thresholds if thresholds is not None else default_thresholds(spec)
    return {name: METRICS[name](targets, probabilities, labels=spec.labels, samples=samples, thresholds=thresholds,
                                spec=spec) for name in spec.metrics}


# ----------------------------------------------------------------------------- thresholds and calibration

def default_thresholds(spec: TaskSpec) -> list[float]:
    return [0.5] * spec.num_classes


YOUDEN_MIDPOINT = ("Youden's J on validation, at the middle of the interval of cuts that reach it (between the "
                   "highest validation probability called negative and the lowest called positive)")


def operating_thresholds(targets, probabilities) -> tuple[list[float], dict[int, str]]:
    """Per class, an operating threshold chosen on validation, and for the classes that did not get the usual rule
    (YOUDEN_MIDPOINT), the rule they got instead.

    The usual rule maximises sensitivity + specificity - 1 (Youden's J). Every cut between the highest validation
    probability called negative and the lowest called positive gives the same J; the lowest positive's
    probability itself (scikit-learn's cut) can be 1.0 or 0.9999999997 when the positives saturate, and no
    probability short of 1 then meets it. So the threshold is the middle of that interval. A threshold that still
    sits at or above cards.UNREACHABLE_ABOVE (every validation probability saturated) is not chosen: the class
    falls back to 0.5, and so does a class with one kind of validation label only."""
    thresholds, fallbacks = [], {}
    for index in range(targets.shape[1]):
        column, scores = targets[:, index], np.asarray(probabilities[:, index], np.float64)
        if not 0 < column.sum() < len(column):
            thresholds.append(0.5)
            fallbacks[index] = "0.5: validation holds only one kind of label for this class"
            continue
        fpr, tpr, cuts = skm.roc_curve(column, scores)
        cut = min(float(cuts[int(np.argmax(tpr - fpr))]), 1.0)  # the first cut is +inf: nothing called positive
        below = scores[scores < cut]
        threshold = (cut + float(below.max())) / 2 if below.size else cut
        if threshold >= UNREACHABLE_ABOVE:
            thresholds.append(0.5)
            fallbacks[index] = (f"0.5: the Youden cut {threshold:.10g} is met only by a saturated probability "
                                "(every validation probability that reaches it is within 1e-6 of 1)")
            continue
        thresholds.append(threshold)
    return thresholds, fallbacks


def threshold_rule(labels, fallbacks: dict[int, str]) -> dict:
    """The card's record of how its thresholds were chosen (training["thresholds"])."""
    return {"rule": YOUDEN_MIDPOINT, "fallbacks": {labels[index]: why for index, why in fallbacks.items()}}


def _softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _sigmoid(logits):
    return 1.0 / (1.0 + np.exp(-logits))


def activate(head: str, logits, temperature=1.0):
    scaled = np.asarray(logits, np.float64) / np.asarray(temperature, np.float64)
    return _softmax(scaled) if head == "softmax" else _sigmoid(scaled)


TEMPERATURE_SEARCH = (-3.0, 3.0)  # log T: the fit looks for T in exp(-3)..exp(3) = 0.050..20.1


NO_MINIMUM = {  # why a temperature has no minimum of the validation NLL, so stays 1 (fit_temperature)
    "all_right": "the logits call every validation image right, so the validation NLL falls all the way to T = 0",
    "worse_than_none": "the logits do worse than none on validation, so the NLL falls as T grows",
}


def fit_temperature(head: str, logits, targets) -> tuple[np.ndarray, list[str | None]]:
    """Temperature scaling on validation: one T for softmax, one per class for sigmoid (minimum NLL); and, per T,
    why the NLL had no minimum (a NO_MINIMUM key), or None. Where the logits call every validation image right
    (softmax: the true class on top; sigmoid: each label on the right side of 0), every term of the NLL falls as
    T falls, all the way to T = 0, and where they do worse than no logits at all, it falls all the way up: a fit
    would stop at the edge of its range or wherever the NLL got flat, an artefact rather than an estimate, so
    that T stays 1 (the logits as trained). (Before, such a T sat at the edge, 0.050, which sharpens the logits
    twentyfold and saturates the probabilities.)"""
    logits, targets = np.asarray(logits, np.float64), np.asarray(targets, np.float64)

    def nll(log_t, columns=slice(None)):
        p = np.clip(activate(head, logits[:, columns], np.exp(log_t)), 1e-12, 1 - 1e-12)
        y = targets[:, columns]
        if head == "softmax":
            return -np.mean(np.sum(y * np.log(p), axis=1))
        return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))

    def fitted(objective, all_right: bool) -> tuple[float, str | None]:
        if all_right:
            return 1.0, "all_right"
        log_t = float(minimize(objective, [0.0], method="L-BFGS-B", bounds=[TEMPERATURE_SEARCH]).x[0])
        return (1.0, "worse_than_none") if log_t > TEMPERATURE_SEARCH[1] - 1e-6 else (float(np.exp(log_t)), None)

    if head == "softmax":
        fits = [fitted(nll, bool(np.all(logits.argmax(1) == targets.argmax(1))))]
    else:
        fits = [fitted(lambda t, c=c: nll(t, [c]), bool(np.all((logits[:, c] > 0) == (targets[:, c] > 0.5))))
                for c in range(logits.shape[1])]
    return np.array([t for t, _ in fits]), [why for _, why in fits]


def temperature_record(spec: TaskSpec, result: dict) -> dict:
    """The card's `temperature` section from calibrate_and_evaluate's result; `kept_at_1` names each T the
    validation NLL had no minimum for (all classes' one T for softmax), with why."""
    names = ["all classes"] if spec.head == "softmax" else list(spec.labels)
    kept = {name: NO_MINIMUM[why] for name, why in zip(names, result["temperature_without_minimum"]) if why}
    return {"values": result["temperature"], "applied": "folded into the logits layer",
            **({"kept_at_1": kept} if kept else {})}


def expected_calibration_error(head: str, targets, probabilities, bins: int = ECE_BINS) -> float:
    """Softmax: top-label ECE; sigmoid: mean over classes of each class's ECE."""
    targets, probabilities = np.asarray(targets), np.asarray(probabilities)
    if head == "softmax":
        pairs = [(probabilities.max(1), (probabilities.argmax(1) == targets.argmax(1)).astype(float))]
    else:
        pairs = [(probabilities[:, c], targets[:, c].astype(float)) for c in range(targets.shape[1])]
    errors = []
    for confidence, correct in pairs:
        edges = np.linspace(0, 1, bins + 1)
        which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
        errors.append(sum(abs(correct[which == b].mean() - confidence[which == b].mean()) * np.mean(which == b)
                          for b in range(bins) if np.any(which == b)))
    return float(np.mean(errors))


# ----------------------------------------------------------------------------- predictions and reports

def predict_logits(model, samples: list[Sample], image_size: int, batch_size: int = 32, data=None):
    """Pre-activation scores [N, C] of `samples` through the shared loader (no augmentation); `data`: the same
    samples' batches from elsewhere (a prepared cache, train.cache.stream), in the same order."""
    import keras

    from train.pipeline import image_dataset

    logits_model = keras.Model(model.input, model.get_layer("logits").output)
    data = image_dataset(samples, image_size, batch_size) if data is None else data
    return np.asarray(logits_model.predict(data, verbose=0), np.float64)


def fold_temperature(model, temperature) -> None:
    """Divide the logits by T inside the model: W/T and b/T, so exported models are calibrated."""
    dense = model.get_layer("logits")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel / temperature, bias / temperature])


def targets_of(samples: list[Sample]) -> np.ndarray:
    return np.asarray([s.target for s in samples], np.float64)


def calibrate_and_evaluate(spec: TaskSpec, val_logits, val_samples, test_logits, test_samples) -> dict:
    """Temperature and thresholds from validation; metrics and calibration error on test."""
    val_targets, test_targets = targets_of(val_samples), targets_of(test_samples)
    temperature, without_minimum = fit_temperature(spec.head, val_logits, val_targets)
    val_probabilities = activate(spec.head, val_logits, temperature)
    if spec.multi_label:
        thresholds, fallbacks = operating_thresholds(val_targets, val_probabilities)
        rule = threshold_rule(spec.labels, fallbacks)
    else:  # one decision over the classes (top class, or a grouped sum with its own cut): thresholds unused
        thresholds, rule = default_thresholds(spec), {"rule": "0.5 (not used by this task's decision rule)"}
    raw, calibrated = activate(spec.head, test_logits), activate(spec.head, test_logits, temperature)
    return {
        "temperature": temperature.tolist(),
        "temperature_without_minimum": without_minimum,
        "thresholds": dict(zip(spec.labels, thresholds)),
        "threshold_rule": rule,
        "metrics": evaluate(spec, test_targets, calibrated, test_samples, thresholds),
        "expected_calibration_error": {"before": expected_calibration_error(spec.head, test_targets, raw),
                                       "after": expected_calibration_error(spec.head, test_targets, calibrated)},
        "images": {"validation": len(val_samples), "test": len(test_samples)},
        "probabilities": calibrated,
    }


def roc_curves(spec: TaskSpec, targets, probabilities, samples: list[Sample]) -> dict:
    """name -> (truth, score) of each ROC curve the report draws: for a grouped decision the positive call per
    study (where the task has studies) and per image; the positive class of a two-class head; else every class."""
    decision = spec.decision
    if decision.kind == "grouped":
        curves = {}
        if spec.study is not None:
            curves[f"{spec.study.noun} ({spec.study.rule.replace('_', ' ')})"] = _study_truth_and_score(
                decision, targets, probabilities, samples)
        return {**curves, "image": _image_truth_and_score(decision, targets, probabilities)}
    if spec.num_classes == 2:
        return {spec.labels[1]: (targets[:, 1], probabilities[:, 1])}
    return {label: (targets[:, i], probabilities[:, i]) for i, label in enumerate(spec.labels)}


def write_report(spec: TaskSpec, folder: Path, result: dict, test_samples: list[Sample],
                 history_csv: Path | None = None, kept_epoch: int | None = None) -> list[Path]:
    """metrics.json plus ROC curves, confusion matrix and training curves (the kept epoch marked) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    summary = {k: v for k, v in result.items() if k != "probabilities"}
    (folder / "metrics.json").write_text(json.dumps(summary, indent=2))
    written.append(folder / "metrics.json")
    targets, probabilities = targets_of(test_samples), result["probabilities"]

    figure, axis = plt.subplots(figsize=(6, 6))
    for name, (truth, score) in roc_curves(spec, targets, probabilities, test_samples).items():
        if 0 < np.sum(truth) < len(truth):
            fpr, tpr, _ = skm.roc_curve(truth, score)
            axis.plot(fpr, tpr, label=f"{name} (AUC {skm.roc_auc_score(truth, score):.3f})")
    axis.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    axis.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"{spec.title}: ROC on the test split")
    axis.legend(fontsize=7, loc="lower right")
    written.append(_save(figure, folder / "roc.png"))

    if not spec.multi_label:
        matrix = skm.confusion_matrix(targets.argmax(1), probabilities.argmax(1), labels=range(spec.num_classes))
        figure, axis = plt.subplots(figsize=(1.2 + 0.5 * spec.num_classes,) * 2)
        skm.ConfusionMatrixDisplay(matrix, display_labels=spec.labels).plot(ax=axis, colorbar=False,
                                                                            xticks_rotation="vertical")
        axis.set_title(f"{spec.title}: test confusion matrix", fontsize=9)
        written.append(_save(figure, folder / "confusion_matrix.png"))

    if history_csv is not None and history_csv.exists():
        written.append(plot_training_curves(history_csv, folder / "training_curves.png", kept_epoch))
    return written


def plot_training_curves(history_csv: Path, path: Path, kept_epoch: int | None = None) -> Path:
    """Loss, AUC and (when logged) the validation pointing game per epoch, the kept epoch marked."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(history_csv.open()))
    shown = [m for m in ("loss", "auc", "pointing_game") if rows and {m, "val_" + m} & set(rows[0])]
    figure, axes = plt.subplots(1, len(shown), figsize=(5 * len(shown), 4), squeeze=False)
    epochs = range(1, len(rows) + 1)  # counted through both phases of a fine-tuning run
    for axis, metric in zip(axes[0], shown):
        for prefix in ("", "val_"):
            if prefix + metric in rows[0]:
                axis.plot(epochs, [float(r[prefix + metric]) for r in rows], label=prefix + metric)
        if kept_epoch:
            axis.axvline(kept_epoch, color="grey", linestyle=":", label=f"kept (epoch {kept_epoch})")
        axis.set(xlabel="epoch", title=metric)
        axis.legend()
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90, bbox_inches="tight")  # axis labels and legends whole
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path


# ----------------------------------------------------------------------------- localisation

def boxed_findings(boxes, samples: list[Sample], labels) -> list[tuple[Path, str, list[tuple]]]:
    """(image, class, the class's true boxes on it) for every boxed finding of `samples`, in a fixed order."""
    in_split = {s.path for s in samples}
    groups: dict[tuple, list] = defaultdict(list)
    for box in boxes:
        if box.path in in_split and box.label in labels:
            groups[(box.path, box.label)].append((box.x, box.y, box.w, box.h))
    return [(path, label, found) for (path, label), found in
            sorted(groups.items(), key=lambda item: (str(item[0][0]), item[0][1]))]


def localisation(folder: Path, index, split: str = "test") -> dict:
    """Pointing game and IoBB of the class activation maps against the split's true boxes, per class.

    For every (image, labelled class) with boxes: the CAM of that class (ONNX path, equal to Grad-CAM on
    the logit) mapped onto the original image; a hit when its maximum lies in one of the class's boxes;
    the hottest region as the detected box, scored by IoBB against the best-matching true box (the
    localisation table of the ChestX-ray8 paper).
    """
    from radiograph.cam import cam_kernel, score_names
    from radiograph.geometry import FeatureGrid
    from radiograph.imaging import load_for_model
    from radiograph.inference import OnnxModel
    from radiograph.localisation import localisation_summary, score_finding

    model = OnnxModel(folder)
    kernel = cam_kernel(model.folder / "model.onnx", model.card)
    grid = FeatureGrid.from_card(model.card)
    scores: dict[str, list] = defaultdict(list)
    for path, label, boxes in boxed_findings(index.boxes, index.splits[split], model.labels):
        image, geometry = load_for_model(path, model.size)[:2]
        features = model.run(image[None]).features[0]
        scores[label].append(score_finding(features, kernel, model.labels.index(label), geometry, boxes, grid))
    names = score_names(model.labels, model.card.heatmap_versus)
    explained = sorted(names[model.labels.index(label)] for label in scores)
    return {"split": split, "cam": "ONNX features @ Dense kernel (equal to Grad-CAM on each class's score)",
            "score": "each class's logit" if all(" - " not in n for n in explained) else "; ".join(explained),
            **localisation_summary(scores)}


def main(argv: list[str] | None = None) -> None:
    import train.objectives  # noqa: F401 - registers the custom loss for loading
    from radiograph.layers import load_model
    from train.datasets import read_dataset

    parser = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--models", type=Path, default=Path("models"), help="models root: the model is MODELS/<task>")
    parser.add_argument("--split", default="test", help="held-out split to score (default test)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--report", type=Path, help="report folder (default reports/<task>)")
    parser.add_argument("--localisation", action="store_true",
                        help="score class activation maps against the split's true boxes (needs model.onnx)")
    args = parser.parse_args(argv)
    spec = get_task(args.task)
    folder = args.models / spec.id
    card = ModelCard.load(folder)
    if args.localisation:
        index = read_dataset(spec.id, args.data, card.training["val_fraction"], card.training["seed"])
        result = localisation(folder, index, args.split)
        report = (args.report or Path("reports") / spec.id) / "localisation.json"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2))
        card.localisation = {key: value for key, value in result.items() if key != "per_class"} | {
            "per_class_pointing_game": {k: v["pointing_game"] for k, v in result["per_class"].items()},
            "command": "python -m train.evaluate " + " ".join(argv if argv is not None else sys.argv[1:]),
            "report": str(report)}
        card.save(folder)
        print(json.dumps(card.localisation, indent=2))
        return
    model = load_model(folder / "model.keras")
    index = read_dataset(spec.id, args.data, card.training["val_fraction"], card.training["seed"])
    size = card.size
    val_logits = predict_logits(model, index.splits["val"], size, args.batch_size)
    test_logits = predict_logits(model, index.splits[args.split], size, args.batch_size)
    result = calibrate_and_evaluate(spec, val_logits, index.splits["val"], test_logits, index.splits[args.split])
    written = write_report(spec, args.report or Path("reports") / spec.id, result, index.splits[args.split])
    print(json.dumps(result["metrics"], indent=2))
    print("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
