"""Batch prediction: every readable radiograph under the given paths, one result row per file.

    python -m radiograph predict knee examples/knee --out results.csv
    python -m radiograph predict auto examples --out routed.csv     # each file to the task the router assigns it to
    python -m radiograph predict mura /data/MURA-v1.1/valid/XR_WRIST --out wrist.json --cam-dir cams
    python -m radiograph predict chest14 scan.dcm --variant int8
    python -m radiograph predict chest14 examples/chest14 --cam-dir cams --colormap jet   # overlays in the rainbow
    python -m radiograph predict knee examples/knee --out results.csv --report-dir reports-pdf   # a PDF per file
    python -m radiograph predict chest14 scans/ --dicom-dir results-dcm   # per DICOM file: <file>.sc.dcm, <file>.sr.dcm
    python -m radiograph predict mura --dicomweb http://127.0.0.1:8042/dicom-web --study 1.2.3... --store --out r.csv

Decoding and the input gate's image checks and routing (radiograph.gate) run
in a thread pool one batch ahead of ONNX Runtime, so the two overlap. Every
row carries the gate (verdict, reasons, feature distance, routed task) and
the decision's uncertainty; a DICOM file's row also carries its shown tags (radiograph.imaging.SHOWN_TAGS: JSON
`dicom_tags`, CSV columns dicom_modality, dicom_body_part, dicom_view, dicom_patient_age, dicom_photometric), never
an identifying one, and a non-radiograph modality is a gate warning as in the app. A file the gate refuses gets
status "refused", its reasons and no probabilities; one that cannot be read gets status "error" and the reason;
the batch goes on.

How a study is formed: where the model's card groups images into studies
(MURA), a study is the files of one folder, as in MURA itself
(XR_WRIST/patient00010/study1_positive/image1.png ...; examples/mura is laid
out the same way), and each study gets a row (probabilities: the mean over
the views that passed the gate). Nothing else is looked at to form it, so
several studies side by side in one folder would be pooled: when the files'
names say so (different patient/study ids, or different body parts, in names
such as wrist_patient00010_study1_view1.png) or the model reads different
body parts, the study row's gate warns (codes mixed_studies, mixed_parts) and
the warning is also printed on stderr. With --cam-dir, a class
activation map overlay (ONNX path) is written per file for each class the
decision shows (chest14: every positive finding), in --colormap (default viridis).
Every predicted row also describes its shown class's map in words
(`heatmap.description`, radiograph.regions; CSV column `heatmap_words`). With --report-dir, each readable file (and
each study) also gets the app's one-page PDF report (radiograph.report); the files are analysed once more for it,
through the app's Service on the ONNX CAM path, so the page is the one the app would give.
"""
from __future__ import annotations

import argparse
import atexit
import csv
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from radiograph.cam import COLORMAPS, DEFAULT_COLORMAP, cam_kernel, class_activation_map, colormap_code, normalise, overlay
from radiograph.cards import ModelCard
from radiograph.decision import decide, heatmap_classes, uncertainty_summary
from radiograph.gate import AUTO, Gate, Gatekeeper, Inspection, dicom_reasons, load_gatekeeper, study_result
from radiograph.geometry import FeatureGrid, on_original
from radiograph.imaging import DISPLAY_SIDE, ImageLoadError, decode, display_copy, model_input
from radiograph.inference import VARIANTS, ModelFileError, OnnxModel
from radiograph.regions import describe
from radiograph.registry import TASKS, get_task

# A file analysed a second time (for its PDF report or DICOM results) may fail where its row did not: it changed or
# went away since, or the model's output is unusable now (service.UnusableResult, a ValueError). Its row says so.
AGAIN_FAILED = (ImageLoadError, OSError, ValueError)
DICOM_COLUMNS = {"Modality": "dicom_modality", "BodyPartExamined": "dicom_body_part", "ViewPosition": "dicom_view",
                 "PatientAge": "dicom_patient_age", "PhotometricInterpretation": "dicom_photometric"}  # SHOWN_TAGS
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


