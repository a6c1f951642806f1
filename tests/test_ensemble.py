"""Ensemble combinations against hand-worked examples, and an ensemble model built from members."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from radiograph.layers import EnsembleCombine, load_model  # noqa: E402
from radiograph.registry import TASKS  # noqa: E402
from train.backbones import build_model  # noqa: E402
from train.ensemble import build_ensemble, f1_weights  # noqa: E402

A = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
B = np.array([[0.6, 0.3, 0.1], [0.5, 0.4, 0.1]], np.float32)
C = np.array([[0.2, 0.5, 0.3], [0.2, 0.7, 0.1]], np.float32)


def combine(method, members, weights=None, softmax=True):
    return np.asarray(EnsembleCombine(method, weights, softmax)([keras.ops.convert_to_tensor(m) for m in members]))


def test_mean():
    np.testing.assert_allclose(combine("mean", [A, B, C]), (A + B + C) / 3, atol=1e-6)


def test_f1_weighted_average_by_hand():
    weights = [[0.5, 0.2, 0.0], [0.5, 0.3, 0.5], [0.0, 0.5, 0.5]]  # [member][class]
    row = np.array([0.5 * 0.7 + 0.5 * 0.6, 0.2 * 0.2 + 0.3 * 0.3 + 0.5 * 0.5, 0.5 * 0.1 + 0.5 * 0.3])
    np.testing.assert_allclose(combine("f1", [A, B, C], weights)[0], row / row.sum(), atol=1e-6)
    np.testing.assert_allclose(combine("f1", [A, B, C], weights, softmax=False)[0], row, atol=1e-6)


def test_mixvote_majority_and_all_disagree():
    result = combine("mixvote", [A, B, C])
    # sample 0: votes class 0, 0, 1 -> class 0 wins with 2/3 of the votes
    assert result[0].argmax() == 0 and result[0][0] == pytest.approx(2 / 3, abs=1e-2)
    # sample 1: votes class 2, 0, 1 -> all disagree -> mean probabilities, whose argmax is class 1
    np.testing.assert_allclose(result[1], (A[1] + B[1] + C[1]) / 3, atol=1e-6)
    assert result[1].argmax() == 1
    np.testing.assert_allclose(result.sum(1), 1, atol=1e-5)


def test_mixvote_tie_is_broken_by_mean_probability():
    d = np.array([[0.1, 0.2, 0.7]], np.float32)
    e = np.array([[0.1, 0.1, 0.8]], np.float32)
    f = np.array([[0.9, 0.05, 0.05]], np.float32)
    g = np.array([[0.6, 0.1, 0.3]], np.float32)
    assert combine("mixvote", [d, e, f, g])[0].argmax() == 2  # 2-2 tie; class 2 has the larger mean


def test_bad_method_and_missing_weights():
    with pytest.raises(ValueError, match="known: mean, f1, mixvote"):
        EnsembleCombine("median")
    with pytest.raises(ValueError, match="weights"):
        EnsembleCombine("f1")


def test_f1_weights_come_from_validation_predictions():
    spec = TASKS["pneumonia"]
    targets = np.eye(2)[[0, 0, 1, 1]]
    perfect = targets * 0.8 + 0.1
    wrong_on_positives = np.eye(2)[[0, 0, 0, 0]] * 0.8 + 0.1
    weights = np.asarray(f1_weights(spec, [perfect, wrong_on_positives], targets, [[0.5, 0.5]] * 2))
    np.testing.assert_allclose(weights.sum(0), 1)
    assert weights[0, 1] == 1.0 and weights[1, 1] == 0.0  # only the first member finds positives


def test_ensemble_model_saves_and_loads_safely(tmp_path):
    spec = TASKS["knee"]
    members = [build_model(spec, "small_cnn", image_size=48) for _ in range(3)]
    model = build_ensemble(spec, members, "mixvote")
    images = np.random.default_rng(0).uniform(0, 255, (2, 48, 48, 1)).astype(np.float32)
    expected = model.predict(images, verbose=0)
    model.save(tmp_path / "ensemble.keras")
    loaded = load_model(tmp_path / "ensemble.keras")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    assert loaded.output.shape == (None, 5)
    with pytest.raises(ValueError, match="different input sizes"):
        build_ensemble(spec, [members[0], build_model(spec, "small_cnn", image_size=64)], "mean")
