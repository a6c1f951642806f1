"""Results of a DICOM input as DICOM (radiograph.dicom_results): a Secondary Capture of the overlay and a
Comprehensive SR of the findings, read back with pydicom and checked against the source and the analysis."""
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest

from radiograph.dicom_results import DicomResultError, dicom_results, write_dicom_results
from radiograph.imaging import MAX_HEADER_VALUE_BYTES, decode
from radiograph.registry import TASKS
from radiograph.service import Service
from train.phantoms.dicom import dicom_bytes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "chest14" / "00000060_001.png"  # the example shipped as DICOM too
SOURCE_TAGS = {"StudyInstanceUID": "1.2.826.0.1.3680043.8.498.1", "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.2",
               "PatientName": "Phantom^Chest", "PatientID": "PHANTOM-0060", "PatientOrientation": ["L", "F"],
               "StudyDate": "20260101", "AccessionNumber": "A60", "BodyPartExamined": "CHEST"}


def chest_dicom(**tags) -> bytes:
    """The chest14 example as the shipped DICOM one is made (train/examples.py), with a study around it."""
    pixels = cv2.imread(str(EXAMPLE), cv2.IMREAD_GRAYSCALE).astype(np.uint16)
    return dicom_bytes(pixels * 16, bits_stored=12, window=(2048, 4096), **{**SOURCE_TAGS, **tags})


@pytest.fixture(scope="module")
def service():
    return Service(ROOT / "models", ["chest14"], cam_path="onnx")


@pytest.fixture(scope="module")
def written(service, tmp_path_factory):
    data = chest_dicom()
    source = pydicom.dcmread(io.BytesIO(data))
    analysis = service.analyse("chest14", data, "chest.dcm")
    sc_path, sr_path = write_dicom_results(analysis, tmp_path_factory.mktemp("dicom"), "chest")
    return source, analysis, pydicom.dcmread(sc_path), pydicom.dcmread(sr_path)


def test_secondary_capture_joins_the_source_study_and_holds_the_overlay(written):
    source, analysis, sc, _ = written
    assert sc.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert sc.StudyInstanceUID == source.StudyInstanceUID
    assert sc.SeriesInstanceUID != source.SeriesInstanceUID and sc.SOPInstanceUID != source.SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPClassUID == source.SOPClassUID
    assert (sc.PatientName, sc.PatientID, sc.AccessionNumber) == (source.PatientName, source.PatientID, "A60")
    assert "not for diagnosis" in sc.SeriesDescription and "demo" in sc.SeriesDescription.lower()
    assert sc.BurnedInAnnotation == "NO" and sc.PhotometricInterpretation == "RGB" and sc.SamplesPerPixel == 3
    assert list(sc.PatientOrientation) == ["L", "F"] and sc.BodyPartExamined == "CHEST"
    assert analysis.card.model_version in sc.ImageComments
    np.testing.assert_array_equal(sc.pixel_array, analysis.overlay())


def test_the_same_analysis_gets_the_same_uids_and_other_content_other_uids(service, written):
    """Result UIDs are named by what the result is (derived_uid): written again, the same analysis gets the same
    UIDs (a retried store keeps one copy in a PACS); another class shown or another source gets new ones."""
    from radiograph.dicom_results import secondary_capture, structured_report

    source, analysis, sc, sr = written
    same = chest_dicom(SOPInstanceUID=source.SOPInstanceUID)  # the same instance, written again
    again = service.analyse("chest14", same, "again.dcm")  # analysed afresh, under another name
    sc2, sr2 = dicom_results(again)
    assert (sc2.SOPInstanceUID, sc2.SeriesInstanceUID) == (sc.SOPInstanceUID, sc.SeriesInstanceUID)
    assert (sr2.SOPInstanceUID, sr2.SeriesInstanceUID) == (sr.SOPInstanceUID, sr.SeriesInstanceUID)
    uids = {sc.SOPInstanceUID, sc.SeriesInstanceUID, sr.SOPInstanceUID, sr.SeriesInstanceUID}
    assert len(uids) == 4 and all(u.startswith("2.25.") and len(u) <= 64 and pydicom.uid.UID(u).is_valid
                                  for u in uids)
    other_class = secondary_capture(again, class_index=(analysis.shown_class + 1) % len(analysis.labels))
    assert other_class.SOPInstanceUID not in uids and structured_report(again, sc=other_class).SOPInstanceUID not in uids
    other_source = service.analyse("chest14", chest_dicom(SOPInstanceUID="1.2.826.0.1.3680043.8.498.3"), "b.dcm")
    assert not {d.SOPInstanceUID for d in dicom_results(other_source)} & uids


