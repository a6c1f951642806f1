"""Which tf.distribute strategy a training run uses, and what changes when it spans several machines.

    strategy, role = choose_strategy("auto", gpus)      # before any other TensorFlow op

- `default`: one device (TensorFlow's default strategy).
- `mirrored`: MirroredStrategy, every GPU of this machine (where there is none, every logical CPU device:
  one unless `tf.config.set_logical_device_configuration` made more).
- `multiworker`: MultiWorkerMirroredStrategy, every GPU (or the CPU) of every machine TF_CONFIG lists;
  each machine runs the same command with its own TF_CONFIG `task`.
- `auto`: multiworker where TF_CONFIG names a cluster of more than one task, mirrored on a machine with
  several GPUs, else default.

With several workers:
- `--batch-size` stays per replica and the global batch is per-replica x replicas (train.__main__.Run.batch).
- Every worker builds the same input pipeline (same seed, same order) and keeps its part of each global batch:
  AutoShardPolicy.DATA (`shard_by_data`). The inputs are lists of image files, not one file per worker,
  so sharding by file (FILE, AUTO's first choice) does not apply.
- Validation metrics are summed over all workers before the callbacks read them, so early stopping,
  learning-rate reduction and the kept epoch are the same decision on every worker.
- Only the chief writes the model, card and report; every other worker writes its copies to a temporary
  folder that is deleted afterwards (`Role.out`, as the TensorFlow multi-worker guide recommends: every worker
  must run the same steps, saving included, or the collectives would wait for it).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


@dataclass(frozen=True)
class Role:
    """This process's place in the cluster: which task it is, whether it writes the results."""

    task_type: str
    index: int
    workers: int  # processes in the cluster (chief included)
    chief: bool

    def folder(self, path: Path) -> Path:
        """`path` on the chief; on any other worker a fresh temporary folder (deleted by `discard`)."""
        if self.chief:
            return path
        return Path(tempfile.mkdtemp(prefix=f"train-{self.task_type}{self.index}-{path.name}-"))

    def discard(self, *paths: Path) -> None:
        """Delete a non-chief worker's temporary folders (the chief keeps its own)."""
        if not self.chief:
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)


ALONE = Role("worker", 0, 1, True)


def read_tf_config(text: str | None = None) -> dict:
    """TF_CONFIG as a dict ({} when unset); a malformed one is an error that shows the expected form."""
    text = os.environ.get("TF_CONFIG", "") if text is None else text
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        task_type, index = task["type"], int(task["index"])
        addresses = cluster[task_type]
        if not isinstance(addresses, list) or not 0 <= index < len(addresses):
            raise ValueError(f"task index {index} is outside the {len(addresses)} {task_type} address(es)")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG is not a cluster description ({type(error).__name__}: {error}); expected "
                         f"JSON such as {TF_CONFIG_EXAMPLE}") from None
    return config


def cluster_role(config: dict) -> Role:
    """This process's role from a parsed TF_CONFIG: the chief is the `chief` task, or worker 0 without one."""
    if not config:
        return ALONE
    cluster, task = config["cluster"], config["task"]
    workers = sum(len(addresses) for kind, addresses in cluster.items() if kind in ("chief", "worker"))
    task_type, index = task["type"], int(task["index"])
    chief = task_type == "chief" or (task_type == "worker" and index == 0 and "chief" not in cluster)
    return Role(task_type, index, workers, chief)


def choose_strategy(name: str, gpus: list) -> tuple[tf.distribute.Strategy, Role]:
    """The strategy `--strategy NAME` asks for and this process's role. Call it before any other TensorFlow op:
    MultiWorkerMirroredStrategy has to be created before the runtime starts."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    config = read_tf_config()
    role = cluster_role(config)
    if name == "auto":
        name = "multiworker" if role.workers > 1 else "mirrored" if len(gpus) > 1 else "default"
    if name == "multiworker":
        if not config:
            raise ValueError("--strategy multiworker needs TF_CONFIG naming the cluster and this process's task, "
                             f"e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}'")
        return tf.distribute.MultiWorkerMirroredStrategy(), role
    if role.workers > 1:
        raise ValueError(f"TF_CONFIG names a cluster of {role.workers} workers but --strategy {name} trains on this "
                         f"machine alone; use --strategy multiworker (or auto), or unset TF_CONFIG")
    if name == "mirrored":  # every GPU; without one, every logical CPU device (one, unless configured)
        devices = None if gpus else [device.name for device in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices), ALONE
    return tf.distribute.get_strategy(), ALONE


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The --strategy name of a strategy object (MultiWorkerMirroredStrategy's class is
    CollectiveAllReduceStrategy)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    return "mirrored" if isinstance(strategy, tf.distribute.MirroredStrategy) else "default"


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Each worker keeps its own part of every global batch (AutoShardPolicy.DATA), the same elements a single
    worker would put in that batch."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def patch_keras_for_replicas(model, strategy: tf.distribute.Strategy) -> None:
    """Work around two Keras 3 bugs with several replicas (Keras 3.15 here), on this one model.

    1. Before `fit` and `evaluate`, Keras takes one batch only to learn its shapes and averages it over the
       replicas with `strategy.reduce`. Under MultiWorkerMirroredStrategy that fails ("Attempt to convert a
       value (PerReplica...) to a Tensor", keras-team/keras#20585, open); under MirroredStrategy it fails when
       that batch does not split evenly (a validation split smaller than the global batch: "Inputs to
       operation AddN ... must have the same size and shape"). Here the shapes come from this worker's first
       replica's part of that batch: the same per-replica shapes, without the reduce.
    2. Under MultiWorkerMirroredStrategy each step's logs (scalars) are averaged over the workers with
       `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar ("Invalid reduction dimension 0"). Here
       the steps return them as one-element vectors, which that reduce averages. These per-step figures only
       feed per-batch callbacks; at each epoch's end Keras reads the metrics again from their variables,
       summed over all workers (`_get_metrics_result_or_logs`), so the epoch logs that early stopping, the
       learning-rate schedule and the epoch selection read are the whole cluster's: the same on every worker.
    """
    if strategy.num_replicas_in_sync == 1:
        return

    def local(value):
        return strategy.experimental_local_results(value)[0] \
            if isinstance(value, tf.distribute.DistributedValues) else value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local, next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    def vectors(step):
        def step_with_vector_logs(data):
            return tf.nest.map_structure(lambda value: tf.reshape(value, [-1]), step(data))
        return step_with_vector_logs

    model._maybe_symbolic_build = maybe_symbolic_build
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        model.train_step = vectors(model.train_step)
        model.test_step = vectors(model.test_step)
