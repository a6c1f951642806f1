"""Grad-CAM on the Keras graph: equal to the ONNX CAM path, non-zero when saturated, Grad-CAM++ by hand."""
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import TINY_SIZE  # noqa: E402
from radiograph.cam import class_activation_map, dense_kernel, normalise  # noqa: E402
from radiograph.gradcam import GradCam  # noqa: E402
from radiograph.inference import OnnxModel  # noqa: E402
from radiograph.layers import load_model  # noqa: E402
from radiograph.registry import TASKS  # noqa: E402


@pytest.mark.parametrize("task", list(TASKS))
def test_keras_gradcam_equals_the_onnx_path_for_every_class(tiny_models, task):
    models, _ = tiny_models
    folder = models / task
    model = load_model(folder / "model.keras")
    images = np.random.default_rng(2).uniform(0, 255, (2, TINY_SIZE, TINY_SIZE, 1)).astype(np.float32)
    features = OnnxModel(folder, device="cpu").run(images).features
    kernel = dense_kernel(folder / "model.onnx", len(TASKS[task].labels))
    gradcam = GradCam(model)
    for c in range(len(TASKS[task].labels)):
        keras_maps = gradcam(images, c)
        for n in range(len(images)):
            expected, flat = normalise(class_activation_map(features[n], kernel, c))
            got, got_flat = normalise(keras_maps[n])
            assert flat == got_flat
            np.testing.assert_allclose(got, expected, atol=1e-4)


def hand_model(logit_scale):
    """features = the 2x2x2 input itself; logits = GAP(features) @ W; softmax."""
    image = keras.Input((2, 2, 2))
    features = keras.layers.ReLU(name="features")(image)  # the inputs are >= 0: features equal them
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    logits = keras.layers.Dense(2, use_bias=False, name="logits")(pooled)
    model = keras.Model(image, keras.layers.Activation("softmax")(logits))
    model.get_layer("logits").set_weights([np.array([[1.0, -2.0], [3.0, 0.5]], np.float32) * logit_scale])
    return model


def test_gradcam_plus_plus_matches_a_hand_computation():
    x = np.array([[[[1.0, 0.0], [2.0, 1.0]], [[0.0, 3.0], [1.0, 1.0]]]], np.float32)  # [1, 2, 2, 2]
    W = np.array([[1.0, -2.0], [3.0, 0.5]])
    for c in (0, 1):
        g = W[:, c] / 4.0  # d logit_c / d A_k(i, j), the same at every position
        total = x[0].sum(axis=(0, 1))  # sum over positions of each channel
        denominator = 2 * g ** 2 + total * g ** 3  # zero for class 1, channel 0: alpha is then taken as 0
        alpha = np.divide(g ** 2, denominator, out=np.zeros_like(g), where=denominator != 0)
        weights = 4 * alpha * np.maximum(g, 0)
        expected = np.maximum(x[0] @ weights, 0)
        got = GradCam(hand_model(1.0), method="gradcam++")(x, c)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
        plain = GradCam(hand_model(1.0))(x, c)[0]
        np.testing.assert_allclose(plain, np.maximum(x[0] @ g, 0), rtol=1e-5, atol=1e-7)


def test_a_saturated_logit_still_gives_a_map():
    x = np.array([[[[1.0, 0.0], [2.0, 1.0]], [[0.0, 3.0], [1.0, 1.0]]]], np.float32)
    model = hand_model(1000.0)  # softmax saturates: its gradient is exactly 0 in float32
    assert float(np.asarray(model(x))[0].max()) == 1.0
    assert GradCam(model)(x, 0)[0].max() > 0


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="gradcam"):
        GradCam(hand_model(1.0), method="scorecam")


