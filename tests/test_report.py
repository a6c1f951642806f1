"""The one-page PDF report (radiograph.report): its text read back and its page rendered with pypdfium2, from
the service and through the app's endpoints."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image

from radiograph.registry import TASKS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="module")
def service():
    from radiograph.service import Service

    return Service(ROOT / "models", cam_path="onnx")


def first_example(task):
    entry = json.loads((EXAMPLES / task / "examples.json").read_text())[0]
    return entry, [EXAMPLES / task / name for name in entry["files"]]


def page_of(data: bytes):
    """(document, its only page, the page's text with whitespace runs as single spaces)."""
    assert data[:5] == b"%PDF-"
    document = pdfium.PdfDocument(data)
    assert len(document) == 1
    page = document[0]
    return document, page, " ".join(page.get_textpage().get_text_range().split())


def pictures(page, scale: float = 3.0):
    """Each picture drawn on the page, as rendered (RGB arrays), top to bottom and left to right."""
    rendered = np.asarray(page.render(scale=scale).to_pil().convert("RGB"))
    height = page.get_height()
    boxes = sorted((obj.get_bounds() for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE])),
                   key=lambda box: (-round(box[3]), box[0]))
    return [rendered[int((height - top) * scale) + 2:int((height - bottom) * scale) - 2,
                     int(left * scale) + 2:int(right * scale) - 2] for left, bottom, right, top in boxes]


def correlation(shown: np.ndarray, source: np.ndarray) -> float:
    """Pearson correlation of a rendered picture's grey levels with its source resized to the same size."""
    grey = np.asarray(Image.fromarray(shown).convert("L"), np.float64)
    expected = np.asarray(Image.fromarray(source).convert("L").resize(grey.shape[::-1]), np.float64)
    return float(np.corrcoef(grey.ravel(), expected.ravel())[0, 1])


@pytest.mark.parametrize("task", list(TASKS))
def test_the_report_holds_probabilities_thresholds_sha256_gate_and_notices(service, task):
    from radiograph.report import analysis_report

    _, files = first_example(task)
    analysis = service.analyse(task, files[0])
    _, _, text = page_of(analysis_report(analysis))
    card = analysis.card
    assert analysis.sha256 == hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert f"sha256 {analysis.sha256}" in text and f"Input file: {files[0].name}" in text
    for label, p in zip(card.labels, analysis.probabilities):
        row = f"{label} {p:.3f}" + (f" {card.thresholds[label]:.3f}" if card.multi_label else "")
        assert row in text, row
    assert "Decision rule:" in text and " ".join(analysis.decision()["text"].split()) in text
    assert f"Input gate: {analysis.gate.verdict}" in text and "Uncertainty" in text
    assert "NOT A MEDICAL DEVICE" in text and "DEMO MODEL TRAINED ON SYNTHETIC PHANTOMS" in text
    assert card.model_version in text and " ".join(card.notice.split()) in text and "UTC" in text


def test_the_page_shows_the_image_and_its_overlay(service):
    from radiograph.report import analysis_report

    _, files = first_example("chest14")
    analysis = service.analyse("chest14", files[0])
    _, page, _ = page_of(analysis_report(analysis))
    image, overlay = pictures(page)
    assert image.shape[0] > 200 and image.shape[1] > 200  # about 86 mm at 3 x 72 dpi
    assert correlation(image, analysis.display) > 0.95
    assert correlation(overlay, analysis.overlay()) > 0.9
    assert np.abs(image.astype(int) - overlay.astype(int)).mean() > 3  # the heatmap is drawn on the second


def test_a_refused_image_gets_a_page_with_the_reasons_and_no_probabilities(service, tmp_path):
    from radiograph.report import analysis_report

    ramp = np.linspace(0, 255, 300 * 200).reshape(200, 300).astype(np.uint8)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.dstack([ramp, ramp[::-1], np.full_like(ramp, 40)])).save(photo)
    analysis = service.analyse("knee", photo)
    assert analysis.refused
    _, page, text = page_of(analysis_report(analysis))
    assert "Input gate: refuse" in text and "colour content" in text and "no probability" in text
    assert not any(label in text for label in TASKS["knee"].labels) and "Decision rule" not in text
    assert len(pictures(page)) == 1 and "NOT A MEDICAL DEVICE" in text


