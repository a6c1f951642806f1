"""The server's memory per request, measured from outside its process (Linux): worst-case files, one at a time,
eight at once, and what twenty ended sessions leave behind.

    python -m bench.memory                      # the full app on the shipped models, a table and a verdict
    python -m bench.memory --app-args "--cam onnx" --out bench/memory.json

Starts `python app.py` in a fresh process on a free loopback port with a private
TMPDIR, waits for its "ready in" line and for its warm-up (one example per
endpoint, then a resident size that holds still), and sends requests through
gradio_client. The peak is the kernel's own high-water mark of the server's
resident memory: writing "5" to /proc/PID/clear_refs resets VmHWM to the current
VmRSS, and after the request VmHWM minus the VmRSS read at the reset is the
rise that request caused (file-backed pages included; the client, which runs
in this process, is not counted). A refusal (gradio_client's AppError) is a
valid answer and is recorded with its message.

Budgets: a worst-case request may raise the server's peak by at most 400 MB,
eight concurrent worst-case requests by at most 1 GB, and twenty sessions that
each analysed a 25-megapixel film may hold at most 200 MB once they ended.
"""
from __future__ import annotations

import argparse
import atexit
import collections
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np

from bench.endpoints import ENDPOINTS, example_input, free_port
from radiograph.registry import TASKS

for _name, _value in (("GRADIO_ANALYTICS_ENABLED", "False"), ("HF_HUB_DISABLE_TELEMETRY", "1")):
    os.environ.setdefault(_name, _value)
for _name in ("NO_PROXY", "no_proxy"):  # gradio_client talks to the loopback server directly, never via a proxy
    _hosts = [h for h in os.environ.get(_name, "").split(",") if h]
    os.environ[_name] = ",".join(dict.fromkeys([*_hosts, "127.0.0.1", "localhost"]))

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024

# The budgets (MB): what one worst-case request, a burst of eight, and twenty ended sessions may cost the server.
BUDGET_REQUEST_MB = 400
BUDGET_CONCURRENT_MB = 1024
BUDGET_SESSIONS_MB = 200

OVERLAY_PREFIX = "radiograph-overlays-"  # app.App's temporary folder of overlay PNGs
READY_TIMEOUT_S = 240
REQUEST_TIMEOUT_S = 300
WORST_SIDE = 5477  # 5477 x 5477 = 29,997,529 pixels: the largest square under a 30,000,000-pixel limit
FILM_SIDE = 5000  # a 25-megapixel film
PROBE_ENDPOINTS = tuple(f"/{name}" for name in ENDPOINTS)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom")


# ----------------------------------------------------------------------------- another process's memory (/proc)

def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(f"/proc/{pid}/status has no {key}")


def rss(pid: int) -> float:
    """Resident memory of `pid` now (VmRSS), in MB."""
    return _status_kb(pid, "VmRSS") / 1024


def hwm(pid: int) -> float:
    """Peak resident memory of `pid` since its start or the last reset_peak (VmHWM), in MB."""
    return _status_kb(pid, "VmHWM") / 1024


_RESET_RSS: dict[int, float] = {}


def peak_measurable(pid: int) -> str | None:
    """None when reset_peak can work on `pid`; otherwise why not (for a skip message)."""
    path = Path(f"/proc/{pid}/clear_refs")
    if not path.exists():
        return f"{path} does not exist (not Linux, or a kernel without it): VmHWM cannot be reset"
    try:
        path.write_text("5")
    except OSError as error:
        return f"{path} is not writable ({type(error).__name__}: {error}): VmHWM cannot be reset"
    return None


