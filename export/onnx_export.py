"""Export trained Keras models to ONNX, prove the export matches Keras, and write FP16, INT8 and Triton variants.

The library behind `python -m export` (export/__main__.py parses the command
line): conversion (`convert`, `set_metadata`, `to_fp16`, `to_int8`), parity
and variant checks (`compare`, `test_metrics`, `latency_ratio`), the Triton
layout (`write_triton`) and one task's whole export (`export_task`, in steps:
`card_to_export`, `checked_conversion`, `fp32_parity`, `write_variant`,
`check_variant`, `measure_variants`, `install`).

`export_task` reads models/<task>/model.keras (loaded with safe_mode=True) and writes
models/<task>/model.onnx: input `image` float32 [N, H, W, 1] (0-255, dynamic
batch), outputs `probabilities` and `features` (the map that feeds the
pooling, for the class activation map). ONNX metadata carries the task,
labels, input size, head, CAM layer, model version, commit and date;
`onnx.checker` runs with full check.

Parity: phantom images (generated afresh, read through the shared loader) go
through Keras and ONNX Runtime; the export fails, and nothing is replaced, if
any probability differs by more than 1e-4 or any decision differs (argmax, or
a threshold crossing for sigmoid heads). The deltas and each file's sha256
go into card.json.

Variants: `--fp16` (float16 weights and arithmetic, float32 input and
output; half the file) and `--int8` (ONNX Runtime static quantization, QDQ
form, per-channel weights, calibrated on the validation split of --data).
Each is checked on the same parity images (largest probability change 0.01
for FP16, 0.1 for INT8; decisions equal on all, resp. 95%, of them; a variant
that misses is recorded in the card as rejected and not written) and on the
test split of --data; its metric change and CPU latency against FP32 go into
the card. A
variant is `offered` on CPU only where it is at least 5% faster (timed
alternately with FP32, so that other load on the machine falls on both) and
changes no headline metric by more than 0.01; FP16 is the GPU variant.
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from radiograph.cards import ModelCard
from radiograph.imaging import load_for_model
from radiograph.decision import decision_key
from radiograph.inference import VARIANTS, create_session
from radiograph.registry import get_task

PARITY_TOLERANCE = 1e-4
VARIANT_TOLERANCE = {"fp16": 1e-2, "int8": 0.1}  # largest probability change accepted for a variant
VARIANT_DECISIONS = {"fp16": 1.0, "int8": 0.95}  # share of parity images whose decision must not change
METRIC_CHANGE_OFFERED = 0.01
OFFERED_SPEED = 0.95  # a variant is offered on CPU only when clearly faster than FP32, not within timing noise
PARITY_IMAGES, PARITY_SEED = 24, 4242  # a seed no shipped model trained on
DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """The export does not match the Keras model, or cannot be made."""


# ----------------------------------------------------------------------------- conversion

def load_keras(folder: Path):
    from radiograph.layers import load_model

    return load_model(folder / "model.keras")


def convert(model, size: int, opset: int):
    """The ONNX graph: `image` in, `probabilities` and (where the model has one) `features` out."""
    import keras
    import tensorflow as tf
    import tf2onnx

    outputs = {"probabilities": model.output}
    if "features" in [layer.name for layer in model.layers]:
        outputs["features"] = model.get_layer("features").output
    signature = (tf.TensorSpec((None, size, size, 1), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(keras.Model(model.input, outputs), input_signature=signature, opset=opset)
    return proto


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def set_metadata(proto, card: ModelCard, variant: str, commit: str, date: str) -> None:
    import onnx

    values = {"task": card.task, "labels": json.dumps(list(card.labels)), "input_size": str(card.size),
              "head": card.head, "cam_layer": card.cam_layer, "model_version": card.model_version,
              "variant": variant, "commit": commit, "exported": date, "thresholds": json.dumps(card.thresholds),
              "notice": card.notice or ""}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, values)
    proto.producer_name, proto.doc_string = "radiograph export (tf2onnx)", card.notice or ""


def to_fp16(proto):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)


def to_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"image": calibration[i:i + 1]} for i in range(len(calibration))])

        def get_next(self):
            return next(self.items, None)

    prepared = out_path.with_suffix(".prepared.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    try:
        quantize_static(str(prepared), str(out_path), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=["Conv", "MatMul"])  # activations such as hard-swish stay float
    finally:
        prepared.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- validation

def images_of(samples, size: int) -> np.ndarray:
    return np.stack([load_for_model(s.path, size)[0] for s in samples]).astype(np.float32)


def parity_images(task: str, size: int, workdir: Path) -> np.ndarray:
    """Fresh phantom images (a seed no shipped model trained on), read through the shared loader."""
    from train.datasets import read_dataset
    from train.phantoms import generate

    root = generate(task, workdir, PARITY_IMAGES, seed=PARITY_SEED, workers=1)
    index = read_dataset(task, root)
    return images_of([s for split in index.splits.values() for s in split], size)


def onnx_probabilities(path: Path, images: np.ndarray, batch: int = 16) -> np.ndarray:
    session = create_session(path)
    return np.concatenate([session.run(["probabilities"], {"image": images[i:i + batch]})[0]
                           for i in range(0, len(images), batch)])


def keras_probabilities(model, images: np.ndarray, batch: int = 16) -> np.ndarray:
    return np.concatenate([np.asarray(model(images[i:i + batch], training=False))
                           for i in range(0, len(images), batch)])


def compare(card: ModelCard, reference: np.ndarray, candidate: np.ndarray) -> dict:
    delta = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    same = [decision_key(card, r) == decision_key(card, c) for r, c in zip(reference, candidate)]
    return {"images": len(reference), "max_abs_diff": float(delta.max()), "mean_abs_diff": float(delta.mean()),
            "decisions_equal": float(np.mean(same))}


def latency_ratio(path: Path, base: Path, size: int, rounds: int = 60) -> float:
    """Median batch-1 CPU latency of `path` over that of `base`, timed alternately round by round so that load
    from other work on a shared machine falls on both alike (a guide for `offered`; `python -m bench` measures)."""
    sessions = [create_session(p, "cpu") for p in (path, base)]
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 1)).astype(np.float32)
    times: list[list[float]] = [[], []]
    for round_ in range(rounds + 3):
        for which, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(["probabilities"], {"image": image})
            if round_ >= 3:  # the first rounds warm up
                times[which].append(time.perf_counter() - start)
    return float(np.median(times[0]) / np.median(times[1]))


def test_metrics(spec, card: ModelCard, paths: dict[str, Path], data: Path) -> dict[str, dict]:
    """Each file's task metrics on the test split of `data`, at the card's thresholds."""
    from train.datasets import read_dataset
    from train.evaluate import evaluate, targets_of

    index = read_dataset(spec.id, data, card.training["val_fraction"], card.training["seed"])
    test = index.splits["test"]
    images = images_of(test, card.size)
    thresholds = [card.thresholds[label] for label in spec.labels]
    return {name: evaluate(spec, targets_of(test), onnx_probabilities(path, images), test, thresholds)
            for name, path in paths.items()}


def headline_change(task: str, base: dict, variant: dict) -> dict:
    return {name: float(variant[name] - base[name]) for name in get_task(task).headline}


# ----------------------------------------------------------------------------- Triton

def triton_config(name: str, proto, labels_file: str = "labels.txt", max_batch_size: int = 32) -> str:
    """A Triton model configuration (config.pbtxt) matching the ONNX file's own inputs and outputs."""
    def dims(value_info):
        shape = [d.dim_value for d in value_info.type.tensor_type.shape.dim][1:]  # batch is Triton's
        return ", ".join(str(d) for d in shape)

    def tensor(value_info, extra=""):
        return f'  {{ name: "{value_info.name}" data_type: TYPE_FP32 dims: [ {dims(value_info)} ]{extra} }}'

    outputs = [tensor(o, f' label_filename: "{labels_file}"' if o.name == "probabilities" else "")
               for o in proto.graph.output]
    return "\n".join([
        f'name: "{name}"', 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch_size}",
        "input [", ",\n".join(tensor(i) for i in proto.graph.input), "]",
        "output [", ",\n".join(outputs), "]",
        "dynamic_batching { max_queue_delay_microseconds: 2000 }", ""])


