"""Hostile files (tests/hostile.py) through the loader, and the decoder's memory budget.

Each hostile file must be answered within seconds with ImageLoadError (its message naming the file and what is
accepted) or, where the file is valid, a finite 2-D float32 image in [0, 255]; no other exception escapes.
One worker process then loads every hostile file and every WORST_ACCEPTED file (valid, just under the pixel
limit) through `load_for_model` and reports how far each call raised the process's peak resident memory
(VmHWM, reset before each call through /proc/self/clear_refs) above its resident memory just before the call:
no call may rise above DECODE_BUDGET_BYTES.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from radiograph import imaging
from radiograph.imaging import ImageLoadError, read_image

from hostile import CONTROLS, EXPECTED, GROUPS, HOSTILE, MAX_HOSTILE_BYTES, WORST_ACCEPTED, WORST_SHAPES, worst_accepted

ROOT = Path(__file__).resolve().parents[1]
BUDGET = getattr(imaging, "DECODE_BUDGET_BYTES", 400 * 2**20)
SECONDS_PER_FILE = 5.0
WORKER_TIMEOUT_S = 300


def _check_answer(name, source, expected, answer, elapsed):
    assert elapsed < SECONDS_PER_FILE, f"{name}: answered in {elapsed:.1f} s (limit {SECONDS_PER_FILE:.0f} s)"
    if isinstance(answer, ImageLoadError):
        message = str(answer)
        assert expected != "accepted", f"{name} ({source}) is valid and must be accepted; refused with: {message}"
        assert message.startswith(name), f"the message must start with the file name: {message}"
        assert "accepted:" in message, f"the message must say what is accepted: {message}"
        return
    assert expected != "refused", f"{name} ({source}) must be refused; it was decoded to {answer.shape} {answer.dtype}"
    assert answer.ndim == 2 and answer.dtype == np.float32, (answer.shape, answer.dtype)
    assert np.isfinite(answer).all(), f"{name}: non-finite values in the decoded image"
    assert answer.min() >= 0 and answer.max() <= 255, (float(answer.min()), float(answer.max()))


def _read(path):
    start = time.perf_counter()
    try:
        answer = read_image(path)
    except ImageLoadError as error:
        answer = error
    except Exception as error:  # noqa: BLE001 - the contract: only ImageLoadError escapes
        pytest.fail(f"{path.name}: {type(error).__name__} escaped instead of ImageLoadError: {error}")
    return answer, time.perf_counter() - start


def test_the_hostile_corpus_is_large_small_on_disk_and_fully_labelled():
    assert len(HOSTILE) >= 60
    assert set(EXPECTED) == set(HOSTILE) and set(EXPECTED.values()) <= {"refused", "either", "accepted"}
    assert sorted(name for names in GROUPS.values() for name in names) == sorted(HOSTILE)
    assert all(len(GROUPS[group]) >= 5 for group in GROUPS), {g: len(n) for g, n in GROUPS.items()}
    oversized = {name: len(data) for name, data in HOSTILE.items() if len(data) > MAX_HOSTILE_BYTES}
    assert not oversized, oversized


@pytest.mark.parametrize("name", list(CONTROLS))
def test_the_unpatched_bases_are_accepted(tmp_path, name):
    """The writers in tests/hostile.py make valid files: a hostile file is refused for its defect alone."""
    path = tmp_path / name
    path.write_bytes(CONTROLS[name])
    answer, elapsed = _read(path)
    _check_answer(name, "control", "accepted", answer, elapsed)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(HOSTILE[name])
    answer, elapsed = _read(path)
    group = next(g for g, names in GROUPS.items() if name in names)
    _check_answer(name, group, EXPECTED[name], answer, elapsed)


# ----------------------------------------------------------------------------- memory budget

WORKER = r"""
import ctypes, gc, json, os, sys, time
import numpy, cv2, PIL.Image, PIL.PngImagePlugin, PIL.JpegImagePlugin, PIL.TiffImagePlugin, PIL.BmpImagePlugin
import pydicom, pydicom.pixels
from radiograph.imaging import ImageLoadError, load_for_model

jobs = json.load(open(sys.argv[1]))
measure = jobs["measure"]

def status(key):
    if not measure:
        return 0
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)

try:
    trim = ctypes.CDLL("libc.so.6").malloc_trim
except OSError:
    trim = lambda pad: 0

for path in jobs["warm_up"]:  # first use of each decoder (plugin imports, tables) is not counted
    try:
        load_for_model(path, 512)
    except ImageLoadError:
        pass
