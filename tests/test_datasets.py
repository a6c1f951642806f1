"""Readers on phantom sets and on tiny hand-built fixtures of the real formats (files are never decoded)."""
import json

import pytest

from radiograph.registry import TASKS
from train.datasets import DatasetLayoutError, Sample, carve_by_patient, kfold_by_patient, main, read_dataset

NIH_HEADER_2017 = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                   "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n")


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")  # readers list files; they never decode them
    return path


@pytest.mark.parametrize("task", list(TASKS))
def test_reader_on_phantoms(phantom_root, task):
    index = read_dataset(task, phantom_root / task)
    summary = index.summary()
    assert set(index.splits) >= {"train", "val", "test"}
    assert summary["images"] == sum(s["images"] for s in summary["splits"].values()) > 0
    assert all(count == 0 for count in summary["patients_in_two_splits"].values())
    assert all(sample.path.is_file() for samples in index.splits.values() for sample in samples)
    assert index.boxes and all(box.label in index.labels for box in index.boxes)
    for samples in index.splits.values():
        for sample in samples:
            assert len(sample.target) == len(index.labels)
            assert sum(sample.target) == 1 or TASKS[task].multi_label


def test_cli_prints_a_json_summary(phantom_root, capsys):
    main(["chest14", "--data", str(phantom_root / "chest14")])
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "chest14" and set(summary["splits"]) == {"train", "val", "test"}
    assert set(summary["labels"]) == set(TASKS["chest14"].labels)


def test_cli_reports_a_wrong_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["knee", "--data", str(tmp_path)])
    assert raised.value.code == 2 and "expected layout" in capsys.readouterr().err


# ----------------------------------------------------------------------------- knee

def test_knee_layout_and_patient_ids(tmp_path):
    root = tmp_path / "KneeXrayData" / "ClsKLData" / "kneeKL224"  # the Mendeley zip nests it
    for split, grade, name in [("train", 0, "9003175L.png"), ("train", 2, "9003175R.png"), ("train", 4, "9011115L.png"),
                               ("val", 1, "9022222L.png"), ("test", 3, "9033333R.png"), ("auto_test", 3, "9033333R.png")]:
        touch(root / split / str(grade) / name)
    touch(root / "train" / "0" / "._9003175L.png")  # macOS resource fork: skipped
    index = read_dataset("knee", tmp_path)
    assert list(index.splits) == ["train", "val", "test", "auto_test"]
    train = index.splits["train"]
    assert len(train) == 3 and {s.patient for s in train} == {"9003175", "9011115"}
    assert train[0].target == (1, 0, 0, 0, 0)


def test_knee_rejects_foreign_class_folders(tmp_path):
    touch(tmp_path / "train" / "severe" / "a.png")
    touch(tmp_path / "test" / "0" / "b.png")
    with pytest.raises(DatasetLayoutError, match="0, 1, 2, 3, 4"):
        read_dataset("knee", tmp_path)


# ----------------------------------------------------------------------------- MURA

def build_mura(root):
    mura = root / "MURA-v1.1"
    rows = {
        "train": ["MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png",
                  "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image2.png",
                  "MURA-v1.1/train/XR_SHOULDER/patient00002/study1_negative/image1.png",
                  "MURA-v1.1/train/XR_HAND/patient00003/study2_negative/image1.png"],
        "valid": ["MURA-v1.1/valid/XR_ELBOW/patient11185/study1_positive/image1.png"],
    }
    for split, paths in rows.items():
        (mura / split).mkdir(parents=True)
        (mura / f"{split}_image_paths.csv").write_text("".join(p + "\n" for p in paths))  # no header
        studies = dict.fromkeys(p.rsplit("/", 1)[0] + "/" for p in paths)
        (mura / f"{split}_labeled_studies.csv").write_text(
            "".join(f"{s},{int('positive' in s)}\n" for s in studies))
        for path in paths:
            touch(root / path)
    return mura


