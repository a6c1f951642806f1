"""Model cards: the card.json beside every model, the file hashes it records, and its summary for people."""
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


def _figure(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def card_markdown(card: dict, served: dict | None = None) -> str:
    """A model card for people: provenance, data, metrics, thresholds, calibration, localisation, export, serving."""
    data, training, export = card.get("data", {}), card.get("training", {}), card.get("export", {})
    lines = [f"**{card.get('title', card['task'])}**: {card.get('question', '')}", ""]
    if card.get("notice"):
        lines += [f"> {card['notice']}", ""]
    lines += [f"- Model `{card['model_version']}`: backbone `{card.get('backbone')}`, input {card['input']['size']} px, "
              f"head {card['head']}, CAM layer `{card.get('cam_layer')}`",
              f"- Data: {data.get('kind', 'unknown')} for {data.get('dataset', '')}, {data.get('count', '?')} images, "
              f"seed {data.get('seed', '?')} (`{data.get('command', '')}`); splits {data.get('splits', {})}",
              f"- Training: `{training.get('command', '')}`, {training.get('epochs_run', '?')} epochs, "
              f"{training.get('training_seconds', '?')} s"]
    maps, grid = card.get("maps"), card.get("cam_grid", {})
    if maps:
        lines.append(f"- Maps: mirror offset {maps.get('mirror_offset')}, shift-and-stitch "
                     f"{'+-' + str(maps['stitch_shift']) + ' px' if maps.get('stitch_shift') else 'off'}, map stride "
                     f"{grid.get('stride', ['?'])[0]} px; {maps.get('chosen_on', '')} (`{maps.get('command', '')}`)")
    if served:
        lines.append(f"- Serving: `{served['file']}` ({served['variant']}) on `{served['provider']}`; heatmaps by "
                     f"`{served['cam_path']}`")
    metrics = {k: v for k, v in card.get("metrics", {}).items() if isinstance(v, (int, float))}
    split = card.get("metrics", {}).get("split", "test")
    lines += ["", f"| metric ({split} split) | value |", "|---|---|"]
    lines += [f"| {name} | {_figure(value)} |" for name, value in metrics.items()]
    per_class = card.get("metrics", {}).get("per_class_auc")
    if per_class:
        lines += ["", "| class | ROC AUC | threshold |", "|---|---|---|"]
        lines += [f"| {label} | {_figure(per_class.get(label))} | {_figure(card['thresholds'].get(label))} |"
                  for label in card["labels"]]
    calibration, temperature = card.get("calibration", {}), card.get("temperature", {})
    if calibration:
        lines += ["", f"Calibration: temperature {[round(t, 3) for t in temperature.get('values', [])]} "
                      f"({temperature.get('applied', '')}); expected calibration error {_figure(calibration.get('before'))}"
                      f" before, {_figure(calibration.get('after'))} after."]
    localisation = card.get("localisation")
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
    files = card.get("files", {})
    if files:
        lines += ["", "Files (sha256 checked before use): " + ", ".join(
            f"`{name}` {entry['bytes'] / 1e6:.1f} MB `{entry['sha256'][:12]}…`" for name, entry in files.items())]
    return "\n".join(lines)
