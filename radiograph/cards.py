"""Model cards: the card.json beside every model, the file hashes it records, and its summary for people.

`ModelCard` is the one type every writer and reader uses:

    card = ModelCard.load("models/knee")         # migrates an older card in memory (schema 1 -> 2)
    path = card.verify("models/knee", "model.onnx")   # the file, after checking its sha256
    card.record_file("models/knee", "model.onnx")     # hash a new file into the card
    card.save("models/knee")

Serving reads only the card: labels, head, decision rule, study grouping, heatmap scores, thresholds and
feature grid. Provenance (training, data, metrics, calibration, reports, export, localisation, maps, ensemble, ood,
uncertainty, gate, intervals, fresh, spread)
is kept as the sections the stage that wrote them chose, and shown by `card_markdown`.

    python -m radiograph migrate-cards models/*   # rewrite older cards in the current schema
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from radiograph.registry import Decision, Study, TaskSpec, get_task

# An operating threshold at or above this is met only by a saturated probability (within 1e-6 of 1: a logit above
# about 14, where float32 sigmoid outputs are a handful of steps below 1.0), so its finding is called positive only
# when the model's score saturates. Training no longer chooses such thresholds (train.evaluate.operating_thresholds);
# older cards may hold them, and everything that shows thresholds says so.
UNREACHABLE_ABOVE = 1 - 1e-6


def unreachable_thresholds(thresholds: dict[str, float]) -> list[str]:
    """The labels whose operating threshold only a saturated probability meets (UNREACHABLE_ABOVE)."""
    return [label for label, value in thresholds.items() if value >= UNREACHABLE_ABOVE]

SCHEMA_VERSION = 2


class ModelFileError(RuntimeError):
    """A model folder's card or file is missing, or a file differs from the sha256 its card records."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict:
    """What a card records of one model file: its sha256 and size."""
    return {"sha256": sha256_of(path), "bytes": Path(path).stat().st_size}


