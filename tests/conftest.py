import os

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

PHANTOM_COUNT = 60


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """A small phantom set of every task, written once per test session."""
    from radiograph.registry import TASKS
    from train.phantoms import generate

    root = tmp_path_factory.mktemp("phantoms")
    for task in TASKS:
        generate(task, root, PHANTOM_COUNT, seed=3)
    return root
