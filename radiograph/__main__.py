"""Command line of the serving package.

    python -m radiograph predict knee examples/knee --out results.csv
    python -m radiograph migrate-cards models/*      # rewrite older card.json files in the current schema
    python -m radiograph pacs search --modality CR   # a DICOMweb server's studies (RADIOGRAPH_DICOMWEB_URL)
    python -m radiograph orthanc --storage ~/pacs    # a local Orthanc PACS with DICOMweb, for trying it
"""
import sys
from pathlib import Path


def migrate(argv: list[str]) -> int:
    from radiograph.cards import ModelFileError, migrate_cards

    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m radiograph migrate-cards MODEL_FOLDER [MODEL_FOLDER ...]", file=sys.stderr)
        return 0 if argv else 2
    try:
        print("\n".join(migrate_cards([Path(folder) for folder in argv])))
    except ModelFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("predict", "migrate-cards", "pacs", "orthanc"):
        print(__doc__.strip() + "\n\ncommands: predict, migrate-cards, pacs, orthanc (python -m radiograph COMMAND "
              "--help)", file=sys.stderr)
        return 2
    if argv[0] == "migrate-cards":
        return migrate(argv[1:])
    if argv[0] == "pacs":
        from radiograph.pacs import main as pacs

        return pacs(argv[1:])
    if argv[0] == "orthanc":
        from radiograph.orthanc import main as orthanc

        return orthanc(argv[1:])
    from radiograph.predict import main as predict

    return predict(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
