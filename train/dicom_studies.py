"""Phantom images as DICOM studies, to load a test PACS (docs/pacs.md).

    python -m train.dicom_studies examples/mura/XR_WRIST/patient00010/study1 --out pacs-studies --body-part wrist
    python -m radiograph pacs store pacs-studies        # into the server at RADIOGRAPH_DICOMWEB_URL
"""
import numpy as np

from train.phantoms.dicom import study_bytes
def main(argv: list[str] | None = None) -> int:
    """python -m train.dicom_studies FOLDER [FOLDER ...] --out DIR: each folder's PNG/JPEG phantoms as one DICOM
    study (DIR/<folder name>/<image stem>.dcm), e.g. to load a test PACS (python -m radiograph pacs store DIR)."""
    import argparse
    from pathlib import Path

    from PIL import Image

    parser = argparse.ArgumentParser(prog="python -m train.dicom_studies", description=main.__doc__.split(":")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--body-part", default="", help="BodyPartExamined of every study (e.g. WRIST, CHEST)")
    args = parser.parse_args(argv)
    for number, folder in enumerate(args.folders, 1):
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
        if not paths:
            parser.error(f"{folder} holds no PNG or JPEG image")
        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("L")))
        target = args.out / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for path, data in zip(paths, study_bytes(images, args.body_part, f"PHANTOM-{number:04d}")):
            (target / f"{path.stem}.dcm").write_bytes(data)
        print(f"{target}: {len(paths)} instances of one study")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
