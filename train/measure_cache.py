"""Measure training from a prepared cache: preparation rate, input rate against model rate, and peak memory.

    python -m train.measure_cache chest14 --caches /work/data/fullscale/cache10k /work/data/fullscale/cache112k \\
        --backbone compact16 --prepare-data /work/data/fullscale/rate1024/chest14 --out reports/chest14/fullscale.json

Figures, each from `--repeats` runs (median, min and max), every one in a fresh process so that its peak resident
memory (ru_maxrss) is its own:
  preparation   images/s of `train.prepare` as recorded in each cache's manifest, and of preparing the small
                `--prepare-data` set again (`--repeats` times, into a temporary folder);
  input         images/s of the training stream alone (train.cache.stream: shuffled, augmented), no model;
  model         images/s of training steps on one in-memory synthetic batch (no input pipeline);
  training      images/s of training steps fed by the stream (both together, as `python -m train --cache` runs);
                input/model above 1 means the input is not the bottleneck;
  memory        peak resident memory of (a) one full epoch of the training stream without augmentation (every
                image read once) and (b) `--steps` training steps from the stream, for each cache: the last cache
                against the first must stay within +10%.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

WARM_BATCHES = 3  # batches left out of every rate: tracing and the first shard reads


def spread(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": [round(v, 2) for v in values]}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _model_and_loss(cache, backbone: str):
    import keras

    from radiograph.registry import get_task
    from train.backbones import build_model
    from train.objectives import imbalance_objective

    spec = get_task(cache.task)
    keras.utils.set_random_seed(0)
    model = build_model(spec, backbone, cache.size, None)
    loss, class_weight, _ = imbalance_objective(spec, cache.targets("train"))
    model.compile(keras.optimizers.Adam(1e-3), loss, jit_compile=False)
    return spec, model, class_weight


def _timed_fit(model, data, steps: int, batch: int, class_weight) -> float:
    """images/s over `steps` training steps after WARM_BATCHES."""
    import keras

    ends: list[float] = []
    timer = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_, **__: ends.append(time.perf_counter()))
    model.fit(data, steps_per_epoch=steps + WARM_BATCHES, epochs=1, callbacks=[timer], class_weight=class_weight,
              verbose=0)
    return batch * (len(ends) - WARM_BATCHES) / (ends[-1] - ends[WARM_BATCHES - 1])


def child(mode: str, cache_path: Path, backbone: str, batch: int, steps: int) -> dict:
    """One measurement in this process; returns its rate and this process's peak resident memory."""
    import numpy as np
    import tensorflow as tf

    from radiograph.registry import get_task
    from train.cache import Cache, stream

    cache = Cache.open(cache_path)
    spec = get_task(cache.task)
    result = {"mode": mode, "cache": str(cache_path), "images": sum(cache.manifest["counts"].values()),
              "train_images": cache.count("train")}
    if mode in ("input", "epoch"):
        data = stream(cache, "train", batch, shuffle=True, seed=0,
                      augmentation=spec.augmentation if mode == "input" else None)
        limit = steps + WARM_BATCHES if mode == "input" else None
        seen, start = 0, None
        for number, (images, _) in enumerate(data):
            if number == WARM_BATCHES - 1:
                start = time.perf_counter()
            elif number >= WARM_BATCHES:
                seen += int(images.shape[0])
            if limit and number + 1 >= limit:
                break
        result.update(images_per_second=seen / (time.perf_counter() - start), images_read=seen)
    elif mode == "model":
        _, model, class_weight = _model_and_loss(cache, backbone)
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (batch, cache.size, cache.size, 1)).astype(np.float32)
        targets = (rng.random((batch, len(spec.labels))) < 0.2).astype(np.float32)
        if spec.head == "softmax":
            targets = np.eye(len(spec.labels), dtype=np.float32)[rng.integers(0, len(spec.labels), batch)]
        data = tf.data.Dataset.from_tensors((images, targets)).repeat()
        result["images_per_second"] = _timed_fit(model, data, steps, batch, class_weight)
    elif mode == "train":
        _, model, class_weight = _model_and_loss(cache, backbone)
        data = stream(cache, "train", batch, shuffle=True, seed=0, augmentation=spec.augmentation).repeat()
        result["images_per_second"] = _timed_fit(model, data, steps, batch, class_weight)
    else:
        raise ValueError(f"unknown mode {mode!r}; one of input, epoch, model, train")
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    return result


