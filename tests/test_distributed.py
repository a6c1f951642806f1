"""The batch command on a local Ray cluster (radiograph.distributed) gives the single-machine command's rows, MURA
study rows formed by folder included. Needs requirements-distributed.txt (requirements-dev.txt includes it)."""
from pathlib import Path

import pytest

from radiograph.predict import expand, predict_files

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-distributed.txt")

ROOT = Path(__file__).resolve().parent.parent
MODELS, EXAMPLES = ROOT / "models", ROOT / "examples"
TIMING = ("decode_ms", "gate_ms", "inference_ms")


@pytest.mark.skipif(not (MODELS / "router" / "model.onnx").is_file(), reason="no shipped models")
def test_ray_data_actors_give_the_rows_of_the_single_machine_command(tmp_path):
    from radiograph.distributed import score
    from radiograph.gate import load_gatekeeper
    from radiograph.inference import OnnxModel
    from radiograph.registry import TASKS

    tasks = [t for t in TASKS if (MODELS / t / "model.onnx").is_file()]
    models = {t: OnnxModel(MODELS / t) for t in tasks}
    keeper, _ = load_gatekeeper(MODELS, models, strict=True)
    (tmp_path / "notes.png").write_text("not an image")
    files = expand([EXAMPLES, tmp_path])  # every task; MURA's studies one folder each; an unreadable file
    single = predict_files(models, files, "auto", keeper, batch_size=4, progress=False)
    ray.init(num_cpus=2, object_store_memory=150 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        done = score(files, MODELS, tasks, "auto", actors=2, batch_size=4)
    finally:
        ray.shutdown()
    distributed = predict_files(models, files, "auto", keeper, progress=False, done=done)

    def untimed(rows):
        return [{key: value for key, value in row.items() if key not in TIMING} for row in rows]

    assert untimed(distributed) == untimed(single)
    studies = [r for r in distributed if r["kind"] == "study"]
    assert {r["file"] for r in studies} == {str(f.parent) for f in files if "mura" in f.parts}
