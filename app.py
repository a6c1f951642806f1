"""Radiograph classifier: a Gradio app with one tab per task, a Models tab, and a named API for scripts.

    python app.py                                 # http://127.0.0.1:7860, the shipped demo models
    python app.py --host 0.0.0.0 --port 8080      # or RADIOGRAPH_HOST / RADIOGRAPH_PORT (GRADIO_SERVER_* on a Space)
    python app.py --cam onnx --models /my/models  # or RADIOGRAPH_CAM / RADIOGRAPH_MODELS
    python app.py --colormap jet                  # the overlays' default colour map (RADIOGRAPH_COLORMAP): viridis

Scripts (gradio_client), one endpoint per task:

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    result, overlay_png = client.predict(handle_file("knee.png"), api_name="/knee")
    study, gallery = client.predict([handle_file("view1.png"), handle_file("view2.png")], api_name="/mura_study")

Models load once at start-up and every request shares them. At most
--concurrency analyses run at once across every tab and endpoint, the queue
holds a bounded number more, each file and each request has a size cap, and
a session keeps only a display-size copy of its last analysis, for a limited
time (docs/input-budget.md). A model that fails to load disables only its own
tab and endpoint, unless --strict. Heatmaps of every
class are computed with the prediction, so the class selector, opacity and
outline re-render the overlay without running the model again. Research
software, not a medical device.
"""
from __future__ import annotations

import os
import time

STARTED = time.perf_counter()  # start-up time is reported from here: imports included

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no outbound requests
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import argparse  # noqa: E402
import atexit  # noqa: E402
import ctypes  # noqa: E402
import html  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from radiograph.cam import COLORMAPS, DEFAULT_COLORMAP, METHODS, colormap_code  # noqa: E402
from radiograph.cards import card_markdown, unreachable_thresholds  # noqa: E402
from radiograph.imaging import MAX_FILE_BYTES, MAX_REQUEST_BYTES, MAX_VIEWS, SHOWN_TAGS, ImageLoadError  # noqa: E402
from radiograph.decision import grouped_summary, uncertainty_summary  # noqa: E402
from radiograph.gate import AUTO  # noqa: E402
from radiograph.regions import percent  # noqa: E402
from radiograph.registry import TASKS  # noqa: E402
from radiograph.report import analysis_report, study_report  # noqa: E402
from radiograph.routing import router_markdown  # noqa: E402
from radiograph.service import RoutingUnavailable, Service, UnusableResult  # noqa: E402

ROOT = Path(__file__).resolve().parent
LOG = logging.getLogger("radiograph.app")
FILE_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"]
UPLOAD_HELP = "PNG, JPEG, BMP, TIFF (8/16-bit) or DICOM (.dcm)"
MAX_FILE_SIZE = f"{MAX_FILE_BYTES // 2**20}mb"  # per file, checked by Gradio while it receives the upload
QUEUE_SIZE = 64  # requests waiting (each holds only its uploaded file on disk); more are answered "busy, try again"
STATE_TTL_S = 1800  # a session's last analysis (display-size copy, small maps) is dropped after this
SESSIONS_KEPT = 200  # and at most this many sessions' state is kept at all (oldest dropped first)
HEATMAP_METHODS = [("Grad-CAM", "gradcam"), ("Grad-CAM++", "gradcam++")]  # (shown, value): radiograph.cam.METHODS
OVERLAY_AGE_S = 600  # overlay files older than this are removed (Gradio has copied them to its cache by then)
ANALYSIS = "analysis"  # the one concurrency group every analysing event shares
QUICK = {"api_visibility": "private", "show_progress": "hidden", "queue": False}  # clearing a tab's outputs
NOT_A_DEVICE = ("**Research demo, not a medical device.** Do not use it to diagnose, treat or triage anyone; "
                "the heatmap shows where the model looked, not where disease is.")


def notice(card) -> str:
    if card.trained_on_phantoms:
        trained = (f"This tab's model (`{card.model_version}`) is a **demo model trained on synthetic phantom "
                   "radiographs**: it has never seen a patient, and its figures describe phantoms.")
    else:
        trained = f"This tab's model (`{card.model_version}`) was trained on {card.data.get('dataset', 'unknown data')}."
    return f"> {NOT_A_DEVICE} {trained}"


def examples_of(task: str, studies: bool) -> tuple[list, list[str]]:
    """([[file or list of files]], captions) from examples/<task>/examples.json."""
    index = ROOT / "examples" / task / "examples.json"
    if not index.exists():
        return [], []
    entries = json.loads(index.read_text())
    folder = index.parent
    values = [[[str(folder / f) for f in e["files"]]] if studies else [str(folder / e["files"][0])]
              for e in entries]
    return values, [e["caption"] for e in entries]


def thumbnails_of(task: str) -> list[str | None]:
    """Each example's thumbnail (examples.json `thumbnail`, made by `python -m train.examples --thumbnails`), or
    None where an entry has none."""
    index = ROOT / "examples" / task / "examples.json"
    entries = json.loads(index.read_text()) if index.exists() else []
    return [str(index.parent / e["thumbnail"]) if e.get("thumbnail") else None for e in entries]


def threshold_bars(labels: list[str], probabilities, thresholds: dict) -> str:
    """HTML bar chart: one bar per class, its operating threshold marked, positives in bold; a threshold only a
    saturated probability meets (radiograph.cards.unreachable_thresholds) is said to be unreachable."""
    rows, unreachable = [], unreachable_thresholds(thresholds)
    for label, p in sorted(zip(labels, probabilities), key=lambda item: -item[1]):
        t = thresholds[label]
        positive = p >= t
        never = (" (threshold unreachable: called only at a saturated probability)" if label in unreachable else "")
        rows.append(
            f'<div class="bar-row{" positive" if positive else ""}{" unreachable" if never else ""}" '
            f'title="P = {p:.3f}, threshold {t:.3f}{never}">'
            f'<span class="bar-label">{html.escape(label)}{"<sup>*</sup>" if never else ""}</span>'
            f'<span class="bar-track"><span class="bar-fill" style="width:{100 * p:.1f}%"></span>'
            f'<span class="bar-threshold" style="left:{100 * t:.1f}%"></span></span>'
            f'<span class="bar-value">{p:.2f}</span></div>')
    note = (f'<div class="bar-note">* Unreachable threshold ({", ".join(map(html.escape, unreachable))}): only a '
            "probability that has saturated at practically 1 meets it, so this model calls "
            f"{'this finding' if len(unreachable) == 1 else 'these findings'} positive only then, and never on a less "
            "certain image.</div>" if unreachable else "")
    return ('<div class="threshold-bars"><div class="bar-caption">Probability per finding; the black tick is the '
            "finding's operating threshold (chosen on validation). Bold: above it.</div>" + "".join(rows) + note
            + "</div>")


CSS = """
.threshold-bars {font-size: 0.9em}
.bar-caption {margin-bottom: 6px; opacity: 0.8}
.bar-row {display: flex; align-items: center; gap: 8px; margin: 2px 0}
.bar-row.positive {font-weight: 700}
.bar-label {width: 150px; text-align: right}
.bar-track {position: relative; flex: 1; height: 14px; background: #e5e7eb; border-radius: 3px}
.bar-fill {position: absolute; left: 0; top: 0; bottom: 0; background: #60a5fa; border-radius: 3px}
.bar-row.positive .bar-fill {background: #f97316}
.bar-threshold {position: absolute; top: -3px; bottom: -3px; width: 2px; background: #111827}
.bar-value {width: 40px}
.bar-note {margin-top: 6px}
.whole-images .grid-wrap.fixed-height {min-height: 0; max-height: none; overflow-y: visible}
.example-thumbnails .caption-label {white-space: normal; max-width: 100%; opacity: 1; left: var(--block-label-margin)}
.gate {padding: 8px 12px; border-radius: 6px; margin-bottom: 8px}
.gate ul {margin: 4px 0 0 18px}
.gate-ok {background: #ecfdf5; color: #065f46}
.gate-warn {background: #fef3c7; color: #78350f; border: 2px solid #b45309}
.gate-refuse {background: #fee2e2; color: #7f1d1d; border: 2px solid #b91c1c}
:focus-visible {outline: 3px solid #1d4ed8 !important; outline-offset: 2px}
.dark :focus-visible {outline-color: #93c5fd !important}
[data-testid=json] .json-node:not(.dark-mode) {--text-color: #9a4a2e; --string-color: #a31515;
  --number-color: #1f5f75; --bracket-color: #2f5f5f; --square-bracket-color: #a0303a; --punctuation-color: #3f6f6e;
  --line-number-color: #57606a}
"""

