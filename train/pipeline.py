"""The training input pipeline: dataset samples -> batches of (image, target) through the shared loader.

Every image goes through `radiograph.imaging.load_for_model`, the function the
app and the batch command call, so training and serving see identical tensors
(tests/test_pipeline.py proves it on PNG, JPEG, 16-bit and DICOM files).
Augmentation follows the task's policy (radiograph.registry.Augmentation) and
runs on the batch tensors after loading, for training only: brightness and
contrast, small rotation, shift and zoom with black fill (like the letterbox
padding), and horizontal flips only where the anatomy allows them.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from radiograph.imaging import load_for_model
from radiograph.registry import Augmentation
from train.datasets import Sample


def _load(path: bytes, size: np.ndarray) -> np.ndarray:
    return load_for_model(path.decode(), int(size))[0]


def augmenter(policy: Augmentation, seed: int) -> keras.Sequential:
    """The task's augmentation as Keras layers (deterministic for a seed)."""
    fill = {"fill_mode": "constant", "fill_value": 0.0}
    steps = [
        keras.layers.RandomRotation(policy.rotation_degrees / 360.0, seed=seed, **fill),
        keras.layers.RandomTranslation(policy.shift_fraction, policy.shift_fraction, seed=seed + 1, **fill),
        keras.layers.RandomZoom(policy.zoom_fraction, seed=seed + 2, **fill),
        keras.layers.RandomBrightness(policy.brightness_delta, value_range=(0, 255), seed=seed + 3),
        keras.layers.RandomContrast(policy.contrast_range[1] - 1.0, value_range=(0, 255), seed=seed + 4),
    ]
    if policy.horizontal_flip:
        steps.insert(0, keras.layers.RandomFlip("horizontal", seed=seed + 5))
    return keras.Sequential(steps, name="augmentation")


def image_dataset(samples: list[Sample], size: int, batch_size: int, shuffle: bool = False, seed: int = 0,
                  augmentation: Augmentation | None = None, augment=None, cache: bool = False) -> tf.data.Dataset:
    """Batches of float32 images [N, size, size, 1] (0-255) and float32 targets [N, classes].

    `cache` keeps the decoded, letterboxed images in memory after the first pass (an epoch then
    costs no decoding); augmentation still differs every epoch.
    """
    if not samples:
        raise ValueError("no samples to load")
    paths = [str(sample.path) for sample in samples]
    targets = np.asarray([sample.target for sample in samples], np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((paths, targets))

    def load(path, target):
        image = tf.numpy_function(_load, [path, size], tf.float32, stateful=False)
        return tf.ensure_shape(image, (size, size, 1)), target

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if augmentation is not None:
        augment = augment or augmenter(augmentation, seed)  # a resumable run passes its own (train.checkpoint)
        dataset = dataset.map(lambda images, y: (augment(images, training=True), y),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
