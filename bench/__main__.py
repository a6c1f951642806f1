"""Benchmarks of the shipped models, measured in one run on this machine: one table, and bench/results.json.

    python -m bench                      # every model folder with a model.onnx
    python -m bench knee --repeats 100 --no-app
    python -m bench --light-python .venv-light/bin/python     # the light install's app too

Per task, on phantom images read through the shared loader: batch-1 latency
(median and p95) of Keras eager, Keras `tf.function`, and ONNX Runtime for
each exported variant; Keras Grad-CAM (compiled) and the ONNX CAM path's extra
work over inference; ONNX Runtime batched throughput; and the batch command
(`python -m radiograph predict`: decoding, inference, result rows) against raw
ONNX Runtime batched throughput on the same, already decoded, images. Also: each
model's floating-point work per image and the GFLOP/s ONNX Runtime achieves
against this CPU's measured matrix-multiply rate (the ceiling); and the app
(bench/endpoints.py): start-up time, resident memory, and one request per
endpoint end to end through gradio_client, for this install and optionally a
light one (--light-python); and (bench/memory.py) the worst-case memory per
request and the memory of eight concurrent worst-case requests: the rise of
the server's peak resident memory, read from outside its process, for the
largest accepted and lying files, and what twenty ended sessions still hold
(--no-memory, or --no-app, skips it). Ratios
are what to read: the machine is shared and absolute times drift, but every
number in one table comes from the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from radiograph.imaging import load_for_model
from radiograph.inference import VARIANTS, OnnxModel
from radiograph.registry import TASKS

RESULTS = Path(__file__).resolve().parent / "results.json"
BENCH_SEED = 777


def timings(call, repeats: int, warmup: int = 3) -> dict:
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return {"median_ms": float(np.median(seconds) * 1e3), "p95_ms": float(np.percentile(seconds, 95) * 1e3),
            "runs": repeats}


def phantom_files(task: str, count: int, workdir: Path) -> list[Path]:
    from train.datasets import read_dataset
    from train.phantoms import generate

    index = read_dataset(task, generate(task, workdir, count, seed=BENCH_SEED))
    return [s.path for split in index.splits.values() for s in split][:count]


def keras_latencies(folder: Path, image: np.ndarray, repeats: int) -> dict:
    import tensorflow as tf

    from radiograph.layers import load_model

    model = load_model(folder / "model.keras")
    compiled = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    tensor = tf.constant(image)
    return {"keras_eager": timings(lambda: model(tensor, training=False), max(5, repeats // 5)),
            "keras_tf_function": timings(lambda: compiled(tensor), repeats)}


def cam_latencies(folder: Path, model: OnnxModel, image: np.ndarray, repeats: int, with_keras: bool) -> dict:
    """Keras Grad-CAM (compiled) and the ONNX path's extra work on top of the inference it shares: one class's
    map, and every class's (what the app computes with each prediction, radiograph.explain)."""
    from radiograph.cam import class_activation_map, normalise, score_matrix
    from radiograph.explain import Explainer

    every_class = Explainer(model, "onnx")
    kernel, features = every_class.kernel, model.run(image).features[0]
    result = {"cam_onnx_extra": timings(lambda: normalise(class_activation_map(features, kernel, 0)), repeats),
              "cam_onnx_every_class": timings(lambda: every_class.heatmaps(image, features), repeats)}
    if with_keras:
        from radiograph.gradcam import GradCam
        from radiograph.layers import load_model

        gradcam = GradCam(load_model(folder / "model.keras"),
                          scores=score_matrix(model.labels, model.card.heatmap_versus))
        result["gradcam_keras"] = timings(lambda: gradcam(image, 0), repeats)
        result["gradcam_keras_every_class"] = timings(lambda: gradcam.every_class(image), repeats)
    return result