def test_structured_report_holds_every_finding_and_references_the_source(written):
    source, analysis, sc, sr = written
    assert sr.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.PatientID == source.PatientID
    evidence = {(series.SeriesInstanceUID, instance.ReferencedSOPInstanceUID)
                for study in sr.CurrentRequestedProcedureEvidenceSequence if study.StudyInstanceUID
                == source.StudyInstanceUID for series in study.ReferencedSeriesSequence
                for instance in series.ReferencedSOPSequence}
    assert (source.SeriesInstanceUID, source.SOPInstanceUID) in evidence
    assert (sc.SeriesInstanceUID, sc.SOPInstanceUID) in evidence
    items = sr.ContentSequence
    texts = {item.ConceptNameCodeSequence[0].CodeMeaning: item.TextValue for item in items if item.ValueType == "TEXT"}
    assert texts["Algorithm Version"] == analysis.card.model_version and texts["Task"] == "chest14"
    assert "not a medical device" in texts["Notice"] and texts["Decision"] == analysis.decision()["text"]
    images = [item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in items if item.ValueType == "IMAGE"]
    assert images == [source.SOPInstanceUID, sc.SOPInstanceUID]
    found = {}
    for item in items:
        if item.ValueType == "CODE":
            properties = {p.ConceptNameCodeSequence[0].CodeMeaning: p for p in item.ContentSequence}
            found[item.ConceptCodeSequence[0].CodeMeaning] = (
                float(properties["Probability"].MeasuredValueSequence[0].NumericValue),
                float(properties["Operating threshold"].MeasuredValueSequence[0].NumericValue),
                properties["Called"].TextValue)
    assert list(found) == analysis.labels
    positive = analysis.decision()["positive"]
    for label, probability in zip(analysis.labels, analysis.probabilities):
        assert found[label][0] == pytest.approx(float(probability), abs=1e-12)
        assert found[label][1] == pytest.approx(analysis.card.thresholds[label], abs=1e-12)
        assert found[label][2] == ("positive" if label in positive else "negative")


def test_nothing_identifying_is_invented(service):
    data = chest_dicom(PatientName=None, PatientID=None, AccessionNumber=None, StudyDate=None)
    analysis = service.analyse("chest14", data, "anonymous.dcm")
    for result in dicom_results(analysis):
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyDate"):
            assert str(result.get(keyword, "") or "") == "", keyword


