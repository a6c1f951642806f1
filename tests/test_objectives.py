import numpy as np
import pytest

from radiograph.registry import TASKS
from train.objectives import WeightedBinaryCrossentropy, class_weights, positive_fraction


def test_class_weights_by_hand():
    weights = class_weights([60, 30, 10])  # N=100, K=3
    assert weights == pytest.approx({0: 100 / 180, 1: 100 / 90, 2: 100 / 30})
    assert class_weights([5, 0, 5]) == {0: 1.0, 1: 0.0, 2: 1.0}  # absent class: no weight, others balanced
    with pytest.raises(ValueError):
        class_weights([0, 0])


def test_weighted_bce_by_hand():
    targets = np.array([[1, 0], [0, 0], [0, 1], [0, 0]], np.float32)
    fraction = positive_fraction(targets)
    np.testing.assert_allclose(fraction, [0.25, 0.25])
    predictions = np.array([[0.8, 0.3], [0.1, 0.2], [0.4, 0.6], [0.3, 0.1]], np.float32)
    expected = []
    for y, p in zip(targets, predictions):
        terms = [-(0.75 * y[c] * np.log(p[c]) + 0.25 * (1 - y[c]) * np.log(1 - p[c])) for c in range(2)]
        expected.append(np.mean(terms))
    loss = WeightedBinaryCrossentropy(fraction)
    assert float(loss(targets, predictions)) == pytest.approx(np.mean(expected), rel=1e-5)
    restored = WeightedBinaryCrossentropy.from_config(loss.get_config())
    assert float(restored(targets, predictions)) == pytest.approx(np.mean(expected), rel=1e-5)


def test_weighted_bce_balances_positives_and_negatives():
    """With the course's weights, total positive and negative contributions match at p = 0.5."""
    targets = np.zeros((100, 1), np.float32)
    targets[:10] = 1
    loss = WeightedBinaryCrossentropy(positive_fraction(targets))
    half = np.full((100, 1), 0.5, np.float32)
    positives = float(loss(targets[:10], half[:10])) * 10
    negatives = float(loss(targets[10:], half[10:])) * 90
    assert positives == pytest.approx(negatives, rel=1e-5)


def test_mura_is_monitored_on_the_auc_of_its_abnormality():
    from sklearn.metrics import roc_auc_score

    from train.objectives import monitored_auc

    rng = np.random.default_rng(0)
    truth = np.zeros((40, 14), np.float32)
    truth[np.arange(40), rng.integers(0, 14, 40)] = 1
    predicted = rng.dirichlet(np.ones(14), 40).astype(np.float32)
    metric = monitored_auc(TASKS["mura"])
    metric.update_state(truth, predicted)
    expected = roc_auc_score(truth[:, 1::2].sum(1), predicted[:, 1::2].sum(1))
    assert float(metric.result()) == pytest.approx(expected, abs=0.01)  # keras AUC: 200 thresholds


def test_abnormality_auc_records_its_columns_and_reads_configs_without_them():
    import keras

    from train.objectives import AbnormalityAUC, monitored_auc

    metric = monitored_auc(TASKS["mura"])
    assert metric.get_config()["columns"] == list(TASKS["mura"].decision.positive_columns())
    legacy = {"module": "train.objectives", "class_name": "AbnormalityAUC",
              "registered_name": "radiograph>AbnormalityAUC",
              "config": {"name": "auc", "dtype": "float32", "num_thresholds": 200, "curve": "ROC",
                         "summation_method": "interpolation", "multi_label": False, "num_labels": None,
                         "label_weights": None, "from_logits": False}}  # as models/mura/model.keras stores it
    old = keras.saving.deserialize_keras_object(legacy)
    assert isinstance(old, AbnormalityAUC) and old.columns is None
    rng = np.random.default_rng(1)
    truth = np.zeros((40, 14), np.float32)
    truth[np.arange(40), rng.integers(0, 14, 40)] = 1
    predicted = rng.dirichlet(np.ones(14), 40).astype(np.float32)
    for m in (old, metric):
        m.update_state(truth, predicted)
    assert float(old.result()) == pytest.approx(float(metric.result()))  # no columns: the odd ones, MURA's layout