@dataclass
class Prepared:
    """One file after decoding and the input gate, before any task model: the task it goes to, its model input
    (None when refused or unreadable), and the gate's refusal or the inspection that completes the gate."""

    path: Path
    task: str | None
    tensor: np.ndarray | None = None
    geometry: object = None
    display: np.ndarray | None = None  # kept only for --cam-dir
    seen: Inspection | None = None
    refusal: Gate | None = None
    error: str | None = None
    seconds: float = 0.0  # decoding, the display copy and the letterbox
    gate_seconds: float = 0.0  # the image checks and routing
    dicom: dict | None = None  # a DICOM file's imaging.SHOWN_TAGS (never an identifying value); travels to the row


def prepare(path: Path, task: str, models: dict[str, OnnxModel], keeper: Gatekeeper, keep_display: bool) -> Prepared:
    """Decode, inspect and letterbox one file for `task` ("auto": the task the router assigns it to)."""
    start = time.perf_counter()
    try:
        decoded = decode(path, reduce_to=DISPLAY_SIDE)
        display = display_copy(decoded.image)
        decoded_at = time.perf_counter()
        seen = keeper.inspect(display, decoded.colourfulness)
        seen.reasons.extend(dicom_reasons(decoded.dicom))  # as the app's Service: e.g. a CT is warned about
        seen.dicom = decoded.dicom
        if task == AUTO:
            chosen, refusal = keeper.choose(seen, models)
        else:
            chosen, refusal = task, keeper.refusal(task, seen)
        inspected = time.perf_counter() - decoded_at
        if refusal is not None:
            return Prepared(path, chosen, refusal=refusal, seconds=decoded_at - start, gate_seconds=inspected,
                            dicom=decoded.dicom)
        tensor, geometry = model_input(decoded, models[chosen].size)
        return Prepared(path, chosen, tensor, geometry, display if keep_display else None, seen,
                        seconds=time.perf_counter() - start - inspected, gate_seconds=inspected, dicom=decoded.dicom)
    except (ImageLoadError, OSError) as error:
        return Prepared(path, None if task == AUTO else task, error=str(error), seconds=time.perf_counter() - start)


