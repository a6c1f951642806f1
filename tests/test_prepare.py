"""train.prepare and train.cache: the cache holds the shared loader's tensors, resumes, verifies, and trains."""
import json
import shutil

import numpy as np
import pytest

from radiograph.imaging import load_for_model
from train.datasets import read_dataset
from train.phantoms import generate
from train.prepare import CacheError, prepare, shard_files, verify
from train.prepare import main as prepare_main

SIZE = 64
SHARD = 16


@pytest.fixture(scope="module")
def chest_cache(tmp_path_factory, phantom_root):
    out = tmp_path_factory.mktemp("cache") / "chest14"
    manifest = prepare("chest14", phantom_root / "chest14", SIZE, out, workers=2, shard_size=SHARD,
                       progress=lambda *_: None)
    return out, manifest


def test_cache_holds_the_shared_loaders_tensors_and_the_datasets_splits(chest_cache, phantom_root):
    out, manifest = chest_cache
    index = read_dataset("chest14", phantom_root / "chest14")
    assert manifest["counts"] == {split: len(samples) for split, samples in index.splits.items()}
    assert manifest["loader"]["function"] == "radiograph.imaging.load_for_model"
    assert len(manifest["loader"]["module_sha256"]) == 64
    assert manifest["written"] and not manifest["kept"]
    first = next(s for s in manifest["shards"] if s["split"] == "train")
    images = np.load(out / first["files"]["images"])
    labels = np.load(out / first["files"]["labels"])
    for i, sample in enumerate(index.splits["train"][:first["count"]]):
        tensor = load_for_model(sample.path, SIZE).tensor[..., 0]
        assert np.array_equal(images[i], tensor.astype(np.float16))  # float16 of the loader's tensor, bit for bit
        assert np.abs(images[i].astype(np.float32) - tensor).max() <= 0.0625  # half a float16 step below 256
        assert tuple(labels["targets"][i]) == sample.target
        assert labels["patients"][i] == sample.patient and labels["split"][i] == "train"
        assert (index.root / labels["paths"][i]).resolve() == sample.path.resolve()
    # the letterbox interpolates: the tensor is not 8-bit, so uint8 would have rounded it
    assert np.any(tensor != np.round(tensor))


def test_an_interrupted_preparation_resumes_keeping_the_finished_shards(tmp_path, phantom_root, monkeypatch):
    import train.prepare as module

    real, calls = module.write_shard, []

    def interrupted(*args):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run stops after two shards
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(module, "write_shard", interrupted)
    out = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        prepare("chest14", phantom_root / "chest14", SIZE, out, workers=1, shard_size=SHARD, progress=lambda *_: None)
    with pytest.raises(CacheError, match="did not finish"):
        verify(out)
    (out / ".test-00000.images.npy.partial").write_bytes(b"half a shard")  # what a killed worker leaves
    before = {name: (out / shard_files(name)["images"]).stat().st_mtime_ns for name in calls}
    monkeypatch.setattr(module, "write_shard", real)
    manifest = prepare("chest14", phantom_root / "chest14", SIZE, out, workers=1, shard_size=SHARD,
                       progress=lambda *_: None)
    assert manifest["kept"] == sorted(calls)
    assert set(manifest["written"]) == {s["name"] for s in manifest["shards"]} - set(calls)
    assert {name: (out / shard_files(name)["images"]).stat().st_mtime_ns for name in calls} == before
    verify(out)


def test_verification_catches_a_corrupted_shard_and_a_rerun_repairs_it(chest_cache, tmp_path, phantom_root, capsys):
    source, _ = chest_cache
    out = tmp_path / "cache"
    shutil.copytree(source, out)
    victim = out / shard_files("val-00000")["images"]
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF  # one pixel of the last image
    victim.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="val-00000.images.npy does not match its sha256"):
        verify(out)
    with pytest.raises(SystemExit) as stopped:
        prepare_main(["chest14", "--out", str(out), "--verify"])
    assert stopped.value.code == 2 and "failed verification" in capsys.readouterr().err
    manifest = prepare("chest14", phantom_root / "chest14", SIZE, out, workers=1, shard_size=SHARD,
                       progress=lambda *_: None)
    assert manifest["written"] == ["val-00000"]
    verify(out)


def test_a_cache_of_another_plan_is_refused(chest_cache, tmp_path, phantom_root):
    source, _ = chest_cache
    out = tmp_path / "cache"
    shutil.copytree(source, out)
    with pytest.raises(CacheError, match="another plan .*size"):
        prepare("chest14", phantom_root / "chest14", SIZE * 2, out, workers=1, shard_size=SHARD)


