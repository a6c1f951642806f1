"""Results of a DICOM input written back as DICOM (highdicom), to join the source's study in a PACS.

    sc, sr = dicom_results(analysis)                    # analysis: radiograph.service.Analysis of a DICOM file
    write_dicom_results(analysis, Path("out"), "scan")  # out/scan.sc.dcm, out/scan.sr.dcm
    study_report(study, views)                          # a study's result (MURA) as one report over its views

- The Secondary Capture (`secondary_capture`): the Grad-CAM overlay the app shows by default (its first shown
  class, opacity 0.4, viridis) as an RGB image in the source's study: the patient and study modules copied from
  the source, its own series and instance UIDs, the source instance in SourceImageSequence, a SeriesDescription that
  says it is a research demo heatmap, not for diagnosis, BurnedInAnnotation NO (no text is drawn on it).
- The Structured Report (`structured_report`): a Comprehensive SR (highdicom.sr.ComprehensiveSR; why this one:
  docs/export-and-predict.md "DICOM results") whose content tree holds every finding with its probability, its
  operating threshold where the card's rule has one, and whether it is called; the decision's text (the input
  gate's warnings included); the model's identity (task, model_version) and the card's notice. It references the
  source instance (an IMAGE item, and CurrentRequestedProcedureEvidenceSequence) and the Secondary Capture.
- The study's report (`study_report`), where the task decides a study from its views (MURA): a Comprehensive SR of
  the study's probabilities (the mean over its views) and decision, referencing every view read.

Every result's series and instance UIDs are derived (`derived_uid`: a name-based UUID, 2.25) from what it is: its
kind, the source instance(s), the model's task and version, and a digest of its content. The same analysis written
twice (a retry after a partial store, the batch command run again) gets the same UIDs, so a PACS keeps one copy;
different content (another model, another class shown, another source) gets different UIDs.

Only what the source carries is copied (radiograph.imaging.dicom_header keeps it with the analysis); a patient or
study attribute the source lacks is left empty (DICOM's Type 2: unknown), never made up. PatientName and PatientID
go into these two files only, which belong to the same patient; nothing here logs them.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import numpy as np

SC_SERIES_NUMBER = 990  # high, out of a modality's usual range, so viewers list the results after the source
SR_SERIES_NUMBER = 991
STUDY_SR_SERIES_NUMBER = 992
MANUFACTURER = "radiograph research demo"
SERIES_DESCRIPTION = "Research demo heatmap (Grad-CAM), not for diagnosis"
REPORT_DESCRIPTION = "Research demo findings, not for diagnosis"
STUDY_REPORT_DESCRIPTION = "Research demo study findings, not for diagnosis"
SCHEME = "99RADIOGRAPH"  # a private coding scheme for the concepts DICOM has no code for (findings, probability)
# Type 1 in the source: without them there is no study, series and instance to reference
REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
# Type 2 patient and study attributes highdicom reads from the source: present, empty where the source lacks them
TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
          "StudyTime", "ReferringPhysicianName")
BIPED = {"A", "P", "L", "R", "H", "F"}
# the namespace of this project's name-based result UIDs (a UUID 5 of its own name, fixed for good)
RESULT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_OID, "radiograph.dicom_results")


class DicomResultError(ValueError):
    """An analysis that cannot be written as DICOM results; the message says why and what is needed."""


def derived_uid(*parts) -> str:
    """A UID named by `parts` (what the object is, what it was made from, a digest of its content): 2.25 followed by
    the UUID 5 of the parts in RESULT_NAMESPACE (DICOM PS3.5 B.2). Equal parts give the equal UID, on any machine."""
    import highdicom

    return highdicom.UID(f"2.25.{uuid.uuid5(RESULT_NAMESPACE, chr(31).join(str(part) for part in parts)).int}")


def digest(content) -> str:
    """SHA-256 of bytes, or of a JSON-serialisable value written canonically (sorted keys)."""
    if not isinstance(content, bytes):
        content = json.dumps(content, sort_keys=True, default=str).encode()
    return hashlib.sha256(content).hexdigest()


def source_of(analysis):
    """The source's header (radiograph.imaging.dicom_header) as a new Dataset with TYPE_2 present; refuses an
    analysis that is not of a DICOM file, that the gate refused, or whose source lacks a REQUIRED UID."""
    from pydicom.dataset import Dataset

    header = analysis.dicom_header
    if header is None:
        raise DicomResultError(f"{analysis.name}: results are written as DICOM only for a DICOM input (it joins the "
                               "source's study); this input is not DICOM")
    if analysis.refused:
        raise DicomResultError(f"{analysis.name}: the input gate refused the image, so there are no findings and no "
                               "heatmap to write as DICOM")
    missing = [keyword for keyword in REQUIRED if not str(header.get(keyword, "") or "").strip()]
    if missing:
        raise DicomResultError(f"{analysis.name}: the source lacks {', '.join(missing)}; DICOM results reference the "
                               "source's study, series and instance, so it must carry StudyInstanceUID, "
                               "SeriesInstanceUID, SOPInstanceUID and SOPClassUID")
    source = Dataset()
    source.update(header)
    for keyword in TYPE_2:
        if keyword not in source:
            setattr(source, keyword, "")
    return source


def secondary_capture(analysis, source=None, class_index: int | None = None):
    """The overlay of `class_index` (default: the first shown class) as a highdicom SCImage in the source's study."""
    import highdicom
    from pydicom.dataset import Dataset
    from pydicom.uid import ExplicitVRLittleEndian

    source = source_of(analysis) if source is None else source
    class_index = analysis.shown_class if class_index is None else class_index
    picture = np.ascontiguousarray(analysis.overlay(class_index), dtype=np.uint8)
    orientation = [str(value) for value in source.get("PatientOrientation", [])]
    known = len(orientation) == 2 and all(value in BIPED for value in orientation)
    label = analysis.labels[class_index]
    card = analysis.card
    uid = derived_uid("secondary capture", source.StudyInstanceUID, source.SOPInstanceUID, card.task,
                      card.model_version, label, picture.shape, digest(picture.tobytes()))
    sc = highdicom.sc.SCImage.from_ref_dataset(
        source, picture, "RGB", 8, "PATIENT", derived_uid("series", uid), SC_SERIES_NUMBER, uid, 1, MANUFACTURER,
        # highdicom asks an image of the patient for its orientation; the source's, else emptied below
        patient_orientation=tuple(orientation) if known else ("L", "F"),
        transfer_syntax_uid=ExplicitVRLittleEndian, series_description=SERIES_DESCRIPTION)
    if not known:
        sc.PatientOrientation = ""  # Type 2: unknown, as in the source
    sc.BurnedInAnnotation = "NO"  # a colour map over the image; no text, no identifying marks
    sc.RecognizableVisualFeatures = "NO"
    sc.LossyImageCompression = "01" if str(source.get("LossyImageCompression", "")) == "01" else "00"
    sc.ImageComments = (f"Grad-CAM heatmap of {label} from model {card.model_version} "
                        f"({card.task}). {card.notice or ''}".strip())[:10240]
    sc.DerivationDescription = (f"Grad-CAM map of {label} in viridis at opacity 0.4 over the source image, "
                                f"resized to {picture.shape[1]}x{picture.shape[0]}")
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    for keyword in ("BodyPartExamined", "Laterality"):
        if keyword in source and keyword not in sc:
            sc.add(source[keyword])
    return sc


