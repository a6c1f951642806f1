"""Decoding and the input gate's image checks for the batch command, in worker processes, a bounded number of
batches ahead of ONNX Runtime.

    with DecodePool(keeper, processes=2) as pool:
        for batch, prepared in pool.batches(batches, task, {task: model.size}, keep_display=False):
            ...   # prepared: radiograph.predict.Prepared, one per path of `batch`, in the batch's order

Each worker process decodes a file, makes the display copy, runs the image checks and the router on it
(radiograph.gate.Gatekeeper.inspect, choose / refusal) and letterboxes the model input: the same function as the
thread path (radiograph.predict.prepare), so the rows are the same. What comes back per file is the float32 model
input (size x size x 4 bytes: 200 kB at 224 px, 590 kB at 384 px), the display copy only with --cam-dir, and the
small inspection. Every worker builds its own router session (one ONNX Runtime thread) from the router's folder;
the feature distances travel pickled once per worker.

Memory is bounded: while ONNX Runtime runs one batch, at most `ahead` + 1 further batches are being prepared, so
the parent holds at most (ahead + 2) x batch_size prepared files (default ahead 1, at 384 px and batch 16:
3 x 16 x 590 kB = 28 MB without display copies; with --cam-dir add up to 4 MB per file, the 2048 px display copy),
and each worker decodes one file at a time within radiograph.imaging's decode budget.

Processes start by "spawn" (ONNX Runtime's threads in the parent make fork unsafe); starting one costs about a
second (imports and the router's session), so a pool pays off over hundreds of files, and the bench keeps one pool
across its repeats (bench/__main__.py).
"""
from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

_WORKER: dict = {}  # in a worker process: its Gatekeeper


class Sized:
    """What the preparation needs of a task model in a worker: its input size."""

    def __init__(self, size: int):
        self.size = int(size)


def default_processes() -> int:
    """Decode processes by default: the cores this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cores))


def _start(router_folder: str | None, router_device: str, distances: dict) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    from radiograph.gate import Gatekeeper

    cv2.setNumThreads(1)  # the parallelism is the processes; OpenCV's own threads would compete with them
    router = None
    if router_folder is not None:
        from radiograph.routing import Router

        router = Router(Path(router_folder), device=router_device)
    _WORKER["keeper"] = Gatekeeper(router, distances)


def _prepare_chunk(paths: list[Path], task: str, sizes: dict[str, int], keep_display: bool) -> list:
    from radiograph.predict import prepare

    models = {name: Sized(size) for name, size in sizes.items()}
    return [prepare(path, task, models, _WORKER["keeper"], keep_display) for path in paths]


class DecodePool:
    """Worker processes that prepare the batch command's files (radiograph.predict.prepare) ahead of inference."""

    def __init__(self, keeper, processes: int | None = None, ahead: int = 1):
        if processes is not None and processes < 1:
            raise ValueError(f"decode processes must be at least 1, got {processes}")
        if ahead < 1:
            raise ValueError(f"ahead must be at least 1 batch, got {ahead}")
        self.processes = processes or default_processes()
        self.ahead = ahead
        router = keeper.router
        device = "cpu" if router is None or router.provider == "CPUExecutionProvider" else "auto"
        self._pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_start,
                                         initargs=(None if router is None else str(router.folder), device,
                                                   keeper.distances))

    def _submit(self, batch: list[Path], task: str, sizes: dict[str, int], keep_display: bool) -> list:
        parts = min(self.processes, len(batch))
        step = -(-len(batch) // parts)
        return [self._pool.submit(_prepare_chunk, batch[i:i + step], task, sizes, keep_display)
                for i in range(0, len(batch), step)]

    def batches(self, batches: list[list[Path]], task: str, sizes: dict[str, int], keep_display: bool):
        """(batch, its Prepared list) for each batch, in order; at most `ahead` batches are being prepared
        beyond the one handed out."""
        pending: deque = deque()
        upcoming = iter(batches)
        for batch in upcoming:
            pending.append((batch, self._submit(batch, task, sizes, keep_display)))
            if len(pending) > self.ahead:
                break
        while pending:
            batch, futures = pending.popleft()
            prepared = [item for future in futures for item in future.result()]
            following = next(upcoming, None)
            if following is not None:
                pending.append((following, self._submit(following, task, sizes, keep_display)))
            yield batch, prepared

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