# A safety net for the machine, far above any budget: 8 GiB of address space more than after warm-up.
if measure:
    import resource
    limit = status("VmSize") + 8 * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
for name, path in jobs["files"]:
    gc.collect()
    trim(0)
    before = status("VmRSS")
    if measure:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset VmHWM to the current resident size
    start = time.perf_counter()
    shape, message = None, None
    try:
        loaded = load_for_model(path, 512)  # (tensor, geometry, ...): the rest differs between versions
        tensor, geometry = loaded[0], loaded[1]
        outcome, shape = "accepted", list(geometry.original)
        ok = bool(tensor.shape == (512, 512, 1) and numpy.isfinite(tensor).all() and tensor.min() >= 0
                  and tensor.max() <= 255)
        del loaded, tensor, geometry
        if not ok:
            outcome, message = "bad_image", "the model input is not finite, or not in [0, 255]"
    except ImageLoadError as error:
        outcome, message = "refused", str(error)[:200]
    except BaseException as error:
        outcome, message = "escaped", f"{type(error).__name__}: {error}"[:200]
    seconds = time.perf_counter() - start
    peak = status("VmHWM")
    print(json.dumps({"name": name, "rise": peak - before, "before": before, "seconds": round(seconds, 3),
                      "outcome": outcome, "shape": shape, "message": message}), flush=True)
"""


def _clear_refs_writable() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def memory_report(tmp_path_factory):
    """One worker process loads every hostile and worst-accepted file; {name: its JSON line}. The peak-memory
    rise is measured only where /proc/self/clear_refs is writable (Linux); elsewhere it is 0."""
    folder = tmp_path_factory.mktemp("hostile")
    files = []
    for name, data in sorted(HOSTILE.items()):
        (folder / name).write_bytes(data)
        files.append((name, str(folder / name)))
    warm = tmp_path_factory.mktemp("warm")
    warm_up = []
    for name, data in CONTROLS.items():
        (warm / name).write_bytes(data)
        warm_up.append(str(warm / name))
    for name, path in worst_accepted(tmp_path_factory.mktemp("worst")).items():
        files.append((name, str(path)))
    jobs = tmp_path_factory.mktemp("jobs") / "jobs.json"
    jobs.write_text(json.dumps({"files": files, "warm_up": warm_up, "measure": _clear_refs_writable()}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "MALLOC_MMAP_THRESHOLD_": "131072"}  # big blocks come from and go back to the OS: each call starts clean
    try:
        done = subprocess.run([sys.executable, "-c", WORKER, str(jobs)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=WORKER_TIMEOUT_S)
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        stdout = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        stderr, code = f"the worker ran past {WORKER_TIMEOUT_S} s", None
    report = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            report[entry["name"]] = entry
    missing = [name for name, _ in files if name not in report]
    assert code == 0 and not missing, (f"the worker stopped (exit {code}) before {missing[:1]} "
                                       f"({len(missing)} files not measured): {stderr[-2000:]}")
    return report


def _mb(value: int) -> str:
    return f"{value / 2**20:.0f} MB"


def test_decoding_stays_inside_the_memory_budget(memory_report):
    if not _clear_refs_writable():
        pytest.skip("/proc/self/clear_refs is not writable here (not Linux, or a restricted /proc): "
                    "the peak-memory measurement resets VmHWM through it")
    ranked = sorted(memory_report.values(), key=lambda entry: -entry["rise"])
    top = "\n".join(f"  {_mb(e['rise']):>8}  {e['seconds']:6.2f} s  {e['outcome']:8}  {e['name']}" for e in ranked[:5])
    print(f"\nlargest peak-memory rises (budget {_mb(BUDGET)}):\n{top}")
    over = [f"{e['name']}: {_mb(e['rise'])} ({e['outcome']})" for e in ranked if e["rise"] > BUDGET]
    assert not over, f"{len(over)} files raised peak memory past {_mb(BUDGET)}:\n" + "\n".join(over)


def test_no_call_lets_another_exception_escape(memory_report):
    escaped = {e["name"]: e["message"] for e in memory_report.values() if e["outcome"] in ("escaped", "bad_image")}
    assert not escaped, escaped


@pytest.mark.parametrize("name", list(WORST_ACCEPTED))
def test_the_costliest_valid_files_are_accepted(memory_report, name):
    entry = memory_report[name]
    assert entry["outcome"] == "accepted", entry
    assert tuple(entry["shape"]) == WORST_SHAPES[name], entry
    assert entry["seconds"] < 3 * SECONDS_PER_FILE, entry
