"""DICOM metadata: the shown tags reach the result and the gate; identifying tags never reach a result, a log
record or an error message."""
import json
import logging
from pathlib import Path

import pydicom
import pytest

from radiograph.gate import dicom_reasons
from radiograph.imaging import IDENTIFYING_TAGS, ImageLoadError, decode
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
