"""Batch prediction: every readable radiograph under the given paths, one result row per file.

    python -m radiograph predict knee examples/knee --out results.csv
    python -m radiograph predict mura /data/MURA-v1.1/valid/XR_WRIST --out wrist.json --cam-dir cams
    python -m radiograph predict chest14 scan.dcm --variant int8

Decoding runs in a thread pool one batch ahead of ONNX Runtime, so the two
overlap. A file that cannot be read gets a row with status "error" and the
reason; the batch goes on. Where the model's card groups images into studies
(MURA), files are grouped by the folder that holds them, and each study gets a
row (probabilities: the mean over its views). With --cam-dir, a class
activation map overlay (ONNX path) is written per file for each class the
decision shows (chest14: every positive finding).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from radiograph.cam import cam_kernel, class_activation_map, normalise, overlay
from radiograph.geometry import FeatureGrid, on_original
from radiograph.imaging import ImageLoadError, load_for_model
from radiograph.cards import ModelCard
from radiograph.decision import decide, heatmap_classes, study_probabilities
from radiograph.inference import VARIANTS, ModelFileError, OnnxModel
from radiograph.registry import TASKS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ""}  # DICOM often has none


def expand(paths: list[Path]) -> list[Path]:
    """Files named directly, plus image-like files found under named folders (sorted, hidden files skipped)."""
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                            and not any(part.startswith(".") for part in p.relative_to(path).parts))
        else:
            files.append(path)  # a named file that is missing or unreadable gets its error row
    return files


def _decode(path: Path, size: int):
    start = time.perf_counter()
    try:
        image, geometry, display, _ = load_for_model(path, size)
        return image, geometry, display, None, time.perf_counter() - start
    except (ImageLoadError, OSError) as error:
        return None, None, None, str(error), time.perf_counter() - start


def predict_files(model: OnnxModel, files: list[Path], batch_size: int = 16, cam_dir: Path | None = None,
                  workers: int = 2, progress: bool = True) -> list[dict]:
    """One row per file (status ok or error), in input order."""
    card, size = model.card, model.size
    kernel = cam_kernel(model.folder / "model.onnx", card) if cam_dir else None
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    base = {"task": card.task, "model_version": card.model_version, "variant": model.variant,
            "provider": model.provider}
    batches = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    rows: list[dict] = []
    bar = _progress(len(files), progress)
    with ThreadPoolExecutor(workers) as pool:
        pending = [pool.submit(_decode, path, size) for path in batches[0]] if batches else []
        for index, batch in enumerate(batches):
            decoded = [future.result() for future in pending]
            if index + 1 < len(batches):  # decode the next batch while this one runs
                pending = [pool.submit(_decode, path, size) for path in batches[index + 1]]
            good = [i for i, d in enumerate(decoded) if d[3] is None]
            output = model.run(np.stack([decoded[i][0] for i in good])) if good else None
            share = output.seconds / len(good) if good else 0.0
            for position, (path, (_, geometry, display, error, decode_seconds)) in enumerate(zip(batch, decoded)):
                row = {"kind": "image", "file": str(path), **base, "decode_ms": round(decode_seconds * 1e3, 2)}
                if error:
                    rows.append({**row, "status": "error", "error": error})
                    continue
                k = good.index(position)
                probabilities = output.probabilities[k]
                row.update(status="ok", inference_ms=round(share * 1e3, 2),
                           probabilities={label: float(p) for label, p in zip(model.labels, probabilities)},
                           decision=decide(card, probabilities))
                if card.study is not None:  # the folder holding a view is its study
                    row["study"] = str(path.parent)
                if cam_dir is not None:  # the shown class's overlay; for chest14, one per positive finding
                    row["cams"] = {model.labels[c]: write_cam(cam_dir, path, len(rows), display, geometry,
                                                              output.features[k], kernel, c, card)
                                   for c in heatmap_classes(card, probabilities)}
                    row["cam"] = next(iter(row["cams"].values()))
                rows.append(row)
            bar.update(len(batch))
    bar.close()
    if card.study is not None:
        rows += study_rows(rows, base, card)
    return rows


def write_cam(cam_dir: Path, path: Path, index: int, display, geometry, features, kernel, class_index,
              card: dict) -> str:
    """The overlay on the display copy (the whole image, longer side at most imaging.DISPLAY_SIDE)."""
    heatmap, flat = normalise(class_activation_map(features, kernel, class_index))
    mapped = None if flat else on_original(heatmap, geometry, FeatureGrid.from_card(card), display.shape)
    picture = overlay(display, mapped)
    target = cam_dir / f"{index:05d}_{path.stem}_{card.labels[class_index]}.png"
    cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return str(target)


def study_rows(rows: list[dict], base: dict, card: ModelCard) -> list[dict]:
    """One row per study folder; its probabilities are the mean over its readable views, decided by the card."""
    views: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            views[row["study"]].append(row)
    result = []
    for study, members in sorted(views.items()):
        mean = study_probabilities([list(r["probabilities"].values()) for r in members])
        result.append({"kind": "study", "file": study, **base, "status": "ok", "views": len(members),
                       "probabilities": dict(zip(card.labels, mean.tolist())), "decision": decide(card, mean)})
    return result


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="image", disable=not enabled, file=sys.stderr)


def flatten(row: dict, card: ModelCard) -> dict:
    """A CSV row: fixed columns, one probability column per label."""
    decision = row.get("decision", {})
    flat = {key: row.get(key, "") for key in ("kind", "file", "status", "error", "task", "model_version", "variant",
                                                "provider")}
    flat["decision"] = decision.get("text", "")
    for label in card.labels:
        value = row.get("probabilities", {}).get(label)
        flat[f"p_{label}"] = "" if value is None else f"{value:.6f}"
    grouped = card.decision.kind == "grouped"
    for key in ([card.decision.score_key, card.decision.group_name] if grouped else []):
        if key in decision:
            flat[key] = decision[key]
    flat.update({key: row.get(key, "") for key in ("views", "decode_ms", "inference_ms", "cam")})
    if len(row.get("cams", {})) > 1:
        flat["cams"] = ";".join(f"{label}={path}" for label, path in row["cams"].items())
    return flat


def write_results(rows: list[dict], card: ModelCard, out: Path | None) -> None:
    if out is not None and out.suffix.lower() == ".json":
        out.write_text(json.dumps(rows, indent=2))
        return
    flat = [flatten(row, card) for row in rows]
    columns = list(dict.fromkeys(key for row in flat for key in row))
    handle = out.open("w", newline="") if out else sys.stdout
    try:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(flat)
    finally:
        if out:
            handle.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m radiograph predict", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH_OR_DIR")
    parser.add_argument("--out", type=Path, help="results.csv or results.json (default: CSV on stdout)")
    parser.add_argument("--cam-dir", type=Path, help="write a class activation map overlay per image here")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--variant", choices=list(VARIANTS), default="fp32")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--tensorrt", action="store_true", help="try ONNX Runtime's TensorRT provider first")
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("RADIOGRAPH_MODELS", "models")))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.out and args.out.suffix.lower() not in (".csv", ".json"):
        parser.error(f"--out must end in .csv or .json, got {args.out}")
    try:
        model = OnnxModel(args.models / args.task, variant=args.variant, device=args.device, tensorrt=args.tensorrt)
    except ModelFileError as error:
        parser.exit(2, f"error: {error}\n")
    files = expand(args.paths)
    if not files:
        parser.exit(2, f"error: no files found under {', '.join(map(str, args.paths))}\n")
    rows = predict_files(model, files, args.batch_size, args.cam_dir, progress=not args.quiet)
    write_results(rows, model.card, args.out)
    failed = sum(row["status"] == "error" for row in rows)
    print(f"{args.task}: {len(files) - failed} of {len(files)} files predicted on {model.provider} "
          f"({model.card.model_version}, {model.variant})" + (f"; results in {args.out}" if args.out else ""),
          file=sys.stderr)
    if model.card.notice:
        print(model.card.notice, file=sys.stderr)
    return 0
