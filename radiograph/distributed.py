"""The batch command on a Ray cluster: Ray Data `map_batches` over the files, ONNX Runtime in a pool of actors.

    pip install -r requirements-distributed.txt
    ray start --head                                  # or a cluster; RAY_ADDRESS or --address says which
    python -m radiograph.distributed predict mura /shared/MURA-v1.1/valid --out mura.csv --actors 8

Every actor loads the task models, the gate (router and feature distances) once, and prepares and scores its
blocks of files through the same function as the single-machine command (radiograph.predict.predict_files on
threads), returning each file's row and full gate. The driver puts the rows back in input order and forms the
study rows from all of them (radiograph.predict.predict_files with every file done), so a MURA study is still the
files of one folder, wherever its views were scored, and the output is the single-machine command's (CSV or JSON;
the timing columns differ). The files must lie at the same path on every node (a shared file system).
--cam-dir and --report-dir are not offered here: write those with the single-machine command.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from radiograph.gate import AUTO
from radiograph.registry import TASKS


class Scorer:
    """A Ray actor: the models and gate of one run, loaded once; scores one block of files per call."""

    def __init__(self, models: str, tasks: list[str], task: str, variant: str, device: str, ort_threads: int):
        from radiograph.gate import load_gatekeeper
        from radiograph.inference import OnnxModel

        self.models = {t: OnnxModel(Path(models) / t, variant=variant, device=device, threads=ort_threads or None)
                       for t in tasks}
        self.keeper, _ = load_gatekeeper(Path(models), self.models, device, strict=task == AUTO)
        self.task = task

    def __call__(self, batch: dict) -> dict:
        from radiograph.predict import predict_files
        from radiograph.resume import gate_record

        pairs = []
        predict_files(self.models, [Path(p) for p in batch["path"]], self.task, self.keeper,
                      batch_size=len(batch["path"]), workers=1, progress=False, journal=pairs.extend)
        records = [json.dumps({"row": row, "gate": gate_record(gate)}) for row, gate in pairs]
        return {"index": np.asarray(batch["index"]), "record": np.asarray(records, dtype=object)}


def score(files: list[Path], models_dir: Path, tasks: list[str], task: str, variant: str = "fp32",
          device: str = "auto", actors: int = 2, batch_size: int = 16, ort_threads: int = 1) -> dict:
    """str(file) -> (row, gate) of every file, scored on the Ray cluster that `ray.init` connected to."""
    import ray

    from radiograph.resume import gate_from

    items = ray.data.from_items([{"index": k, "path": str(path)} for k, path in enumerate(files)])
    scored = items.map_batches(Scorer, batch_size=batch_size, batch_format="numpy", concurrency=actors,
                               num_cpus=max(1, ort_threads),
                               fn_constructor_args=(str(models_dir), tasks, task, variant, device, ort_threads))
    done = {}
    for item in scored.take_all():
        entry = json.loads(item["record"])
        done[entry["row"]["file"]] = (entry["row"], gate_from(entry["gate"]))
    return done


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "predict":
        print(__doc__.strip() + "\n\ncommand: predict (python -m radiograph.distributed predict --help)",
              file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m radiograph.distributed predict",
                                     description="The batch command on a Ray cluster (Ray Data map_batches).")
    parser.add_argument("task", choices=[*TASKS, AUTO])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH_OR_DIR")
    parser.add_argument("--out", type=Path, help="results.csv or results.json (default: CSV on stdout)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="the Ray cluster (default: RAY_ADDRESS, else a local one on this machine's cores)")
    parser.add_argument("--actors", type=int, default=2, help="ONNX Runtime actors (default 2)")
    parser.add_argument("--ort-threads", type=int, default=1, help="ONNX Runtime threads (and CPUs) per actor")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--variant", choices=["fp32", "fp16", "int8"], default="fp32")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--models", type=Path, default=Path(os.environ.get("RADIOGRAPH_MODELS", "models")))
    args = parser.parse_args(argv[1:])
    for name in ("actors", "ort_threads", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.out and args.out.suffix.lower() not in (".csv", ".json"):
        parser.error(f"--out must end in .csv or .json, got {args.out}")
    try:
        import ray
    except ImportError:
        parser.exit(2, "error: Ray is not installed: pip install -r requirements-distributed.txt\n")
    from radiograph.gate import load_gatekeeper
    from radiograph.inference import ModelFileError, OnnxModel
    from radiograph.predict import expand, predict_files, write_results

    tasks = [t for t in TASKS if (args.models / t / "card.json").exists()] if args.task == AUTO else [args.task]
    try:  # loaded here too: a bad model folder is said before the cluster starts, and the study rows need them
        models = {t: OnnxModel(args.models / t, variant=args.variant, device="cpu") for t in tasks}
        keeper, _ = load_gatekeeper(args.models, models, "cpu", strict=args.task == AUTO)
    except (ModelFileError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    files = [path.resolve() for path in expand(args.paths)]
    if not files:
        parser.exit(2, f"error: no files found under {', '.join(map(str, args.paths))}\n")
    ray.init(address=args.address, log_to_driver=False)
    try:
        done = score(files, args.models.resolve(), tasks, args.task, args.variant, args.device, args.actors,
                     args.batch_size, args.ort_threads)
    finally:
        ray.shutdown()
    rows = predict_files(models, files, args.task, keeper, progress=False, done=done)
    write_results(rows, {t: m.card for t, m in models.items()}, args.out)
    images = [row for row in rows if row["kind"] == "image"]
    print(f"{args.task}: {sum(r['status'] == 'ok' for r in images)} of {len(files)} files predicted on "
          f"{args.actors} Ray actors" + (f"; results in {args.out}" if args.out else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
