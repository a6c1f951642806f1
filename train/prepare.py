"""Prepare a training cache: decode every image of a dataset once, through the shared loader, into shards.

    python -m train.prepare chest14 --data /data/nih --size 320 --out /data/cache/chest14-320 --workers 8
    python -m train.prepare chest14 --out /data/cache/chest14-320 --verify      # counts and sha256 of every shard
    python -m train chest14 --cache /data/cache/chest14-320 --backbone densenet121

The splits are read with train.datasets (`--val-fraction` and `--seed` carve validation as `python -m train
--data` does) and every image goes through `radiograph.imaging.load_for_model` at `--size`, the function the app,
the batch command and train.pipeline call. Each split is cut into shards of `--shard-size` images; a shard is two
files:

  NAME.images.npy   float16 [n, size, size], the letterboxed model input (0-255)
  NAME.labels.npz   targets (uint8 [n, classes]), split, patients, studies, paths (relative to the dataset root)

and `NAME.done.json` (its sha256s and count) is written once both are complete. `plan.json` is written first (task,
size, loader, dataset, which images go to which shard) and `manifest.json` last (the plan, the sha256 of every
file, counts per split, timing). Why float16: letterboxing interpolates, so the model input is not 8-bit even for
an 8-bit film (uint8 would round by up to half a grey level); float16 holds 0-255 to within 1/16 of a grey level
(steps of 1/8 above 128), and a mixed-precision model (the GPU default of `python -m train`) casts its float32
input to exactly these float16 values in its first layer. float32 would be exact on CPU too at twice the disk.

Parallel: `--workers` processes, one shard at a time each. Resumable: files are written under temporary names and
renamed when complete; a rerun keeps every shard whose done record and sha256s check out and redoes the rest. A
rerun with a different plan (task, size, loader, dataset) is refused. Every run ends by verifying the whole cache,
as `--verify` does alone.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

import radiograph.imaging
from radiograph.registry import TASKS, get_task

FORMAT = "radiograph-cache/1"
DTYPE = np.dtype(np.float16)
PLAN_FILE = "plan.json"
MANIFEST_FILE = "manifest.json"
SHARD_SIZE = 256  # images per shard: 75 MB at 384 px, so a reader holding a few shards stays small
LOADER = "radiograph.imaging.load_for_model"


class CacheError(ValueError):
    """A cache folder that is missing, unfinished, corrupted or of another plan; says which and what to do."""


def sha256_of(path: Path, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def loader_version() -> dict:
    """The loader every cached image went through, pinned by the sha256 of its module's source."""
    return {"function": LOADER, "module_sha256": sha256_of(Path(radiograph.imaging.__file__))}


def shard_files(name: str) -> dict[str, str]:
    return {"images": f"{name}.images.npy", "labels": f"{name}.labels.npz", "done": f"{name}.done.json"}


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def plan(task: str, data: Path, size: int, shard_size: int = SHARD_SIZE, val_fraction: float = 0.1,
         seed: int = 0) -> tuple[dict, dict[str, list[tuple]]]:
    """(the plan as recorded in plan.json, the rows of each shard: (path, relative path, target, patient, study))."""
    from train.datasets import read_dataset
    from train.phantoms import provenance

    spec = get_task(task)
    if size < 32 or size > 2048:
        raise CacheError(f"--size must be 32..2048 pixels, got {size}")
    if shard_size < 1:
        raise CacheError(f"--shard-size must be at least 1 image, got {shard_size}")
    index = read_dataset(task, data, val_fraction, seed)
    shards, rows = [], {}
    for split, samples in index.splits.items():
        for number, start in enumerate(range(0, len(samples), shard_size)):
            name = f"{split}-{number:05d}"
            chunk = [(str(s.path), _relative(s.path, index.root), list(s.target), s.patient, s.study or "")
                     for s in samples[start:start + shard_size]]
            rows[name] = chunk
            shards.append({"name": name, "split": split, "count": len(chunk),
                           "paths_sha256": _digest([row[1] for row in chunk])})
    if not shards:
        raise CacheError(f"{data} holds no {task} images to prepare")
    recorded = {
        "format": FORMAT, "task": task, "labels": list(spec.labels), "size": size, "dtype": DTYPE.name,
        "layout": "images [n, size, size] letterboxed, 0-255; targets uint8 [n, classes]",
        "loader": loader_version(),
        "dataset": {"folder": str(Path(data).resolve()), "root": str(index.root.resolve()),
                    "provenance": provenance(Path(data), index.root), "val_fraction": val_fraction, "seed": seed},
        "counts": {split: len(samples) for split, samples in index.splits.items()},
        "shard_size": shard_size, "shards": shards,
    }
    return recorded, rows


