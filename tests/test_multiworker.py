"""Training on several machines (train.distribute): two worker processes on this machine against one process.

The two-worker run (MultiWorkerMirroredStrategy over loopback ports, CPU, --batch-size 8 per replica: a global
batch of 16) is compared with one process running MirroredStrategy over two logical CPU devices with the same
per-replica batch: the same two replicas, the same global batches, only the all-reduce crosses processes
instead of devices. Batch normalisation statistics and dropout masks are per replica, so this is the one-worker
run that computes the same thing; a single replica at batch 16 normalises over 16 images instead of 8 and
draws other masks, and ends elsewhere (docs/training.md, "Several machines"). Band: every weight of the kept
model within 1e-5 and every logged figure within 1e-6 (measured: equal to the last bit, the sum of two
gradients does not depend on the order).
"""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from train.distribute import ALONE, Role, choose_strategy, cluster_role, read_tf_config

ROOT = Path(__file__).resolve().parent.parent
TWO_LOGICAL_CPUS = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from train.__main__ import main
main(sys.argv[1:])
"""
PROCESS_SECONDS = 240


def cluster(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def start(arguments, env):
    return subprocess.Popen([sys.executable, *arguments], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(processes):
    """Every process's output; all are killed if one fails or runs past PROCESS_SECONDS (a worker waiting on a
    collective its peer never joins would wait for ever)."""
    outputs = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=PROCESS_SECONDS)
            assert process.returncode == 0, output[-3000:]
            outputs.append(output)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return outputs


def history(folder):
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader((folder / "history.csv").open())]


def test_two_workers_train_what_one_process_with_two_replicas_trains(tmp_path):
    from bench.endpoints import free_port
    from radiograph.layers import load_model
    from train.phantoms import generate

    generate("knee", tmp_path / "phantoms", 60, seed=3)
    scratch = tmp_path / "scratch"  # the workers' temporary folders: the non-chief's must be gone afterwards
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(scratch)}
    env.pop("TF_CONFIG", None)
    common = ["knee", "--data", str(tmp_path / "phantoms" / "knee"), "--backbone", "small_cnn", "--image-size", "32",
              "--epochs", "2", "--batch-size", "8", "--seed", "0"]
    ports = [free_port(), free_port()]
    two, one = tmp_path / "two", tmp_path / "one"
    processes = [start(["-m", "train", *common, "--strategy", "multiworker", "--out", str(two)],
                       {**env, "TF_CONFIG": cluster(ports, index)}) for index in (0, 1)]
    processes.append(start(["-c", TWO_LOGICAL_CPUS, *common, "--strategy", "mirrored", "--out", str(one)], env))
    chief, worker, _ = finish(processes)

    assert "wrote " in chief and "worker 1: done, 2 epochs; the chief wrote the model" in worker
    assert not list(scratch.glob("train-worker1-*"))  # the non-chief's copies were deleted
    config = json.loads((two / "config.json").read_text())
    assert (config["strategy_used"], config["replicas"], config["workers"], config["batch_size_global"]) == \
        ("multiworker", 2, 2, 16)
    reference = json.loads((one / "config.json").read_text())
    assert (reference["strategy_used"], reference["replicas"], reference["workers"]) == ("mirrored", 2, 1)

    logged, expected = history(two), history(one)
    assert len(logged) == len(expected) == 2
    for row, reference_row in zip(logged, expected):
        assert row == pytest.approx(reference_row, abs=1e-6)
    cards = [json.loads((folder / "card.json").read_text()) for folder in (two, one)]
    assert cards[0]["training"]["kept"] == cards[1]["training"]["kept"]
    for mine, theirs in zip(load_model(two / "model.keras").get_weights(), load_model(one / "model.keras").get_weights()):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5)


def test_tf_config_and_roles():
    two = cluster([1, 2], 1)
    assert cluster_role(read_tf_config(two)) == Role("worker", 1, 2, False)
    assert cluster_role(read_tf_config(cluster([1, 2], 0))).chief  # worker 0 leads where there is no chief
    with_chief = json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "worker", "index": 0}})
    assert cluster_role(read_tf_config(with_chief)) == Role("worker", 0, 2, False)
    assert read_tf_config("") == {} and cluster_role({}) == ALONE
    for bad in ("{not json", '{"cluster": {}}', cluster([1, 2], 5)):
        with pytest.raises(ValueError, match="TF_CONFIG is not a cluster description.*expected JSON such as"):
            read_tf_config(bad)


def test_strategy_requests_that_cannot_work_are_refused(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="multiworker needs TF_CONFIG"):
        choose_strategy("multiworker", [])
    with pytest.raises(ValueError, match="unknown strategy 'ring'; known: auto, default"):
        choose_strategy("ring", [])
    monkeypatch.setenv("TF_CONFIG", cluster([1, 2], 0))
    with pytest.raises(ValueError, match="cluster of 2 workers but --strategy default trains on this machine alone"):
        choose_strategy("default", [])