def test_mura_headerless_csvs_studies_and_parts(tmp_path):
    build_mura(tmp_path)
    index = read_dataset("mura", tmp_path, val_fraction=0.0)
    train = index.splits["train"]
    assert len(train) == 4 and len(index.splits["test"]) == 1
    wrist = [s for s in train if s.patient == "patient00001"]
    assert len({s.study for s in wrist}) == 1 and wrist[0].study.endswith("XR_WRIST/patient00001/study1_positive")
    labels = TASKS["mura"].labels
    assert labels[wrist[0].target.index(1)] == "wrist_abnormal"
    assert labels[index.splits["test"][0].target.index(1)] == "elbow_abnormal"
    assert index.summary()["splits"]["train"]["studies"] == 3


def test_mura_label_comes_from_the_studies_csv(tmp_path):
    mura = build_mura(tmp_path)
    csv_path = mura / "train_labeled_studies.csv"
    csv_path.write_text(csv_path.read_text().replace("study1_negative/,0", "study1_negative/,1"))
    index = read_dataset("mura", tmp_path, val_fraction=0.0)
    shoulder = next(s for s in index.splits["train"] if s.patient == "patient00002")
    assert TASKS["mura"].labels[shoulder.target.index(1)] == "shoulder_abnormal"
    assert any("disagrees" in note for note in index.notes)


def test_mura_missing_csv_is_a_layout_error(tmp_path):
    (build_mura(tmp_path) / "valid_labeled_studies.csv").unlink()
    with pytest.raises(DatasetLayoutError, match="valid_labeled_studies.csv"):
        read_dataset("mura", tmp_path)


# ----------------------------------------------------------------------------- pneumonia (Kermany)

def test_kermany_nested_zip_with_macosx(tmp_path):
    base = tmp_path / "chest_xray" / "chest_xray"  # the Kaggle zip nests the folder twice
    files = {"train/NORMAL": ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "NORMAL2-IM-1427-0001.jpeg"],
             "train/PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person1000_virus_1681.jpeg"],
             "val/NORMAL": ["NORMAL2-IM-1430-0001.jpeg"], "val/PNEUMONIA": ["person1946_bacteria_4874.jpeg"],
             "test/NORMAL": ["IM-0001-0001.jpeg"], "test/PNEUMONIA": ["person100_bacteria_475.jpeg"]}
    for folder, names in files.items():
        for name in names:
            touch(base / folder / name)
            touch(tmp_path / "__MACOSX" / "chest_xray" / folder / f"._{name}")
    touch(base / "train" / "NORMAL" / ".DS_Store")
    index = read_dataset("pneumonia", tmp_path, val_fraction=0.3, seed=1)
    assert index.root == base
    everything = [s for samples in index.splits.values() for s in samples]
    assert len(everything) == 10
    patients = {s.path.name: s.patient for s in everything}
    assert patients["IM-0115-0002.jpeg"] == "IM-0115"
    assert patients["NORMAL2-IM-1427-0001.jpeg"] == "NORMAL2-IM-1427"
    assert patients["person1_bacteria_2.jpeg"] == "person1"
    train_patients = {s.patient for s in index.splits["train"]}
    assert not train_patients & {s.patient for s in index.splits["val"]}
    assert index.splits["val"]  # carved from the pooled train + val


def test_kermany_wrong_class_folder(tmp_path):
    touch(tmp_path / "train" / "COVID" / "a.jpeg")
    touch(tmp_path / "test" / "NORMAL" / "b.jpeg")
    with pytest.raises(DatasetLayoutError, match="NORMAL, PNEUMONIA"):
        read_dataset("pneumonia", tmp_path)


# ----------------------------------------------------------------------------- NIH ChestX-ray14

def build_nih(root, header=NIH_HEADER_2017, trailing=","):
    rows = [("00000001_000.png", "Cardiomegaly", 1), ("00000001_001.png", "Cardiomegaly|Emphysema", 1),
            ("00000002_000.png", "No Finding", 2), ("00000003_000.png", "Hernia|Infiltration", 3),
            ("00000004_000.png", "Effusion", 4), ("00000005_000.png", "Nodule", 5)]
    (root / "Data_Entry_2017.csv").write_text(header + "".join(
        f"{name},{labels},0,{patient},58,M,PA,2682,2749,0.143,0.143{trailing}\n" for name, labels, patient in rows))
    (root / "train_val_list.txt").write_text("00000001_000.png\n00000001_001.png\n00000002_000.png\n00000003_000.png\n")
    (root / "test_list.txt").write_text("00000004_000.png\n00000005_000.png\n")
    (root / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                                             "00000003_000.png,Infiltrate,225.08,547.01,86.77,79.18,,,\n"
                                             "00000004_000.png,Effusion,10,20,30,40,,,\n")
    touch(root / "images_001" / "images" / "00000001_000.png")  # the Kaggle layout
    for name, _, _ in rows[1:]:
        touch(root / "images" / name)