def write_shard(out: str, name: str, split: str, size: int, rows: list[tuple]) -> dict:
    """Decode one shard's images through the shared loader and write its files; returns its done record."""
    import cv2

    from radiograph.imaging import ImageLoadError, load_for_model

    cv2.setNumThreads(1)
    folder, files = Path(out), shard_files(name)
    temporary = {kind: folder / f".{file}.partial" for kind, file in files.items()}
    images = np.lib.format.open_memmap(temporary["images"], mode="w+", dtype=DTYPE, shape=(len(rows), size, size))
    for i, (path, *_rest) in enumerate(rows):
        try:
            tensor = load_for_model(path, size).tensor
        except (ImageLoadError, OSError) as error:
            raise CacheError(f"could not load {path}: {error}") from None
        images[i] = tensor[..., 0]
    images.flush()
    del images
    with open(temporary["labels"], "wb") as handle:
        np.savez(handle, targets=np.asarray([row[2] for row in rows], np.uint8),
                 split=np.asarray([split] * len(rows)), patients=np.asarray([row[3] for row in rows]),
                 studies=np.asarray([row[4] for row in rows]), paths=np.asarray([row[1] for row in rows]))
    record = {"name": name, "split": split, "count": len(rows), "paths_sha256": _digest([row[1] for row in rows])}
    for kind in ("images", "labels"):
        os.replace(temporary[kind], folder / files[kind])
        record[f"{kind}_sha256"] = sha256_of(folder / files[kind])
    temporary["done"].write_text(json.dumps(record, indent=1))
    os.replace(temporary["done"], folder / files["done"])
    return record


def finished(out: Path, shard: dict) -> dict | None:
    """The shard's done record when its files are complete and match it and the plan, else None (redo it)."""
    files = shard_files(shard["name"])
    try:
        record = json.loads((out / files["done"]).read_text())
        ok = (record["count"] == shard["count"] and record["paths_sha256"] == shard["paths_sha256"]
              and all(sha256_of(out / files[kind]) == record[f"{kind}_sha256"] for kind in ("images", "labels")))
    except (OSError, ValueError, KeyError):
        return None
    return record if ok else None


def _comparable(recorded: dict) -> dict:
    return {k: v for k, v in recorded.items() if k != "dataset"} | {
        "dataset": {k: v for k, v in recorded["dataset"].items() if k != "provenance"}}