# Accessibility (docs/app.md, "Accessibility"). The :focus-visible rules above: every control shows where the
# keyboard is (Gradio draws no ring on its dropdown, range and checkbox, and a white one around the primary button,
# invisible on the white page); #1d4ed8 is 6.7:1 on white. The JSON rule: Gradio's JSON viewer colours light-mode
# text like a dark editor theme (strings #ce9178 on white, 2.6:1); these shades are 5.7:1 to 7.9:1 on white (dark
# mode keeps Gradio's colours).
# THEME: Gradio's default theme draws white text on orange-500 (contrast
# 2.8:1), the selected tab in orange-500 and its "- or -" / "Use via API" text in neutral-400 (1.9:1); WCAG AA asks
# 4.5:1 for normal text. The darker shades below pass (orange-700 on white 5.2:1, neutral-600 7.6:1).
THEME = gr.themes.Default().set(
    button_primary_background_fill="*primary_700", button_primary_background_fill_hover="*primary_800",
    button_primary_background_fill_dark="*primary_700", button_primary_background_fill_hover_dark="*primary_800",
    color_accent="*primary_700", body_text_color_subdued="*neutral_600")

# Gradio (6.31) marks an empty output (an image, label or JSON with no value yet) with
# <div aria-label="Empty value"> and no role. ARIA prohibits a name on a generic div, so screen readers drop it and
# axe reports "aria-prohibited-attr" (serious). No component option changes that markup, so this script gives
# those placeholders role="img" (an icon that stands for "empty value"), which makes the label valid and read.
# It also names the "add more files" button of a multi-file upload, whose label is an untranslated key that a screen
# reader would read out as "common.upload".
HEAD = """<script>
(() => {
  const name = () => {
    document.querySelectorAll('div[aria-label="Empty value"]:not([role])')
      .forEach((placeholder) => placeholder.setAttribute("role", "img"));
    document.querySelectorAll('button[aria-label="common.upload"]').forEach((button) => {
      button.setAttribute("aria-label", "Add more files");
      button.setAttribute("title", "Add more files");
    });
  };
  new MutationObserver(name).observe(document.documentElement,
    {childList: true, subtree: true, attributes: true, attributeFilter: ["aria-label"]});
})();
</script>"""
OVERLAY_ALT = ("Grad-CAM overlay: the radiograph with the model's heatmap for the chosen class laid over it; warm "
               "colours mark where the model looked, not where disease is")
PREVIEW_ALT = "The decoded radiograph as the model reads it (after windowing and resizing)"


def timing_text(timings: dict, model: dict | None) -> str:
    parts = " · ".join(f"{name} {value:.0f} ms" for name, value in timings.items() if name != "total")
    if model is None:
        return f"**{timings['total']:.0f} ms** ({parts}); no model ran"
    return (f"**{timings['total']:.0f} ms** ({parts}) on `{model['provider']}`, heatmap by `{model['cam_path']}`, "
            f"model `{model['model_version']}` ({model['variant']})")


def dicom_text(tags: dict | None) -> str:
    """Markdown: a DICOM input's shown tags (radiograph.imaging.SHOWN_TAGS, in that order, e.g. "DICOM: CR, CHEST,
    PA, 045Y, MONOCHROME2"; never an identifying one); nothing for other formats."""
    if not tags:
        return ""
    return "\n\nDICOM: " + ", ".join(html.escape(str(tags[key])) for key in SHOWN_TAGS if key in tags)


def gate_panel(gate: dict) -> str:
    """HTML: the input gate's verdict, prominent when it warns or refuses (role=alert, so screen readers say it)."""
    if gate["verdict"] == "ok":
        return ('<div class="gate gate-ok">Input gate: passed (image checks'
                + (", router" if gate.get("routed_task") else "") + (", feature distance" if gate.get("ood_score")
                                                                      is not None else "") + ").</div>")
    heading = "Refused: no diagnosis" if gate["verdict"] == "refuse" else "Warning: read the result with care"
    items = "".join(f"<li>{html.escape(reason)}</li>" for reason in gate["reasons"])
    return f'<div class="gate gate-{gate["verdict"]}" role="alert"><strong>{heading}</strong><ul>{items}</ul></div>'


def read_by(task: str, analyses) -> str:
    """Which model read a fetched study: the chosen task's, or under routing (AUTO) each routed task's."""
    titles = sorted({TASKS[analysis.task].title for analysis in analyses})
    model = f"the {' and '.join(titles)} model" + ("s" if len(titles) > 1 else "")
    return f"{model}, routed" if task == AUTO else model


def uncertainty_text(uncertainty: dict | None) -> str:
    if not uncertainty:
        return ""
    level = {True: "**high**: the decision is near its boundary", False: "low", None: "not calibrated"}[
        uncertainty.get("high")]
    return f"\n\nUncertainty {uncertainty['value']:.2f} ({level})."


def notes_text(notes) -> str:
    """Markdown: what the loader did not trust in the file and how it worked around it (nothing when none)."""
    return "".join(f"\n\n**Input warning:** {html.escape(note)}" for note in notes)


def shown_method(analysis, method: str) -> str:
    """The chosen heatmap method where the analysis has its maps, else Grad-CAM (every path computes it)."""
    return method if method in analysis.methods else "gradcam"


def cleared(outputs: list) -> list:
    """Empty values for a tab's outputs (a new upload, a cleared one, or a failed analysis shows nothing old)."""
    return [gr.update(value=None, visible=False) if isinstance(o, gr.Gallery) and not o.visible  # hidden again
            else gr.update(visible=False) if isinstance(o, gr.Button)  # "open in the routed task's tab"
            else gr.update(value=None, choices=[]) if isinstance(o, gr.Dropdown)
            else gr.update(value=None, visible=False) if isinstance(o, gr.DownloadButton)  # the PDF report
            else gr.update(value=None, visible=False) if isinstance(o, gr.File) and not o.visible  # DICOM results
            else None for o in outputs]


def refusal(message: str) -> gr.Error:
    """A refused input: the message for the user, no traceback in the server log."""
    return gr.Error(message, print_exception=False)


def radiograph_upload(endpoint: str, **settings) -> gr.File:
    """A gr.File for radiographs whose wrong-extension refusal (Gradio's own check, whose error prints a
    traceback) is quiet and logged as one line like every other refused input."""
    upload = gr.File(file_types=FILE_TYPES, type="filepath", **settings)
    check = upload._process_single_file

    def process(payload):
        try:
            return check(payload)
        except gr.Error as error:
            path, message = Path(payload.path), getattr(error, "message", str(error))
            App.log_refusal(endpoint, path.name, path.stat().st_size if path.exists() else 0, message)
            raise refusal(message) from None

    upload._process_single_file = process
    return upload


class UploadLimit:
    """ASGI middleware: an upload request whose body is larger than `limit` bytes is answered 413 (from its
    Content-Length) or cut off once that many bytes have arrived (a chunked body)."""

    def __init__(self, app, limit: int = MAX_REQUEST_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].endswith("/upload"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            body = f"the upload is {int(declared) / 2**20:.0f} MB; one request may carry at most " \
                   f"{self.limit // 2**20} MB".encode()
            await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"text/plain")]})
            return await send({"type": "http.response.body", "body": body})
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            return {"type": "http.disconnect"} if received > self.limit else message

        return await self.app(scope, counted, send)


