"""The batch command's journal, so that `--resume` continues an interrupted (or extends a finished) run.

    python -m radiograph predict mura /data/MURA --out mura.csv            # writes mura.csv.journal.jsonl as it goes
    python -m radiograph predict mura /data/MURA --out mura.csv --resume   # skips every file the journal holds

While the command runs, each batch's image rows are appended to `<out>.journal.jsonl` (one JSON line per file:
the row as the JSON output has it, and its full gate, which a study row needs), flushed and synced to disk, after
a first line that names the run's settings. With --resume, the files the journal holds are not read again; their
rows take their places among the new ones, the study rows are formed from all of them, and the output is written
whole: the same file an uninterrupted run writes, CSV or JSON (only the timing columns differ, as between any two
runs). A last line cut off by the interruption is dropped, and its file read again. The journal stays after the
run, so adding files to the folders and resuming appends their rows; delete it to start afresh.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from radiograph.gate import Gate, Reason


class JournalError(ValueError):
    """A journal that cannot be continued: another run's settings, or not a journal."""


def journal_path(out: Path) -> Path:
    return out.with_name(out.name + ".journal.jsonl")


def gate_record(gate: Gate | None) -> dict | None:
    if gate is None:
        return None
    record = asdict(gate)
    for key in ("ood_score", "ood_threshold", "routed_probability"):
        record[key] = None if record[key] is None else float(record[key])
    return record


def gate_from(record: dict | None) -> Gate | None:
    if record is None:
        return None
    return Gate(**{**record, "reasons": [Reason(**reason) for reason in record["reasons"]]})


def read_journal(path: Path, settings: dict) -> dict[str, tuple[dict, Gate | None]]:
    """str(file) -> (row, gate) of every complete line of the journal at `path` ({} when there is none). Raises
    JournalError when its settings differ from `settings`; a cut-off last line is dropped from the file."""
    if not path.exists():
        return {}
    data = path.read_bytes()
    lines = data.split(b"\n")
    try:
        header = json.loads(lines[0])
    except ValueError:
        raise JournalError(f"{path} is not a batch command journal (its first line is not JSON): delete it or "
                           "choose another --out") from None
    if header.get("settings") != settings:
        raise JournalError(f"{path} was written by a run with other settings ({header.get('settings')}); this run's "
                           f"are {settings}. Resume with the same task, models and options, or delete the journal "
                           "to start afresh.")
    done, kept = {}, len(lines[0]) + 1
    for line in lines[1:-1]:  # the last piece has no newline after it: empty, or cut off
        try:
            entry = json.loads(line)
        except ValueError:
            break  # the line being written when the run stopped
        done[entry["row"]["file"]] = (entry["row"], gate_from(entry["gate"]))
        kept += len(line) + 1
    if kept < len(data):
        with path.open("r+b") as handle:
            handle.truncate(kept)
    return done


class Journal:
    """Appends each batch's (row, gate) pairs to the journal file, synced to disk before the next batch."""

    def __init__(self, path: Path, settings: dict, fresh: bool):
        if fresh or not path.exists():
            path.write_text(json.dumps({"settings": settings}) + "\n")
        self.handle = path.open("a")

    def __call__(self, pairs: list[tuple[dict, Gate | None]]) -> None:
        for row, gate in pairs:
            self.handle.write(json.dumps({"row": row, "gate": gate_record(gate)}) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()