def test_refused_where_there_is_nothing_to_reference(service):
    png = service.analyse("chest14", EXAMPLE)
    with pytest.raises(DicomResultError, match="only for a DICOM input"):
        dicom_results(png)
    bare = dicom_bytes(cv2.imread(str(EXAMPLE), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16)  # no study, series
    with pytest.raises(DicomResultError, match="lacks StudyInstanceUID, SeriesInstanceUID"):
        dicom_results(service.analyse("chest14", bare, "bare.dcm"))


def test_the_shipped_dicom_example_has_results(service):
    """The example shipped as DICOM is a study as a PACS holds it, so its results can be written and stored."""
    path = ROOT / "examples" / "chest14" / "00000060_001.dcm"
    source = pydicom.dcmread(path)
    capture, report = dicom_results(service.analyse("chest14", path))
    assert capture.StudyInstanceUID == report.StudyInstanceUID == source.StudyInstanceUID
    assert source.BodyPartExamined in TASKS["chest14"].body_parts


def test_the_kept_header_is_bounded():
    """A header with an over-long name and text the results do not use keeps only short, known elements."""
    data = chest_dicom(PatientName="X" * 4 * MAX_HEADER_VALUE_BYTES, ImageComments="Y" * 4000)
    header = decode(data, "hostile.dcm").header
    assert "PatientName" not in header and "ImageComments" not in header and "PixelData" not in header
    assert header.PatientID == "PHANTOM-0060"
    assert all(len(str(element.value)) <= MAX_HEADER_VALUE_BYTES for element in header)


def test_batch_command_writes_both_files_per_dicom_input(tmp_path):
    from radiograph.predict import main

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "chest.dcm").write_bytes(chest_dicom())
    (tmp_path / "in" / "chest.png").write_bytes(EXAMPLE.read_bytes())  # not DICOM: no DICOM results
    out = tmp_path / "results.json"
    assert main(["chest14", str(tmp_path / "in"), "--dicom-dir", str(tmp_path / "dcm"), "--out", str(out),
                 "--quiet", "--processes", "0", "--models", str(ROOT / "models")]) == 0
    assert sorted(p.name for p in (tmp_path / "dcm").iterdir()) == ["00000_chest.sc.dcm", "00000_chest.sr.dcm"]
    rows = {Path(row["file"]).name: row for row in json.loads(out.read_text())}
    assert "dicom" not in rows["chest.png"]
    sc, sr = (pydicom.dcmread(path) for path in rows["chest.dcm"]["dicom"])
    assert sc.StudyInstanceUID == sr.StudyInstanceUID == SOURCE_TAGS["StudyInstanceUID"]
    assert sr.ContentSequence[1].TextValue == rows["chest.dcm"]["model_version"]


def test_the_app_offers_both_files_for_a_dicom_input_only(service):
    import app

    ui = app.App(service)
    try:
        shown = ui.dicom_files(service.analyse("chest14", chest_dicom(), "chest.dcm"))
        assert shown["visible"] and [Path(p).name.rsplit(".", 2)[1:] for p in shown["value"]] == [["sc", "dcm"],
                                                                                                ["sr", "dcm"]]
        assert pydicom.dcmread(shown["value"][1]).StudyInstanceUID == SOURCE_TAGS["StudyInstanceUID"]
        assert ui.dicom_files(service.analyse("chest14", EXAMPLE)) == {"__type__": "update", "value": None,
                                                                       "visible": False}
    finally:
        ui.close()


def test_a_file_gone_before_its_dicom_results_gets_a_note_not_a_crash(tmp_path):
    """The batch goes on when a file cannot be analysed again for its DICOM results (it went away since its row)."""
    from radiograph.predict import write_dicom_dir

    gone = tmp_path / "gone.dcm"
    rows = [{"kind": "image", "status": "ok", "file": str(gone), "task": "chest14"}]
    write_dicom_dir(rows, "chest14", ROOT / "models", ["chest14"], tmp_path / "dcm")
    assert "dicom" not in rows[0] and "FileNotFoundError" in rows[0]["dicom_error"]