def _code(value: str, meaning: str | None = None, scheme: str = SCHEME):
    from highdicom.sr import CodedConcept

    return CodedConcept(value, scheme, (meaning or value)[:64])


def findings(analysis) -> list[dict]:
    """Each label of an analysis: see findings_of."""
    return findings_of(analysis.card, analysis.probabilities, analysis.decision())


def findings_of(card, probabilities, decision: dict) -> list[dict]:
    """Each label: probability, the operating threshold where the card's rule calls each label on its own
    (each_above_threshold), and whether the decision calls it."""
    rows = []
    for index, (label, probability) in enumerate(zip(card.labels, probabilities)):
        row = {"label": label, "probability": float(probability), "threshold": None}
        if card.decision.kind == "each_above_threshold":
            row["threshold"] = float(card.thresholds[label])
            row["called"] = label in decision.get("positive", [])
        elif card.decision.kind == "top_class":
            row["called"] = index == int(np.argmax(probabilities))
        rows.append(row)
    return rows


def report_content(card, probabilities, decision: dict) -> dict:
    """What a findings report says beyond its references (for its UID's digest): every finding, the decision, the
    rule and the notice."""
    return {"findings": findings_of(card, probabilities, decision), "decision": decision, "rule": rule_text(card),
            "notice": card.notice}