def reset_peak(pid: int) -> float:
    """Reset `pid`'s VmHWM to its current VmRSS (writes "5" to /proc/PID/clear_refs, Linux 4.0+); the RSS read
    at that moment (MB), which peak_rise subtracts."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    _RESET_RSS[pid] = rss(pid)
    return _RESET_RSS[pid]


def peak_rise(pid: int) -> float:
    """VmHWM now minus the VmRSS read at the last reset_peak(pid), in MB."""
    if pid not in _RESET_RSS:
        raise RuntimeError(f"reset_peak({pid}) was never called")
    return hwm(pid) - _RESET_RSS[pid]


# ----------------------------------------------------------------------------- the server in its own process

def start_server(extra_args=(), env=None, timeout: float = READY_TIMEOUT_S, warm: bool = True
                 ) -> tuple[subprocess.Popen, str]:
    """Start `python app.py --port <free> --host 127.0.0.1` (this interpreter, cwd = the repository) and wait
    for its "ready in" line, then (warm=True) for its warm-up. Unless `env` names a TMPDIR the process gets a
    private one (its overlay folder and Gradio's cache land there), which stop_server inspects and removes.
    The process carries `.url`, `.tmpdir`, `.log` (its last output lines) and `.ready_s`."""
    port = free_port()
    own_tmpdir = not (env and "TMPDIR" in env)
    tmpdir = tempfile.mkdtemp(prefix="radiograph-memory-") if own_tmpdir else env["TMPDIR"]
    environment = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
                   "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost", "PYTHONUNBUFFERED": "1",
                   "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": tmpdir, **(env or {})}
    if own_tmpdir and "GRADIO_TEMP_DIR" not in (env or {}):
        environment.pop("GRADIO_TEMP_DIR", None)  # Gradio's upload cache goes under the private TMPDIR too
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--host", "127.0.0.1",
                                *map(str, extra_args)], cwd=ROOT, env=environment, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    process.tmpdir, process.own_tmpdir = Path(tmpdir), own_tmpdir
    process.log = collections.deque(maxlen=200)
    ready = threading.Event()

    def read():  # keeps draining the pipe for the process's whole life, or a full pipe would block it
        for line in process.stdout:
            process.log.append(line.rstrip())
            if line.startswith("ready in"):
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.2):
        exited = process.poll() is not None
        if exited or time.monotonic() > deadline:
            what = f"exited with {process.returncode}" if exited else f"was not ready within {timeout:.0f} s"
            stop_server(process)
            said = "\n".join(process.log)
            raise RuntimeError(f"app.py {what}; it said:\n{said}")
    process.ready_s = time.perf_counter() - started
    process.url = f"http://127.0.0.1:{port}/"
    if warm:
        try:
            process.warm_up = warm_up(process.url, process.pid)
        except BaseException:
            stop_server(process)
            raise
    return process, process.url


def stop_server(process: subprocess.Popen, timeout: float = 30) -> dict:
    """Terminate the server (SIGTERM, then SIGKILL after `timeout`) and wait; count the `radiograph-overlays-*`
    folders left in its private TMPDIR (reported, not asserted), then remove that TMPDIR."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    tmpdir = getattr(process, "tmpdir", None)
    left = sorted(p.name for p in tmpdir.glob(OVERLAY_PREFIX + "*")) if tmpdir and tmpdir.is_dir() else []
    report = {"returncode": process.returncode, "tmpdir": str(tmpdir) if tmpdir else None,
              "overlay_folders_left": len(left), "overlay_folders": left}
    if tmpdir and getattr(process, "own_tmpdir", False):
        shutil.rmtree(tmpdir, ignore_errors=True)
    return report


def example_value(endpoint: str):
    """The first phantom example of an endpoint ("/knee", "/mura_study"), as gradio_client input."""
    return example_input(endpoint.lstrip("/"))


def warm_up(url: str, pid: int, settle_s: float = 3.0, tolerance_mb: float = 2.0, timeout: float = 60.0) -> dict:
    """One example request per endpoint (the app's own warm-up traces Grad-CAM meanwhile), then wait until the
    idle resident size has held within `tolerance_mb` for `settle_s`. Seconds per endpoint and the idle RSS."""
    client, seconds = new_client(url), {}
    try:
        for endpoint in PROBE_ENDPOINTS:
            start = time.perf_counter()
            client.submit(example_value(endpoint), api_name=endpoint).result(timeout=REQUEST_TIMEOUT_S)
            seconds[endpoint] = time.perf_counter() - start
    finally:
        close_client(client)
    deadline, still_since, last = time.monotonic() + timeout, time.monotonic(), rss(pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = rss(pid)
        if abs(now - last) > tolerance_mb:
            still_since, last = time.monotonic(), now
        elif time.monotonic() - still_since >= settle_s:
            break
    return {"first_request_s": seconds, "idle_rss_mb": rss(pid)}


# ----------------------------------------------------------------------------- clients and requests

_DOWNLOADS = tempfile.mkdtemp(prefix="radiograph-memory-client-")  # overlays downloaded by this process's clients
atexit.register(shutil.rmtree, _DOWNLOADS, ignore_errors=True)


def new_client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=_DOWNLOADS)


def close_client(client) -> None:
    close = getattr(client, "close", None)
    if close:
        close()


def _clear_downloads() -> None:
    for entry in Path(_DOWNLOADS).iterdir():
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


def _as_list(files) -> list[Path]:
    return [Path(f) for f in files] if isinstance(files, (list, tuple)) else [Path(files)]


def _value(endpoint: str, files):
    from gradio_client import handle_file

    paths = [handle_file(str(p)) for p in _as_list(files)]
    return paths if endpoint.endswith("_study") else paths[0]


def _describe(files) -> str:
    return " + ".join(p.name for p in _as_list(files))


def _outcome(job) -> tuple[str, str]:
    """("result" | "refused" | "error", message) of a finished gradio_client job. A full queue is a refusal too:
    the server answered at once, asking to try again."""
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    try:
        result = job.result(timeout=0)
    except (AppError, QueueError) as error:
        return "refused", f"{type(error).__name__}: {error}" if isinstance(error, QueueError) else str(error)
    except Exception as error:  # noqa: BLE001 - a dropped connection or a dead server is an answer to record too
        return "error", f"{type(error).__name__}: {error}"
    first = result[0] if isinstance(result, (list, tuple)) else result
    decision = first.get("decision", {}) if isinstance(first, dict) else {}
    return "result", str(decision.get("text", ""))


def _wait(jobs: list, started: float, timeout: float = REQUEST_TIMEOUT_S) -> list[float]:
    """Wait for every job; the seconds from `started` until each one finished."""
    finished: list[float | None] = [None] * len(jobs)
    deadline = time.monotonic() + timeout
    while None in finished and time.monotonic() < deadline:
        for i, job in enumerate(jobs):
            if finished[i] is None and job.done():
                finished[i] = time.perf_counter() - started
        time.sleep(0.02)
    return [timeout if f is None else f for f in finished]


def request_peak(url: str, pid: int, endpoint: str, files, client=None) -> dict:
    """One request through gradio_client (a list of files for /mura_study): how it was answered, how long it took
    and how far it raised the server's peak resident memory (MB) above its resident size just before."""
    own = client is None
    client = client or new_client(url)
    try:
        value = _value(endpoint, files)
        reset_peak(pid)
        started = time.perf_counter()
        job = client.submit(value, api_name=endpoint)
        (seconds,) = _wait([job], started)
        rise = peak_rise(pid)
        answered, message = _outcome(job)
    finally:
        if own:
            close_client(client)
        _clear_downloads()
    return {"endpoint": endpoint, "file": _describe(files), "answered": answered, "message": message,
            "seconds": round(seconds, 3), "peak_rise_mb": round(rise, 1)}


def concurrent_peak(url: str, pid: int, jobs: list[tuple[str, object]], clients: int = 4) -> dict:
    """Submit every (endpoint, files) job at once from `clients` Client objects (round robin) and wait for all;
    the rise of the server's peak over the whole burst and each job's outcome."""
    pool = [new_client(url) for _ in range(min(clients, len(jobs)))]
    try:
        values = [(endpoint, _value(endpoint, files)) for endpoint, files in jobs]
        reset_peak(pid)
        started = time.perf_counter()
        submitted = [pool[i % len(pool)].submit(value, api_name=endpoint) for i, (endpoint, value) in enumerate(values)]
        seconds = _wait(submitted, started)
        rise = peak_rise(pid)
        outcomes = []
        for (endpoint, files), job, took in zip(jobs, submitted, seconds):
            answered, message = _outcome(job)
            outcomes.append({"endpoint": endpoint, "file": _describe(files), "answered": answered,
                             "message": message, "seconds": round(took, 3)})
    finally:
        close_clients(pool)
        _clear_downloads()
    return {"requests": len(jobs), "clients": len(pool), "peak_rise_mb": round(rise, 1),
            "seconds": round(max(seconds), 3), "jobs": outcomes}


def close_clients(clients) -> None:
    """Close many clients at once (each close waits up to a second for its heartbeat thread)."""
    threads = [threading.Thread(target=close_client, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def session_memory(url: str, pid: int, film_path, sessions: int = 20, at_once: int = 4, settle_s: float = 5.0) -> dict:
    """`sessions` separate Clients each analyse the film on /knee (`at_once` at a time, so the server's bounded
    queue never turns one away); then every client is closed and, after `settle_s`, the resident memory still
    held over the RSS before the first one, in MB."""
    before = rss(pid)
    reset_peak(pid)
    started = time.perf_counter()
    pool = [new_client(url) for _ in range(sessions)]
    outcomes = []
    try:
        for first in range(0, sessions, at_once):
            wave = [client.submit(_value("/knee", film_path), api_name="/knee") for client in pool[first:first + at_once]]
            _wait(wave, started)
            outcomes += [_outcome(job) for job in wave]
            _clear_downloads()
        seconds = time.perf_counter() - started
    finally:
        close_clients(pool)
        _clear_downloads()
    peak = peak_rise(pid)
    time.sleep(settle_s)
    after = rss(pid)
    answered = collections.Counter(kind for kind, _ in outcomes)
    return {"sessions": sessions, "film": Path(film_path).name, "rss_before_mb": round(before, 1),
            "rss_after_mb": round(after, 1), "held_mb": round(after - before, 1), "peak_rise_mb": round(peak, 1),
            "seconds": round(seconds, 2), "settle_s": settle_s, "answered": dict(answered),
            "messages": sorted({m for kind, m in outcomes if kind != "result"})}


# ----------------------------------------------------------------------------- worst-case files

def _png(width: int, height: int, bit_depth: int, colour_type: int, raw_scanlines: bytes, level: int = 9) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw_scanlines, level))
            + chunk(b"IEND", b""))