def test_the_stream_reads_every_image_once_validation_in_order(chest_cache):
    tf = pytest.importorskip("tensorflow")
    from radiograph.registry import get_task
    from train.cache import Cache, stream

    out, _ = chest_cache
    cache = Cache.open(out, "chest14", SIZE)
    cached = np.concatenate([np.load(out / s["files"]["images"]) for s in cache.shards("val")]).astype(np.float32)
    batches = list(stream(cache, "val", 8))
    images = np.concatenate([b[0].numpy() for b in batches])
    assert images.shape == (len(cached), SIZE, SIZE, 1) and np.array_equal(images[..., 0], cached)
    assert np.array_equal(np.concatenate([b[1].numpy() for b in batches]), cache.targets("val"))
    train = stream(cache, "train", 8, shuffle=True, seed=1)
    sums = sorted(float(v) for images, _ in train for v in tf.reduce_sum(images, [1, 2, 3]).numpy())
    raw = np.concatenate([np.load(out / s["files"]["images"]) for s in cache.shards("train")]).astype(np.float32)
    assert np.allclose(sums, sorted(raw.sum((1, 2))), rtol=1e-5)  # a permutation of the train split
    augmented = next(iter(stream(cache, "train", 8, shuffle=True, augmentation=get_task("chest14").augmentation)))
    assert augmented[0].shape == (8, SIZE, SIZE, 1)
    with pytest.raises(CacheError, match="holds 64 px images but the model takes 32 px"):
        Cache.open(out, "chest14", 32)


def test_train_from_the_cache(chest_cache, tmp_path):
    pytest.importorskip("keras")
    from radiograph.layers import load_model
    from train.__main__ import main
    from train.checkpoint import PAUSED_EXIT

    out, manifest = chest_cache
    model, report = tmp_path / "model", tmp_path / "report"
    command = ["chest14", "--cache", str(out), "--backbone", "small_cnn", "--image-size", str(SIZE), "--epochs", "2",
               "--batch-size", "16", "--seed", "0"]
    main([*command, "--out", str(model), "--report", str(report)])
    card = json.loads((model / "card.json").read_text())
    assert card["data"]["cache"] == str(out) and card["data"]["kind"] == "synthetic phantoms"
    assert card["data"]["splits"] == manifest["counts"]
    assert (report / "metrics.json").is_file()

    split = tmp_path / "split"  # the same run in two sittings: the stream's shuffles and augmentation resume too
    with pytest.raises(SystemExit) as stop:
        main([*command, "--out", str(split), "--pause-after-epochs", "1"])
    assert stop.value.code == PAUSED_EXIT
    main([*command, "--out", str(split), "--resume"])
    for a, b in zip(load_model(model / "model.keras").weights, load_model(split / "model.keras").weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=a.path)
    assert json.loads((split / "card.json").read_text())["metrics"] == card["metrics"]
    with pytest.raises(SystemExit, match="holds 64 px images but the model takes 32 px"):
        main(["chest14", "--cache", str(out), "--backbone", "small_cnn", "--image-size", "32",
              "--out", str(tmp_path / "other")])


def test_chest14_phantoms_take_a_side_and_nih_prevalences(tmp_path):
    root = generate("chest14", tmp_path, 12, seed=0, options={"side": 96, "prevalence_floor": 0.0})
    assert json.loads((root / "PHANTOM.json").read_text())["options"] == {"side": 96, "prevalence_floor": 0.0}
    assert load_for_model(next((root / "images").iterdir()), 96).geometry.original == (96, 96)
    with pytest.raises(ValueError, match="the knee phantoms take no option side; they take none"):
        generate("knee", tmp_path, 4, options={"side": 96})


@pytest.mark.parametrize("extra, reason", [(["--folds", "3"], "--folds splits train and val anew"),
                                           (["--select-by", "pointing_game"], "a cache does not hold")])
def test_train_from_the_cache_refuses_what_needs_the_dataset_folder(chest_cache, tmp_path, extra, reason):
    pytest.importorskip("keras")
    from train.__main__ import main

    with pytest.raises(SystemExit, match=reason):
        main(["chest14", "--cache", str(chest_cache[0]), "--image-size", str(SIZE), "--out", str(tmp_path / "m"),
              *extra])