def predict_files(models: dict[str, OnnxModel], files: list[Path], task: str, keeper: Gatekeeper | None = None,
                  batch_size: int = 16, cam_dir: Path | None = None, workers: int = 2,
                  progress: bool = True, colormap: str = DEFAULT_COLORMAP, processes: int = 0,
                  decoders=None, done: dict | None = None, journal=None) -> list[dict]:
    """One row per file (status ok, refused or error), in input order, then one row per study where a card groups
    images into studies. `task` is a task id, or "auto": each file goes to the task the router assigns it to.
    `colormap` (radiograph.cam.COLORMAPS) colours the --cam-dir overlays.

    Decoding and the gate's image checks run ahead of ONNX Runtime in `workers` threads, or with `processes` > 0
    in that many worker processes (radiograph.decoding.DecodePool; `decoders`: a pool to use, kept open); both give
    the same rows. `done` (str(file) -> (row, gate), radiograph.resume) holds rows of an earlier run: those files
    are not read again and their rows take their places. `journal(pairs)` is called with each batch's new
    (row, gate) pairs once they exist."""
    colormap_code(colormap)  # an unknown colour map is refused before any file is read
    keeper = keeper or Gatekeeper()
    kernels = {t: cam_kernel(m.folder / "model.onnx", m.card) for t, m in models.items()  # maps: words, cam_dir
               if cam_dir or (m.folder / "model.onnx").exists()}  # words need the fp32 file's Dense kernel
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    done = done or {}
    placed: dict[int, tuple[dict, Gate | None]] = {k: done[str(path)] for k, path in enumerate(files)
                                                    if str(path) in done}  # row index -> (row, gate)
    todo = [k for k in range(len(files)) if k not in placed]  # the row indices of the files still to read
    indices = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    batches = [[files[k] for k in chunk] for chunk in indices]
    bar = _progress(len(files), progress)
    bar.update(len(placed))
    with _decoded(batches, task, models, keeper, cam_dir is not None, workers, processes, decoders) as decoded:
        for number, (batch, prepared) in enumerate(decoded):
            outputs = {}
            for chosen in dict.fromkeys(p.task for p in prepared if p.tensor is not None):  # one run per task
                members = [k for k, p in enumerate(prepared) if p.tensor is not None and p.task == chosen]
                output = models[chosen].run(np.stack([prepared[k].tensor for k in members]))
                for position, k in enumerate(members):
                    outputs[k] = (output, position, output.seconds / len(members))
            fresh = []
            for k, item in enumerate(prepared):
                index = indices[number][k]
                fresh.append(_row(item, models, keeper, outputs.get(k), cam_dir, kernels, index, colormap))
                placed[index] = fresh[-1]
            if journal is not None:
                journal(fresh)
            bar.update(len(batch))
    bar.close()
    rows = [placed[k][0] for k in range(len(files))]
    gates: list[Gate | None] = [placed[k][1] for k in range(len(files))]  # None: unreadable; for the studies
    for chosen, model in models.items():
        if model.card.study is not None:
            mine = [k for k, r in enumerate(rows) if r.get("task") == chosen and gates[k] is not None]
            rows += study_rows([rows[k] for k in mine], [gates[k] for k in mine], _base(model), model.card)
    return rows


class _Threads:
    """Decoding in threads of this process, one batch ahead (the path without worker processes)."""

    def __init__(self, workers: int):
        self.pool = ThreadPoolExecutor(workers)

    def batches(self, batches, task, models, keeper, keep_display):
        def submit(batch):
            return [self.pool.submit(prepare, path, task, models, keeper, keep_display) for path in batch]

        pending = submit(batches[0]) if batches else []
        for index, batch in enumerate(batches):
            prepared = [future.result() for future in pending]
            if index + 1 < len(batches):  # decode the next batch while this one runs
                pending = submit(batches[index + 1])
            yield batch, prepared


@contextmanager
def _decoded(batches, task, models, keeper, keep_display, workers, processes, decoders):
    """(batch, its Prepared list) in order: from `decoders` (a radiograph.decoding.DecodePool), a pool of
    `processes` made for this call, or `workers` threads."""
    if decoders is None and not processes:
        threads = _Threads(workers)
        try:
            yield threads.batches(batches, task, models, keeper, keep_display)
        finally:
            threads.pool.shutdown(wait=True, cancel_futures=True)
        return
    from radiograph.decoding import DecodePool

    pool = decoders or DecodePool(keeper, processes)
    try:
        yield pool.batches(batches, task, {t: m.size for t, m in models.items()}, keep_display)
    finally:
        if decoders is None:
            pool.close()


def _base(model: OnnxModel) -> dict:
    return {"task": model.card.task, "model_version": model.card.model_version, "variant": model.variant,
            "provider": model.provider}


