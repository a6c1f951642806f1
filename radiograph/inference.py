"""ONNX Runtime inference on an exported model folder (`models/<task>/`).

    model = OnnxModel("models/knee")              # verifies sha256 against card.json, warms up once
    output = model.run(batch)                      # batch: float32 [N, H, W, 1], intensities 0-255
    decide(model.card, output.probabilities[0])    # the decision at the card's thresholds

Providers are tried in the order CUDA, then CPU (TensorRT first with `tensorrt=True`),
CUDA only where an NVIDIA device shows (or with device="gpu");
`OnnxModel.provider` is the one the session actually uses, read back from the
session (onnxruntime-gpu silently falls back to CPU when no GPU works).
`OnnxModel.run` is safe to call from several threads at once: ONNX Runtime
sessions support concurrent `run` calls, and nothing else here is mutated.
This module imports neither TensorFlow nor Keras (the light install).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from radiograph.cards import sha256_of
from radiograph.registry import MURA_PARTS

VARIANTS = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
GPU_PROVIDERS = ("CUDAExecutionProvider",)


class ModelFileError(RuntimeError):
    """A model file is missing, or differs from the sha256 its card records."""


def read_card(folder: Path) -> dict:
    path = Path(folder) / "card.json"
    if not path.is_file():
        raise ModelFileError(f"{path} is missing: a model folder holds card.json beside its model files "
                             "(train with `python -m train`, export with `python -m export`)")
    return json.loads(path.read_text())


def verified_file(folder: Path, card: dict, name: str) -> Path:
    """The path of `name` in `folder`, after checking its sha256 against the card."""
    path = Path(folder) / name
    entry = card.get("files", {}).get(name)
    if entry is None:
        raise ModelFileError(f"{name} is not listed in {Path(folder) / 'card.json'}; listed: "
                             f"{', '.join(card.get('files', {})) or 'nothing'} (run `python -m export {card.get('task', '<task>')}`)")
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; its card lists it with sha256 {entry['sha256']}")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise ModelFileError(f"{path} has sha256 {digest}, but its card records {entry['sha256']}: "
                             "the file was changed or corrupted; refusing to load it")
    return path


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
        self.card = read_card(self.folder)
        self.variant = variant
        self.path = verified_file(self.folder, self.card, VARIANTS[variant])
        self.session = create_session(self.path, device, tensorrt, threads)
        self.provider = self.session.get_providers()[0]
        self.labels: list[str] = list(self.card["labels"])
        self.size: int = int(self.card["input"]["size"])
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
        return {"task": self.card["task"], "model_version": self.card.get("model_version"), "variant": self.variant,
                "provider": self.provider, "file": self.path.name,
                "sha256": self.card["files"][self.path.name]["sha256"], "notice": self.card.get("notice")}


def mura_summary(probabilities: np.ndarray) -> dict:
    """MURA's 14 columns (part x {normal, abnormal}) as P(abnormal) and the body part."""
    p = np.asarray(probabilities, np.float64).reshape(len(MURA_PARTS), 2)
    part = int(np.argmax(p.sum(axis=1)))
    return {"abnormal_probability": float(p[:, 1].sum()), "body_part": MURA_PARTS[part],
            "body_part_probability": float(p[part].sum())}


def heatmap_classes(card: dict, probabilities: np.ndarray) -> list[int]:
    """The classes whose heatmaps are shown by default, the first on the overlay: for a multi-label (sigmoid)
    head every finding at or above its threshold, most probable first (the top class when none is); for MURA
    the abnormal column of the decided body part; else the top class."""
    p = np.asarray(probabilities, np.float64)
    if card["head"] == "sigmoid":
        positives = [c for c in np.argsort(-p, kind="stable") if p[c] >= card["thresholds"][card["labels"][c]]]
        return [int(c) for c in positives] or [int(np.argmax(p))]
    if card["task"] == "mura":
        return [2 * MURA_PARTS.index(mura_summary(p)["body_part"]) + 1]
    return [int(np.argmax(p))]


def decide(card: dict, probabilities: np.ndarray) -> dict:
    """The decision for one image at the card's operating thresholds, in labels and words."""
    labels, p = card["labels"], np.asarray(probabilities, np.float64)
    if card["head"] == "sigmoid":
        thresholds = card["thresholds"]
        positives = [label for label, value in zip(labels, p) if value >= thresholds[label]]
        return {"positive": positives, "thresholds": thresholds,
                "text": "Positive: " + ", ".join(positives) if positives else "No finding above its threshold"}
    if card["task"] == "mura":
        summary = mura_summary(p)
        abnormal = summary["abnormal_probability"] >= 0.5
        return {**summary, "abnormal": abnormal,
                "text": f"{'Abnormal' if abnormal else 'Normal'} {summary['body_part']} "
                        f"(P(abnormal) = {summary['abnormal_probability']:.2f})"}
    top = int(np.argmax(p))
    return {"label": labels[top], "probability": float(p[top]), "text": f"{labels[top]} ({p[top]:.2f})"}


def decision_key(card: dict, probabilities: np.ndarray) -> tuple:
    """What must not change between a model and its export: argmax (and MURA's abnormality), or threshold crossings."""
    if card["head"] == "sigmoid":
        return tuple(decide(card, probabilities)["positive"])
    key = (card["labels"][int(np.argmax(probabilities))],)
    if card["task"] == "mura":
        key += (mura_summary(probabilities)["abnormal_probability"] >= 0.5,)
    return key