@dataclass
class ModelCard:
    """What a model is, how its outputs are read, and where it came from (card.json)."""

    task: str
    title: str
    question: str
    model_version: str
    notice: str | None
    labels: tuple[str, ...]
    head: str
    input: dict  # name, shape, dtype, range, size, preprocessing
    backbone: str
    decision: Decision
    study: Study | None
    heatmap_versus: tuple[tuple[str, str], ...]  # (class, alternative): the class's heatmap score is the logit difference
    thresholds: dict[str, float]
    temperature: dict = field(default_factory=dict)
    cam_layer: str = "features"
    cam_grid: dict | None = None  # stride and first cell centre of the `features` map (radiograph.geometry)
    mirror_average: bool = False
    training: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    calibration: dict = field(default_factory=dict)
    reports: list = field(default_factory=list)
    files: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    localisation: dict | None = None
    maps: dict | None = None
    ensemble: dict | None = None
    ood: dict | None = None  # out-of-distribution score: file, method, threshold, false-alarm rate (radiograph.ood)
    uncertainty: dict | None = None  # which decision margins count as high: method, high_above (train.ood)
    gate: dict | None = None  # the input gate measured on held-out data (train.measure_gate)
    intervals: dict | None = None  # 95% bootstrap intervals of the test figures, by patient (train.intervals)
    fresh: dict | None = None  # the figures on a fresh phantom set of an unused seed, with intervals (train.intervals)
    spread: dict | None = None  # run-to-run spread: several training runs of the card's command (train.spread)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def for_task(cls, spec: TaskSpec, **values) -> "ModelCard":
        """A new card: what serving needs from the task's registry entry, plus `values`."""
        return cls(**{"task": spec.id, "title": spec.title, "question": spec.question, "labels": tuple(spec.labels),
                      "head": spec.head, "decision": spec.decision, "study": spec.study,
                      "heatmap_versus": spec.heatmap_versus, "notice": None, **values})

    @property
    def size(self) -> int:
        return int(self.input["size"])

    @property
    def multi_label(self) -> bool:
        return self.head == "sigmoid"

    @property
    def unreachable_thresholds(self) -> list[str]:
        """Labels the card's rule calls positive only at a saturated probability: an each-above-threshold decision whose
        threshold is at or above UNREACHABLE_ABOVE (other decisions do not use per-class thresholds)."""
        return unreachable_thresholds(self.thresholds) if self.decision.kind == "each_above_threshold" else []

    @property
    def trained_on_phantoms(self) -> bool:
        return self.data.get("kind") == "synthetic phantoms"

    # ------------------------------------------------------------------ reading and writing

    @classmethod
    def from_dict(cls, values: dict) -> "ModelCard":
        """A card from its JSON form; a schema-1 card (no decision, study or heatmap scores, written before the
        card had a type) gets them from the registry entry of its task, as that model was trained with them."""
        values = dict(values)
        version = values.pop("schema_version", 1)
        if version > SCHEMA_VERSION:
            raise ModelFileError(f"card schema {version} is newer than this code reads ({SCHEMA_VERSION}); "
                                 "update the project")
        if version == 1:
            spec = get_task(values["task"])
            values.setdefault("title", spec.title)
            values.setdefault("question", spec.question)
            ensemble = "ensemble" in values  # ensembles of schema 1 recorded no version or backbone
            values.setdefault("model_version", f"{spec.id}-{'ensemble' if ensemble else 'model'}-unversioned")
            values.setdefault("backbone", "ensemble" if ensemble else "unknown")
            values.setdefault("decision", spec.decision.as_dict())
            values.setdefault("study", spec.study.as_dict() if spec.study else None)
            values.setdefault("heatmap_versus", [list(pair) for pair in spec.heatmap_versus])
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ModelFileError(f"card has keys this code does not know: {', '.join(unknown)}")
        decision = values["decision"]
        values["decision"] = Decision(**{**decision, "groups": tuple(decision.get("groups", ())),
                                         "members": tuple(decision.get("members", ()))})
        values["study"] = Study(**values["study"]) if values.get("study") else None
        values["labels"] = tuple(values["labels"])
        values["heatmap_versus"] = tuple(tuple(pair) for pair in values.get("heatmap_versus", ()))
        card = cls(**values)
        card.check()
        return card

    def check(self) -> None:
        """The fields agree with each other (labels, thresholds, decision groups, heatmap scores)."""
        problems = []
        if self.head not in ("softmax", "sigmoid"):
            problems.append(f"head {self.head!r} is neither softmax nor sigmoid")
        if set(self.thresholds) != set(self.labels):
            problems.append("thresholds do not name exactly the labels")
        if self.decision.kind == "grouped" and self.decision.labels() != self.labels:
            problems.append("the grouped decision's groups x members are not the labels")
        if any(c not in self.labels or a not in self.labels for c, a in self.heatmap_versus):
            problems.append("a heatmap score names a label the card does not have")
        if self.study is not None and self.decision.kind != "grouped":
            problems.append("a study grouping needs a grouped decision (a study shows P(positive) per view)")
        if problems:
            raise ModelFileError(f"card of {self.task!r} is inconsistent: {'; '.join(problems)}")

    def to_dict(self) -> dict:
        values = {"schema_version": self.schema_version}
        for f in fields(self):
            if f.name == "schema_version":
                continue
            value = getattr(self, f.name)
            if isinstance(value, (Decision, Study)):
                value = value.as_dict()
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            if value is None and f.name in ("localisation", "maps", "ensemble", "ood", "uncertainty", "gate", "intervals",
                                            "fresh", "spread"):
                continue
            values[f.name] = value
        return values

    @classmethod
    def load(cls, folder: str | Path) -> "ModelCard":
        path = Path(folder) / "card.json"
        if not path.is_file():
            raise ModelFileError(f"{path} is missing: a model folder holds card.json beside its model files "
                                 "(train with `python -m train`, export with `python -m export`)")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except ModelFileError as error:
            raise ModelFileError(f"{path}: {error}") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ModelFileError(f"{path} is not a readable model card: {error}") from None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "card.json"
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def record_file(self, folder: str | Path, name: str) -> None:
        """Hash `folder/name` into the card's file list (a card lists every file serving may load)."""
        self.files[name] = file_entry(Path(folder) / name)

    def verify(self, folder: str | Path, name: str) -> Path:
        """The path of `name` in `folder`, after checking its sha256 against the card."""
        return verified_file(folder, self.files, name, f"run `python -m export {self.task}`")

    def updated(self, **values) -> "ModelCard":
        return replace(self, **values)