def model_flops(onnx_path: Path) -> float:
    """Floating-point operations of one image through the model: 2 x multiply-adds of every Conv, MatMul and Gemm."""
    import onnx

    model = onnx.load(str(onnx_path))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1  # batch of one
    graph = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.input, *graph.output]}
    shapes.update({i.name: list(i.dims) for i in graph.initializer})
    total = 0
    for node in graph.node:
        if node.op_type == "Conv":
            out, weight = shapes.get(node.output[0]), shapes.get(node.input[1])
            if out and weight:  # NCHW out, weight [M, C/group, kh, kw]: each output element takes C/group*kh*kw MACs
                total += int(np.prod(out)) * int(np.prod(weight[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            left, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if left and out:
                total += int(np.prod(out)) * left[-1]
    return 2.0 * total


def matmul_ceiling_gflops(n: int = 1024, repeats: int = 20) -> float:
    """This CPU's float32 matrix-multiply rate through numpy's BLAS on all cores: the ceiling for a CNN."""
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n), np.float32), rng.random((n, n), np.float32)
    best = timings(lambda: a @ b, repeats)["median_ms"] / 1e3
    return 2.0 * n ** 3 / best / 1e9


def command_throughput(folder: Path, model: OnnxModel, files: list[Path], keeper, batch: int, repeats: int,
                       processes: int, ort_threads: int) -> tuple[dict, dict]:
    """Timings of the batch command (predict_files) with `processes` decode processes (0: its thread path) and
    ONNX Runtime on `ort_threads` intra-op threads (0: ONNX Runtime's default, every core). One decode pool serves
    every repeat; its start-up is reported on its own (it is paid once per command, not per batch)."""
    from radiograph.decoding import DecodePool
    from radiograph.predict import predict_files

    served = OnnxModel(folder, threads=ort_threads) if ort_threads else model
    task = folder.name
    facts = {"decode_processes": processes, "ort_intra_op_threads": ort_threads or "default"}
    if not processes:
        return timings(lambda: predict_files({task: served}, files, task, keeper, batch, progress=False),
                       max(3, repeats // 10), warmup=1), facts
    start = time.perf_counter()
    with DecodePool(keeper, processes) as pool:
        list(pool.batches([files[:processes]], task, {task: served.size}, False))  # every worker started
        facts["decode_pool_start_s"] = time.perf_counter() - start
        return timings(lambda: predict_files({task: served}, files, task, keeper, batch, progress=False,
                                             decoders=pool), max(3, repeats // 10), warmup=1), facts


def cpu_bound_ceiling(raw_batched, files: list[Path], task: str, model: OnnxModel, keeper, count: int) -> dict:
    """What the cores allow: CPU seconds per image of ONNX Runtime (raw batched) and of decoding + the gate's
    image checks (radiograph.predict.prepare, in this process), and the highest batch command / raw ONNX Runtime
    ratio that this machine's cores can give when both must share them: raw wall time per image over
    max(raw wall time, (ORT CPU + decode CPU) / cores)."""
    from radiograph.predict import prepare

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wall, cpu = time.perf_counter(), time.process_time()
    raw_batched()
    wall, ort_cpu = (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count
    cpu = time.process_time()
    for path in files:
        prepare(path, task, {task: model}, keeper, False)
    decode_cpu = (time.process_time() - cpu) / len(files)
    return {"ort_cpu_ms_per_image": ort_cpu * 1e3, "decode_cpu_ms_per_image": decode_cpu * 1e3, "cores": cores,
            "cpu_bound_ceiling_ratio": wall / max(wall, (ort_cpu + decode_cpu) / cores)}


def bench_task(folder: Path, count: int, repeats: int, batch: int, with_keras: bool, workdir: Path,
               processes: int = 0, ort_threads: int = 0) -> dict:
    from radiograph.gate import load_gatekeeper

    task = folder.name
    model = OnnxModel(folder)
    keeper, _ = load_gatekeeper(folder.parent, {task: model})  # the batch command runs the input gate too
    files = phantom_files(task, count, workdir / task)
    images = np.stack([load_for_model(path, model.size)[0] for path in files]).astype(np.float32)
    one = images[:1]
    result = {"task": task, "model_version": model.card.model_version, "input_size": model.size,
              "provider": model.provider, "images": len(files), "latency": {}}
    if with_keras:
        result["latency"].update(keras_latencies(folder, one, repeats))
    for variant, name in VARIANTS.items():
        if name in model.card.files:
            served = model if variant == "fp32" else OnnxModel(folder, variant=variant)
            result["latency"][f"onnx_{variant}"] = timings(lambda: served.run(one), repeats)

    result["latency"].update(cam_latencies(folder, model, one, repeats, with_keras))

    def raw_batched():
        for i in range(0, len(images), batch):
            model.run(images[i:i + batch])

    raw = timings(raw_batched, max(3, repeats // 10), warmup=1)
    command, decoding = command_throughput(folder, model, files, keeper, batch, repeats, processes, ort_threads)
    result["throughput"] = {"batch_size": batch,
                            "onnx_fp32_images_per_s": len(images) / (raw["median_ms"] / 1e3),
                            "batch_command_images_per_s": len(files) / (command["median_ms"] / 1e3),
                            **decoding}
    ceiling = cpu_bound_ceiling(raw_batched, files, task, model, keeper, len(images))
    result["throughput"].update(ceiling)
    latency, throughput = result["latency"], result["throughput"]
    result["ratios"] = {"batch_command_vs_raw_onnx": throughput["batch_command_images_per_s"] /
                        throughput["onnx_fp32_images_per_s"]}
    result["onnx_fp32_gflop_per_image"] = model_flops(folder / "model.onnx") / 1e9
    result["onnx_fp32_gflops_achieved"] = result["onnx_fp32_gflop_per_image"] / (latency["onnx_fp32"]["median_ms"] / 1e3)
    result["onnx_fp32_batched_gflops_achieved"] = (result["onnx_fp32_gflop_per_image"]
                                                   * throughput["onnx_fp32_images_per_s"])
    for cam in ("cam_onnx_extra", "cam_onnx_every_class"):
        result["ratios"][f"{cam}_vs_inference"] = latency[cam]["median_ms"] / latency["onnx_fp32"]["median_ms"]
    if "gradcam_keras" in latency:
        result["ratios"]["gradcam_keras_vs_onnx_inference"] = latency["gradcam_keras"]["median_ms"] / latency["onnx_fp32"]["median_ms"]
    for variant in VARIANTS:
        if f"onnx_{variant}" in latency and "keras_tf_function" in latency:
            result["ratios"][f"onnx_{variant}_vs_keras_tf_function"] = (
                latency[f"onnx_{variant}"]["median_ms"] / latency["keras_tf_function"]["median_ms"])
        if variant != "fp32" and f"onnx_{variant}" in latency:
            result["ratios"][f"onnx_{variant}_vs_fp32"] = latency[f"onnx_{variant}"]["median_ms"] / latency["onnx_fp32"]["median_ms"]
    return result


def table(results: list[dict], ceiling: float, app: dict | None = None, worst_case: dict | None = None) -> str:
    columns = ["keras_eager", "keras_tf_function", "onnx_fp32", "onnx_fp16", "onnx_int8", "gradcam_keras",
               "gradcam_keras_every_class", "cam_onnx_extra", "cam_onnx_every_class"]
    lines = ["| task | size | " + " | ".join(f"{c} ms (p95)" for c in columns) +
             " | ORT/tf.function | Grad-CAM/ORT | CAM extra/ORT (every class) | ORT batched img/s"
             " | batch command img/s | command/ORT | GFLOP/image | ORT GFLOP/s batch 1 (batched) | of matmul ceiling"
             " | app end to end ms | end to end/(inference+CAM) |",
             "|---" * (len(columns) + 13) + "|"]
    for r in results:
        cells = [f"{_ms(r['latency'][c]['median_ms'])} ({_ms(r['latency'][c]['p95_ms'])})" if c in r["latency"]
                 else "-" for c in columns]
        ratio = r["ratios"].get("onnx_fp32_vs_keras_tf_function")
        gradcam = r["ratios"].get("gradcam_keras_vs_onnx_inference")
        lines.append(f"| {r['task']} | {r['input_size']} | " + " | ".join(cells) +
                     f" | {'-' if ratio is None else f'{ratio:.2f}x'} | {'-' if gradcam is None else f'{gradcam:.1f}x'}"
                     f" | {r['ratios']['cam_onnx_extra_vs_inference']:.1%}"
                     f" ({r['ratios']['cam_onnx_every_class_vs_inference']:.1%})"
                     f" | {r['throughput']['onnx_fp32_images_per_s']:.0f}"
                     f" | {r['throughput']['batch_command_images_per_s']:.0f} | {r['ratios']['batch_command_vs_raw_onnx']:.2f}x"
                     f" | {r['onnx_fp32_gflop_per_image']:.3f} | {r['onnx_fp32_gflops_achieved']:.1f} "
                     f"({r['onnx_fp32_batched_gflops_achieved']:.1f}) | {r['onnx_fp32_gflops_achieved'] / ceiling:.0%} "
                     f"({r['onnx_fp32_batched_gflops_achieved'] / ceiling:.0%}) | " + app_cells(app, r["task"]) + " |")
    lines.append(f"\nmatmul ceiling (numpy float32 1024x1024 @ 1024x1024, {os.cpu_count()} cores): {ceiling:.1f} GFLOP/s")
    for install in (app or {}).values():
        start, memory = install["cold_start_s"], install["rss_mb"]
        lines.append(f"app, {install['install']} install: ready in {start['ready']:.1f} s, first answer at "
                     f"{start['first_answer']:.1f} s, resident memory {memory['after_start']:.0f} MB after start-up, "
                     f"{memory['after_requests']:.0f} MB after {memory['requests']} requests; heatmaps by "
                     f"{next(iter(install['endpoints'].values()))['cam_path']}")
    if worst_case:  # bench/memory.py's section (not `memory`: the loop above uses that name)
        from bench.memory import memory_table

        lines.append("\n" + memory_table(worst_case))
    return "\n".join(lines)


def command_lines(results: list[dict]) -> str:
    """The batch command against raw ONNX Runtime per task, with its set-up and what the cores allow."""
    lines = []
    for r in results:
        t = r["throughput"]
        lines.append(f"batch command, {r['task']}: {r['ratios']['batch_command_vs_raw_onnx']:.2f}x raw ONNX Runtime "
                     f"({t['batch_command_images_per_s']:.0f} against {t['onnx_fp32_images_per_s']:.0f} images/s; "
                     f"{t['decode_processes']} decode processes, ORT threads {t['ort_intra_op_threads']}); CPU ms per "
                     f"image: ORT {t['ort_cpu_ms_per_image']:.1f}, decoding + gate {t['decode_cpu_ms_per_image']:.1f}; "
                     f"the most {t['cores']} cores allow: {t['cpu_bound_ceiling_ratio']:.2f}x")
    return "\n".join(lines)


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def app_cells(app: dict | None, task: str) -> str:
    endpoint = (app or {}).get("full", {}).get("endpoints", {}).get(task)
    if endpoint is None:
        return "- | -"
    return f"{endpoint['end_to_end_ms']['median']:.0f} | {endpoint['overhead_ratio']:.1f}x"


def machine() -> dict:
    import onnxruntime

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("tasks", nargs="*", metavar="TASK",
                        help=f"any of {', '.join(TASKS)} (default: every model with a model.onnx)")
    parser.add_argument("--images", type=int, default=48, help="phantom images per task")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per latency figure")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--no-keras", action="store_true", help="skip Keras (light install)")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-app", action="store_true", help="skip the app (start-up, memory, gradio_client)")
    parser.add_argument("--light-python", help="interpreter of a light install (requirements-light.txt) to measure too")
    parser.add_argument("--app-repeats", type=int, default=20, help="requests per endpoint through gradio_client")
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the worst-case memory per request and of eight concurrent requests (bench/memory.py)")
    parser.add_argument("--decode-processes", type=int, default=None,
                        help="the batch command's decode processes (default: one per core; 0: its thread path)")
    parser.add_argument("--ort-threads", type=int, default=0,
                        help="ONNX Runtime intra-op threads in the batch command (default 0: ONNX Runtime's own)")
    args = parser.parse_args(argv)
    if args.decode_processes is None:
        from radiograph.decoding import default_processes

        args.decode_processes = default_processes()
    unknown = [t for t in args.tasks if t not in TASKS]
    if unknown:
        parser.error(f"unknown task {', '.join(unknown)}; known tasks: {', '.join(TASKS)}")
    tasks = args.tasks or [t for t in TASKS if (args.models / t / "model.onnx").is_file()]
    if not tasks:
        parser.exit(2, "error: no exported models under models/; run python -m export all first\n")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        results = [bench_task(args.models / t, args.images, args.repeats, args.batch_size, not args.no_keras, Path(tmp),
                              args.decode_processes, args.ort_threads) for t in tasks]
    ceiling = matmul_ceiling_gflops()
    app = {}
    if not args.no_app:
        from bench.endpoints import measure_app

        app["full"] = measure_app(sys.executable, "full", args.app_repeats)
        if args.light_python:
            app["light"] = measure_app(args.light_python, "light", args.app_repeats)
    worst_case = {}
    if not (args.no_app or args.no_memory):
        from bench.memory import measure_memory

        worst_case = measure_memory(["--models", str(args.models.resolve())])
    report = {"machine": machine(), "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "matmul_ceiling_gflops": ceiling, "tasks": results, "app": app, "memory": worst_case}
    args.out.write_text(json.dumps(report, indent=2))
    print(table(results, ceiling, app, worst_case))
    print(command_lines(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
