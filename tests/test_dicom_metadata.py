"""DICOM metadata: the shown tags reach the result and the gate; identifying tags never reach a result, a log
record or an error message."""
import csv
import io
import json
import logging
from pathlib import Path

import cv2
import pydicom
import pytest

from radiograph.gate import body_part_reasons, dicom_reasons
from radiograph.imaging import IDENTIFYING_TAGS, SHOWN_TAGS, ImageLoadError, decode
from radiograph.service import Service
from test_dicom_compressed import dataset, phantom, saved

ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "Zyxwvu^Sentinel"  # PatientName (family^given)
IDENTITY = {"PatientName": SENTINEL, "PatientID": "SENTINEL-ID-9731", "PatientBirthDate": "19010203",
            "AccessionNumber": "ACC-SENTINEL-55", "InstitutionName": "Sentinel Hospital",
            "ReferringPhysicianName": "Doctor^Sentinelle"}
SHOWN = {"BodyPartExamined": "KNEE", "ViewPosition": "AP", "PatientAge": "045Y"}


def tagged(modality: str = "DX") -> bytes:
    ds = dataset(phantom(12), 12, **SHOWN, **IDENTITY)
    ds.Modality = modality
    return saved(ds)


def leaked(text: str) -> list[str]:
    lowered = text.lower()
    return [v for v in [*IDENTITY.values(), "Zyxwvu", "Sentinelle"] if v.lower() in lowered]


def test_shown_tags_are_kept_and_identifying_ones_are_not():
    decoded = decode(tagged(), "tagged.dcm")
    assert decoded.dicom == {"Modality": "DX", **SHOWN, "PhotometricInterpretation": "MONOCHROME2"}
    assert leaked(json.dumps(decoded.dicom)) == []
    assert set(IDENTITY) <= set(IDENTIFYING_TAGS)


def test_a_non_radiograph_modality_is_a_gate_warning():
    assert [r.code for r in dicom_reasons({"Modality": "CT"})] == ["dicom_modality"]
    assert dicom_reasons({"Modality": "DX"}) == dicom_reasons({"Modality": "CR"}) == dicom_reasons(None) == []


def test_a_body_part_of_another_task_is_a_gate_warning_naming_that_task():
    [reason] = body_part_reasons("chest14", {"BodyPartExamined": "KNEE"})
    assert reason.code == "dicom_body_part" and reason.verdict == "warn" and "Knee" in reason.text
    assert body_part_reasons("knee", {"BodyPartExamined": "Lower Limb"}) == []  # as DICOM spells it, normalised
    assert body_part_reasons("mura", {"BodyPartExamined": "WRIST"}) == body_part_reasons("knee", None) == []
    assert "analyse it as" not in body_part_reasons("knee", {"BodyPartExamined": "HEAD"})[0].text


@pytest.fixture(scope="module")
def service():
    return Service(ROOT / "models", ["knee"], cam_path="onnx")


def test_result_shows_the_tags_and_no_identifying_value(service, caplog):
    caplog.set_level(logging.DEBUG)
    analysis = service.analyse("knee", tagged("CT"), "tagged.dcm")
    result = json.dumps(analysis.result())
    assert json.loads(result)["image"]["dicom"]["BodyPartExamined"] == "KNEE"
    assert "dicom_modality" in analysis.gate.as_dict()["codes"]
    assert leaked(result) == []
    assert leaked("\n".join(record.getMessage() for record in caplog.records)) == []
    assert "dicom_body_part" not in analysis.gate.as_dict()["codes"]  # KNEE, on the knee model


def test_the_gate_and_the_batch_command_warn_of_a_body_part_of_another_task(service, tmp_path):
    from radiograph import predict

    ds = dataset(phantom(12), 12, BodyPartExamined="CHEST")
    analysis = service.analyse("knee", saved(ds), "chest.dcm")
    assert analysis.gate.verdict == "warn" and "dicom_body_part" in analysis.gate.as_dict()["codes"]
    (tmp_path / "chest.dcm").write_bytes(saved(ds))
    out = tmp_path / "rows.json"
    assert predict.main(["knee", str(tmp_path / "chest.dcm"), "--out", str(out), "--models", str(ROOT / "models"),
                         "--quiet", "--processes", "0"]) == 0
    [row] = json.loads(out.read_text())
    assert "dicom_body_part" in row["gate"]["codes"] and row["gate"]["verdict"] == "warn"