def _row(item: Prepared, models: dict[str, OnnxModel], keeper: Gatekeeper, ran, cam_dir, kernels,
         index, colormap: str = DEFAULT_COLORMAP) -> tuple[dict, Gate | None]:
    model = models.get(item.task)
    row = {"kind": "image", "file": str(item.path), **(_base(model) if model else {"task": item.task}),
           "decode_ms": round(item.seconds * 1e3, 2), "gate_ms": round(item.gate_seconds * 1e3, 2)}
    if item.dicom is not None:  # "dicom" itself is taken: it holds the paths of --dicom-dir's results
        row["dicom_tags"] = dict(item.dicom)
    if item.error:  # no image, so no gate either
        return {**row, "status": "error", "error": item.error, "gate": None}, None
    if item.refusal is not None:
        return {**row, "status": "refused", "gate": item.refusal.as_dict(),
                "decision": item.refusal.annotate({})}, item.refusal
    output, position, share = ran
    card, probabilities = model.card, output.probabilities[position]
    if not np.isfinite(probabilities).all():
        return {**row, "status": "error", "gate": None, "error": "the model returned a probability that is not a "
                "finite number for this image, so there is no result"}, None
    features = output.features[position] if output.features is not None else None
    start = time.perf_counter()
    gate = keeper.gate(item.task, item.seen, features)
    row["gate_ms"] = round((item.gate_seconds + time.perf_counter() - start) * 1e3, 2)
    row.update(status="ok", inference_ms=round(share * 1e3, 2), gate=gate.as_dict(),
               probabilities={label: float(p) for label, p in zip(card.labels, probabilities)},
               uncertainty=uncertainty_summary(card, probabilities), decision=gate.annotate(decide(card, probabilities)))
    if card.study is not None:  # the folder holding a view is its study
        row["study"] = str(item.path.parent)
    if features is not None and item.task in kernels:  # the shown class's map in words
        shown = heatmap_classes(card, probabilities)[0]
        row["heatmap"] = {"class": card.labels[shown],
                          "description": describe_map(features, kernels[item.task], shown, item.geometry, card)}
    if cam_dir is not None:  # the shown class's overlay; for chest14, one per positive finding
        row["cams"] = {card.labels[c]: write_cam(cam_dir, item.path, index, item.display, item.geometry, features,
                                                 kernels[item.task], c, card, colormap)
                       for c in heatmap_classes(card, probabilities)}
        row["cam"] = next(iter(row["cams"].values()))
    return row, gate


def describe_map(features, kernel, class_index, geometry, card: ModelCard) -> dict:
    """One class's map in words (radiograph.regions.describe), placed on the image at the size it had inside the
    model input (small: the words need the map's shape on the film, not its full resolution)."""
    heatmap, flat = normalise(class_activation_map(features, kernel, class_index))
    mapped = None if flat else on_original(heatmap, geometry, FeatureGrid.from_card(card),
                                           (geometry.height, geometry.width))
    return describe(mapped, get_task(card.task).anatomy)


def write_cam(cam_dir: Path, path: Path, index: int, display, geometry, features, kernel, class_index,
              card: dict, colormap: str = DEFAULT_COLORMAP) -> str:
    """The overlay on the display copy (the whole image, longer side at most imaging.DISPLAY_SIDE)."""
    heatmap, flat = normalise(class_activation_map(features, kernel, class_index))
    mapped = None if flat else on_original(heatmap, geometry, FeatureGrid.from_card(card), display.shape)
    picture = overlay(display, mapped, colormap=colormap)
    target = cam_dir / f"{index:05d}_{path.stem}_{card.labels[class_index]}.png"
    cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return str(target)


def study_rows(rows: list[dict], gates: list[Gate], base: dict, card: ModelCard) -> list[dict]:
    """One row per study folder; its probabilities are the mean over its views that passed the gate, decided by
    the card; its gate is the views' (radiograph.gate.study_gate: mixed body parts are warned about)."""
    views: dict[str, list[tuple[dict, Gate]]] = defaultdict(list)
    for row, gate in zip(rows, gates):
        views[str(Path(row["file"]).parent)].append((row, gate))
    result = []
    for study, members in sorted(views.items()):
        gate, fields = study_result(card, [(Path(r["file"]).name, g, np.asarray(list(r["probabilities"].values()))
                                            if r["status"] == "ok" else None) for r, g in members])
        result.append({"kind": "study", "file": study, **base, "views": len(members), "gate": gate.as_dict(),
                       "status": "ok" if "probabilities" in fields else "refused", **fields})
    return result


