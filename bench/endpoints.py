"""The app end to end: cold start, resident memory and per-endpoint latency through gradio_client.

    python -m bench.endpoints                                          # this interpreter (the full install)
    python -m bench.endpoints --python .venv-light/bin/python --label light --out bench/endpoints-light.json

Starts `python app.py` on a free loopback port in a fresh process and times it
until it prints that it is ready (imports, model loading and verification
included), then until the first request is answered. Resident memory
(VmRSS) is read after start-up and after the timed requests. Each endpoint
gets its first phantom example `--repeats` times; the table gives the
client-side median and p95 and the overhead ratio: end to end / (inference +
heatmap) as the server measured them for the same requests.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from radiograph.registry import TASKS

ROOT = Path(__file__).resolve().parent.parent
# every API endpoint: one per task, and `<task>_study` for a task whose images form studies
ENDPOINTS = tuple(name for task, spec in TASKS.items() for name in [task] + ([f"{task}_study"] if spec.study else []))


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(python: str, port: int, extra: list[str]) -> tuple[subprocess.Popen, float, str]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen([python, "app.py", "--port", str(port), *extra], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for line in process.stdout:
        if line.startswith("ready in"):
            ready = time.perf_counter() - started
            # keep reading what the app prints, or a full pipe would block it mid-benchmark
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return process, ready, line.strip()
    raise RuntimeError(f"app.py exited with {process.wait()} before it was ready")


def example_input(endpoint: str):
    from gradio_client import handle_file

    study = endpoint.endswith("_study")
    task = endpoint.removesuffix("_study")
    entry = json.loads((ROOT / "examples" / task / "examples.json").read_text())[0]
    files = [handle_file(str(ROOT / "examples" / task / name)) for name in entry["files"]]
    return files if study else files[0]


def server_side(result: dict) -> tuple[float, float]:
    """(inference + heatmap, total) in ms as the server measured them."""
    timings = result["timings_ms"]
    return timings["inference"] + timings["cam"], timings["total"]


def measure(client, endpoint: str, repeats: int) -> dict:
    value = example_input(endpoint)
    client.predict(value, api_name=f"/{endpoint}")  # first call: traces and caches
    wall, model, total = [], [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result, _ = client.predict(value, api_name=f"/{endpoint}")
        wall.append((time.perf_counter() - start) * 1e3)
        inner, whole = server_side(result)
        model.append(inner)
        total.append(whole)
    wall, model = np.array(wall), np.array(model)
    return {"end_to_end_ms": {"median": float(np.median(wall)), "p95": float(np.percentile(wall, 95))},
            "server_total_ms": float(np.median(total)), "inference_plus_heatmap_ms": float(np.median(model)),
            "overhead_ratio": float(np.median(wall) / np.median(model)), "cam_path": result["model"]["cam_path"],
            "requests": repeats}


def measure_app(python: str, label: str, repeats: int, app_args: str = "") -> dict:
    """Start app.py with `python`, time it, send every endpoint `repeats` requests; the results as a dict."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from gradio_client import Client

    port = free_port()
    process, ready_s, ready_line = start_app(python, port, app_args.split())
    try:
        memory_start = rss_mb(process.pid)
        client_start = time.perf_counter()
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        client.predict(example_input("knee"), api_name="/knee")
        first_answer_s = ready_s + time.perf_counter() - client_start
        endpoints = {endpoint: measure(client, endpoint, repeats) for endpoint in ENDPOINTS}
        memory_after = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"install": label, "python": python, "app_args": app_args, "app_said": ready_line,
            "cold_start_s": {"ready": ready_s, "first_answer": first_answer_s},
            "rss_mb": {"after_start": memory_start, "after_requests": memory_after,
                       "requests": len(ENDPOINTS) * (repeats + 1) + 1},
            "endpoints": endpoints, "cpu_count": os.cpu_count()}


def app_table(results: dict) -> str:
    start, memory = results["cold_start_s"], results["rss_mb"]
    lines = [f"{results['install']} install: ready in {start['ready']:.1f} s, first answer at "
             f"{start['first_answer']:.1f} s, RSS {memory['after_start']:.0f} MB after start, "
             f"{memory['after_requests']:.0f} MB after {memory['requests']} requests", "",
             "| endpoint | end to end median ms | p95 ms | server: inference + heatmap ms | server total ms | "
             "end to end / (inference + heatmap) | heatmap |", "|---|---|---|---|---|---|---|"]
    for endpoint, r in results["endpoints"].items():
        lines.append(f"| /{endpoint} | {r['end_to_end_ms']['median']:.0f} | {r['end_to_end_ms']['p95']:.0f} | "
                     f"{r['inference_plus_heatmap_ms']:.1f} | {r['server_total_ms']:.1f} | "
                     f"{r['overhead_ratio']:.1f}x | {r['cam_path']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.endpoints", description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter of the install to measure")
    parser.add_argument("--label", default="full", help="name of that install in the results")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--app-args", default="", help="extra app.py flags, e.g. '--cam onnx'")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "endpoints.json")
    args = parser.parse_args(argv)
    results = measure_app(args.python, args.label, args.repeats, args.app_args)
    args.out.write_text(json.dumps(results, indent=2))
    print(app_table(results))
    print(f"results in {args.out}")


if __name__ == "__main__":
    main()
