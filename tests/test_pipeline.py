"""Train/serve equality: the tf.data training pipeline and the serving loader give the identical tensor."""
import io

import numpy as np
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from radiograph.imaging import load_for_model
from train.datasets import Sample

tf = pytest.importorskip("tensorflow")
from train.pipeline import image_dataset  # noqa: E402


def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for name, array in [("gray.png", rng.integers(0, 256, (90, 130), dtype=np.uint8)),
                        ("deep.png", rng.integers(0, 65535, (150, 100), dtype=np.uint16)),
                        ("photo.jpeg", rng.integers(0, 256, (120, 120, 3), dtype=np.uint8))]:
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, "PNG" if name.endswith("png") else "JPEG")
        (tmp_path / name).write_bytes(buffer.getvalue())
        paths.append(tmp_path / name)
    return paths + [__import__("pathlib").Path(get_testdata_file("CT_small.dcm"))]


def test_training_pipeline_equals_serving_loader(tmp_path):
    paths = files(tmp_path)
    samples = [Sample(path, (1, 0), str(i)) for i, path in enumerate(paths)]
    batches = list(image_dataset(samples, size=96, batch_size=3))
    images = np.concatenate([b[0].numpy() for b in batches])
    targets = np.concatenate([b[1].numpy() for b in batches])
    assert images.shape == (4, 96, 96, 1) and images.dtype == np.float32
    np.testing.assert_array_equal(targets, [[1, 0]] * 4)
    for path, trained in zip(paths, images):
        served = load_for_model(path, 96)[0]
        np.testing.assert_array_equal(trained, served)


def test_training_pipeline_on_phantoms(phantom_root):
    from train.datasets import read_dataset

    index = read_dataset("knee", phantom_root / "knee")
    batch_images, batch_targets = next(iter(image_dataset(index.splits["train"], 224, 8, shuffle=True, seed=1)))
    assert batch_images.shape == (8, 224, 224, 1) and batch_targets.shape == (8, 5)
    assert 0 <= float(tf.reduce_min(batch_images)) and float(tf.reduce_max(batch_images)) <= 255


def test_augmentation_follows_the_task_policy(phantom_root):
    from radiograph.registry import TASKS
    from train.datasets import read_dataset
    from train.pipeline import augmenter

    def kinds(task):
        return [type(layer).__name__ for layer in augmenter(TASKS[task].augmentation, 0).layers]

    assert "RandomFlip" not in kinds("chest14") and "RandomFlip" not in kinds("pneumonia")
    assert "RandomFlip" in kinds("knee") and "RandomRotation" in kinds("chest14")
    samples = read_dataset("knee", phantom_root / "knee").splits["train"][:8]
    plain = next(iter(image_dataset(samples, 96, 8)))[0].numpy()
    runs = [next(iter(image_dataset(samples, 96, 8, augmentation=TASKS["knee"].augmentation, seed=s)))[0].numpy()
            for s in (1, 1, 2)]
    assert not np.array_equal(runs[0], plain)  # augmented
    np.testing.assert_array_equal(runs[0], runs[1])  # deterministic for a seed
    assert not np.array_equal(runs[0], runs[2])
    assert runs[0].min() >= 0 and runs[0].max() <= 255