def _jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its start-of-frame header claiming width x height (the scan data is unchanged)."""
    data, i = bytearray(jpeg), 2
    while i < len(data) - 4:
        if data[i] != 0xFF:
            raise ValueError("not a JPEG marker sequence")
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):  # SOF0/1/2: length, precision, height, width
            data[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise ValueError("no start-of-frame marker found")


def _gradient(side: int, top: float, dtype, phase: int = 0) -> np.ndarray:
    """A smooth diagonal ramp 0..top (rolled by `phase` for colour channels)."""
    ramp = np.arange(side, dtype=np.float32) / (2 * (side - 1))
    image = (ramp[:, None] + ramp[None, :]) * top
    return np.roll(image, phase, axis=1).astype(dtype)


def film_25mp(folder) -> Path:
    """A 5000 x 5000 colour JPEG of a smooth gradient: a 25-megapixel film as a camera or scanner writes it."""
    import cv2

    path = Path(folder) / "film-5000x5000-colour.jpg"
    if not path.exists():
        colour = np.dstack([_gradient(FILM_SIDE, 255, np.uint8, phase) for phase in (0, 1200, 2500)])
        cv2.imwrite(str(path), colour, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def own_worst_case_files(folder) -> dict[str, Path]:
    """The largest accepted files under a 30,000,000-pixel limit and three that lie about what they hold."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    side = WORST_SIDE
    files = {}

    def write(name: str, make) -> None:
        path = folder / name
        if not path.exists():
            made = make()
            path.write_bytes(made) if isinstance(made, bytes) else cv2.imwrite(str(path), made)
        files[path.stem] = path

    write("gray8-5477x5477.png", lambda: _gradient(side, 255, np.uint8))
    write("gray16-5477x5477.png", lambda: _gradient(side, 65535, np.uint16))
    write("rgba-5477x5477.png", lambda: np.dstack([_gradient(side, 255, np.uint8, p) for p in (0, 1500, 3000, 700)]))
    files[film_25mp(folder).stem] = film_25mp(folder)
    # lying files: a small file whose header promises far more than its size suggests
    write("bomb-zeros-10000x10000.png", lambda: _png(10000, 10000, 8, 0, bytes(10000 * 10001)))
    noise = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    write("sof-patched-10000x10000.jpg",
          lambda: _jpeg_with_size(cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes(), 10000, 10000))
    write("bomb-zeros-5400x5400-16bit.png", lambda: _png(5400, 5400, 16, 0, bytes(5400 * (1 + 2 * 5400))))
    return files


