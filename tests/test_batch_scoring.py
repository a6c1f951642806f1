"""The batch command at archive scale: decoding in worker processes gives the same rows as threads, in order and
with bounded look-ahead; --resume continues from the journal to the output an uninterrupted run writes; the
progress bar goes to stderr. On the shipped models and examples/ (no training, a few seconds)."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from radiograph.predict import expand, main, predict_files

ROOT = Path(__file__).resolve().parent.parent
MODELS, EXAMPLES = ROOT / "models", ROOT / "examples"
TIMING = ("decode_ms", "gate_ms", "inference_ms")

pytestmark = pytest.mark.skipif(not (MODELS / "router" / "model.onnx").is_file(), reason="no shipped models")


def untimed(rows):
    return [{key: value for key, value in row.items() if key not in TIMING} for row in rows]


@pytest.fixture(scope="module")
def auto_models():
    from radiograph.gate import load_gatekeeper
    from radiograph.inference import OnnxModel
    from radiograph.registry import TASKS

    models = {t: OnnxModel(MODELS / t) for t in TASKS if (MODELS / t / "model.onnx").is_file()}
    keeper, _ = load_gatekeeper(MODELS, models, strict=True)
    return models, keeper


@pytest.fixture
def archive(tmp_path):
    """examples/ (every task, MURA studies one folder each) and two files that cannot be read."""
    folder = tmp_path / "archive"
    shutil.copytree(EXAMPLES, folder)
    (folder / "notes.png").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    return folder


def test_worker_processes_give_the_rows_of_threads_in_the_same_order(auto_models, archive):
    models, keeper = auto_models
    files = expand([archive])
    threads = predict_files(models, files, "auto", keeper, batch_size=3, progress=False)
    processes = predict_files(models, files, "auto", keeper, batch_size=3, progress=False, processes=2)
    assert untimed(processes) == untimed(threads)
    assert [r["file"] for r in processes if r["kind"] == "image"] == [str(f) for f in files]
    assert {r["status"] for r in processes} >= {"ok", "error"} and any(r["kind"] == "study" for r in processes)


def test_the_pool_prepares_a_bounded_number_of_batches_ahead(auto_models, archive):
    from radiograph.decoding import DecodePool

    models, keeper = auto_models
    files = expand([archive / "knee"]) * 3
    batches = [files[i:i + 2] for i in range(0, len(files), 2)]
    with DecodePool(keeper, processes=2, ahead=1) as pool:
        submitted, handed, most = [], [], 0
        submit = pool._submit
        pool._submit = lambda *args: submitted.append(1) or submit(*args)
        for batch, prepared in pool.batches(batches, "knee", {"knee": models["knee"].size}, False):
            most = max(most, len(submitted) - len(handed))
            handed.append(batch)
            assert [p.path for p in prepared] == batch
            assert all(p.tensor is not None and p.tensor.dtype == np.float32 for p in prepared)
    assert handed == batches
    assert most == 3  # the batch handed out and ahead + 1 more being prepared, never all of them
    with pytest.raises(ValueError, match="at least 1"):
        DecodePool(keeper, processes=0)


def run(task, folder, out, *extra):
    assert main([task, str(folder), "--out", str(out), "--models", str(MODELS), "--batch-size", "2",
                 "--processes", "0", "--quiet", *extra]) == 0


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_resume_from_a_cut_off_journal_writes_the_output_of_an_uninterrupted_run(tmp_path, suffix):
    folder = EXAMPLES / "mura"  # studies: their rows need every view's gate, which the journal keeps
    whole, resumed = tmp_path / f"whole{suffix}", tmp_path / f"resumed{suffix}"
    run("mura", folder, whole)
    journal = Path(f"{whole}.journal.jsonl").read_text().splitlines(keepends=True)
    kept = journal[:4]  # the settings and three files' rows, then the line being written when the run stopped
    Path(f"{resumed}.journal.jsonl").write_text("".join(kept) + journal[4][: len(journal[4]) // 2])
    run("mura", folder, resumed, "--resume")
    if suffix == ".json":
        first, second = json.loads(whole.read_text()), json.loads(resumed.read_text())
    else:
        first, second = list(csv.DictReader(whole.open())), list(csv.DictReader(resumed.open()))
    assert untimed(second) == untimed(first) and any(r["kind"] == "study" for r in second)
    carried = {json.loads(line)["row"]["file"] for line in kept[1:]}
    assert len(carried) == 3  # those rows came from the journal: the files were not decoded again
    assert [str(r["decode_ms"]) for r in second if r["file"] in carried] == \
        [str(json.loads(line)["row"]["decode_ms"]) for line in kept[1:]]


def test_resume_refuses_a_journal_of_other_settings_and_needs_out(tmp_path, capsys):
    out = tmp_path / "knee.csv"
    run("knee", EXAMPLES / "knee", out)
    with pytest.raises(SystemExit) as exited:
        main(["knee", str(EXAMPLES / "knee"), "--out", str(out), "--models", str(MODELS), "--colormap", "jet",
              "--resume", "--quiet"])
    assert exited.value.code == 2 and "other settings" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["knee", str(EXAMPLES / "knee"), "--resume"])
    assert "--resume needs --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a fetched study lands in a new scratch folder each run: nothing to skip
        main(["mura", "--study", "1.2.3", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--out", str(out), "--resume"])
    assert "run again without --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["knee", str(EXAMPLES / "knee"), "--processes", "-1"])
    assert "--processes must be 0" in capsys.readouterr().err


def test_the_progress_bar_is_on_stderr_unless_quiet(tmp_path, capsys):
    args = ["knee", str(EXAMPLES / "knee"), "--out", str(tmp_path / "k.csv"), "--models", str(MODELS),
            "--processes", "0"]
    count = len(expand([EXAMPLES / "knee"]))
    main(args)
    assert f"{count}/{count}" in capsys.readouterr().err
    main([*args, "--quiet"])
    assert f"{count}/{count}" not in capsys.readouterr().err
