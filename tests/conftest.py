import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PHANTOM_COUNT = 60


def pytest_addoption(parser):
    group = parser.getgroup("radiograph", "the slow retrain test (tests/test_slow.py)")
    group.addoption("--retrain-dir", metavar="DIR",
                    help="keep each retrain's phantoms, run and checkpoint in DIR/<task> (not a temporary folder), so "
                         "a paused retrain goes on when the same command runs again")
    group.addoption("--retrain-pause-after-minutes", type=float, metavar="M",
                    help="pause a retrain before its training passes M minutes in this sitting (train "
                         "--pause-after-minutes); the test is skipped as paused. Needs --retrain-dir")


def pytest_configure(config):
    from pathlib import Path

    pause, kept = config.getoption("--retrain-pause-after-minutes"), config.getoption("--retrain-dir")
    if pause is not None and not pause > 0:
        raise pytest.UsageError(f"--retrain-pause-after-minutes must be more than 0 minutes, got {pause:g}")
    if pause is not None and not kept:
        raise pytest.UsageError("--retrain-pause-after-minutes keeps a checkpoint to go on from, so it needs "
                                "--retrain-dir DIR (a temporary folder is emptied by the next run)")
    if kept and Path(kept).exists() and not Path(kept).is_dir():
        raise pytest.UsageError(f"--retrain-dir {kept} is a file; give a folder (made if missing)")


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """A small phantom set of every task, written once per test session."""
    from radiograph.registry import TASKS
    from train.phantoms import generate

    root = tmp_path_factory.mktemp("phantoms")
    for task in TASKS:
        generate(task, root, PHANTOM_COUNT, seed=3)
    return root


TINY_SIZE = 32


def tiny_model_folder(models, task, seed=0, mirror=False):
    """An untrained small_cnn model folder with the card fields export and serving read."""
    import keras

    from radiograph.cards import ModelCard
    from radiograph.registry import TASKS
    from train.backbones import build_model, save_model

    spec = TASKS[task]
    keras.utils.set_random_seed(seed)
    folder = models / task
    folder.mkdir(parents=True)
    save_model(build_model(spec, "small_cnn", TINY_SIZE, mirror=mirror), folder / "model.keras")
    card = ModelCard.for_task(spec, model_version=f"{task}-tiny", notice="test model", backbone="small_cnn",
                              input={"name": "image", "shape": [None, TINY_SIZE, TINY_SIZE, 1], "size": TINY_SIZE},
                              thresholds=dict.fromkeys(spec.labels, 0.5), mirror_average=mirror,
                              training={"val_fraction": 0.1, "seed": 0})
    card.record_file(folder, "model.keras")
    card.save(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, phantom_root):
    """Tiny untrained models of the four head types (softmax 5, softmax 14, binary softmax 2, sigmoid 14),
    exported to ONNX; knee also as FP16 and INT8, chest14 also into a Triton repository, mura mirror-averaged
    (train.backbones.build_model's `mirror`). (models, triton)."""
    pytest.importorskip("keras")
    from export.onnx_export import export_task
    from radiograph.registry import TASKS

    models, triton = tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("triton")
    for task in TASKS:
        tiny_model_folder(models, task, mirror=task == "mura")
        export_task(task, models, 17, fp16=task == "knee", int8=task == "knee", data=phantom_root / task,
                    triton=triton if task == "chest14" else None)
    return models, triton


@pytest.fixture(scope="session")
def app_url():
    """The app on the shipped models, on a free loopback port (shared by the client and browser tests)."""
    import app
    from bench.endpoints import free_port

    demo, url = app.serve(app.settings(["--port", str(free_port()), "--max-file-size", "5mb"]), block=False)
    yield url
    demo.close()
    demo.radiograph_app.close()
