#!/usr/bin/env bash
# The GPU check, unattended in a few minutes on a machine with an NVIDIA GPU (docs/speed.md, "GPU check"):
#   bash bench/gpu_check.sh [OUT]          (OUT: where its files go, default a fresh temporary folder)
# 1. the GPU (nvidia-smi) and whether ONNX Runtime and TensorFlow see it;
# 2. the tests that run inference with the CUDA provider (radiograph.inference, device="gpu");
# 3. the benchmark on the GPU with short settings (python -m bench --no-app; ORT batched images/s per task);
# 4. a short mixed-precision (mixed_float16) training run on knee phantoms, streamed from a cache that
#    train.prepare makes of them; its images/s.
# Without a GPU it stops at step 1 with exit status 2 and says so. PYTHON (default .venv/bin/python) and
# NVIDIA_SMI (default nvidia-smi) can be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
NVIDIA_SMI=${NVIDIA_SMI:-nvidia-smi}
OUT=${1:-$(mktemp -d -t gpu-check-XXXXXX)}
mkdir -p "$OUT"

step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "1/4 the GPU"
if ! command -v "$NVIDIA_SMI" >/dev/null 2>&1 || ! "$NVIDIA_SMI" -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU on this machine ($NVIDIA_SMI is missing or lists no device); this check" \
         "needs one: run it on a GPU machine (the CPU paths are covered by the test suite)" >&2
    exit 2
fi
"$NVIDIA_SMI" --query-gpu=name,driver_version,memory.total --format=csv
"$PYTHON" - <<'EOF'
import onnxruntime as ort
import tensorflow as tf
print("onnxruntime", ort.__version__, "providers:", ort.get_available_providers())
print("tensorflow", tf.__version__, "GPUs:", tf.config.list_physical_devices("GPU"))
if "CUDAExecutionProvider" not in ort.get_available_providers():
    raise SystemExit("gpu_check: this onnxruntime has no CUDA provider (install onnxruntime-gpu, requirements.txt)")
EOF

step "2/4 tests: inference with the CUDA provider"
RADIOGRAPH_DEVICE=gpu "$PYTHON" -m pytest tests/test_export.py -q -k "provider" -p no:cacheprovider
"$PYTHON" - <<'EOF'
from pathlib import Path
from radiograph.inference import OnnxModel
for folder in sorted(p for p in Path("models").iterdir() if (p / "model.onnx").exists()):
    model = OnnxModel(folder, device="gpu")
    print(f"{folder.name}: {model.provider}")
    if model.provider != "CUDAExecutionProvider":
        raise SystemExit(f"gpu_check: {folder} runs on {model.provider}, not CUDA (a CUDA or cuDNN library is "
                         f"missing or does not match onnxruntime-gpu; see its start-up log)")
EOF

step "3/4 benchmark on the GPU (short)"
"$PYTHON" -m bench --no-app --images 16 --repeats 10 --out "$OUT/bench.json"

step "4/4 mixed-precision training (knee phantoms, compact, 2 epochs)"
"$PYTHON" -m train.phantoms knee --out "$OUT/phantoms" --count 600 --seed 0
TRAIN=(knee --backbone compact --image-size 224 --epochs 2 --batch-size 64 --mixed-precision
       --out "$OUT/run" --overwrite)
"$PYTHON" -m train.prepare knee --data "$OUT/phantoms/knee" --size 224 --out "$OUT/cache"
"$PYTHON" -m train "${TRAIN[@]}" --cache "$OUT/cache"
"$PYTHON" - "$OUT/run" <<'EOF'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
config, card = json.loads((run / "config.json").read_text()), json.loads((run / "card.json").read_text())
images = card["data"]["splits"]["train"] * config["epochs_run"]
print(f"training: {images} images in {config['training_seconds']} s = {images / config['training_seconds']:.0f} "
      f"images/s (mixed_float16, {config['devices']}, first epoch's tracing included)")
EOF
echo "gpu_check: done; files in $OUT"