def test_error_messages_cut_identifying_values(monkeypatch, caplog):
    """A decoder error quoting the header (simulated) reaches the user without the identifying values."""
    def quoting(ds, **kwargs):
        raise RuntimeError(f"cannot decode the frame of {ds.PatientName} ({ds.PatientID})")

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(pydicom.pixels, "pixel_array", quoting)
    with pytest.raises(ImageLoadError) as raised:
        decode(tagged(), "tagged.dcm")
    assert "identifying value removed" in str(raised.value) and leaked(str(raised.value)) == []
    assert leaked("\n".join(record.getMessage() for record in caplog.records)) == []


def png_of_the_phantom() -> bytes:
    return cv2.imencode(".png", phantom(8))[1].tobytes()


def test_the_app_shows_a_line_of_dicom_tags_and_nothing_for_other_formats(service):
    import app

    ui = app.App(service)
    shown = ui.present("knee", service.analyse("knee", tagged("CR"), "tagged.dcm"))
    assert "DICOM: CR, KNEE, AP, 045Y, MONOCHROME2" in shown[5]
    assert leaked(json.dumps(shown[:2] + shown[5:6])) == []
    other = ui.present("knee", service.analyse("knee", png_of_the_phantom(), "phantom.png"))
    assert "DICOM" not in other[5]


@pytest.mark.parametrize("processes", ["0", None])  # threads, and the default worker processes
def test_batch_rows_carry_the_tags_and_no_identifying_value(tmp_path, capsys, caplog, processes):
    from radiograph import predict

    caplog.set_level(logging.DEBUG)
    folder = tmp_path / "input"
    folder.mkdir()
    (folder / "a_scan.dcm").write_bytes(tagged("CT"))
    (folder / "b_phantom.png").write_bytes(png_of_the_phantom())
    extra = [] if processes is None else ["--processes", processes]
    texts = {}
    for suffix in ("csv", "json"):
        out = tmp_path / f"results.{suffix}"
        assert predict.main(["knee", str(folder), "--out", str(out), "--models", str(ROOT / "models"), "--quiet",
                             *extra]) == 0
        texts[suffix] = out.read_text()
    scan, png = json.loads(texts["json"])
    assert scan["dicom_tags"] == {"Modality": "CT", **SHOWN, "PhotometricInterpretation": "MONOCHROME2"}
    assert "dicom_modality" in scan["gate"]["codes"]  # a CT: the gate warns, as in the app
    assert "dicom_tags" not in png
    rows = {Path(row["file"]).name: row for row in csv.DictReader(io.StringIO(texts["csv"]))}
    assert [rows["a_scan.dcm"][column] for column in predict.DICOM_COLUMNS.values()] == [
        "CT", "KNEE", "AP", "045Y", "MONOCHROME2"]
    assert all(rows["b_phantom.png"][column] == "" for column in predict.DICOM_COLUMNS.values())
    assert set(predict.DICOM_COLUMNS) == set(SHOWN_TAGS)
    printed = capsys.readouterr()
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert leaked("\n".join([*texts.values(), printed.out, printed.err, logged])) == []


@pytest.mark.parametrize("breakage", ["truncated", "quoting decoder"])
def test_an_app_refusal_of_a_broken_dicom_names_no_identifying_value(service, tmp_path, caplog, monkeypatch,
                                                                      breakage):
    """Truncated pixel data, and a decoder whose error quotes the header (simulated): the user's message names the
    file and no identifying value."""
    import gradio as gr

    import app

    def quoting(ds, **kwargs):
        raise RuntimeError(f"cannot decode the frame of {ds.PatientName} ({ds.PatientID}, {ds.AccessionNumber})")

    caplog.set_level(logging.DEBUG)
    ds = dataset(phantom(12), 12, **SHOWN, **IDENTITY)
    if breakage == "truncated":
        ds.PixelData = ds.PixelData[:1000]  # the header promises 256 x 256 x 2 bytes
    else:
        monkeypatch.setattr(pydicom.pixels, "pixel_array", quoting)
    path = tmp_path / "broken.dcm"
    path.write_bytes(saved(ds))
    with pytest.raises(gr.Error) as raised:
        app.App(service).analyse("knee", str(path))
    assert "broken.dcm" in str(raised.value) and leaked(str(raised.value)) == []
    assert leaked("\n".join(record.getMessage() for record in caplog.records)) == []