class App:
    """The Blocks UI and API over one Service."""

    def __init__(self, service: Service, colormap: str = DEFAULT_COLORMAP, pacs=None):
        self.service = service
        self.pacs = pacs  # radiograph.pacs.Pacs when a DICOMweb server is configured: the PACS tab exists only then
        colormap_code(colormap)  # an unknown colour map is refused here, not at the first overlay
        self.colormap = colormap  # the overlays' default; each tab's "Colour map" dropdown starts on it
        self.overlays = Path(tempfile.mkdtemp(prefix="radiograph-overlays-"))
        self.sweeping = threading.Lock()
        atexit.register(shutil.rmtree, self.overlays, ignore_errors=True)

    def close(self) -> None:
        """Remove the overlay folder (also done at exit)."""
        shutil.rmtree(self.overlays, ignore_errors=True)

    # ------------------------------------------------------------------ handlers (plain functions of values)

    def checked_files(self, endpoint: str, paths: list[str]) -> list[str]:
        """The uploaded files of one request, refused together if there are too many or they are too large."""
        sizes = [Path(path).stat().st_size for path in paths]
        if len(paths) > MAX_VIEWS:
            problem = f"{len(paths)} files in one request; at most {MAX_VIEWS} views of one study are accepted"
        elif sum(sizes) > MAX_REQUEST_BYTES:
            problem = (f"{sum(sizes) / 2**20:.0f} MB in one request; at most {MAX_REQUEST_BYTES // 2**20} MB "
                       "together are accepted")
        else:
            return paths
        self.log_refusal(endpoint, "request", sum(sizes), problem)
        raise refusal(problem[0].upper() + problem[1:] + ".")

    @staticmethod
    def log_refusal(endpoint: str, name: str, size: int, problem: str) -> None:
        LOG.info("refused %r (%d bytes) on /%s: %s", name, size, endpoint, problem)  # %r: no control characters

    def answer(self, endpoint: str, paths: list[str], work):
        """Run `work()`; a refused input becomes the user's message and one log line, anything unexpected a
        message without server paths and a logged traceback."""
        try:
            return work()
        except gr.Error:  # already the user's message
            raise
        except RoutingUnavailable as error:
            raise refusal(str(error)) from None
        except (ImageLoadError, UnusableResult) as error:
            name = str(error).split(":", 1)[0]
            size = next((Path(p).stat().st_size for p in paths if Path(p).name == name and Path(p).exists()), 0)
            self.log_refusal(endpoint, name, size, getattr(error, "problem", str(error)))
            raise refusal(str(error)) from None
        except Exception:  # noqa: BLE001 - the user gets a message, the log the traceback
            LOG.exception("unexpected error on /%s", endpoint)
            raise gr.Error("The analysis failed on the server (an unexpected error, logged there). The input was "
                           "not analysed; please try again or report it.", print_exception=False) from None

    def analyse(self, task: str, radiograph: str | None, endpoint: str | None = None):
        """API: one file -> (result JSON, overlay PNG at the display size, state for re-rendering)."""
        endpoint = endpoint or task
        if not radiograph:
            raise refusal(f"No file received: upload a radiograph ({UPLOAD_HELP}).")
        self.checked_files(endpoint, [radiograph])

        def work():
            if task == AUTO:
                analysis = self.service.analyse_auto(radiograph, Path(radiograph).name)
            else:
                analysis = self.service.analyse(task, radiograph, Path(radiograph).name)
            return analysis.result(), self.png(analysis.overlay(colormap=self.colormap)), analysis

        return self.answer(endpoint, [radiograph], work)

    def analyse_study(self, task: str, views: list[str] | None):
        """API: the views of one study -> (study JSON, gallery of overlays, state)."""
        if not views:
            raise refusal(f"No files received: upload one or more views of one study ({UPLOAD_HELP}).")
        endpoint = f"{task}_study"
        self.checked_files(endpoint, views)

        def work():
            analyses, study = self.service.analyse_study(task, views, [Path(p).name for p in views])
            return study, self.gallery(analyses), (analyses, study)

        return self.answer(endpoint, views, work)

    def report(self, task: str, radiograph: str | None):
        """API: one file -> its analysis's one-page PDF report (radiograph.report), a refused image's too."""
        endpoint = f"{task}_report"
        _, _, analysis = self.analyse(task, radiograph, endpoint)
        return self.answer(endpoint, [radiograph], lambda: self.pdf(analysis_report(analysis), analysis.name))

    def study_report(self, task: str, views: list[str] | None):
        """API: the views of one study -> the study's one-page PDF report."""
        _, _, (analyses, study) = self.analyse_study(task, views)
        return self.answer(f"{task}_study_report", views, lambda: self.pdf(study_report(analyses, study),
                                                                           f"{task}-study"))

    def download(self, state):
        """UI: the tab's download button, filled with the PDF report of the analysis in its state (an Analysis, or
        a study's (views, study JSON)); the model does not run again."""
        if state is None:
            return gr.update(value=None, visible=False)
        if isinstance(state, tuple):
            path = self.pdf(study_report(*state), f"{state[0][0].task}-study")
        else:
            path = self.pdf(analysis_report(state), state.name)
        return gr.update(value=path, visible=True)

    def dicom_files(self, state):
        """UI: the DICOM results (radiograph.dicom_results: overlay as Secondary Capture, findings as Structured
        Report) of the analysis in the state (a study's: of each DICOM view, and the study's report), shown only
        for DICOM input they can be written for."""
        from radiograph.dicom_results import DicomResultError, write_dicom_results, write_study_report

        views = (state[0] if isinstance(state, tuple) else [state]) if state is not None else []
        views = [view for view in views if view.dicom_header is not None and not view.refused]
        if not views:
            return gr.update(value=None, visible=False)
        self.sweep()
        paths, problems = [], []
        for view in views:
            stem = re.sub(r"[^\w.-]+", "_", Path(view.name).stem)[:80] or "radiograph"
            try:
                paths += write_dicom_results(view, self.overlays, f"{stem}-{uuid.uuid4().hex[:8]}")
            except DicomResultError as error:
                problems.append(str(error))
        if isinstance(state, tuple) and paths and not problems:  # every view has results: the study's report too
            try:
                paths.append(write_study_report(state[1], state[0], self.overlays,
                                                f"{state[0][0].task}-study-{uuid.uuid4().hex[:8]}"))
            except DicomResultError as error:
                problems.append(f"the study's report: {error}")
        if problems:
            gr.Warning(" ".join(problems[:3]))
        return gr.update(value=[str(path) for path in paths] or None, visible=bool(paths))

    # ------------------------------------------------------------------ PACS (DICOMweb), only when configured

    def pacs_answer(self, endpoint: str, work):
        """Run `work()` against the PACS: a server that is down, a study not found or refused credentials become
        the user's message (and a log line with the kind only); the tab's other fields keep their values."""
        from radiograph.pacs import PacsError

        def guarded():
            try:
                return work()
            except PacsError as error:
                LOG.info("PACS request on /%s failed (%s)", endpoint, error.kind)  # no UIDs, no patient values
                raise refusal(str(error)) from None

        return self.answer(endpoint, [], guarded)

    def pacs_search(self, study: str, date: str, modality: str, patient_id: str):
        """API: studies on the PACS matching the filters -> (table rows, the study chooser, status). Patient names
        and IDs are never shown; a patient ID is only a filter."""
        from radiograph.pacs import MAX_STUDIES

        rows = self.pacs_answer("pacs_search", lambda: self.pacs.search(study or "", date or "", modality or "",
                                                                        patient_id or ""))
        table = [[row["study"], row["date"], row["description"], row["modalities"], row["series"], row["instances"]]
                 for row in rows]
        choices = [(f"{row['date'] or 'no date'} {row['description'] or 'no description'} ({row['modalities'] or '?'}"
                    f", {row['instances'] or '?'} instances) ...{row['study'][-10:]}", row["study"]) for row in rows]
        status = (f"{len(rows)} {'study' if len(rows) == 1 else 'studies'} found"
                  + (f" (the first {MAX_STUDIES}: narrow the search)" if len(rows) >= MAX_STUDIES else "")
                  + ("; choose one, a task, and Fetch and analyse." if rows else "."))
        return table, gr.update(choices=choices, value=choices[0][1] if choices else None), status

    def pacs_analyse(self, study: str, task: str, store: bool = False):
        """API: fetch a study from the PACS, analyse it (a MURA study as a study), and optionally store the results
        back as DICOM -> (result JSON, gallery of overlays, state, status)."""
        from radiograph.pacs import PacsError, analyse_fetched

        def work():
            start = time.perf_counter()
            instances, skipped = self.pacs.fetch_study(study or "")
            fetched = time.perf_counter()
            analyses, result = analyse_fetched(self.service, task, instances, skipped)
            analysed = time.perf_counter()
            result["timings_ms"] = {"fetch": round(1000 * (fetched - start), 1),
                                    "analyse": round(1000 * (analysed - fetched), 1)}
            status = (f"Fetched {len(instances)} image instances of study ...{instances[0].study[-10:]} in "
                      f"{fetched - start:.1f} s" + (f" (skipped {skipped} other objects)" if skipped else "")
                      + f"; analysed in {analysed - fetched:.1f} s by {read_by(task, analyses)}."
                      + (f" Study: {result['study']['decision']['text']}" if "study" in result else ""))
            if store:  # a store that fails keeps the analysis: the user sees both, and can store again
                try:
                    result["stored"] = self.pacs_store_results(analyses, instances[0].study, result.get("study"))
                except PacsError as error:
                    LOG.info("PACS request on /pacs_analyse failed (%s)", error.kind)
                    result["stored"] = {"instances": [], "error": str(error), "text": f"Not stored: {error}"}
                status += " " + result["stored"]["text"]
            pictures = [(self.png(analysis.overlay(colormap=self.colormap)),
                         f"{analysis.name}: {analysis.decision()['text'][:90]}") for analysis in analyses]
            state = {"analyses": analyses, "study": instances[0].study, "study_result": result.get("study"),
                     "stored": bool(result.get("stored", {}).get("instances"))}
            return result, pictures, state, status

        return self.pacs_answer("pacs_analyse", work)

    def pacs_store_results(self, analyses: list, study: str, study_result: dict | None = None) -> dict:
        from radiograph.pacs import results_as_dicom

        datasets, reasons = results_as_dicom(analyses, study_result)
        stored = self.pacs.store(datasets, study) if datasets else []
        text = (f"Stored {len(stored)} results in the study (a Grad-CAM Secondary Capture and a findings Structured "
                f"Report per analysed image" + (", and the study's report" if study_result else "") + ")."
                if stored else "Nothing was stored.")
        if reasons:
            text += f" {len(reasons)} not written: " + "; ".join(reasons[:3])
        return {"instances": stored, "not_written": reasons, "text": text}

    def pacs_store(self, state):
        """UI: store the results of the analysis in the tab's state in the PACS, once. A failed store can be pressed
        again: results keep their UIDs (radiograph.dicom_results.derived_uid), so the server keeps one copy."""
        if not state:
            raise refusal("Nothing to store yet: fetch and analyse a study first.")
        if state["stored"]:
            raise refusal("These results are in the PACS already; storing them again would change nothing (each "
                          "result keeps its UID).")
        text = self.pacs_answer("pacs_store", lambda: self.pacs_store_results(state["analyses"], state["study"],
                                                                              state.get("study_result"))["text"])
        return text, {**state, "stored": True}

    def pdf(self, data: bytes, name: str) -> str:
        """Write a PDF report as `<input name>-report-<unique>.pdf` beside the overlays (swept with them)."""
        self.sweep()
        stem = re.sub(r"[^\w.-]+", "_", Path(name).stem)[:80] or "radiograph"
        target = self.overlays / f"{stem}-report-{uuid.uuid4().hex[:8]}.pdf"
        target.write_bytes(data)
        return str(target)

    def png(self, picture: np.ndarray) -> str:
        """Write an RGB overlay as PNG with OpenCV (several times faster than Gradio's Pillow encoder on large
        films) under a new unique name. Gradio copies it into its own cache as the handler returns, so files
        older than OVERLAY_AGE_S are swept, by one thread at a time, tolerating files already gone."""
        self.sweep()
        target = self.overlays / f"{uuid.uuid4().hex}.png"
        cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        return str(target)

    def sweep(self) -> None:
        if not self.sweeping.acquire(blocking=False):
            return  # another request is sweeping
        try:
            cutoff = time.time() - OVERLAY_AGE_S
            for old in [*self.overlays.glob("*.png"), *self.overlays.glob("*.pdf"), *self.overlays.glob("*.dcm")]:
                try:
                    if old.stat().st_mtime < cutoff:
                        old.unlink()
                except FileNotFoundError:
                    pass
        finally:
            self.sweeping.release()

    def gallery(self, views, class_index=None, opacity=0.4, region=False, colormap=None, method="gradcam"):
        decision = views[0].card.decision  # a grouped decision (registry.Decision): P(positive) per view
        return [(self.png(view.overlay(class_index, opacity, region, colormap or self.colormap,
                                       shown_method(view, method))),
                 f"{view.name}: refused by the input gate" if view.refused else
                 f"{view.name}: P({decision.positive}) "
                 f"{grouped_summary(decision, view.probabilities)[decision.score_key]:.2f}"
                 + (" (warning)" if view.gate.verdict == "warn" else ""))
                for view in views]

    def findings_gallery(self, analysis, opacity=0.4, region=False, colormap=None, method="gradcam"):
        """Multi-label: one overlay per positive finding, shown when there is more than one (the overlay above
        already shows the first)."""
        thresholds, shown = analysis.card.thresholds, analysis.shown_classes
        if len(shown) < 2:
            return gr.update(value=None, visible=False)
        return gr.update(visible=True, value=[
            (self.png(analysis.overlay(c, opacity, region, colormap or self.colormap, shown_method(analysis, method))),
             f"{analysis.labels[c]}: P {analysis.probabilities[c]:.2f} (threshold {thresholds[analysis.labels[c]]:.2f})")
            for c in shown])

    def present(self, task: str, analysis, method: str = "gradcam"):
        """UI: the rest of the page from the state of the last analysis (task: the tab's, or AUTO; method: the
        heatmap method chosen)."""
        gate = analysis.gate.as_dict()
        routed = ""
        if task == AUTO and analysis.task:
            routed = (f"Routed to **{TASKS[analysis.task].title}** (router P = "
                      f"{analysis.gate.routed_probability:.2f}).\n\n")
        multi_label = task == AUTO or self.service.models[task].card.multi_label
        if analysis.refused:
            outputs = [gate_panel(gate), "### Refused: not analysed" + notes_text(analysis.notes), None,
                       analysis.display, gr.update(value=None, choices=[]),
                       timing_text(analysis.timings_ms, analysis.model) + dicom_text(analysis.dicom)]
            return outputs + ([None, gr.update(value=None, visible=False)] if multi_label else [])
        decision = (routed + f"### {analysis.decision()['text']}"
                    + uncertainty_text(uncertainty_summary(analysis.card, analysis.probabilities))
                    + notes_text(analysis.notes))
        label_value = {label: round(float(p), 4) for label, p in zip(analysis.labels, analysis.probabilities)}
        selector = gr.update(choices=analysis.labels, value=analysis.labels[analysis.shown_class])
        outputs = [gate_panel(gate), decision, label_value, analysis.display, selector,
                   timing_text(analysis.timings_ms, analysis.model) + dicom_text(analysis.dicom)]
        if multi_label and analysis.card.multi_label:
            outputs += [threshold_bars(analysis.labels, analysis.probabilities, analysis.card.thresholds),
                        self.findings_gallery(analysis, method=method)]
        elif multi_label:
            outputs += [None, gr.update(value=None, visible=False)]
        return outputs

    @staticmethod
    def routed_elsewhere(state) -> str | None:
        """The task the router assigns a tab's last image to (a study's: its views' most common one), when that
        is not the task it was analysed as; else None."""
        if isinstance(state, tuple):  # a study: (views, study JSON)
            views, study = state
            own, routed = views[0].task, study["gate"]["routed_task"]
        else:
            own, routed = (state.task, state.gate.routed_task) if state is not None else (None, None)
        return routed if routed is not None and routed != own else None

    def open_routed(self, state) -> gr.Button:
        """The button that opens the image in the tab of the task the router assigns it to (shown when that is
        another task than the tab's)."""
        routed = self.routed_elsewhere(state)
        if routed not in self.service.models:
            return gr.update(visible=False)
        return gr.update(visible=True, value=f"Open this image in the {TASKS[routed].title} tab")

    def present_study(self, state):
        views, study = state
        decision, rule = study["decision"], views[0].card.decision
        positive, other = rule.positive, rule.negative
        labels = views[0].labels
        if "probabilities" not in study:  # every view refused
            return (gate_panel(study["gate"]), f"### {decision['text']}", None, gr.update(value=None, choices=[]),
                    timing_text(study["timings_ms"], study["model"]))
        score = decision[rule.score_key]
        label_value = {positive: score, other: 1 - score}
        first_read = next(view for view in views if not view.refused)
        selector = gr.update(choices=labels, value=labels[first_read.shown_class])
        group = rule.group_name
        text = (f"### {decision['text']}\nStudy of {len(views)} view(s); P({positive}) is the mean over the views. "
                f"{group.replace('_', ' ').capitalize()}: {decision[group]} ({decision[rule.group_score_key]:.2f})."
                + uncertainty_text(study["uncertainty"])
                + notes_text([f"{view.name}: {note}" for view in views for note in view.notes]))
        return gate_panel(study["gate"]), text, label_value, selector, timing_text(study["timings_ms"], study["model"])

    # ------------------------------------------------------------------ layout

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="Radiograph classifier (research demo)", delete_cache=(600, 1800)) as demo:
            gr.Markdown("# Radiograph classifier\n" + ", ".join(spec.title for spec in TASKS.values())
                        + ", served by ONNX Runtime with Grad-CAM heatmaps. Every image passes an input gate first.")
            opened = {}  # tab -> (its upload, its "open in the routed task's tab" button, its state)
            with gr.Tabs() as tabs:
                if self.service.router is not None:
                    with gr.Tab("Any radiograph", id=AUTO):
                        gr.Markdown(f"> {NOT_A_DEVICE} The router and every model here are **demo models trained "
                                    "on synthetic phantoms**.\n\nThe router says which task an image belongs to "
                                    "(or none), and the image is analysed by that task's model.")
                        opened[AUTO] = self.image_tab(AUTO)
                for task in self.service.tasks:
                    with gr.Tab(TASKS[task].title, id=task):
                        if task in self.service.unavailable:
                            self.unavailable_tab(task)
                        elif self.service.models[task].card.study is not None:
                            gr.Markdown(notice(self.service.models[task].card))
                            opened[task] = self.study_tab(task)
                        else:
                            gr.Markdown(notice(self.service.models[task].card))
                            opened[task] = self.image_tab(task)
                if self.pacs is not None:
                    with gr.Tab("PACS", id="pacs"):
                        self.pacs_tab()
                with gr.Tab("Models", id="models"):
                    self.models_tab()
            self.wire_opening(tabs, opened)
        return demo

    def wire_opening(self, tabs, opened: dict) -> None:
        """Each tab's "open in the routed task's tab" button: switches to that tab with the same file in its
        upload (a study tab gets it as a one-view study); the user presses Analyse there."""
        uploads = {task: upload for task, (upload, _, _) in opened.items() if task != AUTO}

        def open_in_routed(state, files):
            target = self.routed_elsewhere(state)
            first = (files[0] if isinstance(files, list) else files) if files else None
            if target not in uploads or first is None:
                return [gr.skip()] * (1 + len(uploads))
            studies = {task: self.service.models[task].card.study is not None for task in uploads}
            return [gr.Tabs(selected=target)] + [([first] if studies[task] else first) if task == target
                                                 else gr.skip() for task in uploads]

        for upload, button, state in opened.values():
            button.click(open_in_routed, [state, upload], [tabs, *uploads.values()], api_visibility="private",
                         **{k: v for k, v in QUICK.items() if k != "api_visibility"})

    def examples(self, task: str, upload):
        """The task's phantom examples as a gallery of thumbnails, each captioned with its truth (visible, and the
        image's alt text); for a model whose card groups images into studies, each is a study. The Any radiograph
        tab gets every task's examples (a study's first view). Returns the event that puts a chosen example into
        the upload (the caller chains the analysis on it), or None when there are no examples."""
        if task == AUTO:
            rows = [(value, f"{TASKS[t].title}: {caption}", thumbnail) for t in self.service.models
                    for value, caption, thumbnail in zip(*examples_of(t, False), thumbnails_of(t))]
        else:
            studies = self.service.models[task].card.study is not None
            rows = list(zip(*examples_of(task, studies), thumbnails_of(task)))
        if not rows:
            return None
        values = [value[0] for value, _, _ in rows]
        pictures = [(thumbnail or (value if isinstance(value, str) else value[0]), caption)
                    for value, caption, thumbnail in rows]
        gallery = gr.Gallery(pictures, label="Phantom examples, never used in training (the caption is the truth): "
                             "choose one to analyse it", columns=min(len(pictures), 4), height="auto",
                             object_fit="contain", allow_preview=False, interactive=False, format="png",
                             elem_id=f"{task}-examples", elem_classes=["whole-images", "example-thumbnails"])

        def chosen(selected: gr.SelectData):
            return values[selected.index]

        return gallery.select(chosen, None, [upload], api_visibility="private", queue=False, show_progress="hidden")

    def heatmap_controls(self, task: str, labels: list[str]):
        with gr.Row():
            selector = gr.Dropdown(choices=labels, label="Heatmap class", interactive=True, elem_id=f"{task}-class")
            opacity = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="Heatmap opacity", elem_id=f"{task}-opacity")
            colours = gr.Dropdown(choices=list(COLORMAPS), value=self.colormap, label="Colour map", interactive=True,
                                  elem_id=f"{task}-colormap",
                                  info="viridis, cividis: colour-blind safe")
            region = gr.Checkbox(label="Outline the hottest region", value=False, elem_id=f"{task}-region")
            method = gr.Radio(HEATMAP_METHODS, value="gradcam", label="Heatmap method", elem_id=f"{task}-method",
                              visible=len(self.heatmap_methods(task)) > 1,
                              info="Grad-CAM++ (Chattopadhay et al. 2018) weights each channel by its positive "
                                   "gradients; it needs TensorFlow (the Keras path)")
        return selector, opacity, region, colours, method

    def heatmap_methods(self, task: str) -> tuple[str, ...]:
        """The heatmap methods every explainer behind a tab offers (the Auto tab's: every task's)."""
        explainers = self.service.explainers.values() if task == AUTO else [self.service.explainers[task]]
        return tuple(m for m in METHODS if all(m in explainer.methods for explainer in explainers))

    @staticmethod
    def heatmap_words(analysis, class_name: str | None = None, method: str = "gradcam") -> str:
        """Markdown: the heatmap of `class_name` (default: the overlay's class) in words
        (radiograph.regions.describe); nothing for a refused image."""
        if analysis is None or analysis.refused:
            return ""
        labels = analysis.labels
        index = labels.index(class_name) if class_name in labels else analysis.shown_class
        return f"**{html.escape(labels[index])} heatmap in words.** {analysis.description(index, shown_method(analysis, method))['text']}"

    @staticmethod
    def study_words(views, class_name: str | None = None, method: str = "gradcam") -> str:
        """Markdown: each view's heatmap of `class_name` (default: each view's own shown class) in words, the
        terms the places are named in said once."""
        lines, terms = [], ""
        for view in views:
            if view.refused:
                lines.append(f"- **{html.escape(view.name)}**: refused by the input gate, no heatmap.")
                continue
            index = view.labels.index(class_name) if class_name in view.labels else view.shown_class
            words = view.description(index, shown_method(view, method))
            terms = words.get("terms", terms)
            lines.append(f"- **{html.escape(view.name)}**, {html.escape(view.labels[index])} heatmap: " + (
                words["text"] if words["flat"] else f"hottest region {words['place']}, covering "
                f"{percent(words['hottest_region_fraction'])} of the image ({percent(words['warm_fraction'])} at "
                "or above half the map's maximum)."))
        return ("**Heatmaps in words, per view**" + (f" ({terms})" if terms else "") + ".\n\n"
                + "\n".join(lines)) if lines else ""

    def image_tab(self, task: str):
        """One image, one task's model; for AUTO, the task the router assigns the image to (its labels, bars and
        findings gallery are set per analysis)."""
        routed = task == AUTO
        labels = [] if routed else self.service.models[task].labels
        multi_label = routed or self.service.models[task].card.multi_label
        state = gr.State(time_to_live=STATE_TTL_S)
        with gr.Row():
            with gr.Column(scale=1):  # what goes in, and where the model looked
                upload = radiograph_upload(task, label=f"Radiograph: {UPLOAD_HELP}", elem_id=f"{task}-upload")
                button = gr.Button("Analyse", variant="primary", elem_id=f"{task}-analyse")
                examples = self.examples(task, upload)
                overlay = gr.Image(label="Grad-CAM overlay", interactive=False, format="png", type="filepath",
                                   elem_id=f"{task}-overlay", alt_text=OVERLAY_ALT)
                words = gr.Markdown(elem_id=f"{task}-heatmap-words")
                selector, opacity, region, colours, method = self.heatmap_controls(task, labels)
                findings = gr.Gallery(label="Grad-CAM per positive finding", columns=3, height="auto", format="png",
                                      allow_preview=False, object_fit="contain", visible=False,
                                      elem_id=f"{task}-findings") if multi_label else None
            with gr.Column(scale=1):  # what the gate and the model said
                gate = gr.HTML(elem_id=f"{task}-gate")
                open_routed = gr.Button(visible=False, variant="secondary", elem_id=f"{task}-open-routed")
                decision = gr.Markdown(elem_id=f"{task}-decision")
                label = gr.Label(num_top_classes=5 if routed else min(5, len(labels)), label="Top probabilities",
                                 elem_id=f"{task}-label")
                bars = gr.HTML(elem_id=f"{task}-bars") if multi_label else None
                timing = gr.Markdown(elem_id=f"{task}-timing")
                report = gr.DownloadButton("Download PDF report", visible=False, elem_id=f"{task}-report")
                dicom = gr.File(label="DICOM results: overlay (Secondary Capture), findings (Structured Report)",
                                file_count="multiple", interactive=False, visible=False, elem_id=f"{task}-dicom")
                preview = gr.Image(label="Decoded image (as the model reads it)", interactive=False, format="png",
                                   height=260, elem_id=f"{task}-preview", alt_text=PREVIEW_ALT)
                result = gr.JSON(label="Result (JSON)", open=False)
        shown = [gate, decision, label, preview, selector, timing] + ([bars, findings] if multi_label else [])
        shown.append(words)  # last: `show` adds its value to present()'s
        description = ("Any radiograph: the router chooses its task (knee, MURA, pediatric or adult chest) or refuses "
                       "it, and that task's model analyses it" if routed else TASKS[task].question)

        def run(radiograph):
            return self.analyse(task, radiograph)

        def show(analysis, chosen):
            return self.present(task, analysis, chosen) + [self.heatmap_words(analysis, None, chosen)]

        def rerender(analysis, class_name, alpha, outline, colormap, chosen):
            if analysis is None or analysis.refused or class_name not in analysis.labels:
                return gr.skip()
            return self.png(analysis.overlay(analysis.labels.index(class_name), alpha, outline, colormap,
                                             shown_method(analysis, chosen)))

        def reword(analysis, class_name, chosen):
            return self.heatmap_words(analysis, class_name, chosen)

        every = [result, overlay, state, open_routed, report, dicom] + shown
        clear = self.clearing(every)
        analysed = gr.on([button.click, upload.upload], clear, None, every, **QUICK).then(
            run, [upload], [result, overlay, state], api_name=task, concurrency_id=ANALYSIS,
            api_description=f"{description}. Returns (result JSON with the input gate's verdict, Grad-CAM overlay PNG "
                            "at the input's size, at most 2048 pixels a side; the plain image when refused).")
        analysed.success(show, [state, method], shown, api_visibility="private").success(
            self.open_routed, [state], [open_routed], api_visibility="private", queue=False).success(
            self.download, [state], [report], api_visibility="private", concurrency_id="render").success(
            self.dicom_files, [state], [dicom], api_visibility="private", concurrency_id="render")
        upload.clear(clear, None, every, **QUICK)
        if examples is not None:
            examples.then(clear, None, every, **QUICK).then(
                run, [upload], [result, overlay, state], api_visibility="private", concurrency_id=ANALYSIS).success(
                show, [state, method], shown, api_visibility="private").success(
                self.open_routed, [state], [open_routed], api_visibility="private", queue=False).success(
                self.download, [state], [report], api_visibility="private", concurrency_id="render").success(
                self.dicom_files, [state], [dicom], api_visibility="private", concurrency_id="render")
        self.report_endpoints(task)
        # opacity.input: Gradio 6's slider sends it as its number box is typed in and as the range moves (by mouse or
        # arrow keys); `release` came only on pointer-up or blur, so a typed value + Enter did nothing. always_last:
        # a drag renders its last value, not every step.
        gr.on([selector.change, opacity.input, region.change, colours.change, method.change], rerender,
              [state, selector, opacity, region, colours, method], [overlay], api_visibility="private",
              show_progress="hidden", concurrency_id="render", trigger_mode="always_last")
        gr.on([selector.change, method.change], reword, [state, selector, method], [words], **QUICK)
        if multi_label:
            def refind(analysis, alpha, outline, colormap, chosen):
                if analysis is None or analysis.refused or not analysis.card.multi_label:
                    return gr.skip()
                return self.findings_gallery(analysis, alpha, outline, colormap, chosen)

            gr.on([opacity.input, region.change, colours.change, method.change], refind,
                  [state, opacity, region, colours, method], [findings], api_visibility="private",
                  show_progress="hidden", concurrency_id="render", trigger_mode="always_last")
        return upload, open_routed, state

    def study_tab(self, task: str):
        """A task whose images form studies (registry.Study): the tab analyses every view of one study; the
        single-view endpoint `/<task>` is there for scripts."""
        labels = self.service.models[task].labels
        rule = self.service.models[task].card.decision
        positive, other = rule.positive, rule.negative
        state = gr.State(time_to_live=STATE_TTL_S)
        with gr.Row():
            with gr.Column(scale=1):
                upload = radiograph_upload(f"{task}_study", label=f"The views of one study: {UPLOAD_HELP}",
                                           file_count="multiple", elem_id=f"{task}-upload")
                button = gr.Button("Analyse study", variant="primary", elem_id=f"{task}-analyse")
                examples = self.examples(task, upload)
            with gr.Column(scale=1):
                gate = gr.HTML(elem_id=f"{task}-gate")
                open_routed = gr.Button(visible=False, variant="secondary", elem_id=f"{task}-open-routed")
                decision = gr.Markdown(elem_id=f"{task}-decision")
                label = gr.Label(num_top_classes=2, label="Study (mean over views)", elem_id=f"{task}-label")
                timing = gr.Markdown(elem_id=f"{task}-timing")
                report = gr.DownloadButton("Download PDF report", visible=False, elem_id=f"{task}-report")
                dicom = gr.File(label="DICOM results per DICOM view: overlay (Secondary Capture), findings "
                                "(Structured Report)", file_count="multiple", interactive=False, visible=False,
                                elem_id=f"{task}-dicom")
        gallery = gr.Gallery(label="Grad-CAM per view", columns=4, height="auto", format="png", object_fit="contain",
                             elem_id=f"{task}-gallery", elem_classes=["whole-images"])  # CSS: no cut-off rows
        words = gr.Markdown(elem_id=f"{task}-heatmap-words")
        selector, opacity, region, colours, method = self.heatmap_controls(task, labels)
        result = gr.JSON(label="Study result (JSON)", open=False)
        shown = [gate, decision, label, selector, timing, words]  # words last: `show_study` adds them

        def show_study(state, chosen):
            return [*self.present_study(state), self.study_words(state[0], None, chosen)]

        def rerender(state, class_name, alpha, outline, colormap, chosen):
            if not state or class_name not in state[0][0].labels:
                return gr.skip()
            views = state[0]
            return self.gallery(views, views[0].labels.index(class_name), alpha, outline, colormap, chosen)

        def reword(state, class_name, chosen):
            return self.study_words(state[0], class_name, chosen) if state else ""

        every = [result, gallery, state, open_routed, report, dicom] + shown
        clear = self.clearing(every)
        gr.on([button.click, upload.upload], clear, None, every, **QUICK).then(
            partial(self.analyse_study, task), [upload], [result, gallery, state], api_name=f"{task}_study",
            concurrency_id=ANALYSIS, api_description=f"The views of one {TASKS[task].title} study: {other} or "
            f"{positive} (mean over the views) and {rule.group_name.replace('_', ' ')}. "
            "Returns (study JSON with the input gate's verdict and per-view results, gallery of Grad-CAM overlays)."
        ).success(show_study, [state, method], shown, api_visibility="private").success(
            self.open_routed, [state], [open_routed], api_visibility="private", queue=False).success(
            self.download, [state], [report], api_visibility="private", concurrency_id="render").success(
            self.dicom_files, [state], [dicom], api_visibility="private", concurrency_id="render")
        upload.clear(clear, None, every, **QUICK)
        if examples is not None:
            examples.then(clear, None, every, **QUICK).then(
                partial(self.analyse_study, task), [upload], [result, gallery, state], api_visibility="private",
                concurrency_id=ANALYSIS).success(show_study, [state, method], shown, api_visibility="private").success(
                self.open_routed, [state], [open_routed], api_visibility="private", queue=False).success(
                self.download, [state], [report], api_visibility="private", concurrency_id="render").success(
                self.dicom_files, [state], [dicom], api_visibility="private", concurrency_id="render")
        self.report_endpoints(task)
        gr.on([selector.change, opacity.input, region.change, colours.change, method.change], rerender,
              [state, selector, opacity, region, colours, method], [gallery], api_visibility="private",
              show_progress="hidden", concurrency_id="render", trigger_mode="always_last")  # opacity.input: as in image_tab
        gr.on([selector.change, method.change], reword, [state, selector, method], [words], **QUICK)
        # /<task>: one view on its own, for scripts (the tab above analyses whole studies)
        with gr.Group(visible=False):
            single = radiograph_upload(task)
            single_result = gr.JSON(label="Result (JSON)")
            single_overlay = gr.Image(label="Grad-CAM overlay", format="png", type="filepath")
            trigger = gr.Button()

        def run_view(radiograph):
            return self.analyse(task, radiograph)[:2]

        trigger.click(run_view, [single], [single_result, single_overlay], concurrency_id=ANALYSIS,
                      api_name=task, api_description=f"One view of a {TASKS[task].title} study: {other} or {positive} "
                      f"and {rule.group_name.replace('_', ' ')}. "
                      "Returns (result JSON, Grad-CAM overlay PNG at the input's size, at most 2048 pixels a side).")
        return upload, open_routed, state

    def report_endpoints(self, task: str, refuse=None) -> None:
        """/<task>_report, and /<task>_study_report for a task whose card groups images into studies: the same
        file input as /<task> (/<task>_study), the one-page PDF report back. `refuse`: the handler of an
        unavailable task's endpoints."""
        studies = task in TASKS and TASKS[task].study is not None
        what = "Any radiograph routed to its task" if task == AUTO else TASKS[task].title
        with gr.Group(visible=False):
            for endpoint, count, handler in [(f"{task}_report", "single", partial(self.report, task))] + (
                    [(f"{task}_study_report", "multiple", partial(self.study_report, task))] if studies else []):
                upload = (gr.File(file_types=FILE_TYPES, type="filepath", file_count=count) if refuse else
                          radiograph_upload(endpoint, file_count=count))
                gr.Button().click(refuse or handler, [upload], [gr.File(label="PDF report")],
                                  concurrency_id=ANALYSIS, api_name=endpoint, api_description=(
                                      f"{what}: the one-page PDF report of the analysis of one "
                                      f"{'study' if count == 'multiple' else 'file'} (image and Grad-CAM overlay, "
                                      "probabilities with thresholds, input gate, model card summary, UTC time, "
                                      "the file's sha256). Research demo, not a medical device."))

    @staticmethod
    def clearing(outputs: list):
        def clear():
            return cleared(outputs)

        return clear

    def unavailable_tab(self, task: str):
        """A task whose model failed to load: the tab says why; its endpoints answer with the same reason."""
        reason = (f"The {TASKS[task].title} model is unavailable: it failed verification or loading at start-up "
                  f"({self.service.unavailable[task]}). The other tabs keep working.")
        gr.Markdown(f"> {NOT_A_DEVICE}\n\n**{html.escape(reason)}**", elem_id=f"{task}-unavailable")

        def refuse(*_):
            raise refusal(reason)

        with gr.Group(visible=False):
            studies = TASKS[task].study is not None
            for endpoint, count in [(task, "single")] + ([(f"{task}_study", "multiple")] if studies else []):
                single = gr.File(file_types=FILE_TYPES, type="filepath", file_count=count)
                gr.Button().click(refuse, [single], [gr.JSON(label="Result (JSON)"), gr.Image(label="Grad-CAM overlay")],
                                  api_name=endpoint, api_description=reason)
        self.report_endpoints(task, refuse)

    def pacs_tab(self):
        """Search the configured DICOMweb server, fetch a study, analyse it, store the results back."""
        tasks = [("Any radiograph (the router chooses)", AUTO)] if self.service.router is not None else []
        tasks += [(TASKS[task].title, task) for task in self.service.models]
        gr.Markdown(f"> {NOT_A_DEVICE} Every model here is a **demo model trained on synthetic phantoms**.\n\n"
                    f"Studies come from the DICOMweb server at `{self.pacs.url}` (QIDO-RS search, WADO-RS fetch); "
                    "results go back into the same study as DICOM (STOW-RS): the Grad-CAM overlay as a Secondary "
                    "Capture and the findings as a Structured Report. Patient names and IDs are never shown here.")
        with gr.Row():
            study_uid = gr.Textbox(label="Study Instance UID", elem_id="pacs-study-uid")
            date = gr.Textbox(label="Study date (YYYYMMDD, or a range YYYYMMDD-YYYYMMDD)", elem_id="pacs-date")
            modality = gr.Textbox(label="Modality (e.g. CR, DX)", elem_id="pacs-modality")
            patient = gr.Textbox(label="Patient ID (a filter only, not shown in results)", elem_id="pacs-patient")
        search = gr.Button("Search the PACS", elem_id="pacs-search")
        studies = gr.Dataframe(headers=["Study Instance UID", "Date", "Description", "Modalities", "Series",
                                        "Instances"], interactive=False, label="Studies", elem_id="pacs-studies")
        with gr.Row():
            chosen = gr.Dropdown(label="Study (choose, or paste a Study Instance UID)", choices=[],
                                 allow_custom_value=True, elem_id="pacs-study")
            task = gr.Dropdown(label="Task", choices=tasks, value=tasks[0][1], elem_id="pacs-task")
            store = gr.Checkbox(label="Store the results in the PACS", value=False, elem_id="pacs-store-now")
        with gr.Row():
            analyse = gr.Button("Fetch and analyse", variant="primary", elem_id="pacs-analyse")
            store_button = gr.Button("Store these results in the PACS", elem_id="pacs-store")
        status = gr.Markdown(elem_id="pacs-status")
        gallery = gr.Gallery(label="Grad-CAM overlays", columns=4, height="auto", format="png", allow_preview=True,
                             object_fit="contain", elem_id="pacs-gallery")
        result = gr.JSON(label="Result (JSON)", open=False)
        state = gr.State(time_to_live=STATE_TTL_S)
        gr.on([search.click, study_uid.submit, date.submit, modality.submit, patient.submit], self.pacs_search,
              [study_uid, date, modality, patient], [studies, chosen, status], api_name="pacs_search",
              show_progress="minimal",  # on an error the table and chooser stay readable under a small mark
              api_description="Search the configured DICOMweb server (QIDO-RS) for studies: Study Instance UID, "
                              "study date or range, modality, patient ID (a filter only). Returns (rows: UID, date, "
                              "description, modalities, series, instances; the study chooser; a status line).")
        analyse.click(self.pacs_analyse, [chosen, task, store], [result, gallery, state, status],
                      api_name="pacs_analyse", concurrency_id=ANALYSIS, show_progress="minimal",
                      api_description="Fetch one study from the DICOMweb server (WADO-RS), analyse it (a MURA study as "
                                      "a study, otherwise each image; task 'auto' routes each image), and with store "
                                      "true write the results back into the study (STOW-RS). Returns (result JSON, "
                                      "overlays, state, status line).")
        store_button.click(self.pacs_store, [state], [status, state], api_visibility="private")

    def models_tab(self):
        gr.Markdown(f"> {NOT_A_DEVICE}")
        for task, reason in self.service.unavailable.items():
            gr.Markdown(f"**{TASKS[task].title}: unavailable** ({html.escape(reason)})")
        router = self.service.router
        if router is not None:
            with gr.Accordion(f"Task router: {router.card.get('model_version')} (demo model trained on synthetic "
                              "phantoms and generated images)", open=False):
                gr.Markdown(router_markdown(router.card))
        elif self.service.router_problem:
            gr.Markdown(f"**Task router: not loaded** ({html.escape(self.service.router_problem)}); the Any "
                        "radiograph tab is absent and no image is routed.")
        for task, model in self.service.models.items():
            trained_on = ("demo model trained on synthetic phantoms" if model.card.trained_on_phantoms
                          else model.card.data.get("dataset", ""))
            with gr.Accordion(f"{TASKS[task].title}: {model.card.model_version} ({trained_on})", open=False):
                gr.Markdown(card_markdown(model.card, self.service.describe(task)))
                pictures = [ROOT / p for p in model.card.reports if p.endswith(".png") and (ROOT / p).exists()]
                if pictures:
                    report_figures(task, pictures)