def rule_text(card) -> str:
    kind = card.decision.kind
    if kind == "each_above_threshold":
        return "Each finding is called positive at or above its operating threshold."
    if kind == "grouped":
        return (f"The {card.decision.positive} probability summed over the {card.decision.group_name} classes is "
                f"called {card.decision.positive} at or above {card.decision.cut:.4g}.")
    return "The class with the highest probability is called."


def _report_items(card, probabilities, decision: dict, references: list) -> list:
    """The content of a findings report: the model's identity and notice, the referenced images (IMAGE items, in
    order), the decision rule, every label's finding, the grouped score where the card's rule has one (MURA:
    P(abnormal) summed over body parts, its cut, the body part), and the decision's text."""
    from highdicom.sr import CodeContentItem, ContentSequence, NumContentItem, TextContentItem
    from pydicom.sr.codedict import codes

    unit = _code("1", "no units", "UCUM")
    items = [TextContentItem(codes.DCM.AlgorithmName, f"radiograph {card.task} model", "CONTAINS"),
             TextContentItem(codes.DCM.AlgorithmVersion, card.model_version, "CONTAINS"),
             TextContentItem(_code("TASK", "Task"), card.task, "CONTAINS"),
             TextContentItem(_code("NOTICE", "Notice"), card.notice or REPORT_DESCRIPTION, "CONTAINS"),
             *references,
             TextContentItem(_code("DECISION-RULE", "Decision rule"), rule_text(card), "CONTAINS")]
    for row in findings_of(card, probabilities, decision):
        finding = CodeContentItem(codes.DCM.Finding, _code(row["label"]), "CONTAINS")
        properties = [NumContentItem(_code("PROBABILITY", "Probability"), row["probability"], unit,
                                     relationship_type="HAS PROPERTIES")]
        if row["threshold"] is not None:
            properties.append(NumContentItem(_code("THRESHOLD", "Operating threshold"), row["threshold"], unit,
                                             relationship_type="HAS PROPERTIES"))
        if "called" in row:
            properties.append(TextContentItem(_code("CALLED", "Called"), "positive" if row["called"] else "negative",
                                              "HAS PROPERTIES"))
        finding.ContentSequence = ContentSequence(properties)
        items.append(finding)
    rule = card.decision
    if rule.kind == "grouped" and rule.score_key in decision:
        score = CodeContentItem(codes.DCM.Finding, _code(rule.positive.upper(), rule.positive), "CONTAINS")
        score.ContentSequence = ContentSequence([
            NumContentItem(_code("PROBABILITY", "Probability"), float(decision[rule.score_key]), unit,
                           relationship_type="HAS PROPERTIES"),
            NumContentItem(_code("THRESHOLD", "Operating threshold"), float(rule.cut), unit,
                           relationship_type="HAS PROPERTIES"),
            TextContentItem(_code("CALLED", "Called"), "positive" if decision[rule.positive] else "negative",
                            "HAS PROPERTIES"),
            TextContentItem(_code(rule.group_name.upper(), rule.group_name.replace("_", " ")),
                            str(decision[rule.group_name]), "HAS PROPERTIES")])
        items.append(score)
    items.append(TextContentItem(_code("DECISION", "Decision"), decision["text"][:1024], "CONTAINS"))
    return items


