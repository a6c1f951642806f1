"""Training from a prepared cache (train.prepare): the splits, and batches streamed from the shards.

    python -m train chest14 --cache /data/cache/chest14-320

`stream` reads a split's shards in blocks of images with plain file reads (no memory map and no `.cache()`), so
what a training process holds is a few blocks, the shuffle buffer and the prefetched batches, whatever the size of
the dataset. Training order: the shard order is shuffled every epoch, `interleave` reads SHARDS_IN_FLIGHT shards
at once, and a bounded buffer shuffles images across them. The batches then go through the same augmentation as
train.pipeline (`augmenter`, training only); validation and test read in file order, unaugmented.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radiograph.registry import Augmentation
from train.datasets import DatasetIndex, Sample
from train.prepare import DTYPE, CacheError, read_manifest

SHUFFLE_BUFFER = 1024  # images; at 384 px float16 this is 300 MB
SHARDS_IN_FLIGHT = 4  # shards interleaved at once in training order
READ_BLOCK = 32  # images per file read


@dataclass(frozen=True)
class Cache:
    """A finished cache folder and its manifest (train.prepare); checked for presence and file sizes on open.
    The full sha256 check is `python -m train.prepare TASK --out CACHE --verify`."""

    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: Path, task: str | None = None, size: int | None = None) -> Cache:
        root = Path(root)
        manifest = read_manifest(root)
        if task is not None and manifest["task"] != task:
            raise CacheError(f"{root} is a {manifest['task']} cache; this run trains {task}")
        if size is not None and manifest["size"] != size:
            raise CacheError(f"{root} holds {manifest['size']} px images but the model takes {size} px: prepare a "
                             f"cache with --size {size}, or train at --image-size {manifest['size']}")
        cache = cls(root, manifest)
        for shard in manifest["shards"]:
            expected = shard["count"] * cache.size * cache.size * DTYPE.itemsize
            images = root / shard["files"]["images"]
            if not images.is_file() or images.stat().st_size < expected:
                raise CacheError(f"{images} is missing or shorter than its {shard['count']} images; run python -m "
                                 f"train.prepare {manifest['task']} --out {root} --verify")
        return cache

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def task(self) -> str:
        return self.manifest["task"]

    def shards(self, split: str) -> list[dict]:
        return [shard for shard in self.manifest["shards"] if shard["split"] == split]

    def count(self, split: str) -> int:
        return int(self.manifest["counts"].get(split, 0))

    def _labels(self, split: str, field: str) -> np.ndarray:
        parts = []
        for shard in self.shards(split):
            with np.load(self.root / shard["files"]["labels"]) as labels:
                parts.append(labels[field])
        return np.concatenate(parts) if parts else np.zeros((0,))

    def targets(self, split: str) -> np.ndarray:
        """float64 [N, classes]: the split's targets in cache order."""
        return self._labels(split, "targets").astype(np.float64).reshape(-1, len(self.manifest["labels"]))

    def samples(self, split: str) -> list[Sample]:
        """The split's samples in cache order (paths under the dataset root the cache was prepared from)."""
        root = Path(self.manifest["dataset"]["root"])
        targets = self._labels(split, "targets")
        return [Sample(root / path, tuple(int(v) for v in target), str(patient), str(study) or None)
                for path, target, patient, study in zip(self._labels(split, "paths"), targets,
                                                        self._labels(split, "patients"), self._labels(split, "studies"))]

    def index(self) -> DatasetIndex:
        """The cache's splits as a DatasetIndex (no boxes: those stay in the dataset folder)."""
        return DatasetIndex(self.task, Path(self.manifest["dataset"]["root"]), tuple(self.manifest["labels"]),
                            {split: self.samples(split) for split in self.manifest["counts"]},
                            notes=[f"read from the cache {self.root}"])


def read_blocks(images_path: str, labels_path: str, block: int = READ_BLOCK):
    """(images float16 [b, size, size], targets float32 [b, classes]) of one shard, `block` images per read."""
    with np.load(labels_path) as labels:
        targets = labels["targets"].astype(np.float32)
    with open(images_path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        if fortran or dtype != DTYPE or shape[0] != len(targets):
            raise CacheError(f"{images_path} holds {dtype}{list(shape)}, not the manifest's float16 images")
        per_image = shape[1] * shape[2] * DTYPE.itemsize
        for start in range(0, shape[0], block):
            n = min(block, shape[0] - start)
            data = handle.read(n * per_image)
            if len(data) != n * per_image:
                raise CacheError(f"{images_path} ends early (image {start + len(data) // per_image} of {shape[0]})")
            yield np.frombuffer(data, DTYPE).reshape(n, shape[1], shape[2]), targets[start:start + n]


def stream(cache: Cache, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
           augmentation: Augmentation | None = None, shuffle_buffer: int = SHUFFLE_BUFFER,
           augment=None):
    """Batches of float32 images [N, size, size, 1] (0-255) and float32 targets [N, classes] of one split, streamed
    from the shards (see the module docstring); one pass is one epoch, with a known number of batches."""
    import tensorflow as tf

    from train.pipeline import augmenter

    shards = cache.shards(split)
    if not shards:
        raise CacheError(f"the cache {cache.root} holds no {split} images")
    size, classes = cache.size, len(cache.manifest["labels"])
    files = tf.data.Dataset.from_tensor_slices(([str(cache.root / s["files"]["images"]) for s in shards],
                                                [str(cache.root / s["files"]["labels"]) for s in shards]))
    if shuffle:
        files = files.shuffle(len(shards), seed=seed, reshuffle_each_iteration=True)
    signature = (tf.TensorSpec((None, size, size), tf.float16), tf.TensorSpec((None, classes), tf.float32))

    def blocks(images_path, labels_path):
        return tf.data.Dataset.from_generator(read_blocks, args=(images_path, labels_path),
                                              output_signature=signature).unbatch()

    if shuffle:  # SHARDS_IN_FLIGHT shards read at once, their images alternating (in a seeded, repeatable order)
        dataset = files.interleave(blocks, cycle_length=SHARDS_IN_FLIGHT, block_length=1,
                                   num_parallel_calls=SHARDS_IN_FLIGHT, deterministic=True)
    else:  # one shard after another: the cache's order
        dataset = files.flat_map(blocks)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(lambda images, y: (tf.cast(images, tf.float32)[..., None], y),
                                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augmentation is not None:
        augment = augment or augmenter(augmentation, seed)  # a resumable run passes its own (train.checkpoint)
        dataset = dataset.map(lambda images, y: (augment(images, training=True), y),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(math.ceil(cache.count(split) / batch_size)))
    return dataset.prefetch(tf.data.AUTOTUNE)