def test_a_study_report_has_the_study_decision_and_every_view(service):
    from radiograph.report import study_report

    _, files = first_example("mura")
    views, study = service.analyse_study("mura", files)
    _, page, text = page_of(study_report(views, study))
    assert " ".join(study["decision"]["text"].split()) in text
    assert f"P(abnormal) {study['decision']['abnormal_probability']:.3f}" in text
    for path, view in zip(files, views):
        assert f"{hashlib.sha256(path.read_bytes()).hexdigest()} {path.name} ({view.gate.verdict})" in text
    assert len(pictures(page)) == len(files) and "DEMO MODEL TRAINED ON SYNTHETIC PHANTOMS" in text


def test_text_outside_latin1_is_kept_with_dejavu_and_spelled_out_with_the_core_font(service):
    from radiograph.report import CORE_FONTS, analysis_report, matplotlib_fonts

    _, files = first_example("knee")
    analysis = service.analyse("knee", files[0].read_bytes(), name="knee – Ωmega ≥ 2.png")
    assert analysis.sha256 == hashlib.sha256(files[0].read_bytes()).hexdigest()  # bytes hash as the file does
    _, _, core = page_of(analysis_report(analysis, fonts=CORE_FONTS))
    assert "Input file: knee - ?mega >= 2.png" in core
    fonts = matplotlib_fonts()
    if fonts is None:
        pytest.skip("matplotlib is not installed (the light install): no DejaVu to embed")
    _, _, unicode = page_of(analysis_report(analysis, fonts=fonts))
    assert "Input file: knee – Ωmega ≥ 2.png" in unicode


def test_control_and_bidi_characters_in_a_file_name_are_printed_as_codes(service):
    """A hostile upload name (a newline, a right-to-left override, markup) is printed as it is spelled: it cannot
    break the page's lines or reorder the text after it."""
    from radiograph.report import analysis_report

    _, files = first_example("knee")
    name = "evil\n\u202e<script>gnp.exe.png"
    analysis = service.analyse("knee", files[0].read_bytes(), name=name)
    _, _, text = page_of(analysis_report(analysis))
    assert "Input file: evil<U+000A><U+202E><script>gnp.exe.png" in text
    assert "\u202e" not in text


def test_the_result_json_carries_the_input_sha256(service):
    _, files = first_example("pneumonia")
    digest = hashlib.sha256(files[0].read_bytes()).hexdigest()
    assert service.analyse("pneumonia", files[0]).result()["image"]["sha256"] == digest
    assert service.analyse("pneumonia", files[0].read_bytes()).result()["image"]["sha256"] == digest


def test_the_download_button_is_cleared_with_the_other_outputs():
    import gradio as gr

    import app

    assert app.cleared([gr.DownloadButton("Download PDF report", render=False)]) == [
        gr.update(value=None, visible=False)]


# ----------------------------------------------------------------------------- through the app's API

@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def test_the_report_endpoints_return_one_page_pdfs(client, tmp_path):
    from gradio_client import handle_file

    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/knee_report", "/mura_report", "/mura_study_report", "/pneumonia_report", "/chest14_report",
            "/auto_report"} <= set(info)
    assert [p["parameter_name"] for p in info["/knee_report"]["parameters"]] == ["radiograph"]
    assert [p["parameter_name"] for p in info["/mura_study_report"]["parameters"]] == ["views"]
    for endpoint, task in [("/knee_report", "knee"), ("/auto_report", "chest14"), ("/mura_report", "mura")]:
        _, files = first_example(task)
        path = client.predict(handle_file(str(files[0])), api_name=endpoint)
        _, _, text = page_of(Path(path).read_bytes())
        assert Path(path).suffix == ".pdf" and files[0].stem in Path(path).name
        assert hashlib.sha256(files[0].read_bytes()).hexdigest() in text and "Input gate: ok" in text
        assert TASKS[task].title in text and "NOT A MEDICAL DEVICE" in text
    _, files = first_example("mura")
    path = client.predict([handle_file(str(f)) for f in files], api_name="/mura_study_report")
    _, _, text = page_of(Path(path).read_bytes())
    assert all(hashlib.sha256(f.read_bytes()).hexdigest() in text for f in files)
    ramp = np.linspace(0, 255, 300 * 200).reshape(200, 300).astype(np.uint8)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.dstack([ramp, ramp[::-1], np.full_like(ramp, 40)])).save(photo)
    _, _, text = page_of(Path(client.predict(handle_file(str(photo)), api_name="/auto_report")).read_bytes())
    assert "Input gate: refuse" in text and "no task model ran" in text and "DEMO MODEL TRAINED ON" in text