def report_figures(task: str, pictures: list[Path]) -> None:
    """A model's report figures, each whole in an image of its own (a gallery's square cells cut off their
    axes and shrank the wide ones): the square-ish ones (ROC, confusion matrix) side by side, each wide one
    (training curves) across the page."""
    def aspect(path: Path) -> float:
        with Image.open(path) as picture:  # the header only
            return picture.width / picture.height

    def figure(path: Path) -> None:
        name = path.stem.replace("_", " ")
        gr.Image(str(path), label=f"{name} (phantom test set)", interactive=False, format="png",
                 alt_text=f"{TASKS[task].title} model's {name} on its phantom test set",
                 elem_id=f"{task}-figure-{path.stem}", elem_classes=["report-figure"])

    square, wide = [p for p in pictures if aspect(p) < 1.5], [p for p in pictures if aspect(p) >= 1.5]
    with gr.Row(equal_height=True):
        for path in square:
            figure(path)
    for path in wide:
        figure(path)


def settings(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=env("RADIOGRAPH_HOST") or env("GRADIO_SERVER_NAME") or "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(env("RADIOGRAPH_PORT") or env("GRADIO_SERVER_PORT") or 7860))
    parser.add_argument("--share", action="store_true", default=env("RADIOGRAPH_SHARE", "").lower() in ("1", "true"),
                        help="a public gradio.live link (off by default; needs internet)")
    parser.add_argument("--models", type=Path, default=Path(env("RADIOGRAPH_MODELS") or ROOT / "models"))
    parser.add_argument("--cam", choices=("auto", "keras", "onnx"), default=env("RADIOGRAPH_CAM") or "auto",
                        help="heatmap path: Keras Grad-CAM, the ONNX CAM, or keras when TensorFlow is installed")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default=env("RADIOGRAPH_DEVICE") or "auto")
    parser.add_argument("--colormap", choices=list(COLORMAPS), default=env("RADIOGRAPH_COLORMAP") or DEFAULT_COLORMAP,
                        help=f"the overlays' colour map until a user picks another (default {DEFAULT_COLORMAP}: "
                             "perceptually uniform, colour-blind safe; jet is the rainbow)")
    parser.add_argument("--concurrency", type=int, default=int(env("RADIOGRAPH_CONCURRENCY") or 2),
                        help="requests analysed at once (the queue holds the rest)")
    parser.add_argument("--queue-size", type=int, default=int(env("RADIOGRAPH_QUEUE_SIZE") or QUEUE_SIZE),
                        help="requests that may wait for a free slot; beyond it the answer is 'queue full, try again'")
    parser.add_argument("--max-file-size", default=env("RADIOGRAPH_MAX_FILE_SIZE") or MAX_FILE_SIZE,
                        help=f"per uploaded file, e.g. 20mb (default and most: {MAX_FILE_SIZE}, the loader's limit)")
    parser.add_argument("--strict", action="store_true", default=env("RADIOGRAPH_STRICT", "").lower() in ("1", "true"),
                        help="refuse to start when any model fails verification or loading (default: that task's "
                             "tab and endpoint say why, the others serve)")
    parser.add_argument("--dicomweb", metavar="URL", default=env("RADIOGRAPH_DICOMWEB_URL") or None,
                        help="a DICOMweb server's root (e.g. http://127.0.0.1:8042/dicom-web): adds the PACS tab; "
                             "credentials from RADIOGRAPH_DICOMWEB_USER and _PASSWORD, or _TOKEN (docs/pacs.md)")
    args = parser.parse_args(argv)
    if args.colormap not in COLORMAPS:  # argparse checks `choices` on the command line only, not on a default
        parser.error(f"RADIOGRAPH_COLORMAP={args.colormap!r} is not a colour map; choose one of {', '.join(COLORMAPS)}")
    if args.concurrency < 1 or args.queue_size < 1:
        parser.error(f"--concurrency and --queue-size must be at least 1, got {args.concurrency}, {args.queue_size}")
    return args


