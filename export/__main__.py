"""Export trained Keras models to ONNX, prove the export matches Keras, and write FP16, INT8 and Triton variants.

    python -m export all
    python -m export knee --fp16 --int8            # variants, measured on phantoms/knee's test split
    python -m export chest14 --triton triton_models

The command line only: what an export writes and checks is export/onnx_export.py's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.onnx_export import DEFAULT_OPSET, ExportError, export_task
from radiograph.registry import TASKS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=[*TASKS, "all"])
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder of <task>/ model folders")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, 13-18 (default 17)")
    parser.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (static QDQ)")
    parser.add_argument("--data", type=Path, help="phantom dataset for variant metrics (default phantoms/<task>; "
                                                  "with `all`, a folder of <task>/ datasets, default phantoms)")
    parser.add_argument("--triton", type=Path, help="also write a Triton model repository here")
    args = parser.parse_args(argv)
    if not 13 <= args.opset <= 18:
        parser.error(f"--opset must be 13-18 (tf2onnx 1.17 supports up to 18), got {args.opset}")
    tasks = list(TASKS) if args.task == "all" else [args.task]
    if args.task == "all":
        tasks = [t for t in tasks if (args.models / t / "model.keras").is_file()]
    for task in tasks:
        data = (args.data or Path("phantoms")) / task if args.task == "all" else args.data or Path("phantoms") / task
        try:
            export_task(task, args.models, args.opset, args.fp16, args.int8, data, args.triton)
        except ExportError as error:
            sys.exit(f"error: {error}")
    models = "" if args.models == Path("models") else f" --models {args.models}"  # the model just exported
    print(f"next: python -m radiograph predict {tasks[0]} PATH_OR_DIR{models} --out results.csv")


if __name__ == "__main__":
    main()
