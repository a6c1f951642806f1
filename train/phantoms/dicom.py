"""DICOM files for the tests, examples and benchmarks (the phantoms themselves are PNG and JPEG), and phantom
studies as DICOM for a test PACS (python -m train.dicom_studies FOLDER --out DIR)."""
from __future__ import annotations

import io

import numpy as np


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12,
                window: tuple[float, float] | None = None, **tags) -> bytes:
    """A minimal computed-radiography DICOM file (explicit VR little endian) holding `pixels`."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.1", generate_uid()
    ds.Modality = "CR"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    for key, value in tags.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def study_bytes(images: list[np.ndarray], body_part: str = "", patient_id: str = "PHANTOM-0001",
                modality: str = "CR", **tags) -> list[bytes]:
    """One DICOM study of `images` (8-bit grey phantoms), all in one series: shared Study and Series Instance
    UIDs, instance numbers in order, a synthetic patient (name and id say so), as a PACS would hold it."""
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    shared = {"StudyInstanceUID": study, "SeriesInstanceUID": series, "PatientName": "PHANTOM^SYNTHETIC",
              "PatientID": patient_id, "PatientBirthDate": "", "PatientSex": "O", "AccessionNumber": "PH" + study[-8:],
              "StudyID": "1", "StudyDate": "20261201", "StudyTime": "120000", "ReferringPhysicianName": "",
              "SeriesNumber": 1, "Modality": modality, "StudyDescription": "Synthetic phantom study"}
    if body_part:
        shared["BodyPartExamined"] = body_part.upper()
    shared.update(tags)
    return [dicom_bytes(np.asarray(image, dtype=np.uint16) * 16, InstanceNumber=number, **shared)
            for number, image in enumerate(images, 1)]