def migrate_cards(folders: list[Path]) -> list[str]:
    """Rewrite each folder's card.json in the current schema; returns one line per folder. Every card is read
    first, so a missing or unreadable one stops the command before any card is written."""
    cards = [(Path(folder), ModelCard.load(folder)) for folder in folders]  # raises ModelFileError, naming it
    lines = []
    for folder, card in cards:
        version = json.loads((folder / "card.json").read_text()).get("schema_version", 1)
        if version == SCHEMA_VERSION:
            lines.append(f"{folder}: already schema {SCHEMA_VERSION}")
            continue
        card.save(folder)
        lines.append(f"{folder}: schema {version} -> {SCHEMA_VERSION}")
    return lines


def _figure(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def verified_file(folder: str | Path, files: dict, name: str, hint: str) -> Path:
    """The path of `name` in `folder`, after checking its sha256 against `files` (a card's file list; `hint`
    says how to make a file that is not listed)."""
    path = Path(folder) / name
    entry = files.get(name)
    if entry is None:
        raise ModelFileError(f"{name} is not listed in {Path(folder) / 'card.json'}; listed: "
                             f"{', '.join(files) or 'nothing'} ({hint})")
    if not path.is_file():
        raise ModelFileError(f"{path} is missing; its card lists it with sha256 {entry['sha256']}")
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise ModelFileError(f"{path} has sha256 {digest}, but its card records {entry['sha256']}: "
                             "the file was changed or corrupted; refusing to load it")
    return path


def _interval(pair, exact: bool = False) -> str:
    return f"({_figure(pair[0])}-{_figure(pair[1])}){' exact' if exact else ''}" if pair else ""


def by_dotted_name(tree: dict | None, name: str):
    """A nested figure (or interval) by its dotted name (body_part_accuracy.study_accuracy_per_part.finger)."""
    for key in name.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(key)
    return tree


def leaves(value, prefix: tuple = ()) -> dict:
    """Every leaf of nested dicts by its path of keys: {("per_class_auc", "Healthy"): 0.97, ...}."""
    if isinstance(value, dict):
        return {path: leaf for key, inner in value.items() for path, leaf in leaves(inner, (*prefix, key)).items()}
    return {prefix: value}


def is_figure(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def dotted(values: dict, keep=is_figure) -> dict:
    """Nested figures (or intervals) flattened, the nested ones named with dots (per_class_auc.Healthy): every
    leaf `keep` accepts. The one naming the Models tab, train.spread and the slow retrain test share."""
    return {".".join(map(str, path)): leaf for path, leaf in leaves(values).items() if keep(leaf)}


def table_figures(metrics: dict) -> dict:
    """The figures a card's table shows, by dotted name: every number in `metrics`, nested ones included, less
    the per-class AUCs (their own table, with thresholds)."""
    return dotted({key: value for key, value in metrics.items() if key != "per_class_auc"})


def figures_table(card: ModelCard, metrics: dict, split: str = "test") -> list[str]:
    """Each figure (by dotted name) with its noise: the test split's value and 95% bootstrap interval,
    the fresh phantom set's value and interval, and the mean +- sd over training runs, where the card has them.
    An interval marked exact is a share of 0 or 1's exact binomial one (train.intervals.exact_at_bounds)."""
    test, fresh = card.intervals or {}, card.fresh or {}
    spread = (card.spread or {}).get("summary") or {}
    header = [f"{split} split", "95% interval (by patient)"]
    if fresh:
        header += [f"fresh set (seed {fresh.get('seed')}, {fresh.get('images')} images)", "95% interval"]
    if spread:
        header.append(f"{(card.spread or {}).get('runs_count', '?')} training runs, mean +- sd")
    rows = [f"| metric | {' | '.join(header)} |", "|---" * (len(header) + 1) + "|"]
    for name, value in metrics.items():
        cells = [_figure(value),
                 _interval(by_dotted_name(test.get("intervals"), name), name in (test.get("exact_binomial") or {}))]
        if fresh:
            cells += [_figure(by_dotted_name(fresh.get("figures"), name)),
                      _interval(by_dotted_name(fresh.get("intervals"), name),
                                name in (fresh.get("exact_binomial") or {}))]
        if spread:
            each = spread.get(name)
            cells.append(f"{_figure(each['mean'])} +- {_figure(each['sd'])}" if each else "")
        rows.append(f"| {': '.join(name.split('.')[-2:])} | {' | '.join(cells)} |")  # study_accuracy_per_part: finger
    if test.get("exact_binomial") or fresh.get("exact_binomial"):
        rows += ["", "*exact*: a share of images or studies of 0 or 1, whose bootstrap interval would be a point (no "
                     "resample of a perfect score can miss), has its exact binomial (Clopper-Pearson) interval over "
                     "them instead."]
    return rows


def card_markdown(card: ModelCard, served: dict | None = None) -> str:
    """A model card for people: provenance, data, metrics, thresholds, calibration, localisation, export, serving."""
    data, training, export = card.data, card.training, card.export
    lines = [f"**{card.title}**: {card.question}", ""]
    if card.notice:
        lines += [f"> {card.notice}", ""]
    lines += [f"- Model `{card.model_version}`: backbone `{card.backbone}`, input {card.size} px, "
              f"head {card.head}, CAM layer `{card.cam_layer}`",
              f"- Data: {data.get('kind', 'unknown')} for {data.get('dataset', '')}, {data.get('count', '?')} images, "
              f"seed {data.get('seed', '?')} (`{data.get('command', '')}`); splits {data.get('splits', {})}",
              f"- Training: `{training.get('command', '')}`, {training.get('epochs_run', '?')} epochs, "
              f"{training.get('training_seconds', '?')} s"]
    maps, grid = card.maps, card.cam_grid or {}
    if maps:
        lines.append(f"- Maps: mirror offset {maps.get('mirror_offset')}, shift-and-stitch "
                     f"{'+-' + str(maps['stitch_shift']) + ' px' if maps.get('stitch_shift') else 'off'}, map stride "
                     f"{grid.get('stride', ['?'])[0]} px; {maps.get('chosen_on', '')} (`{maps.get('command', '')}`)")
    if served:
        lines.append(f"- Serving: `{served['file']}` ({served['variant']}) on `{served['provider']}`; heatmaps by "
                     f"`{served['cam_path']}`")
    split = card.metrics.get("split", "test")
    lines += [""] + figures_table(card, table_figures(card.metrics), split)
    spread = card.spread or {}
    if spread.get("runs"):
        seeds = ", ".join(str(run.get("seed")) for run in spread["runs"])
        types = len({run.get("cpu") for run in spread["runs"]})
        where = "one CPU type" if types == 1 else f"{types} CPU types (each run's flags are in the card)"
        then_maps = ", then its maps command," if card.maps and all("maps" in run for run in spread["runs"]) else ""
        lines += ["", f"Run-to-run spread: the training command{then_maps} at seeds {seeds} on {where} "
                      f"(`{spread.get('command', '')}`). How the shipped run was chosen: {spread.get('shipped_rule', '')}."]
    per_class = card.metrics.get("per_class_auc")
    if per_class:
        unreachable = card.unreachable_thresholds
        test_ci = ((card.intervals or {}).get("intervals") or {}).get("per_class_auc", {})
        fresh = card.fresh or {}
        fresh_auc, fresh_ci = (fresh.get("figures") or {}).get("per_class_auc", {}), \
            (fresh.get("intervals") or {}).get("per_class_auc", {})
        lines += ["", "| class | ROC AUC (test, 95% interval) | fresh set | threshold |", "|---|---|---|---|"]
        lines += [f"| {label} | {_figure(per_class.get(label))} {_interval(test_ci.get(label))} | "
                  f"{_figure(fresh_auc.get(label)) if fresh_auc else ''} {_interval(fresh_ci.get(label))} | "
                  f"{_figure(card.thresholds.get(label))}{' (unreachable)' if label in unreachable else ''} |"
                  for label in card.labels]
        if unreachable:
            values = ", ".join(f"{card.thresholds[label]:.10g}" for label in unreachable)
            which = "this finding" if len(unreachable) == 1 else "these findings"
            lines += ["", (f"**Unreachable thresholds: {', '.join(unreachable)}.** Their operating thresholds are "
                           f"{values}: only a probability within {1 - UNREACHABLE_ABOVE:.0e} of 1, one that has "
                           f"saturated, meets them, so this model calls {which} positive only then, and never on a "
                           "less certain image. The phantoms' positives do saturate (their F1 at these thresholds is "
                           "in the figures table); a real image that stops short would not be called. (They were "
                           "chosen on validation at the "
                           "lowest positive's probability, which had saturated; training now chooses thresholds "
                           "that can be met.)")]
        rule = training.get("thresholds", {}).get("rule")
        if rule:
            lines += ["", f"Thresholds: {rule}."]
    calibration, temperature = card.calibration, card.temperature
    if calibration:
        lines += ["", f"Calibration: temperature {[round(t, 3) for t in temperature.get('values', [])]} "
                      f"({temperature.get('applied', '')}); expected calibration error {_figure(calibration.get('before'))}"
                      f" before, {_figure(calibration.get('after'))} after."]
        for name, why in (temperature.get("kept_at_1") or {}).items():  # (train.evaluate.fit_temperature)
            lines[-1] += f" Temperature kept at 1 for {name}, where the validation NLL has no minimum: {why}."
    localisation = card.localisation
    if localisation:
        iobb = ", ".join(f"IoBB>{t}: {_figure(v)}" for t, v in localisation.get("iobb", {}).items())
        lines += ["", f"Localisation ({localisation.get('findings')} findings, {localisation.get('cam', '')}"
                      f"{'; score: ' + localisation['score'] if localisation.get('score') else ''}): "
                      f"pointing game {_figure(localisation.get('pointing_game'))}, mean over classes "
                      f"{_figure(localisation.get('pointing_game_mean_over_classes'))}; {iobb}."]
    if export:
        parity = export.get("parity", {})
        variants = ", ".join(f"{name}: {'shipped' if v.get('shipped') else 'rejected'}"
                             for name, v in export.get("variants", {}).items())
        lines += ["", f"ONNX export: opset {export.get('opset')}, Keras vs ONNX Runtime max |dp| "
                      f"{parity.get('max_abs_diff', 0):.1e} on {parity.get('images')} images"
                      + (f"; variants {variants}" if variants else "") + "."]
    ood, uncertainty = card.ood, card.uncertainty
    if ood:
        fitted, chosen = ood.get("fitted_on", {}), ood.get("chosen_on", {})
        lines += ["", f"Out-of-distribution score: {ood.get('method', '')}; above {_figure(ood.get('threshold'))} "
                      f"counts as unusual (false-alarm rate {_figure(ood.get('false_alarm_rate'))} on "
                      f"{chosen.get('images', '?')} {chosen.get('split', '?')} images; fitted on "
                      f"{fitted.get('images', '?')} {fitted.get('split', '?')} images; `{ood.get('command', '')}`)."]
    if uncertainty:
        chosen = uncertainty.get("chosen_on", {})
        lines += ["", f"Uncertainty: {uncertainty.get('method', '')}; above {_figure(uncertainty.get('high_above'))} "
                      f"counts as high (chosen on {chosen.get('images', '?')} {chosen.get('split', '?')} "
                      f"images; `{uncertainty.get('command', '')}`)."]
    gate = card.gate
    if gate:
        def share(key: str) -> str:
            figure = gate.get(key) or {}
            return f"{_figure(figure.get('rate'))} of {figure.get('of', '?')}"

        lines += ["", f"Input gate on held-out data (seed {gate.get('held_out', {}).get('seed', '?')}): own phantoms "
                      f"passed as ok {share('passed_ok')}; other tasks' phantoms flagged {share('other_task_flagged')}; "
                      f"non-radiographs refused {share('non_radiographs_refused')} (`{gate.get('command', '')}`)."]
    files = card.files
    if files:
        lines += ["", "Files (sha256 checked before use): " + ", ".join(
            f"`{name}` {entry['bytes'] / 1e6:.1f} MB `{entry['sha256'][:12]}…`" for name, entry in files.items())]
    return "\n".join(lines)
