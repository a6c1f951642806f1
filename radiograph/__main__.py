"""Command line of the serving package.

    python -m radiograph predict --task knee examples/knee --out results.csv
"""
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("predict",):
        print(__doc__.strip() + "\n\ncommands: predict (python -m radiograph predict --help)", file=sys.stderr)
        return 2
    from radiograph.predict import main as predict

    return predict(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