def reanalysed(service, task: str, row: dict):
    """A row's file analysed once more through the app's Service (for its report or its DICOM results)."""
    source = Path(row["file"])
    return service.analyse_auto(source) if task == AUTO else service.analyse(row["task"], source)


def write_reports(rows: list[dict], task: str, folder: Path, tasks: list[str], report_dir: Path,
                  variant: str = "fp32", device: str = "auto") -> None:
    """The app's one-page PDF report of every readable file's row (refused ones too) and of every study row,
    written to `report_dir` as `<row index>_<name>.pdf`; each row gets its path under "report"."""
    from radiograph.report import analysis_report, study_report
    from radiograph.service import Service

    service = Service(folder, tasks, cam_path="onnx", device=device, variant=variant, strict=True)
    report_dir.mkdir(parents=True, exist_ok=True)
    for index, row in enumerate(rows):
        if row["status"] == "error":
            continue
        try:
            if row["kind"] == "image":
                data = analysis_report(reanalysed(service, task, row))
            else:  # a study: every view read in its folder
                views = [Path(r["file"]) for r in rows if r["kind"] == "image" and r["status"] != "error"
                         and r.get("task") == row["task"] and str(Path(r["file"]).parent) == row["file"]]
                data = study_report(*service.analyse_study(row["task"], views))
        except AGAIN_FAILED as error:  # the file changed or went away since its row was made: the batch goes on
            row["report_error"] = f"{type(error).__name__}: {error}"
            print(f"note: no report for {row['file']}: {row['report_error']}", file=sys.stderr)
            continue
        target = report_dir / f"{index:05d}_{Path(row['file']).stem or 'study'}.pdf"
        target.write_bytes(data)
        row["report"] = str(target)


def write_dicom_dir(rows: list[dict], task: str, folder: Path, tasks: list[str], dicom_dir: Path,
                    variant: str = "fp32", device: str = "auto") -> None:
    """Every predicted DICOM file's results as DICOM (radiograph.dicom_results): `<row index>_<file stem>.sc.dcm` (the overlay as a
    Secondary Capture) and `<row index>_<file stem>.sr.dcm` (the findings as a Structured Report) in `dicom_dir`, each file
    analysed once more through the app's Service (ONNX CAM path); each row gets the two paths under "dicom", or
    the reason there are none under "dicom_error" (e.g. a source without a study to join). A study row whose every
    view read has results gets the study's report (radiograph.dicom_results.study_report) the same way."""
    from radiograph.dicom_results import DicomResultError, write_dicom_results, write_study_report
    from radiograph.imaging import sniff
    from radiograph.service import Service

    service = None
    for index, row in enumerate(rows):
        if row["kind"] != "image" or row["status"] != "ok":
            continue
        source = Path(row["file"])
        try:
            with source.open("rb") as handle:
                if sniff(handle.read(132), source.name) != "DICOM":
                    continue
            service = service or Service(folder, tasks, cam_path="onnx", device=device, variant=variant, strict=True)
            paths = write_dicom_results(reanalysed(service, task, row), dicom_dir,
                                        f"{index:05d}_{source.stem or source.name}")
        except (DicomResultError, *AGAIN_FAILED) as error:
            row["dicom_error"] = str(error) if isinstance(error, DicomResultError) else f"{type(error).__name__}: {error}"
            print(f"note: no DICOM results for {source}: {row['dicom_error']}", file=sys.stderr)
            continue
        row["dicom"] = [str(path) for path in paths]
    views: dict[tuple, list[dict]] = {}  # a study row's views read: its task's image rows in its folder
    for row in rows:
        if row["kind"] == "image" and row["status"] == "ok":
            views.setdefault((row.get("task"), str(Path(row["file"]).parent)), []).append(row)
    for index, row in enumerate(rows):  # a study of DICOM views (MURA): its report too, `<row index>_<folder>.study.sr.dcm`
        if row["kind"] != "study" or row["status"] != "ok":
            continue
        members = views.get((row["task"], row["file"]), [])
        if not members or not all(r.get("dicom") for r in members):  # only where every view read has results
            continue
        try:  # each view analysed once more (keeping every analysis of a batch would hold its images in memory)
            path = write_study_report(row, [reanalysed(service, task, r) for r in members], dicom_dir,
                                      f"{index:05d}_{Path(row['file']).name or 'study'}")
        except (DicomResultError, *AGAIN_FAILED) as error:
            row["dicom_error"] = str(error) if isinstance(error, DicomResultError) else f"{type(error).__name__}: {error}"
            print(f"note: no DICOM study report for {row['file']}: {row['dicom_error']}", file=sys.stderr)
            continue
        row["dicom"] = [str(path)]


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="image", disable=not enabled, file=sys.stderr)


