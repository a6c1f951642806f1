"""Radiograph classifier: a Gradio app with one tab per task, a Models tab, and a named API for scripts.

    python app.py                                 # http://127.0.0.1:7860, the shipped demo models
    python app.py --host 0.0.0.0 --port 8080      # or RADIOGRAPH_HOST / RADIOGRAPH_PORT (GRADIO_SERVER_* on a Space)
    python app.py --cam onnx --models /my/models  # or RADIOGRAPH_CAM / RADIOGRAPH_MODELS

Scripts (gradio_client), one endpoint per task:

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    result, overlay_png = client.predict(handle_file("knee.png"), api_name="/knee")
    study, gallery = client.predict([handle_file("view1.png"), handle_file("view2.png")], api_name="/mura_study")

Models load once at start-up and every request shares them. Heatmaps of every
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
import html  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from radiograph.cards import card_markdown  # noqa: E402
from radiograph.imaging import ImageLoadError  # noqa: E402
from radiograph.inference import decide, mura_summary  # noqa: E402
from radiograph.registry import TASKS  # noqa: E402
from radiograph.service import Service  # noqa: E402

ROOT = Path(__file__).resolve().parent
FILE_TYPES = [".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"]
UPLOAD_HELP = "PNG, JPEG, BMP, TIFF (8/16-bit) or DICOM (.dcm)"
MAX_FILE_SIZE = "50mb"
OVERLAY_AGE_S = 600
NOT_A_DEVICE = ("**Research demo, not a medical device.** Do not use it to diagnose, treat or triage anyone; "
                "the heatmap shows where the model looked, not where disease is.")


def trained_on_phantoms(card: dict) -> bool:
    return card.get("data", {}).get("kind") == "synthetic phantoms"


def notice(card: dict) -> str:
    provenance = card.get("data", {})
    if trained_on_phantoms(card):
        trained = (f"This tab's model (`{card['model_version']}`) is a **demo model trained on synthetic phantom "
                   "radiographs**: it has never seen a patient, and its figures describe phantoms.")
    else:
        trained = f"This tab's model (`{card['model_version']}`) was trained on {provenance.get('dataset', 'unknown data')}."
    return f"> {NOT_A_DEVICE} {trained}"


def examples_of(task: str) -> tuple[list, list[str]]:
    """([[file or list of files]], captions) from examples/<task>/examples.json."""
    index = ROOT / "examples" / task / "examples.json"
    if not index.exists():
        return [], []
    entries = json.loads(index.read_text())
    folder = index.parent
    values = [[[str(folder / f) for f in e["files"]]] if task == "mura" else [str(folder / e["files"][0])]
              for e in entries]
    return values, [e["caption"] for e in entries]


def threshold_bars(labels: list[str], probabilities, thresholds: dict) -> str:
    """HTML bar chart: one bar per class, its operating threshold marked, positives in bold."""
    rows = []
    for label, p in sorted(zip(labels, probabilities), key=lambda item: -item[1]):
        t = thresholds[label]
        positive = p >= t
        rows.append(
            f'<div class="bar-row{" positive" if positive else ""}" title="P = {p:.3f}, threshold {t:.3f}">'
            f'<span class="bar-label">{html.escape(label)}</span>'
            f'<span class="bar-track"><span class="bar-fill" style="width:{100 * p:.1f}%"></span>'
            f'<span class="bar-threshold" style="left:{100 * t:.1f}%"></span></span>'
            f'<span class="bar-value">{p:.2f}</span></div>')
    return ('<div class="threshold-bars"><div class="bar-caption">Probability per finding; the black tick is the '
            "finding's operating threshold (chosen on validation). Bold: above it.</div>" + "".join(rows) + "</div>")


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
"""


def timing_text(timings: dict, model: dict) -> str:
    parts = " · ".join(f"{name} {value:.0f} ms" for name, value in timings.items() if name != "total")
    return (f"**{timings['total']:.0f} ms** ({parts}) on `{model['provider']}`, heatmap by `{model['cam_path']}`, "
            f"model `{model['model_version']}` ({model['variant']})")


def preview_of(original: np.ndarray) -> np.ndarray:
    return np.clip(original, 0, 255).astype(np.uint8)