def run_child(mode: str, cache: Path, args) -> dict:
    command = [sys.executable, "-m", "train.measure_cache", args.task, "--child", mode, "--caches", str(cache),
               "--backbone", args.backbone, "--batch-size", str(args.batch_size), "--steps", str(args.steps)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"python -m train.measure_cache: error: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {mode} {cache.name}: {result['images_per_second']:.1f} images/s, peak {result['peak_rss_mb']} MB",
          flush=True)
    return result


def prepare_rates(task: str, data: Path, size: int, repeats: int, workers: int) -> list[float]:
    from train.prepare import prepare

    rates = []
    for _ in range(repeats):
        folder = Path(tempfile.mkdtemp(prefix="prepare-rate-"))
        try:
            manifest = prepare(task, data, size, folder, workers, progress=lambda *_: None)
            rates.append(manifest["prepared"]["images_per_second"])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.measure_cache", description=__doc__.split("\n")[0])
    parser.add_argument("task")
    parser.add_argument("--caches", type=Path, nargs="+", required=True,
                        help="prepared caches of one task and size, smallest first (memory is compared across them)")
    parser.add_argument("--backbone", default="compact16")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40, help="timed training steps (and input batches) per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prepare-data", type=Path, help="a small dataset folder to prepare --repeats times")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes for --prepare-data")
    parser.add_argument("--out", type=Path, help="JSON report")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.caches[0], args.backbone, args.batch_size, args.steps)))
        return

    from train.cache import Cache

    caches = [Cache.open(path, args.task) for path in args.caches]
    if len({cache.size for cache in caches}) != 1:
        raise SystemExit("python -m train.measure_cache: error: the caches differ in size; prepare them at one --size")
    largest = args.caches[-1]
    report = {"command": "python -m train.measure_cache " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "task": args.task, "size": caches[0].size, "backbone": args.backbone, "batch_size": args.batch_size,
              "steps": args.steps, "repeats": args.repeats,
              "caches": {str(path): {"images": sum(c.manifest["counts"].values()), "counts": c.manifest["counts"],
                                     "shards": len(c.manifest["shards"]), "prepared": c.manifest["prepared"],
                                     "dataset": c.manifest["dataset"]["provenance"]}
                         for path, c in zip(args.caches, caches)}}
    if args.prepare_data:
        print(f"preparing {args.prepare_data} {args.repeats} times", flush=True)
        rates = prepare_rates(args.task, args.prepare_data, caches[0].size, args.repeats, args.workers)
        report["prepare_small_set"] = {"data": str(args.prepare_data), "workers": args.workers,
                                       "images_per_second": spread(rates)}
    print("rates (input, model, training) on the largest cache", flush=True)
    rates = {mode: [run_child(mode, largest, args)["images_per_second"] for _ in range(args.repeats)]
             for mode in ("input", "model", "train")}
    report["images_per_second"] = {mode: spread(values) for mode, values in rates.items()}
    report["input_over_model"] = round(statistics.median(rates["input"]) / statistics.median(rates["model"]), 2)
    print("peak resident memory per cache", flush=True)
    memory = {}
    for path in args.caches:
        memory[str(path)] = {mode: [run_child(mode, path, args) for _ in range(args.repeats if mode == "train" else 1)]
                             for mode in ("epoch", "train")}
    report["peak_rss_mb"] = {path: {mode: spread([r["peak_rss_mb"] for r in runs]) for mode, runs in modes.items()}
                             for path, modes in memory.items()}
    first, last = str(args.caches[0]), str(args.caches[-1])
    report["memory_growth"] = {
        mode: round(report["peak_rss_mb"][last][mode]["median"] / report["peak_rss_mb"][first][mode]["median"] - 1, 4)
        for mode in ("epoch", "train")}
    report["epoch_images_per_second"] = {path: round(modes["epoch"][0]["images_per_second"], 1)
                                         for path, modes in memory.items()}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
