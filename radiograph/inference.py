"""ONNX Runtime inference on an exported model folder (`models/<task>/`).

    model = OnnxModel("models/knee")              # verifies sha256 against card.json, warms up once
    output = model.run(batch)                      # batch: float32 [N, H, W, 1], intensities 0-255
    decide(model.card, output.probabilities[0])    # radiograph.decision: the decision by the card's rule

Providers are tried in the order CUDA, then CPU (TensorRT first with `tensorrt=True`),
CUDA only where an NVIDIA device shows (or with device="gpu");
`OnnxModel.provider` is the one the session actually uses, read back from the
session (onnxruntime-gpu silently falls back to CPU when no GPU works).
`OnnxModel.run` is safe to call from several threads at once: ONNX Runtime
sessions support concurrent `run` calls, and nothing else here is mutated.
This module imports neither TensorFlow nor Keras (the light install).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from radiograph.cards import ModelCard, ModelFileError  # noqa: F401 - ModelFileError is part of this API

VARIANTS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
GPU_PROVIDERS = ("CUDAExecutionProvider",)


def nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver shows a device (without one, asking for CUDA only logs a load error)."""
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def providers_for(device: str = "auto", tensorrt: bool = False) -> list[str]:
    """Execution providers to request, best first; only those this onnxruntime build has."""
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"device must be auto, cpu or gpu, got {device!r}")
    gpu = device == "gpu" or (device == "auto" and nvidia_gpu_present())
    wanted = ((["TensorrtExecutionProvider"] if tensorrt else []) + list(GPU_PROVIDERS)) if gpu else []
    available = ort.get_available_providers()
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def create_session(path: Path, device: str = "auto", tensorrt: bool = False, threads: int | None = None):
    """An ONNX Runtime session on the best provider that works; a GPU provider that cannot start is not logged
    as an error (the session falls back to CPU, and `session.get_providers()[0]` says so)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=providers_for(device, tensorrt))


@dataclass
class Output:
    probabilities: np.ndarray  # [N, C]
    features: np.ndarray | None  # [N, h, w, k]: the map that feeds the pooling (None if not exported)
    seconds: float  # wall time of the ONNX Runtime call(s)


class OnnxModel:
    """One exported model: card, verified ONNX file, and an ONNX Runtime session."""

    def __init__(self, folder: str | Path, variant: str = "fp32", device: str = "auto", tensorrt: bool = False,
                 threads: int | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.folder = Path(folder)
        self.card = ModelCard.load(self.folder)
        self.variant = variant
        self.path = self.card.verify(self.folder, VARIANTS[variant])
        self.session = create_session(self.path, device, tensorrt, threads)
        self.provider = self.session.get_providers()[0]
        self.labels: list[str] = list(self.card.labels)
        self.size: int = self.card.size
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.run(np.zeros((1, self.size, self.size, 1), np.float32))  # warm-up: first run allocates

    def run(self, images: np.ndarray, features: bool = True) -> Output:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (self.size, self.size, 1):
            raise ValueError(f"expected images of shape [N, {self.size}, {self.size}, 1], got {list(images.shape)}")
        names = ["probabilities"] + (["features"] if features and "features" in self.outputs else [])
        start = time.perf_counter()
        values = self.session.run(names, {"image": images})
        seconds = time.perf_counter() - start
        return Output(values[0], values[1] if len(values) > 1 else None, seconds)

    def describe(self) -> dict:
        """What a result says about the model that produced it."""
        return {"task": self.card.task, "model_version": self.card.model_version, "variant": self.variant,
                "provider": self.provider, "file": self.path.name,
                "sha256": self.card.files[self.path.name]["sha256"], "notice": self.card.notice}