def structured_report(analysis, source=None, sc=None):
    """The findings as a highdicom ComprehensiveSR referencing the source (and `sc`, the Secondary Capture, when
    given: an IMAGE item and evidence of the same study)."""
    from highdicom.sr import ComprehensiveSR, ContainerContentItem, ContentSequence, ImageContentItem
    from pydicom.sr.codedict import codes

    source = source_of(analysis) if source is None else source
    references = [ImageContentItem(codes.DCM.SourceOfMeasurement, source.SOPClassUID, source.SOPInstanceUID,
                                   relationship_type="CONTAINS")]
    if sc is not None:
        references.append(ImageContentItem(_code("GRADCAM-OVERLAY", "Grad-CAM overlay"), sc.SOPClassUID,
                                           sc.SOPInstanceUID, relationship_type="CONTAINS"))
    card, decision = analysis.card, analysis.decision()
    root = ContainerContentItem(_code("18748-4", "Diagnostic imaging report", "LN"))
    root.ContentSequence = ContentSequence(_report_items(card, analysis.probabilities, decision, references))
    uid = derived_uid("structured report", source.StudyInstanceUID, source.SOPInstanceUID,
                      "" if sc is None else sc.SOPInstanceUID, card.task, card.model_version,
                      digest(report_content(card, analysis.probabilities, decision)))
    return ComprehensiveSR([source] + ([sc] if sc is not None else []), root, derived_uid("series", uid),
                           SR_SERIES_NUMBER, uid, 1, MANUFACTURER, series_description=REPORT_DESCRIPTION)


def study_report(study: dict, views: list):
    """A study's result (radiograph.service.Service.study_of or analyse_study: the mean of its views' probabilities,
    decided by the card's rule; MURA) as a Comprehensive SR in the views' study, referencing every view read (an
    IMAGE item each, and evidence). Refused views are not referenced; views of several studies are refused."""
    from highdicom.sr import ComprehensiveSR, ContainerContentItem, ContentSequence, ImageContentItem, TextContentItem
    from pydicom.sr.codedict import codes

    read = [view for view in views if not view.refused]
    if "probabilities" not in study or not read:
        raise DicomResultError("the input gate refused every view of the study, so it has no findings to write")
    sources = [source_of(view) for view in read]
    studies = {str(source.StudyInstanceUID) for source in sources}
    if len(studies) > 1:
        raise DicomResultError(f"the {len(read)} views are of {len(studies)} DICOM studies (StudyInstanceUID); a "
                               "study's report joins one study, so give the views of one study")
    card = read[0].card
    probabilities = np.asarray([study["probabilities"][label] for label in card.labels])
    references = [ImageContentItem(codes.DCM.SourceOfMeasurement, source.SOPClassUID, source.SOPInstanceUID,
                                   relationship_type="CONTAINS") for source in sources]
    references.append(TextContentItem(_code("AGGREGATION", "Aggregation"),
                                      f"The study's probabilities are the mean of its {len(read)} views' "
                                      f"probabilities, decided by the card's rule", "CONTAINS"))
    root = ContainerContentItem(_code("18748-4", "Diagnostic imaging report", "LN"))
    root.ContentSequence = ContentSequence(_report_items(card, probabilities, study["decision"], references))
    uid = derived_uid("study report", next(iter(studies)), *sorted(str(source.SOPInstanceUID) for source in sources),
                      card.task, card.model_version, digest(report_content(card, probabilities, study["decision"])))
    return ComprehensiveSR(sources, root, derived_uid("series", uid), STUDY_SR_SERIES_NUMBER, uid, 1, MANUFACTURER,
                           series_description=STUDY_REPORT_DESCRIPTION)


def dicom_results(analysis) -> tuple:
    """(Secondary Capture, Structured Report) of one analysis of a DICOM file; DicomResultError otherwise."""
    source = source_of(analysis)
    sc = secondary_capture(analysis, source)
    return sc, structured_report(analysis, source, sc)


def write_dicom_results(analysis, folder: Path, stem: str) -> tuple[Path, Path]:
    """`folder/<stem>.sc.dcm` and `folder/<stem>.sr.dcm` (DICOM files with their file meta)."""
    sc, sr = dicom_results(analysis)
    folder.mkdir(parents=True, exist_ok=True)
    paths = (folder / f"{stem}.sc.dcm", folder / f"{stem}.sr.dcm")
    for dataset, path in zip((sc, sr), paths):
        dataset.save_as(path, enforce_file_format=True)
    return paths


def write_study_report(study: dict, views: list, folder: Path, stem: str) -> Path:
    """`folder/<stem>.study.sr.dcm`: the study's report (study_report)."""
    report = study_report(study, views)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.study.sr.dcm"
    report.save_as(path, enforce_file_format=True)
    return path