def prepare(task: str, data: Path, size: int, out: Path, workers: int | None = None, shard_size: int = SHARD_SIZE,
            val_fraction: float = 0.1, seed: int = 0, progress=print) -> dict:
    """Write (or finish) the cache in `out`; returns the manifest, with `kept` and `written` shard names added."""
    start = time.perf_counter()
    recorded, rows = plan(task, data, size, shard_size, val_fraction, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plan_path = out / PLAN_FILE
    if plan_path.exists():
        before = json.loads(plan_path.read_text())
        if _comparable(before) != _comparable(recorded):
            changed = sorted(k for k in set(before) | set(recorded) if _comparable(before).get(k) != _comparable(recorded).get(k))
            raise CacheError(f"{out} holds a cache of another plan (differs in: {', '.join(changed)}); pass a new "
                             f"--out, or delete {out} to prepare it again")
    else:
        plan_path.write_text(json.dumps(recorded, indent=1))
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # a manifest says the cache is complete: only at the end
    done, todo = {}, []
    for shard in recorded["shards"]:
        record = finished(out, shard)
        if record:
            done[shard["name"]] = record
        else:
            todo.append(shard)
    kept = sorted(done)
    total = sum(shard["count"] for shard in todo)
    progress(f"{task}: {len(kept)} shards already done and verified, {len(todo)} to write ({total} images, "
             f"{size} px, {workers or os.cpu_count()} processes)")
    decode_start = time.perf_counter()
    workers = max(1, workers or os.cpu_count() or 1)
    if workers > 1 and len(todo) > 1:
        # spawn, not fork: a caller with threads (TensorFlow, a test runner) can deadlock forked children
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(write_shard, str(out), s["name"], s["split"], size, rows[s["name"]]) for s in todo]
            for count, future in enumerate(as_completed(futures), 1):
                record = future.result()
                done[record["name"]] = record
                if count % max(1, len(todo) // 20) == 0 or count == len(todo):
                    elapsed = time.perf_counter() - decode_start
                    written = sum(done[n]["count"] for n in done if n not in kept)
                    progress(f"  {count}/{len(todo)} shards, {written / elapsed:.1f} images/s")
    else:
        for shard in todo:
            done[shard["name"]] = write_shard(str(out), shard["name"], shard["split"], size, rows[shard["name"]])
    decode_seconds = time.perf_counter() - decode_start
    manifest = {**recorded, "shards": [{**shard, **{k: done[shard["name"]][k] for k in ("images_sha256", "labels_sha256")},
                                        "files": shard_files(shard["name"])} for shard in recorded["shards"]],
                "prepared": {"command": f"python -m train.prepare {task} --data {data} --size {size} --out {out} "
                                        f"--shard-size {shard_size} --val-fraction {val_fraction} --seed {seed}",
                             "workers": workers, "images_written": total, "seconds": round(decode_seconds, 2),
                             "images_per_second": round(total / decode_seconds, 1) if total else None}}
    (out / f".{MANIFEST_FILE}.partial").write_text(json.dumps(manifest, indent=1))
    os.replace(out / f".{MANIFEST_FILE}.partial", out / MANIFEST_FILE)
    verify(out)
    progress(f"{task}: {sum(recorded['counts'].values())} images in {len(done)} shards verified; wrote "
             f"{total} images in {decode_seconds:.1f} s ({manifest['prepared']['images_per_second']} images/s); "
             f"{time.perf_counter() - start:.1f} s in all -> {out}")
    return {**manifest, "kept": kept, "written": sorted(s["name"] for s in todo)}


def read_manifest(root: Path) -> dict:
    """A finished cache's manifest, of this version's format; CacheError when there is none (not a cache, or its
    preparation did not finish) or it is of another format."""
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise CacheError(f"{root} has no {MANIFEST_FILE}: not a prepared cache, or its preparation did not finish "
                         f"(python -m train.prepare TASK --data DIR --out {root} resumes it)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise CacheError(f"{path} is format {manifest.get('format')!r}; this version reads {FORMAT!r}")
    return manifest


def verify(out: Path) -> dict:
    """Check every shard of a finished cache against its manifest: files, sha256s, shapes, counts per split.
    Returns the manifest; raises CacheError naming every problem found."""
    out = Path(out)
    manifest = read_manifest(out)
    problems, counts = [], dict.fromkeys(manifest["counts"], 0)
    size, classes = manifest["size"], len(manifest["labels"])
    for shard in manifest["shards"]:
        files, damaged = shard["files"], False
        for kind in ("images", "labels"):
            path = out / files[kind]
            if not path.is_file():
                problems.append(f"{files[kind]} is missing")
                damaged = True
            elif sha256_of(path) != shard[f"{kind}_sha256"]:
                problems.append(f"{files[kind]} does not match its sha256 in the manifest (corrupted or replaced)")
                damaged = True
        if damaged:
            continue
        images = np.load(out / files["images"], mmap_mode="r")
        if images.shape != (shard["count"], size, size) or images.dtype != DTYPE:
            problems.append(f"{files['images']} holds {images.dtype}{list(images.shape)}, expected "
                            f"{DTYPE.name}{[shard['count'], size, size]}")
        with np.load(out / files["labels"]) as labels:
            if labels["targets"].shape != (shard["count"], classes) or set(labels["split"]) != {shard["split"]}:
                problems.append(f"{files['labels']} does not hold {shard['count']} {shard['split']} rows of "
                                f"{classes} targets")
        counts[shard["split"]] += shard["count"]
    if not problems and counts != manifest["counts"]:
        problems.append(f"the shards hold {counts} images per split; the manifest says {manifest['counts']}")
    if problems:
        raise CacheError(f"{out} failed verification ({len(problems)} problems): " + "; ".join(problems[:10]) +
                         " -- run python -m train.prepare again with the same arguments to redo these shards")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--out", type=Path, required=True, help="cache folder (made if missing; resumed if there)")
    parser.add_argument("--data", type=Path, help="dataset folder (real layout or phantoms); not with --verify")
    parser.add_argument("--size", type=int, help="model input side in pixels (default: the task's)")
    parser.add_argument("--workers", type=int, help="processes (default: all cores)")
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE, help="images per shard")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="patients carved for validation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the validation carving")
    parser.add_argument("--verify", action="store_true", help="only check a finished cache: counts and sha256s")
    args = parser.parse_args(argv)
    try:
        if args.verify:
            manifest = verify(args.out)
            if manifest["task"] != args.task:
                raise CacheError(f"{args.out} is a {manifest['task']} cache, not {args.task}")
            print(f"{args.out}: {manifest['task']} cache at {manifest['size']} px verified: {manifest['counts']} "
                  f"images in {len(manifest['shards'])} shards")
            return
        if args.data is None:
            parser.error("--data DIR is required to prepare a cache (or pass --verify to check one)")
        prepare(args.task, args.data, args.size or get_task(args.task).image_size, args.out, args.workers,
                args.shard_size, args.val_fraction, args.seed)
    except (CacheError, ValueError) as error:
        parser.exit(2, f"python -m train.prepare: error: {error}\n")


if __name__ == "__main__":
    main()