def test_a_study_tab_gets_the_dicom_results_of_each_dicom_view(tmp_path):
    """The MURA study tab's DICOM download: a Secondary Capture and a Structured Report per DICOM view, and the
    study's report, each in the views' own study."""
    import threading

    import app
    from train.phantoms.dicom import study_bytes

    views = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
             for path in sorted((ROOT / "examples" / "mura" / "XR_WRIST").rglob("*.png"))]
    files = study_bytes(views, "WRIST")
    analyses, study = Service(ROOT / "models", ["mura"], cam_path="onnx").analyse_study(
        "mura", files, [f"view{i}.dcm" for i in range(len(files))])
    handlers = app.App.__new__(app.App)
    handlers.overlays, handlers.sweeping = tmp_path, threading.Lock()
    update = handlers.dicom_files((analyses, study))
    assert update["visible"] and len(update["value"]) == 2 * len(files) + 1
    written = [pydicom.dcmread(path) for path in update["value"]]
    assert {str(d.StudyInstanceUID) for d in written} == {str(pydicom.dcmread(io.BytesIO(files[0])).StudyInstanceUID)}
    assert sum(str(d.Modality) == "SR" for d in written) == len(files) + 1
    assert str(written[-1].SeriesDescription) == "Research demo study findings, not for diagnosis"
    assert handlers.dicom_files(None)["visible"] is False


def test_a_mura_study_has_one_report_over_its_views(tmp_path):
    """The study's result (the mean of its views, decided by the card's rule) as one SR in the views' study,
    referencing every view; views of two studies are refused."""
    from radiograph.dicom_results import STUDY_REPORT_DESCRIPTION, STUDY_SR_SERIES_NUMBER, study_report
    from train.phantoms.dicom import study_bytes

    service = Service(ROOT / "models", ["mura"], cam_path="onnx")
    pictures = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((ROOT / "examples" / "mura").rglob("*.png"))]
    files = study_bytes(pictures[:3], "WRIST", "PHANTOM-MURA")
    views, study = service.analyse_study("mura", files, [f"view{n}.dcm" for n in range(1, 4)])
    report = study_report(study, views)
    sources = [pydicom.dcmread(io.BytesIO(data)) for data in files]
    assert report.StudyInstanceUID == sources[0].StudyInstanceUID and report.PatientID == "PHANTOM-MURA"
    assert (report.SeriesDescription, report.SeriesNumber) == (STUDY_REPORT_DESCRIPTION, STUDY_SR_SERIES_NUMBER)
    evidence = [str(item.ReferencedSOPInstanceUID) for s in report.CurrentRequestedProcedureEvidenceSequence
                for series in s.ReferencedSeriesSequence for item in series.ReferencedSOPSequence]
    assert sorted(evidence) == sorted(str(s.SOPInstanceUID) for s in sources)
    items = list(report.ContentSequence)
    images = [str(i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for i in items if i.ValueType == "IMAGE"]
    assert images == [str(s.SOPInstanceUID) for s in sources]  # every view, in order
    found = {i.ConceptCodeSequence[0].CodeMeaning: {p.ConceptNameCodeSequence[0].CodeMeaning:
                                                     p.get("MeasuredValueSequence", [p])[0].get("NumericValue",
                                                                                                p.get("TextValue"))
                                                     for p in i.ContentSequence}
             for i in items if i.ValueType == "CODE"}
    card = views[0].card
    for label in card.labels:  # the study's probabilities: the mean of its views'
        assert float(found[label]["Probability"]) == pytest.approx(study["probabilities"][label], abs=1e-6)
        assert study["probabilities"][label] == pytest.approx(np.mean([v.probabilities[card.labels.index(label)]
                                                                       for v in views]), abs=1e-6)
    score = found[card.decision.positive]  # P(abnormal) summed over body parts, its cut, the call
    assert float(score["Probability"]) == pytest.approx(study["decision"]["abnormal_probability"], abs=1e-6)
    assert float(score["Operating threshold"]) == pytest.approx(card.decision.cut, abs=1e-6)
    assert score["Called"] == ("positive" if study["decision"]["abnormal"] else "negative")
    assert score["body part"] == study["decision"]["body_part"]
    assert items[-1].TextValue == study["decision"]["text"]
    other = study_bytes(pictures[3:4], "WRIST", "PHANTOM-OTHER")  # a view of another study
    views, study = service.analyse_study("mura", files[:2] + other, ["a.dcm", "b.dcm", "c.dcm"])
    with pytest.raises(DicomResultError, match="of 2 DICOM studies"):
        study_report(study, views)