def _suffix_for(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data.startswith(b"BM"):
        return ".bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return ".tif"
    if data[128:132] == b"DICM":
        return ".dcm"
    return ".png"  # unknown content: an accepted extension, so the loader (not the upload filter) judges it


HOSTILE_GROUPS = ("bombs", "lying_dimensions", "frame_counts", "element_lengths")  # tests/hostile.py's groups
# that can cost memory (headers that size buffers, data that inflates); the others are about correctness and are
# tested in-process by tests/test_hostile.py


def _hostile_module():
    """tests/hostile.py when it exists and provides worst_accepted and HOSTILE; else None."""
    if not (ROOT / "tests" / "hostile.py").is_file():
        return None
    added = [str(p) for p in (ROOT, ROOT / "tests") if str(p) not in sys.path]
    sys.path[:0] = added  # it imports tests/corpus.py, which imports train.phantoms
    try:
        module = importlib.import_module("hostile")
    except Exception:  # noqa: BLE001 - a half-written module: fall back to our own set
        return None
    finally:
        for path in added:
            sys.path.remove(path)
    if Path(getattr(module, "__file__", "")).resolve() != (ROOT / "tests" / "hostile.py").resolve():
        return None  # some other module of that name
    return module if hasattr(module, "worst_accepted") and hasattr(module, "HOSTILE") else None


def worst_case_files(folder, groups=HOSTILE_GROUPS) -> dict[str, Path]:
    """name -> path of the worst-case inputs. When tests/hostile.py provides them: every worst_accepted(folder)
    file and the HOSTILE files of `groups` (all of them when it has no GROUPS); else this module's own set. The
    25-megapixel colour JPEG film in either case."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hostile = _hostile_module()
    if hostile is None:
        return own_worst_case_files(folder)
    accepted = hostile.worst_accepted(folder)
    if isinstance(accepted, dict):
        files = {str(name): Path(path) for name, path in accepted.items()}
    else:
        files = {Path(path).stem: Path(path) for path in accepted}
    chosen = getattr(hostile, "GROUPS", None)
    names = ([name for group in groups for name in chosen.get(group, [])] if isinstance(chosen, dict)
             else list(hostile.HOSTILE))
    (folder / "hostile").mkdir(exist_ok=True)
    for name in dict.fromkeys(names):
        data = hostile.HOSTILE[name]
        path = folder / "hostile" / str(name)
        if path.suffix.lower() not in IMAGE_SUFFIXES:  # the upload filter goes by extension
            path = path.with_name(path.name + _suffix_for(data))
        path.write_bytes(data)
        files[f"hostile-{name}"] = path
    film = film_25mp(folder)
    files.setdefault(film.stem, film)
    return files


# ----------------------------------------------------------------------------- the measurement as a whole

def accepted_files(files: dict[str, Path]) -> list[Path]:
    """The honest large files (not the lying ones), the largest decoded size (pixels x bytes a pixel in the
    file's own mode) first: the heaviest goes to /chest14 and /mura_study, and all of them to the burst."""
    from PIL import Image

    honest = []
    for name, path in files.items():
        if "bomb" in name or "patched" in name or name.startswith("hostile-"):
            continue
        try:
            with Image.open(path) as image:
                depth = 2 if image.mode.startswith("I;16") else 4 if image.mode in ("I", "F") else 1
                honest.append((image.size[0] * image.size[1] * len(image.getbands()) * depth, path))
        except Exception:  # noqa: BLE001 - not an image Pillow reads (DICOM, say): not one of these
            continue
    return [path for _, path in sorted(honest, key=lambda item: -item[0])]


def burst_jobs(files: dict[str, Path], count: int = 8) -> list[tuple[str, Path]]:
    """`count` worst-case requests spread evenly over every task's single-image endpoint: the `count` heaviest
    accepted files, or (fewer files) each file on two endpoints."""
    honest = accepted_files(files)
    endpoints = tuple(f"/{task}" for task in TASKS)  # one single-image endpoint per task
    pick = (lambda i: i) if len(honest) >= count else (lambda i: i + i // len(endpoints))
    return [(endpoints[i % len(endpoints)], honest[pick(i) % len(honest)]) for i in range(count)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def measure_memory(app_args=(), sessions: int = 20, folder=None) -> dict:
    """Start the app, build the worst-case files and measure every figure; the results as a dict."""
    with tempfile.TemporaryDirectory(prefix="radiograph-worst-") as scratch:
        folder = Path(folder or scratch)
        started = time.perf_counter()
        files = worst_case_files(folder)
        generated_s = time.perf_counter() - started
        sizes = {name: {"file": path.name, "bytes": path.stat().st_size} for name, path in files.items()}
        process, url = start_server(app_args)
        try:
            why_not = peak_measurable(process.pid)
            if why_not:
                raise RuntimeError(why_not)
            client = new_client(url)
            try:
                requests = [request_peak(url, process.pid, "/knee", path, client) for path in files.values()]
                heaviest = accepted_files(files)[0]
                requests.append(request_peak(url, process.pid, "/chest14", heaviest, client))
                requests.append(request_peak(url, process.pid, "/mura_study", [heaviest], client))
            finally:
                close_client(client)
            burst = concurrent_peak(url, process.pid, burst_jobs(files))
            held = session_memory(url, process.pid, film_25mp(folder), sessions)
            idle = rss(process.pid)
        finally:
            stopped = stop_server(process)
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "app_args": list(map(str, app_args)), "ready_s": round(process.ready_s, 1),
            "warm_up": getattr(process, "warm_up", None), "files_generated_s": round(generated_s, 1),
            "files": sizes,
            "budgets_mb": {"request": BUDGET_REQUEST_MB, "concurrent_8": BUDGET_CONCURRENT_MB,
                           "sessions_20_ended": BUDGET_SESSIONS_MB},
            "requests": requests, "concurrent": burst, "sessions": held, "rss_at_end_mb": round(idle, 1),
            "stopped": stopped}


def verdict(memory: dict) -> str:
    worst = max(memory["requests"], key=lambda r: r["peak_rise_mb"])
    unanswered = [r for r in memory["requests"] + memory["concurrent"]["jobs"] if r["answered"] == "error"]
    checks = [
        (worst["peak_rise_mb"] <= BUDGET_REQUEST_MB,
         f"worst request {worst['peak_rise_mb']:.0f} MB ({worst['endpoint']} {worst['file']}) vs {BUDGET_REQUEST_MB}"),
        (memory["concurrent"]["peak_rise_mb"] <= BUDGET_CONCURRENT_MB,
         f"8 concurrent {memory['concurrent']['peak_rise_mb']:.0f} MB vs {BUDGET_CONCURRENT_MB}"),
        (memory["sessions"]["held_mb"] <= BUDGET_SESSIONS_MB,
         f"{memory['sessions']['sessions']} ended sessions hold {memory['sessions']['held_mb']:.0f} MB vs "
         f"{BUDGET_SESSIONS_MB}"),
        (not unanswered, f"{len(unanswered)} request(s) not answered"),
        (memory["stopped"]["overlay_folders_left"] == 0,
         f"{memory['stopped']['overlay_folders_left']} overlay folder(s) left after stop"),
    ]
    failed = [text for ok, text in checks if not ok]
    return ("verdict: within budget: " + "; ".join(text for _, text in checks[:3]) if not failed
            else "verdict: OVER BUDGET: " + "; ".join(failed))


def memory_table(memory: dict) -> str:
    """The per-request table, the burst, the sessions and the verdict, as the bench prints them."""
    lines = [f"worst-case memory per request, {memory['cpu']} ({memory['cores']} cores), {memory['date']}"
             f"{' app.py ' + ' '.join(memory['app_args']) if memory['app_args'] else ''}: the rise of the server's "
             "peak resident memory (VmHWM) over its RSS just before, read from outside the process", "",
             "| endpoint | file | answered | seconds | peak rise MB | message |", "|---|---|---|---|---|---|"]
    for r in memory["requests"]:
        message = r["message"].replace("|", "/").replace("\n", " ")
        lines.append(f"| {r['endpoint']} | {r['file']} | {r['answered']} | {r['seconds']:.1f} | "
                     f"{r['peak_rise_mb']:.0f} | {message[:90]} |")
    burst, held = memory["concurrent"], memory["sessions"]
    kinds = collections.Counter(j["answered"] for j in burst["jobs"])
    lines += ["", f"{burst['requests']} concurrent worst-case requests ({', '.join(sorted({j['endpoint'] for j in burst['jobs']}))}; "
              f"{burst['clients']} clients): peak rise {burst['peak_rise_mb']:.0f} MB, all done in {burst['seconds']:.1f} s "
              f"({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))})",
              f"{held['sessions']} ended sessions that each analysed {held['film']} on /knee: {held['held_mb']:.0f} MB "
              f"still held ({held['rss_before_mb']:.0f} -> {held['rss_after_mb']:.0f} MB RSS; peak rise "
              f"{held['peak_rise_mb']:.0f} MB; {held['seconds']:.1f} s)",
              f"after stop: {memory['stopped']['overlay_folders_left']} radiograph-overlays-* folder(s) left in its TMPDIR",
              verdict(memory)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n")[0])
    parser.add_argument("--app-args", default="", help="extra app.py flags, e.g. '--cam onnx'")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--files", type=Path, help="keep the worst-case files in this folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); {time.strftime('%Y-%m-%d %H:%M:%S %Z')}", flush=True)
    memory = measure_memory(args.app_args.split(), args.sessions, args.files)
    if args.out:
        args.out.write_text(json.dumps(memory, indent=2))
    print(memory_table(memory))
    if args.out:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
