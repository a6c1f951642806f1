"""Decode time of a 2048x2048 12-bit phantom per compressed transfer syntax (median of 5, radiograph.imaging.decode
from bytes, one CPU thread's worth): python bench/dicom_decode_times.py"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

sys.path[:0] = [str(Path(__file__).resolve().parent.parent), str(Path(__file__).resolve().parent.parent / "tests")]
from radiograph.imaging import decode  # noqa: E402
from test_dicom_compressed import ENCODED, JPEG_LOSSLESS, dataset, gdcm_compressed, phantom, saved  # noqa: E402

pixels = phantom(12, side=2048)
ds = dataset(pixels, 12)
files = {"Explicit VR Little Endian (uncompressed)": saved(ds)}
for syntax in (RLELossless, JPEGLSLossless, JPEG2000Lossless):
    packed = dataset(pixels, 12)
    packed.compress(syntax, encoding_plugin=ENCODED[syntax])
    files[syntax.name] = saved(packed)
for syntax in JPEG_LOSSLESS:  # encoded by GDCM (python-gdcm, requirements-dev.txt), decoded by pylibjpeg-libjpeg
    files[pydicom.uid.UID(syntax).name] = gdcm_compressed(pixels, 12, syntax, "MONOCHROME2")[1]
print("| transfer syntax | file MB | decode ms (median of 5) |\n|---|---|---|")
for name, data in files.items():
    times = []
    for _ in range(5):
        start = time.perf_counter()
        decode(data, "bench.dcm")
        times.append(1000 * (time.perf_counter() - start))
    print(f"| {name} | {len(data) / 2**20:.1f} | {statistics.median(times):.0f} |")
