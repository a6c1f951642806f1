"""Model cards: the card.json beside every model, and the file hashes it records."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict:
    """What a card records of one model file: its sha256 and size."""
    return {"sha256": sha256_of(path), "bytes": Path(path).stat().st_size}