def test_a_report_endpoint_refuses_a_bad_file_with_the_loaders_message(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    bad = tmp_path / "notes.png"
    bad.write_bytes(b"this is text, not an image\n" * 10)
    with pytest.raises(AppError, match="not a recognised image"):
        client.predict(handle_file(str(bad)), api_name="/knee_report")


def test_long_reasons_names_and_studies_still_fit_one_page(service):
    """A knee film in the chest tab (two long gate warnings, eight positives), with a 300-character file name,
    and a study of the most views the app accepts: the pictures shrink, the page count stays one."""
    import app
    from radiograph.report import analysis_report, study_report

    _, files = first_example("knee")
    analysis = service.analyse("chest14", files[0].read_bytes(), name="a-very-long-file-name-" * 14 + ".png")
    assert analysis.gate.verdict == "warn" and len(analysis.gate.reasons) >= 2
    _, _, text = page_of(analysis_report(analysis))  # asserts one page
    assert all(" ".join(reason.text.split()) in text for reason in analysis.gate.reasons)
    assert "NOT A MEDICAL DEVICE" in text
    entries = json.loads((EXAMPLES / "mura" / "examples.json").read_text())
    views = [EXAMPLES / "mura" / name for entry in entries for name in entry["files"]]
    views = (views * app.MAX_VIEWS)[:app.MAX_VIEWS]
    _, page, text = page_of(study_report(*service.analyse_study("mura", views)))
    assert len(pictures(page)) == app.MAX_VIEWS
    assert all(hashlib.sha256(path.read_bytes()).hexdigest() in text for path in views)


def test_the_batch_command_writes_a_report_per_file_and_per_study(tmp_path):
    """`predict --report-dir`: a one-page PDF per readable file (its sha256 inside) and per study; an unreadable
    file gets its error row and no report."""
    import shutil

    from radiograph.predict import main

    _, knee = first_example("knee")
    folder = tmp_path / "knee"
    folder.mkdir()
    shutil.copy(knee[0], folder)
    (folder / "notes.png").write_bytes(b"this is text, not an image\n" * 10)
    _, mura = first_example("mura")
    study = tmp_path / "mura" / "study1"
    study.mkdir(parents=True)
    for view in mura:
        shutil.copy(view, study)
    for task, source in [("knee", folder), ("mura", tmp_path / "mura")]:
        out, reports = tmp_path / f"{task}.json", tmp_path / f"{task}-reports"
        assert main([task, str(source), "--out", str(out), "--report-dir", str(reports), "--quiet",
                     "--models", str(ROOT / "models")]) == 0
        rows = json.loads(out.read_text())
        for row in rows:
            if row["status"] == "error":
                assert "report" not in row and Path(row["file"]).name == "notes.png"
                continue
            _, _, text = page_of(Path(row["report"]).read_bytes())
            files = [Path(row["file"])] if row["kind"] == "image" else sorted(Path(row["file"]).iterdir())
            assert all(hashlib.sha256(f.read_bytes()).hexdigest() in text for f in files)
        assert sorted(p.name for p in reports.iterdir()) == sorted(Path(r["report"]).name for r in rows
                                                                     if "report" in r)
    assert [r["kind"] for r in rows if "report" in r] == ["image"] * len(mura) + ["study"]
