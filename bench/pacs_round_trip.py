"""Round trip of one study through a real PACS (Debian's Orthanc with DICOMweb, started here): search (QIDO-RS),
fetch (WADO-RS), analyse (the app's Service, ONNX CAM path), write the results as DICOM and store them (STOW-RS).
Each step's time over 5 repetitions (median, min-max), for a 3-view MURA study (analysed as a study) and a
1-view chest study, measured in one run:

    python bench/pacs_round_trip.py
"""
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from radiograph.orthanc import Orthanc  # noqa: E402
from radiograph.pacs import Pacs, analyse_fetched, results_as_dicom  # noqa: E402
from radiograph.service import Service  # noqa: E402
from train.phantoms.dicom import study_bytes  # noqa: E402

REPEATS = 5


def grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def main() -> int:
    service = Service(ROOT / "models", ["mura", "chest14"], cam_path="onnx")
    studies = {"mura (3 views, as a study)": ("mura", study_bytes(
                   [grey(p) for p in sorted((ROOT / "examples/mura/XR_WRIST").rglob("*.png"))], "WRIST")),
               "chest14 (1 view)": ("chest14", study_bytes([grey(ROOT / "examples/chest14/00000060_001.png")],
                                                           "CHEST", modality="DX"))}
    with tempfile.TemporaryDirectory() as storage, Orthanc(Path(storage)) as server:
        pacs = Pacs(server.url)
        print(f"| study | MB | search ms | fetch ms | analyse ms | results as DICOM ms | store ms | total ms |\n"
              f"|---|---|---|---|---|---|---|---|")
        for name, (task, files) in studies.items():
            times = {key: [] for key in ("search", "fetch", "analyse", "dicom", "store", "total")}
            for _ in range(REPEATS):
                datasets = [pydicom.dcmread(io.BytesIO(data)) for data in files]
                study = pydicom.uid.generate_uid()  # a fresh study each time: no repetition sees another's results
                for dataset in datasets:
                    dataset.StudyInstanceUID = study
                    dataset.SOPInstanceUID = pydicom.uid.generate_uid()
                pacs.store(datasets)
                clock = [time.perf_counter()]
                assert [row["study"] for row in pacs.search(study=study)] == [study]
                clock.append(time.perf_counter())
                instances, _ = pacs.fetch_study(study)
                clock.append(time.perf_counter())
                analyses, _ = analyse_fetched(service, task, instances)
                clock.append(time.perf_counter())
                results, _ = results_as_dicom(analyses)
                clock.append(time.perf_counter())
                assert len(pacs.store(results, study)) == 2 * len(files)
                clock.append(time.perf_counter())
                for key, start, end in zip(times, clock, clock[1:]):
                    times[key].append(1000 * (end - start))
                times["total"].append(1000 * (clock[-1] - clock[0]))
            cells = [f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})" for v in times.values()]
            print(f"| {name} | {sum(map(len, files)) / 2**20:.1f} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