def flatten(row: dict, cards: dict[str, ModelCard]) -> dict:
    """A CSV row: fixed columns, the gate, one probability column per label (`p_<label>`; with several tasks,
    `p_<task>_<label>`)."""
    decision, gate, card = row.get("decision", {}), row.get("gate") or {}, cards.get(row.get("task"))
    flat = {key: row.get(key, "") for key in ("kind", "file", "status", "error", "task", "model_version", "variant",
                                                "provider")}
    flat["decision"] = decision.get("text", "")
    flat["gate_verdict"] = gate.get("verdict", "")
    flat["gate_reasons"] = " | ".join(gate.get("reasons", []))
    for key in ("ood_score", "ood_threshold", "routed_task", "routed_probability"):
        flat[key] = "" if gate.get(key) is None else gate[key]
    flat["uncertainty"] = (row.get("uncertainty") or {}).get("value", "")
    flat["heatmap_words"] = ((row.get("heatmap") or {}).get("description") or {}).get("text", "")
    for task, each in cards.items():
        prefix = "p_" if len(cards) == 1 else f"p_{task}_"
        for label in each.labels:
            value = row.get("probabilities", {}).get(label) if task == row.get("task") else None
            flat[f"{prefix}{label}"] = "" if value is None else f"{value:.6f}"
    if card is not None and card.decision.kind == "grouped":
        for key in (card.decision.score_key, card.decision.group_name):
            if key in decision:
                flat[key] = decision[key]
    flat.update({key: row.get(key, "") for key in ("views", "decode_ms", "gate_ms", "inference_ms", "cam")})
    if "dicom_tags" in row:  # only a DICOM file's row; a batch without one has no such columns
        flat.update({column: row["dicom_tags"].get(keyword, "") for keyword, column in DICOM_COLUMNS.items()})
    if "report" in row:
        flat["report"] = row["report"]
    if "dicom" in row or "dicom_error" in row:
        flat["dicom"] = ";".join(row.get("dicom", [])) or row["dicom_error"]
    if len(row.get("cams", {})) > 1:
        flat["cams"] = ";".join(f"{label}={path}" for label, path in row["cams"].items())
    return flat