@pytest.mark.parametrize("trailing", [",", ""])  # the 2017 file ends rows with a comma; v2020 does not
def test_nih_csv_labels_splits_and_boxes(tmp_path, trailing):
    header = NIH_HEADER_2017 if trailing else NIH_HEADER_2017.replace("[x,y],", "[x,y]")
    build_nih(tmp_path, header, trailing)
    index = read_dataset("chest14", tmp_path, val_fraction=0.34, seed=0)
    labels = TASKS["chest14"].labels
    samples = {s.path.name: s for split in index.splits.values() for s in split}
    assert len(samples) == 6
    assert sum(samples["00000002_000.png"].target) == 0  # No Finding
    assert {labels[i] for i, v in enumerate(samples["00000001_001.png"].target) if v} == {"Cardiomegaly", "Emphysema"}
    assert {s.path.name for s in index.splits["test"]} == {"00000004_000.png", "00000005_000.png"}
    train, val = ({s.patient for s in index.splits[k]} for k in ("train", "val"))
    assert val and not train & val
    assert [(b.label, b.x) for b in index.boxes] == [("Infiltration", 225.08), ("Effusion", 10.0)]


def test_nih_wrong_header_and_unknown_finding(tmp_path):
    build_nih(tmp_path, header="Image,Labels,Patient\n")
    with pytest.raises(DatasetLayoutError, match="header should start with Image Index"):
        read_dataset("chest14", tmp_path)
    build_nih(tmp_path)
    entries = tmp_path / "Data_Entry_2017.csv"
    entries.write_text(entries.read_text().replace("Nodule", "Covid"))
    with pytest.raises(DatasetLayoutError, match="Covid"):
        read_dataset("chest14", tmp_path)


def test_missing_images_are_skipped_and_noted(tmp_path):
    build_nih(tmp_path)
    (tmp_path / "images" / "00000005_000.png").unlink()
    index = read_dataset("chest14", tmp_path)
    assert sum(len(s) for s in index.splits.values()) == 5
    assert any("1 images" in note for note in index.notes)


# ----------------------------------------------------------------------------- patient-level carving

def test_carve_by_patient_has_no_overlap_and_is_deterministic():
    samples = [Sample(f"{p}_{i}.png", (int(p % 3 == 0), int(p % 3 != 0)), str(p)) for p in range(200) for i in range(3)]
    kept, held = carve_by_patient(samples, 0.2, seed=5)
    assert not {s.patient for s in kept} & {s.patient for s in held}
    assert len({s.patient for s in held}) == 40
    positives = sum(s.target[0] for s in held) / len(held)
    assert abs(positives - sum(s.target[0] for s in samples) / len(samples)) < 0.05  # stratified
    assert carve_by_patient(samples, 0.2, seed=5) == (kept, held)
    with pytest.raises(ValueError):
        carve_by_patient(samples, 1.5, seed=0)


def test_kfold_by_patient_covers_everything_once():
    samples = [Sample(f"{p}_{i}.png", (int(p % 4 == 0), int(p % 4 != 0)), str(p)) for p in range(60) for i in range(2)]
    seen = []
    for fold in range(3):
        train, val = kfold_by_patient(samples, 3, fold, seed=1)
        assert not {s.patient for s in train} & {s.patient for s in val}
        assert len(train) + len(val) == len(samples)
        seen += val
    assert sorted(map(str, (s.path for s in seen))) == sorted(map(str, (s.path for s in samples)))
    with pytest.raises(ValueError, match="fold 3 of 3"):
        kfold_by_patient(samples, 3, 3, seed=1)