def write_triton(root: Path, task: str, onnx_path: Path, card: ModelCard) -> Path:
    import onnx

    folder = root / task
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "model.onnx").write_bytes(onnx_path.read_bytes())
    (folder / "labels.txt").write_text("\n".join(card.labels) + "\n")
    (folder / "config.pbtxt").write_text(triton_config(task, onnx.load(str(onnx_path))))
    return folder


# ----------------------------------------------------------------------------- one task

def export_task(task: str, models: Path, opset: int, fp16: bool, int8: bool, data: Path | None,
                triton: Path | None) -> ModelCard:
    """Export models/<task> (`models` / task): FP32 ONNX checked against Keras, the wanted variants checked and
    measured, then the files replaced and the card updated only when every check passed; the updated card."""
    spec = get_task(task)
    folder = models / task
    card = card_to_export(task, folder, fp16 or int8, data)
    commit, date = git_commit(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(f"{task}: converting {folder / 'model.keras'} (opset {opset})", flush=True)
    start = time.perf_counter()
    model, proto = checked_conversion(folder, card, opset, commit, date)

    with tempfile.TemporaryDirectory(prefix=f"export-{task}-") as tmp:
        work = Path(tmp)
        staged = {"model.onnx": work / "model.onnx"}
        images, reference, parity = fp32_parity(task, model, proto, card, staged["model.onnx"], work)
        export = {"opset": opset, "commit": commit, "date": date, "seconds": None, "parity": parity,
                  "tolerance": PARITY_TOLERANCE, "versions": versions(), "variants": {}}

        wanted = [v for v, on in (("fp16", fp16), ("int8", int8)) if on]
        for variant in wanted:
            write_variant(variant, task, proto, card, staged["model.onnx"], work / VARIANTS[variant], data)
        for variant in wanted:
            export["variants"][variant] = check_variant(variant, work / VARIANTS[variant], card, reference, images,
                                                        commit, date)
        shipped = [variant for variant in wanted if export["variants"][variant]["shipped"]]
        staged.update({VARIANTS[variant]: work / VARIANTS[variant] for variant in shipped})
        if shipped:
            for variant, figures in measure_variants(spec, card, staged, shipped, data).items():
                export["variants"][variant].update(figures)

        export["seconds"] = round(time.perf_counter() - start, 1)
        install(folder, staged, card)
    card.export = export
    card.save(folder)
    if triton:
        print(f"  triton: {write_triton(triton, task, folder / 'model.onnx', card)}")
    for name in staged:
        print(f"  wrote {folder / name} ({(folder / name).stat().st_size / 1e6:.1f} MB)")
    return card


def card_to_export(task: str, folder: Path, variants: bool, data: Path | None) -> ModelCard:
    """The card of a trained model folder; refuses a folder without model.keras and card.json, and variants
    (`variants`) without the dataset their metric change is measured on."""
    card_path = folder / "card.json"
    if not (folder / "model.keras").is_file() or not card_path.is_file():
        raise ExportError(f"{folder} has no model.keras and card.json; train first: python -m train {task} --data DIR")
    card = ModelCard.load(folder)
    if variants and (data is None or not data.exists()):
        raise ExportError(f"--fp16/--int8 need the phantom dataset the model was evaluated on, to measure the "
                          f"variant's metric change; pass --data DIR (not found: {data}); it is made by: "
                          f"{card.data.get('command', 'python -m train.phantoms ' + task)}")
    return card


def checked_conversion(folder: Path, card: ModelCard, opset: int, commit: str, date: str):
    """The Keras model and its FP32 ONNX graph, with metadata, through `onnx.checker`'s full check: (model, proto)."""
    import onnx

    model = load_keras(folder)
    proto = convert(model, card.size, opset)
    set_metadata(proto, card, "fp32", commit, date)
    onnx.checker.check_model(proto, full_check=True)
    return model, proto


def fp32_parity(task: str, model, proto, card: ModelCard, path: Path, work: Path):
    """Save the FP32 graph to `path` and compare it with Keras on fresh phantom images; refuses (ExportError) any
    probability change over PARITY_TOLERANCE or any changed decision. (images, Keras probabilities, parity)."""
    import onnx

    onnx.save(proto, str(path))
    images = parity_images(task, card.size, work / "parity")
    reference = keras_probabilities(model, images)
    parity = compare(card, reference, onnx_probabilities(path, images))
    print(f"  parity fp32 on {parity['images']} phantom images: max |dp| {parity['max_abs_diff']:.2e}, "
          f"decisions equal {parity['decisions_equal']:.0%}", flush=True)
    if parity["max_abs_diff"] > PARITY_TOLERANCE or parity["decisions_equal"] < 1.0:
        raise ExportError(f"{task}: ONNX differs from Keras (max |dp| {parity['max_abs_diff']:.2e} > "
                          f"{PARITY_TOLERANCE:g} or a decision changed); nothing was written")
    return images, reference, parity


def write_variant(variant: str, task: str, proto, card: ModelCard, fp32_path: Path, path: Path,
                  data: Path | None) -> None:
    """Write the FP16 (from the graph) or INT8 (from the FP32 file, calibrated on the first 128 validation images
    of `data`) variant to `path`, still without its own metadata."""
    import onnx

    if variant == "fp16":
        onnx.save(to_fp16(proto), str(path))
    if variant == "int8":
        from train.datasets import read_dataset
        index = read_dataset(task, data, card.training["val_fraction"], card.training["seed"])
        calibration = images_of(index.splits["val"][:128], card.size)
        to_int8(fp32_path, path, calibration)


def check_variant(variant: str, path: Path, card: ModelCard, reference: np.ndarray, images: np.ndarray,
                  commit: str, date: str) -> dict:
    """Stamp a written variant's metadata and compare it with Keras on the parity images; its card entry, with
    `shipped` true when it is within the variant's tolerance and keeps enough decisions."""
    import onnx

    written = onnx.load(str(path))
    set_metadata(written, card, variant, commit, date)
    onnx.save(written, str(path))
    check = compare(card, reference, onnx_probabilities(path, images))
    passed = (check["max_abs_diff"] <= VARIANT_TOLERANCE[variant]
              and check["decisions_equal"] >= VARIANT_DECISIONS[variant])
    print(f"  parity {variant}: max |dp| {check['max_abs_diff']:.2e}, decisions equal "
          f"{check['decisions_equal']:.0%}" + ("" if passed else " - rejected, not shipped"), flush=True)
    return {"parity": check, "tolerance": VARIANT_TOLERANCE[variant],
            "decisions_required": VARIANT_DECISIONS[variant], "shipped": passed}


def measure_variants(spec, card: ModelCard, staged: dict[str, Path], shipped: list[str], data: Path) -> dict:
    """Each shipped variant's headline metrics on the test split of `data`, their change and its CPU latency
    against FP32, and whether it is offered on CPU: {variant: card entries}."""
    measured = test_metrics(spec, card, {name: staged[VARIANTS[name]] for name in ["fp32", *shipped]}, data)
    figures = {}
    for variant in shipped:
        change = headline_change(spec.id, measured["fp32"], measured[variant])
        ratio = latency_ratio(staged[VARIANTS[variant]], staged["model.onnx"], card.size)
        figures[variant] = {
            "test_metrics": {name: measured[variant][name] for name in spec.headline},
            "metric_change_vs_fp32": change, "cpu_latency_vs_fp32": round(ratio, 3),
            "offered_on_cpu": bool(ratio < OFFERED_SPEED and max(abs(v) for v in change.values()) <= METRIC_CHANGE_OFFERED)}
        print(f"  {variant}: metric change {change}, CPU latency {ratio:.2f}x fp32", flush=True)
    return figures


def install(folder: Path, staged: dict[str, Path], card: ModelCard) -> None:
    """All checks passed: replace the shipped files with the staged ones, record them in the card, and remove the
    variants of a previous export that no longer match."""
    for name, path in staged.items():
        os.replace(path, folder / name)
        card.record_file(folder, name)
    for stale in set(VARIANTS.values()) - set(staged):
        (folder / stale).unlink(missing_ok=True)
        card.files.pop(stale, None)


def versions() -> dict:
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    return {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}