def test_ensemble_maps_follow_the_heatmap_rule():
    from radiograph.gradcam import member_weights
    from radiograph.layers import EnsembleCombine

    # 3 members, 2 images, 3 classes; image 0: votes 0, 0, 2; image 1: votes 1, 0, 2 (all disagree)
    p = np.array([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]],
                  [[0.5, 0.4, 0.1], [0.7, 0.2, 0.1]],
                  [[0.2, 0.2, 0.6], [0.1, 0.2, 0.7]]])
    classes = np.array([0, 1])
    mix = member_weights(EnsembleCombine("mixvote"), p, classes)
    np.testing.assert_array_equal(mix, [[1, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(member_weights(EnsembleCombine("mixvote"), p, np.array([1, 1]))[0], [1, 1, 1])
    f1 = EnsembleCombine("f1", [[0.5, 0.2, 0.1], [0.3, 0.3, 0.3], [0.2, 0.5, 0.6]])
    np.testing.assert_allclose(member_weights(f1, p, classes), [[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    np.testing.assert_array_equal(member_weights(EnsembleCombine("mean"), p, classes), np.ones((2, 3)))


def test_gradcam_runs_on_an_ensemble_model(tiny_models):
    from radiograph.registry import TASKS
    from train.ensemble import build_ensemble

    models, _ = tiny_models
    member = load_model(models / "knee" / "model.keras")
    ensemble = build_ensemble(TASKS["knee"], [member, member], "mixvote")
    images = np.random.default_rng(3).uniform(0, 255, (2, TINY_SIZE, TINY_SIZE, 1)).astype(np.float32)
    maps = GradCam(ensemble)(images, [0, 3])
    single, _ = normalise(GradCam(member)(images, [0, 3])[0])
    assert maps.shape == (2, TINY_SIZE, TINY_SIZE) and 0 <= maps.min() and maps.max() <= 1 + 1e-6
    import cv2
    np.testing.assert_allclose(maps[0], cv2.resize(single, (TINY_SIZE, TINY_SIZE)), atol=1e-5)  # two equal members


def test_explainer_paths_agree_and_say_which_ran(tiny_models):
    from radiograph.explain import Explainer

    models, _ = tiny_models
    model = OnnxModel(models / "mura", device="cpu")
    image = np.random.default_rng(4).uniform(0, 255, (1, TINY_SIZE, TINY_SIZE, 1)).astype(np.float32)
    features = model.run(image).features[0]
    keras_path, onnx_path = Explainer(model, "keras"), Explainer(model, "onnx")
    assert (keras_path.path, onnx_path.path) == ("keras-gradcam", "onnx-cam")
    assert Explainer(model).path == "keras-gradcam"  # TensorFlow is installed here
    a, flat_a = keras_path.heatmap(image, features, 5)
    b, flat_b = onnx_path.heatmap(image, features, 5)
    assert flat_a == flat_b
    np.testing.assert_allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="needs TensorFlow"):
        Explainer(model, "onnx", method="gradcam++")


def test_a_class_scored_against_its_alternative_is_its_log_odds():
    from radiograph.cam import score_matrix, score_names

    labels = list(TASKS["mura"].labels)
    scores = score_matrix(labels, TASKS["mura"].heatmap_versus)
    logits = np.random.default_rng(0).normal(size=(3, len(labels))).astype(np.float32)
    a, n = labels.index("wrist_abnormal"), labels.index("wrist_normal")
    np.testing.assert_allclose((logits @ scores)[:, a], logits[:, a] - logits[:, n], rtol=1e-6)
    assert score_names(labels, TASKS["mura"].heatmap_versus)[a] == "logit(wrist_abnormal) - logit(wrist_normal)"
    knee = TASKS["knee"]
    assert score_names(knee.labels, knee.heatmap_versus)[2] == "logit(Minimal)"  # KL grades: the logit itself
    x = np.array([[[[1.0, 0.0], [0.0, 2.0]], [[0.5, 1.0], [0.0, 0.0]]]], np.float32)  # the hand model's features
    against = GradCam(hand_model(1.0), scores=np.array([[1, -1], [-1, 1]], np.float32))(x, 0)[0]
    w = np.array([[1.0, -2.0], [3.0, 0.5]])  # d(logit0 - logit1)/d features = (W[:, 0] - W[:, 1]) / 4
    np.testing.assert_allclose(against, np.maximum(x[0] @ (w[:, 0] - w[:, 1]) / 4, 0), rtol=1e-5)


@pytest.mark.parametrize("task", ["mura", "chest14"])
def test_every_class_at_once_equals_one_class_at_a_time(tiny_models, task):
    """GradCam.every_class (one forward pass, a batch Jacobian) gives each class's map as GradCam(image, c) does,
    for Grad-CAM and Grad-CAM++, on a mirror-averaged model (mura) and a plain one, and on an ensemble."""
    from train.ensemble import build_ensemble

    models, _ = tiny_models
    model = load_model(models / task / "model.keras")
    image = np.random.default_rng(5).uniform(0, 255, (1, TINY_SIZE, TINY_SIZE, 1)).astype(np.float32)
    classes = len(TASKS[task].labels)
    for network in (model, build_ensemble(TASKS[task], [model, model], "mean")):
        for method in ("gradcam", "gradcam++"):
            gradcam = GradCam(network, method)
            every = gradcam.every_class(image)
            one_at_a_time = np.concatenate([gradcam(image, c) for c in range(classes)])
            assert every.shape == one_at_a_time.shape and every.shape[0] == classes
            np.testing.assert_allclose(every, one_at_a_time, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- where a map's cells sit on the input

def _support_centre(features_model, size, i, j):
    """Centre of the input pixels that cell (i, j) of a positive, linear network depends on."""
    import tensorflow as tf

    x = tf.constant(np.ones((1, size, size, 1), np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(features_model(x)[0, i, j])
    rows, columns = np.nonzero(tape.gradient(value, x).numpy()[0, :, :, 0])
    return (rows.min() + rows.max() + 1) / 2, (columns.min() + columns.max() + 1) / 2


def test_feature_grid_puts_each_cell_on_its_receptive_field_centre():
    from radiograph.geometry import feature_grid

    layers, ones = keras.layers, "ones"
    image = keras.Input((256, 256, 1), name="image")
    x = layers.ZeroPadding2D(((0, 1), (0, 1)))(image)  # MobileNet's correct_pad for an even input
    x = layers.DepthwiseConv2D(3, strides=2, padding="valid", depthwise_initializer=ones)(x)
    x = layers.Conv2D(1, 3, strides=2, padding="same", kernel_initializer=ones)(x)  # TF: the odd pad goes after
    x = layers.Conv2D(1, 5, dilation_rate=2, padding="same", kernel_initializer=ones)(x)
    x = layers.AveragePooling2D(2)(x)
    x = layers.Conv2D(1, 3, strides=2, padding="valid", kernel_initializer=ones, name="features")(x)
    model = keras.Model(image, x)
    grid = feature_grid(model.get_config())
    assert grid.stride == (16.0, 16.0) and grid.first != (8.0, 8.0)  # not the nominal tiling
    for i, j in [(6, 6), (7, 6), (6, 8)]:  # inner cells: their receptive fields lie inside the image
        assert _support_centre(model, 256, i, j) == (grid.first[0] + 16 * i, grid.first[1] + 16 * j)


def test_feature_grid_of_a_mirror_averaged_map_is_the_mean_of_both_views():
    from radiograph.geometry import feature_grid
    from radiograph.layers import MirrorAverage, MirrorPair

    image = keras.Input((64, 64, 1), name="image")
    x = keras.layers.Conv2D(1, 3, strides=2, padding="same")(MirrorPair()(image))
    x = MirrorAverage(name="features")(keras.layers.Conv2D(1, 3, strides=2, padding="same")(x))
    grid = feature_grid(keras.Model(image, x).get_config())
    # one view's column j is centred at 3.5 + 4j (1.5 px right of nominal); the mirror's at 64 - (3.5 + 4(15 - j))
    assert grid.first == (3.5, (3.5 + 64 - 3.5 - 4 * 15) / 2) and grid.stride == (4.0, 4.0)


def test_feature_grid_of_stitched_mirror_averaged_views_is_where_each_cell_looks():
    """StitchViews -> MirrorPair -> network -> MirrorAverage(offset) -> Stitch: each cell of the map depends on
    input pixels (of one shifted view and its mirror) centred where the grid says."""
    from radiograph.geometry import feature_grid
    from radiograph.layers import MirrorAverage, MirrorPair, Stitch, StitchViews

    layers, ones = keras.layers, "ones"
    image = keras.Input((128, 128, 1), name="image")
    x = MirrorPair()(StitchViews(2)(image))
    x = layers.Conv2D(1, 3, strides=2, padding="same", kernel_initializer=ones)(x)
    x = layers.Conv2D(1, 3, strides=2, padding="same", kernel_initializer=ones)(x)
    x = layers.Conv2D(1, 3, strides=2, padding="same", kernel_initializer=ones)(x)  # stride 8, 16 cells a row
    model = keras.Model(image, Stitch(2, name="features")(MirrorAverage(1)(x)))
    grid = feature_grid(model.get_config())
    assert grid.stride == (4.0, 4.0)
    assert grid.first[1] == (128 - 4.0 * (2 * 17 - 1)) / 2  # 34 columns, centred on the input
    for i, j in [(12, 14), (13, 15), (16, 17), (17, 20)]:  # both views' receptive fields inside the image
        assert _support_centre(model, 128, i, j) == (grid.first[0] + 4 * i, grid.first[1] + 4 * j)


def test_stitch_needs_a_shift_of_a_quarter_of_the_stride():
    from radiograph.geometry import feature_grid
    from radiograph.layers import Stitch, StitchViews

    image = keras.Input((32, 32, 1), name="image")
    x = keras.layers.Conv2D(1, 3, strides=2, padding="same")(StitchViews(3)(image))
    with pytest.raises(ValueError, match="a quarter of the stride"):
        feature_grid(keras.Model(image, Stitch(3, name="features")(x)).get_config())


def test_feature_grid_refuses_a_layer_of_unknown_geometry():
    from radiograph.geometry import feature_grid

    image = keras.Input((32, 32, 1), name="image")
    x = keras.layers.UpSampling2D(2)(keras.layers.Conv2D(1, 3, strides=2, padding="same")(image))
    with pytest.raises(ValueError, match="UpSampling2D"):
        feature_grid(keras.Model(image, keras.layers.Conv2D(1, 1, name="features")(x)).get_config())
