"""The training input pipeline: dataset samples -> batches of (image, target) through the shared loader.

Every image goes through `radiograph.imaging.load_for_model`, the function the
app and the batch command call, so training and serving see identical tensors
(tests/test_pipeline.py proves it on PNG, JPEG, 16-bit and DICOM files).
Augmentation, when asked for, is applied after loading, on the batch tensors.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from radiograph.imaging import load_for_model
from train.datasets import Sample


def _load(path: bytes, size: np.ndarray) -> np.ndarray:
    return load_for_model(path.decode(), int(size))[0]


def image_dataset(samples: list[Sample], size: int, batch_size: int, shuffle: bool = False,
                  seed: int = 0) -> tf.data.Dataset:
    """Batches of float32 images [N, size, size, 1] (0-255) and float32 targets [N, classes]."""
    if not samples:
        raise ValueError("no samples to load")
    paths = [str(sample.path) for sample in samples]
    targets = np.asarray([sample.target for sample in samples], np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((paths, targets))
    if shuffle:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(path, target):
        image = tf.numpy_function(_load, [path, size], tf.float32, stateful=False)
        return tf.ensure_shape(image, (size, size, 1)), target

    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