def give_large_buffers_back() -> None:
    """glibc raises its mmap threshold after each large free (up to 32 MB), after which decoded images come from
    the heap and stay resident once freed. Fixed at 128 KB, every image-sized buffer goes back to the system
    when it is freed, so the server's memory returns to its idle level between requests (Linux/glibc only)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass  # another C library: nothing to set


def serve(args: argparse.Namespace, block: bool = True):
    """Load the models, build the app, launch; returns (demo, url) and blocks unless told not to."""
    give_large_buffers_back()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    LOG.setLevel(logging.INFO)  # one line per refused input
    service = Service(args.models, cam_path=args.cam, device=args.device, strict=args.strict)
    for task, reason in service.unavailable.items():
        LOG.error("%s is unavailable (its tab and endpoint say why): %s", task, reason)
    pacs = None
    if args.dicomweb:
        from radiograph.pacs import Pacs, PacsError

        try:
            pacs = Pacs.from_environment({**os.environ, "RADIOGRAPH_DICOMWEB_URL": args.dicomweb})
        except PacsError as error:
            raise SystemExit(f"error: --dicomweb / RADIOGRAPH_DICOMWEB_URL: {error}") from None
    app = App(service, colormap=args.colormap, pacs=pacs)
    demo = app.build()
    # events sharing a concurrency_id share one limit: every analysing event (ANALYSIS), and overlay re-rendering
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    try:
        _, url, _ = demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                                max_file_size=args.max_file_size, show_error=True, prevent_thread_lock=True,
                                allowed_paths=[str(ROOT / "examples"), str(ROOT / "reports")], ssr_mode=False,
                                footer_links=["api"], css=CSS, quiet=True, state_session_capacity=SESSIONS_KEPT,
                                theme=THEME, head=HEAD,  # contrast and ARIA fixes (docs/app.md, Accessibility)
                                app_kwargs={"middleware": [Middleware(UploadLimit)]})
    except OSError as error:  # the port is taken (another app, or this one already running)
        raise SystemExit(f"error: cannot listen on {args.host}:{args.port} ({error}). Another program (perhaps this "
                         "app, already running) holds the port: stop it, or choose another with --port N or "
                         "RADIOGRAPH_PORT=N.") from None
    demo.radiograph_app = app  # for tests and close()
    warming = threading.Thread(target=service.warm_up, daemon=True)  # traces Grad-CAM while the page loads
    warming.start()
    # a process that exits while TensorFlow traces in a daemon thread aborts in C++ ("terminate called ..."):
    # exit handlers run before daemon threads are stopped, so exit waits for the warm-up (seconds) instead
    atexit.register(warming.join, 120)
    providers = ", ".join([f"{task}: {model.provider}" for task, model in service.models.items()]
                          + [f"{task}: unavailable" for task in service.unavailable])
    print(f"ready in {time.perf_counter() - STARTED:.1f} s at {url} ({providers}; heatmaps by "
          f"{next(iter(service.explainers.values())).path})", flush=True)
    if block:
        demo.block_thread()
    return demo, url


def stop_on_sigterm() -> None:
    """SIGTERM (a container or service manager stopping the app) exits cleanly, so exit handlers remove the
    temp folders."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


if __name__ == "__main__":
    stop_on_sigterm()
    serve(settings())