def write_results(rows: list[dict], cards: dict[str, ModelCard], out: Path | None) -> None:
    if out is not None and out.suffix.lower() == ".json":
        out.write_text(json.dumps(rows, indent=2))
        return
    flat = [flatten(row, cards) for row in rows]
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
    parser.add_argument("task", choices=[*TASKS, AUTO], help="a task, or auto: each file goes to the task the "
                        "router assigns it to")
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH_OR_DIR")
    parser.add_argument("--out", type=Path, help="results.csv or results.json (default: CSV on stdout)")
    parser.add_argument("--cam-dir", type=Path, help="write a class activation map overlay per image here")
    parser.add_argument("--colormap", choices=list(COLORMAPS), default=DEFAULT_COLORMAP,
                        help=f"the --cam-dir overlays' colour map (default {DEFAULT_COLORMAP}: perceptually uniform, "
                             "colour-blind safe; jet is the rainbow)")
    parser.add_argument("--report-dir", type=Path, help="write the app's one-page PDF report per file (and per "
                        "study) here; each file is analysed once more for it")
    parser.add_argument("--dicom-dir", type=Path, help="write each predicted DICOM file's results as DICOM here: "
                        "<file>.sc.dcm (overlay, Secondary Capture) and <file>.sr.dcm (findings, Structured Report); "
                        "each DICOM file is analysed once more for them")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--variant", choices=list(VARIANTS), default="fp32")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--tensorrt", action="store_true", help="try ONNX Runtime's TensorRT provider first")
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("RADIOGRAPH_MODELS", "models")))
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--processes", type=int, default=None,
                        help="decode processes (default: one per core, at most 8; 0: threads in this process)")
    parser.add_argument("--ort-threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads (default 0: ONNX Runtime's own choice, every core)")
    parser.add_argument("--resume", action="store_true", help="skip the files the journal beside --out holds "
                        "(OUT.journal.jsonl, written as the command goes) and write the whole output again")
    parser.add_argument("--dicomweb", metavar="URL", default=os.environ.get("RADIOGRAPH_DICOMWEB_URL") or None,
                        help="a DICOMweb server's root for --study (default RADIOGRAPH_DICOMWEB_URL; credentials from "
                             "RADIOGRAPH_DICOMWEB_USER and _PASSWORD, or _TOKEN)")
    parser.add_argument("--study", action="append", default=[], metavar="UID",
                        help="fetch this study's images from --dicomweb (WADO-RS) and predict them; repeatable")
    parser.add_argument("--store", action="store_true", help="with --study: store each image's DICOM results "
                        "(Secondary Capture, Structured Report) back into its study on the server (STOW-RS)")
    args = parser.parse_args(argv)
    if not args.paths and not args.study:
        parser.error("give files or folders to predict, or --study UID to fetch from a DICOMweb server")
    if args.study and not args.dicomweb:
        parser.error("--study needs a DICOMweb server: --dicomweb URL or RADIOGRAPH_DICOMWEB_URL")
    if args.store and not args.study:
        parser.error("--store writes results back into the studies fetched with --study; give --study UID")
    if args.processes is not None and args.processes < 0:
        parser.error(f"--processes must be 0 (threads) or more, got {args.processes}")
    if args.ort_threads < 0:
        parser.error(f"--ort-threads must be 0 (ONNX Runtime's choice) or more, got {args.ort_threads}")
    if args.resume and args.study:
        parser.error("--resume skips files an earlier run predicted, by their path; a study fetched with --study "
                     "lands in a new scratch folder each run, so nothing would be skipped: run again without --resume")
    if args.resume and not args.out:
        parser.error("--resume needs --out: the journal it continues lies beside the output file")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.out and args.out.suffix.lower() not in (".csv", ".json"):
        parser.error(f"--out must end in .csv or .json, got {args.out}")
    tasks = [t for t in TASKS if (args.models / t / "card.json").exists()] if args.task == AUTO else [args.task]
    try:
        models = {t: OnnxModel(args.models / t, variant=args.variant, device=args.device, tensorrt=args.tensorrt,
                               threads=args.ort_threads or None) for t in tasks}
        keeper, problem = load_gatekeeper(args.models, models, args.device, strict=args.task == AUTO)
    except (ModelFileError, FileNotFoundError) as error:  # auto needs the router: strict about it
        parser.exit(2, f"error: {error}\n")
    if problem:
        print(f"note: no routing ({problem}); the image checks and feature distance still run", file=sys.stderr)
    fetched, pacs, scratch_results = {}, None, False
    if args.study:
        from radiograph.pacs import Pacs, PacsError, fetch_into

        scratch = Path(tempfile.mkdtemp(prefix="radiograph-dicomweb-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        try:
            pacs = Pacs.from_environment({**os.environ, "RADIOGRAPH_DICOMWEB_URL": args.dicomweb})
            fetched = fetch_into(pacs, args.study, scratch / "studies")
        except PacsError as error:
            parser.exit(2, f"error: {error}\n")
        if args.store and not args.dicom_dir:  # results written only to be stored: their scratch paths not shown
            args.dicom_dir, scratch_results = scratch / "results", True
    files = expand(args.paths) + list(fetched)
    if not files:
        parser.exit(2, f"error: no files found under {', '.join(map(str, args.paths))}\n")
    from radiograph.decoding import default_processes
    from radiograph.resume import Journal, JournalError, journal_path, read_journal

    journal, done = None, {}
    if args.out:
        settings = {"task": args.task, "models": {t: [m.card.model_version, m.variant] for t, m in models.items()},
                    "cam_dir": None if args.cam_dir is None else str(args.cam_dir), "colormap": args.colormap}
        try:
            done = read_journal(journal_path(args.out), settings) if args.resume else {}
        except JournalError as error:
            parser.exit(2, f"error: {error}\n")
        if args.resume:
            print(f"resuming: {sum(str(f) in done for f in files)} of {len(files)} files are in "
                  f"{journal_path(args.out)}", file=sys.stderr)
        journal = Journal(journal_path(args.out), settings, fresh=not args.resume)
    processes = default_processes() if args.processes is None else args.processes
    try:
        rows = predict_files(models, files, args.task, keeper, args.batch_size, args.cam_dir, progress=not args.quiet,
                             colormap=args.colormap, processes=processes, done=done, journal=journal)
    finally:
        if journal is not None:
            journal.close()
    if args.report_dir:
        write_reports(rows, args.task, args.models, list(models), args.report_dir, args.variant, args.device)
    if args.dicom_dir:
        write_dicom_dir(rows, args.task, args.models, list(models), args.dicom_dir, args.variant, args.device)
    failed_stores = 0
    if args.store:
        from radiograph.pacs import store_rows

        failed_stores = store_rows(pacs, rows, fetched)
    if fetched:
        from radiograph.pacs import label_fetched_rows

        label_fetched_rows(rows, fetched, pacs.url, scratch_results)
    write_results(rows, {t: m.card for t, m in models.items()}, args.out)
    images = [row for row in rows if row["kind"] == "image"]
    counts = {status: sum(row["status"] == status for row in images) for status in ("ok", "refused", "error")}
    warned = sum((row.get("gate") or {}).get("verdict") == "warn" for row in images)
    versions = ", ".join(f"{m.card.model_version} ({m.variant}, {m.provider})" for m in models.values())
    print(f"{args.task}: {counts['ok']} of {len(files)} files predicted ({warned} with a warning), "
          f"{counts['refused']} refused by the input gate, {counts['error']} unreadable; {versions}"
          + (f"; results in {args.out}" if args.out else "")
          + (f"; {sum('report' in row for row in rows)} PDF reports in {args.report_dir}" if args.report_dir else "")
          + (f"; DICOM results of {sum('dicom' in row for row in rows)} files in {args.dicom_dir}"
             if args.dicom_dir and not args.store else "")
          + (f"; {sum(len(row.get('stored', [])) for row in rows)} DICOM results stored in {len(args.study)} studies "
             f"on {pacs.url}" if args.store else ""),
          file=sys.stderr)
    for row in rows:  # a folder that looks like several studies: said on the terminal too, not only in the row
        if row["kind"] == "study" and {"mixed_studies", "mixed_parts"} & set(row["gate"]["codes"]):
            print(f"warning: {row['file']}: " + " ".join(text for text, code in zip(row["gate"]["reasons"],
                  row["gate"]["codes"]) if code in ("mixed_studies", "mixed_parts")), file=sys.stderr)
    for notice in dict.fromkeys(m.card.notice for m in models.values() if m.card.notice):
        print(notice, file=sys.stderr)
    return 1 if failed_stores else 0