class App:
    """The Blocks UI and API over one Service."""

    def __init__(self, service: Service):
        self.service = service
        self.overlays = Path(tempfile.mkdtemp(prefix="radiograph-overlays-"))

    # ------------------------------------------------------------------ handlers (plain functions of values)

    def analyse(self, task: str, radiograph: str | None):
        """API: one file -> (result JSON, overlay PNG at the input's size, state for re-rendering)."""
        if not radiograph:
            raise gr.Error(f"No file received: upload a radiograph ({UPLOAD_HELP}).")
        try:
            analysis = self.service.analyse(task, radiograph, Path(radiograph).name)
        except ImageLoadError as error:
            raise gr.Error(str(error)) from None
        return analysis.result(), self.png(analysis.overlay()), analysis

    def analyse_study(self, views: list[str] | None):
        """API: the views of one MURA study -> (study JSON, gallery of overlays, state)."""
        if not views:
            raise gr.Error(f"No files received: upload one or more views of one study ({UPLOAD_HELP}).")
        try:
            views, study = self.service.analyse_study(views, [Path(p).name for p in views])
        except ImageLoadError as error:
            raise gr.Error(str(error)) from None
        return study, self.gallery(views), (views, study)

    def png(self, picture: np.ndarray) -> str:
        """Write an RGB overlay as PNG with OpenCV (several times faster than Gradio's Pillow encoder on large
        films); files older than OVERLAY_AGE_S are removed as new ones are written, so the folder stays small."""
        now = time.time()
        for old in self.overlays.glob("*.png"):
            if now - old.stat().st_mtime > OVERLAY_AGE_S:
                old.unlink(missing_ok=True)
        target = self.overlays / f"{uuid.uuid4().hex}.png"
        cv2.imwrite(str(target), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        return str(target)

    def gallery(self, views, class_index=None, opacity=0.4, region=False):
        return [(self.png(view.overlay(class_index, opacity, region)),
                 f"{view.name}: P(abnormal) {mura_summary(view.probabilities)['abnormal_probability']:.2f}")
                for view in views]

    def findings_gallery(self, analysis, opacity=0.4, region=False):
        """Multi-label: one overlay per positive finding, shown when there is more than one (the overlay above
        already shows the first)."""
        thresholds, shown = analysis.card["thresholds"], analysis.shown_classes
        if len(shown) < 2:
            return gr.update(value=None, visible=False)
        return gr.update(visible=True, value=[
            (self.png(analysis.overlay(c, opacity, region)),
             f"{analysis.labels[c]}: P {analysis.probabilities[c]:.2f} (threshold {thresholds[analysis.labels[c]]:.2f})")
            for c in shown])

    def present(self, task: str, analysis):
        """UI: the rest of the page from the state of the last analysis."""
        decision = f"### {decide(analysis.card, analysis.probabilities)['text']}"
        label_value = {label: round(float(p), 4) for label, p in zip(analysis.labels, analysis.probabilities)}
        selector = gr.update(choices=analysis.labels, value=analysis.labels[analysis.shown_class])
        outputs = [decision, label_value, preview_of(analysis.original), selector,
                   timing_text(analysis.timings_ms, analysis.model)]
        if TASKS[task].multi_label:
            outputs += [threshold_bars(analysis.labels, analysis.probabilities, analysis.card["thresholds"]),
                        self.findings_gallery(analysis)]
        return outputs

    def present_study(self, state):
        views, study = state
        decision = study["decision"]
        label_value = {"abnormal": decision["abnormal_probability"], "normal": 1 - decision["abnormal_probability"]}
        labels = views[0].labels
        selector = gr.update(choices=labels, value=labels[views[0].shown_class])
        text = (f"### {decision['text']}\nStudy of {len(views)} view(s); P(abnormal) is the mean over the views. "
                f"Body part: {decision['body_part']} ({decision['body_part_probability']:.2f}).")
        return text, label_value, selector, timing_text(study["timings_ms"], study["model"])

    # ------------------------------------------------------------------ layout

    def build(self) -> gr.Blocks:
        with gr.Blocks(title="Radiograph classifier (research demo)", delete_cache=(600, 1800)) as demo:
            gr.Markdown("# Radiograph classifier\nKnee osteoarthritis grade, MURA musculoskeletal studies, "
                        "pediatric pneumonia and 14 chest findings, served by ONNX Runtime with Grad-CAM heatmaps.")
            with gr.Tabs():
                for task in self.service.models:
                    with gr.Tab(TASKS[task].title, id=task):
                        gr.Markdown(notice(self.service.models[task].card))
                        if task == "mura":
                            self.study_tab()
                        else:
                            self.image_tab(task)
                with gr.Tab("Models", id="models"):
                    self.models_tab()
        return demo

    @staticmethod
    def examples(task: str, upload):
        values, captions = examples_of(task)
        if not values:
            return None
        return gr.Examples(values, inputs=[upload], example_labels=captions, api_visibility="private",
                           label="Phantom examples, never used in training (the caption is the truth)")

    def heatmap_controls(self, task: str, labels: list[str]):
        with gr.Row():
            selector = gr.Dropdown(choices=labels, label="Heatmap class", interactive=True, elem_id=f"{task}-class")
            opacity = gr.Slider(0.0, 1.0, value=0.4, step=0.05, label="Heatmap opacity", elem_id=f"{task}-opacity")
            region = gr.Checkbox(label="Outline the hottest region", value=False, elem_id=f"{task}-region")
        return selector, opacity, region

    def image_tab(self, task: str):
        labels = self.service.models[task].labels
        multi_label = TASKS[task].multi_label
        state = gr.State()
        with gr.Row():
            with gr.Column(scale=1):  # what goes in, and where the model looked
                upload = gr.File(label=f"Radiograph: {UPLOAD_HELP}", file_types=FILE_TYPES, type="filepath",
                                 elem_id=f"{task}-upload")
                button = gr.Button("Analyse", variant="primary", elem_id=f"{task}-analyse")
                examples = self.examples(task, upload)
                overlay = gr.Image(label="Grad-CAM overlay", interactive=False, format="png", type="filepath",
                                   elem_id=f"{task}-overlay")
                selector, opacity, region = self.heatmap_controls(task, labels)
                findings = gr.Gallery(label="Grad-CAM per positive finding", columns=3, height="auto", format="png",
                                      allow_preview=False, object_fit="contain", visible=False,
                                      elem_id=f"{task}-findings") if multi_label else None
            with gr.Column(scale=1):  # what the model said
                decision = gr.Markdown(elem_id=f"{task}-decision")
                label = gr.Label(num_top_classes=min(5, len(labels)), label="Top probabilities", elem_id=f"{task}-label")
                bars = gr.HTML(elem_id=f"{task}-bars") if multi_label else None
                timing = gr.Markdown(elem_id=f"{task}-timing")
                preview = gr.Image(label="Decoded image (as the model reads it)", interactive=False, format="png",
                                   height=260)
                result = gr.JSON(label="Result (JSON)", open=False)
        shown = [decision, label, preview, selector, timing] + ([bars, findings] if multi_label else [])

        def run(radiograph):
            return self.analyse(task, radiograph)

        def show(analysis):
            return self.present(task, analysis)

        def rerender(analysis, class_name, alpha, outline):
            if analysis is None or class_name not in analysis.labels:
                return gr.skip()
            return self.png(analysis.overlay(analysis.labels.index(class_name), alpha, outline))

        gr.on([button.click, upload.upload], run, [upload], [result, overlay, state], api_name=task,
              api_description=f"{TASKS[task].question}. Returns (result JSON, Grad-CAM overlay PNG at the input's "
                              "size).").success(show, [state], shown, api_visibility="private")
        if examples:
            examples.load_input_event.then(run, [upload], [result, overlay, state], api_visibility="private").success(
                show, [state], shown, api_visibility="private")
        gr.on([selector.change, opacity.release, region.change], rerender, [state, selector, opacity, region],
              [overlay], api_visibility="private", show_progress="hidden")
        if multi_label:
            def refind(analysis, alpha, outline):
                return gr.skip() if analysis is None else self.findings_gallery(analysis, alpha, outline)

            gr.on([opacity.release, region.change], refind, [state, opacity, region], [findings],
                  api_visibility="private", show_progress="hidden")

    def study_tab(self):
        labels = self.service.models["mura"].labels
        state = gr.State()
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label=f"The views of one study: {UPLOAD_HELP}", file_types=FILE_TYPES,
                                 file_count="multiple", type="filepath", elem_id="mura-upload")
                button = gr.Button("Analyse study", variant="primary", elem_id="mura-analyse")
                examples = self.examples("mura", upload)
            with gr.Column(scale=1):
                decision = gr.Markdown(elem_id="mura-decision")
                label = gr.Label(num_top_classes=2, label="Study (mean over views)", elem_id="mura-label")
                timing = gr.Markdown(elem_id="mura-timing")
        gallery = gr.Gallery(label="Grad-CAM per view", columns=4, height=360, format="png", object_fit="contain",
                             elem_id="mura-gallery")
        selector, opacity, region = self.heatmap_controls("mura", labels)
        result = gr.JSON(label="Study result (JSON)", open=False)
        shown = [decision, label, selector, timing]

        def rerender(state, class_name, alpha, outline):
            if not state or class_name not in state[0][0].labels:
                return gr.skip()
            views = state[0]
            return self.gallery(views, views[0].labels.index(class_name), alpha, outline)

        gr.on([button.click, upload.upload], self.analyse_study, [upload], [result, gallery, state],
              api_name="mura_study", api_description="The views of one MURA study: normal or abnormal (mean over the "
              "views) and body part. Returns (study JSON with per-view results, gallery of Grad-CAM overlays)."
              ).success(self.present_study, [state], shown, api_visibility="private")
        if examples:
            examples.load_input_event.then(self.analyse_study, [upload], [result, gallery, state],
                                           api_visibility="private").success(self.present_study, [state], shown,
                                                                             api_visibility="private")
        gr.on([selector.change, opacity.release, region.change], rerender, [state, selector, opacity, region],
              [gallery], api_visibility="private", show_progress="hidden")
        # /mura: one view on its own, for scripts (the tab above analyses whole studies)
        with gr.Group(visible=False):
            single = gr.File(file_types=FILE_TYPES, type="filepath")
            single_result = gr.JSON(label="Result (JSON)")
            single_overlay = gr.Image(label="Grad-CAM overlay", format="png", type="filepath")
            trigger = gr.Button()

        def run_view(radiograph):
            return self.analyse("mura", radiograph)[:2]

        trigger.click(run_view, [single], [single_result, single_overlay],
                      api_name="mura", api_description="One view of a MURA study: normal or abnormal and body part. "
                      "Returns (result JSON, Grad-CAM overlay PNG at the input's size).")

    def models_tab(self):
        gr.Markdown(f"> {NOT_A_DEVICE}")
        for task, model in self.service.models.items():
            trained_on = ("demo model trained on synthetic phantoms" if trained_on_phantoms(model.card)
                          else model.card.get("data", {}).get("dataset", ""))
            with gr.Accordion(f"{TASKS[task].title}: {model.card['model_version']} ({trained_on})", open=False):
                gr.Markdown(card_markdown(model.card, self.service.describe(task)))
                pictures = [str(ROOT / p) for p in model.card.get("reports", []) if p.endswith(".png")
                            and (ROOT / p).exists()]
                if pictures:
                    gr.Gallery(pictures, columns=len(pictures), height=320, object_fit="contain",
                               label="Report figures (phantom test set)",
                               interactive=False)


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
    parser.add_argument("--concurrency", type=int, default=int(env("RADIOGRAPH_CONCURRENCY") or 2),
                        help="requests analysed at once (the queue holds the rest)")
    parser.add_argument("--max-file-size", default=env("RADIOGRAPH_MAX_FILE_SIZE") or MAX_FILE_SIZE)
    return parser.parse_args(argv)


def serve(args: argparse.Namespace, block: bool = True):
    """Load the models, build the app, launch; returns (demo, url) and blocks unless told not to."""
    service = Service(args.models, cam_path=args.cam, device=args.device)
    demo = App(service).build()
    demo.queue(default_concurrency_limit=args.concurrency, max_size=64)
    _, url, _ = demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                            max_file_size=args.max_file_size, show_error=True, prevent_thread_lock=True,
                            allowed_paths=[str(ROOT / "examples"), str(ROOT / "reports")], ssr_mode=False,
                            footer_links=["api"], css=CSS, quiet=True)
    threading.Thread(target=service.warm_up, daemon=True).start()  # traces Grad-CAM while the page loads
    providers = ", ".join(f"{task}: {model.provider}" for task, model in service.models.items())
    print(f"ready in {time.perf_counter() - STARTED:.1f} s at {url} ({providers}; heatmaps by "
          f"{next(iter(service.explainers.values())).path})", flush=True)
    if block:
        demo.block_thread()
    return demo, url


if __name__ == "__main__":
    serve(settings())
