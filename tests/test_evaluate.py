"""Evaluation metrics against hand-worked values and independent definitions (not the scikit-learn calls the
implementation makes); thresholds and temperature scaling."""
import numpy as np
import pytest

from radiograph.registry import TASKS
from train.datasets import Sample
from radiograph.cards import UNREACHABLE_ABOVE
from train.evaluate import (METRICS, activate, evaluate, expected_calibration_error, fit_temperature,
                            operating_thresholds)


def pairwise_auc(truth, score) -> float:
    """ROC AUC by its definition: the share of (positive, negative) pairs ranked right, ties counting half."""
    truth, score = np.asarray(truth, bool), np.asarray(score, float)
    difference = score[truth][:, None] - score[~truth][None, :]
    return float(np.mean((difference > 0) + 0.5 * (difference == 0)))


def quadratic_kappa(truth, predicted, classes) -> float:
    """Cohen's kappa with quadratic weights, from its definition: 1 - sum(w O) / sum(w E)."""
    observed = np.zeros((classes, classes))
    np.add.at(observed, (truth, predicted), 1)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    i, j = np.indices((classes, classes))
    weights = (i - j) ** 2 / (classes - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def samples_for(targets, studies=None):
    return [Sample(f"{i}.png", tuple(int(v) for v in t), str(i), studies[i] if studies else None)
            for i, t in enumerate(targets)]


@pytest.mark.parametrize("task", list(TASKS))
def test_every_registry_metric_exists(task):
    assert set(TASKS[task].metrics) <= set(METRICS)


def test_knee_metrics_by_hand():
    truth = [0, 1, 2, 3, 4, 2]
    predicted = [0, 1, 2, 4, 4, 1]
    targets, probabilities = np.eye(5)[truth], np.eye(5)[predicted] * 0.9 + 0.02
    result = evaluate(TASKS["knee"], targets, probabilities, samples_for(targets))
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["mean_absolute_error"] == pytest.approx(2 / 6)
    assert result["balanced_accuracy"] == pytest.approx(np.mean([1, 1, 0.5, 0, 1]))
    assert result["quadratic_weighted_kappa"] == pytest.approx(quadratic_kappa(truth, predicted, 5))
    assert result["quadratic_weighted_kappa"] == pytest.approx(1 - 2 / 24)  # by hand: 16 sum wO = 1 + 1, 16 sum wE = 24
    assert result["confusion_matrix"][3] == [0, 0, 0, 0, 1]


def test_mura_study_level_is_the_mean_over_views():
    # two parts used: wrist = index 6 (columns 12, 13), elbow = index 0 (columns 0, 1)
    rows = [(13, 0.9, "s1"), (13, 0.2, "s1"), (12, 0.3, "s2"), (1, 0.6, "s3"), (0, 0.1, "s4"), (0, 0.7, "s4")]
    targets = np.zeros((6, 14))
    probabilities = np.zeros((6, 14))
    for i, (column, abnormal, _) in enumerate(rows):
        targets[i, column] = 1
        part = column // 2
        probabilities[i, 2 * part + 1], probabilities[i, 2 * part] = abnormal, 1 - abnormal
    samples = samples_for(targets, [r[2] for r in rows])
    result = evaluate(TASKS["mura"], targets, probabilities, samples)
    # studies s1..s4: truth 1, 0, 1, 0; P(abnormal) 0.55, 0.3, 0.6, 0.4: every positive above every negative
    assert result["study_auc"] == 1.0
    assert result["study_accuracy"] == 1.0 and result["study_cohen_kappa"] == 1.0
    # images: positives 0.9, 0.2, 0.6 against negatives 0.3, 0.1, 0.7: 3 + 1 + 2 of 9 pairs ranked right
    assert result["image_auc"] == pytest.approx(6 / 9)
    assert result["body_part_accuracy"]["image_body_part_accuracy"] == 1.0


def test_pneumonia_sensitivity_and_specificity():
    truth = np.array([1, 1, 1, 0, 0])
    score = np.array([0.9, 0.6, 0.4, 0.3, 0.7])
    targets, probabilities = np.eye(2)[truth], np.stack([1 - score, score], 1)
    result = evaluate(TASKS["pneumonia"], targets, probabilities, samples_for(targets))
    assert result["sensitivity"] == pytest.approx(2 / 3) and result["specificity"] == pytest.approx(1 / 2)
    assert result["auc"] == pytest.approx(4 / 6)  # positives 0.9, 0.6, 0.4 above negatives 0.3, 0.7: 2 + 1 + 1 of 6


def test_chest14_youden_thresholds_and_f1():
    rng = np.random.default_rng(0)
    targets = (rng.random((200, 14)) < 0.3).astype(float)
    probabilities = np.clip(targets * 0.3 + rng.random((200, 14)) * 0.7, 0, 1)
    thresholds, fallbacks = operating_thresholds(targets, probabilities)
    assert fallbacks == {}
    def youden(c, cut):  # sensitivity + specificity - 1 of "positive at or above cut"
        positive, called = targets[:, c] == 1, probabilities[:, c] >= cut
        return called[positive].mean() - called[~positive].mean()

    for c in (0, 7):  # the chosen cut reaches the largest Youden index over every cut the scores allow
        best = max(youden(c, cut) for cut in np.unique(probabilities[:, c]))
        assert youden(c, thresholds[c]) == pytest.approx(best)
    result = evaluate(TASKS["chest14"], targets, probabilities, samples_for(targets), thresholds)
    assert result["mean_auc"] == pytest.approx(np.mean([pairwise_auc(targets[:, c], probabilities[:, c])
                                                        for c in range(14)]))
    label = TASKS["chest14"].labels[3]
    called, truth = probabilities[:, 3] >= thresholds[3], targets[:, 3] == 1
    hits = np.sum(called & truth)
    assert result["per_class_f1_at_threshold"][label] == pytest.approx(2 * hits / (called.sum() + truth.sum()))


@pytest.mark.parametrize("head,classes", [("softmax", 3), ("sigmoid", 4)])
def test_temperature_scaling_recovers_an_overconfident_model(head, classes):
    rng = np.random.default_rng(1)
    true_logits = rng.normal(0, 1.5, (4000, classes))
    probabilities = activate(head, true_logits)
    if head == "softmax":
        targets = np.eye(classes)[[rng.choice(classes, p=p) for p in probabilities]]
    else:
        targets = (rng.random(probabilities.shape) < probabilities).astype(float)
    overconfident = true_logits * 3.0
    temperature, without_minimum = fit_temperature(head, overconfident, targets)
    assert len(temperature) == len(without_minimum) == (1 if head == "softmax" else classes)
    assert without_minimum == [None] * len(temperature)
    np.testing.assert_allclose(temperature, 3.0, rtol=0.15)
    before = expected_calibration_error(head, targets, activate(head, overconfident))
    after = expected_calibration_error(head, targets, activate(head, overconfident, temperature))
    assert after < before / 2


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_a_temperature_without_a_minimum_stays_1_and_the_card_says_why(head):
    """Validation logits that separate the classes perfectly (the retrained pneumonia model's validation split:
    AUC 1.0) lower the NLL all the way to T = 0: the fit would stop at its range's edge (0.050, the shipped
    chest14 card's Effusion temperature) and saturate every probability. That T stays 1; an ordinary column of the
    same model is still fitted."""
    from train.evaluate import temperature_record

    rng = np.random.default_rng(0)
    truth = rng.random(300) < 0.6
    separated = np.where(truth, rng.uniform(1, 6, 300), rng.uniform(-6, -1, 300))  # every positive above every negative
    noisy = rng.normal(0, 1.5, 300)
    noisy_truth = rng.random(300) < 1 / (1 + np.exp(-noisy / 3))  # logits three times too confident
    if head == "softmax":
        logits, targets = np.stack([-separated / 2, separated / 2], 1), np.eye(2)[truth.astype(int)]
    else:
        logits, targets = np.stack([separated, noisy], 1), np.stack([truth, noisy_truth], 1).astype(float)
    temperature, without_minimum = fit_temperature(head, logits, targets)
    assert temperature[0] == 1.0 and without_minimum[0] == "all_right"
    if head == "sigmoid":
        assert without_minimum[1] is None and 1.5 < temperature[1] < 6
    backwards = fit_temperature(head, -logits, targets)  # ranked backwards: the NLL falls as T grows
    assert backwards[0][0] == 1.0 and backwards[1][0] == "worse_than_none"
    spec = TASKS["pneumonia"] if head == "softmax" else TASKS["chest14"]
    record = temperature_record(spec, {"temperature": temperature.tolist(),
                                       "temperature_without_minimum": without_minimum + [None] * 12})
    name = "all classes" if head == "softmax" else spec.labels[0]
    assert list(record["kept_at_1"]) == [name] and "falls all the way to T = 0" in record["kept_at_1"][name]
    assert "kept_at_1" not in temperature_record(spec, {"temperature": [1.2], "temperature_without_minimum": [None]})


def test_thresholds_are_never_ones_only_a_saturated_probability_meets():
    """Saturated validation positives (1.0 and 0.9999999997, as the shipped chest14 card's Effusion and Edema got):
    the threshold is the middle of the cuts that reach the best Youden J, so an unsaturated positive meets it;
    a class whose every probability saturated falls back to 0.5, and says why."""
    negatives = np.linspace(0.01, 0.4, 20)
    saturated = np.r_[negatives, [1.0, 1.0, 0.9999999997, 1.0]]
    separated = np.r_[negatives, [0.9] * 4]
    targets = np.r_[np.zeros(20), np.ones(4)]
    everything = np.full(24, 1.0)
    everything[:20] = 1 - 1e-9  # every probability within 1e-6 of 1
    thresholds, fallbacks = operating_thresholds(np.c_[targets, targets, targets],
                                                 np.c_[saturated, separated, everything])
    assert thresholds[0] == pytest.approx((0.9999999997 + 0.4) / 2) and thresholds[0] < UNREACHABLE_ABOVE
    assert thresholds[1] == pytest.approx(0.65)  # between the highest negative (0.4) and the positives (0.9)
    for column, scores in ((0, saturated), (1, separated)):  # validation's best J kept
        assert ((scores >= thresholds[column]) == (targets == 1)).all()
    assert thresholds[2] == 0.5 and set(fallbacks) == {2} and "saturated" in fallbacks[2]
    one_kind, why = operating_thresholds(np.zeros((5, 1)), np.linspace(0, 1, 5)[:, None])
    assert one_kind == [0.5] and "one kind of label" in why[0]
