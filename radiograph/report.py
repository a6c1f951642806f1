"""A one-page PDF report of one analysis (or one study), to take away: made with fpdf2, its text real text.

    pdf = analysis_report(service.analyse("knee", "examples/knee/9143052L.png"))   # bytes of an A4 PDF
    pdf = study_report(*service.analyse_study("mura", files))                       # views, study JSON

The page holds the image and its Grad-CAM overlay, every probability beside its operating threshold (the
decision rule for a single-label model), the decision and its uncertainty, the input gate's verdict and reasons,
a summary of the model card with its notices, a UTC timestamp, the input file's name and sha256, and the code
and model versions. A refused image gets the image and the gate's reasons, no probabilities. A study gets its
decision and one thumbnail per view with its P and sha256.

Text is set in DejaVu Sans (embedded; matplotlib ships it) where matplotlib is installed; the light install has
no matplotlib and uses the PDF core font Helvetica, whose text is latin-1 (other characters are spelled out or
replaced by '?'). Only the card is read: nothing here knows a task by name.
"""
from __future__ import annotations

import functools
import subprocess
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from PIL import Image

from radiograph.decision import decide, grouped_summary, uncertainty_summary
from radiograph.registry import TASKS

PAGE_WIDTH, PAGE_HEIGHT, MARGIN = 210.0, 297.0, 12.0  # A4, mm
CONTENT = PAGE_WIDTH - 2 * MARGIN
IMAGE_PIXELS = 900  # longest side of an embedded picture (about 250 dpi at the page's picture width)
THUMBNAIL_PIXELS = 400
PICTURE_HEIGHTS = (86.0, 70.0, 56.0, 44.0)  # mm; the largest with which everything fits on one page is used
NOT_A_DEVICE = ("NOT A MEDICAL DEVICE. Research software: do not use it to diagnose, treat or triage anyone. The "
                "heatmap shows where the model looked, not where disease is.")
PHANTOMS = ("DEMO MODEL TRAINED ON SYNTHETIC PHANTOMS: it has never seen a patient, and its metrics describe "
            "phantom radiographs, not people.")
ROOT = Path(__file__).resolve().parent.parent
SPELLED = {"\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2264": "<=", "\u2265": ">=", "\u2026": "...",
           "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2192": "->", "\u2248": "~"}


@functools.cache
def code_version() -> str:
    """The app's code version: `git describe` of this checkout where it is one, else "unknown"."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], check=False, cwd=ROOT,
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown (not a git checkout)"


def printable(text: str) -> str:
    """Control and format characters (a newline, or a right-to-left override in an uploaded file's name) as their
    code point, <U+202E>: a name cannot break the page's lines or reorder what is printed after it."""
    return "".join(f"<U+{ord(c):04X}>" if unicodedata.category(c) in ("Cc", "Cf") else c for c in text)


@dataclass(frozen=True)
class Fonts:
    """The families a report is set in: embedded TrueType files (any Unicode text) or PDF core fonts (latin-1)."""

    body: str
    mono: str
    files: dict  # family -> {style: path}; empty for core fonts

    @property
    def unicode(self) -> bool:
        return bool(self.files)


def matplotlib_fonts() -> Fonts | None:
    """DejaVu Sans, Sans Bold and Sans Mono from matplotlib's own fonts, where matplotlib is installed."""
    try:
        import matplotlib  # only for its font files; the light install has none
    except ImportError:
        return None
    folder = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"
    files = {"dejavu": {"": folder / "DejaVuSans.ttf", "B": folder / "DejaVuSans-Bold.ttf"},
             "dejavu-mono": {"": folder / "DejaVuSansMono.ttf"}}
    if not all(path.is_file() for styles in files.values() for path in styles.values()):
        return None
    return Fonts("dejavu", "dejavu-mono", files)


CORE_FONTS = Fonts("helvetica", "courier", {})


def default_fonts() -> Fonts:
    return matplotlib_fonts() or CORE_FONTS


class Page(FPDF):
    """One A4 page with the report's fonts; `say` writes text that the page's fonts can show."""

    def __init__(self, fonts: Fonts, title: str, created: datetime):
        super().__init__(orientation="P", unit="mm", format="A4")
        self.faces = fonts
        for family, styles in fonts.files.items():
            for style, path in styles.items():
                self.add_font(family, style, str(path))
        self.set_margins(MARGIN, MARGIN, MARGIN)
        self.set_auto_page_break(True, margin=MARGIN)
        self.set_image_filter("DCTDecode")  # pictures as JPEG: a page of two films stays a few hundred KB
        self.set_title(self.clean(title))
        self.set_creator("radiograph " + code_version())
        self.set_creation_date(created)
        self.add_page()

    def clean(self, text: str) -> str:
        """Text the fonts can show: as it is with an embedded Unicode font, else spelled in latin-1; control and
        format characters other than the page's own line breaks are shown as their code (`printable`)."""
        text = "\n".join(printable(line) for line in str(text).split("\n"))
        if self.faces.unicode:
            return text
        text = "".join(SPELLED.get(c, c) for c in text)
        text = unicodedata.normalize("NFKC", text)
        return text.encode("latin-1", errors="replace").decode("latin-1")

    def style(self, size: float, bold: bool = False, mono: bool = False, colour=(0, 0, 0)) -> None:
        self.set_font(self.faces.mono if mono else self.faces.body, "B" if bold and not mono else "", size)
        self.set_text_color(*colour)

    def say(self, text: str, size: float = 9, bold: bool = False, mono: bool = False, colour=(0, 0, 0),
            width: float = 0, height: float | None = None, x: float | None = None) -> None:
        """A wrapped paragraph at the left margin (or `x`), `width` wide (0: to the right margin)."""
        self.style(size, bold, mono, colour)
        if x is not None:
            self.set_x(x)
        self.multi_cell(width, height or size * 0.45, self.clean(text), align="L", new_x=XPos.LMARGIN,
                        new_y=YPos.NEXT)

    def heading(self, text: str) -> None:
        self.ln(1.5)
        self.say(text, 10.5, bold=True)
        self.ln(0.5)

    def notice_box(self, lines: list[str]) -> None:
        """The notices, bold, dark red on a pale red box with a red border."""
        self.set_fill_color(254, 226, 226)
        self.set_draw_color(185, 28, 28)
        self.set_line_width(0.6)
        self.style(9.5, bold=True, colour=(127, 29, 29))
        self.multi_cell(0, 4.6, self.clean("\n".join(lines)), border=1, fill=True, padding=2, align="L",
                        new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_line_width(0.2)
        self.set_draw_color(0, 0, 0)
        self.ln(1.5)

    def picture(self, pixels: np.ndarray, x: float, y: float, width: float, height: float,
                longest: int = IMAGE_PIXELS) -> tuple[float, float, float, float]:
        """`pixels` (grey or RGB uint8) fitted into the box, centred, aspect kept; returns its (x, y, w, h)."""
        image = Image.fromarray(np.ascontiguousarray(pixels))
        image.thumbnail((longest, longest), Image.Resampling.LANCZOS)
        scale = min(width / image.width, height / image.height)
        w, h = image.width * scale, image.height * scale
        left, top = x + (width - w) / 2, y + (height - h) / 2
        self.image(image, left, top, w, h)
        return left, top, w, h

    def caption(self, text: str, x: float, y: float, width: float, size: float = 8) -> float:
        """Centred lines under a picture; returns the y below them."""
        self.set_xy(x, y)
        self.style(size)
        self.multi_cell(width, size * 0.42, self.clean(text), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        return self.get_y()


# ----------------------------------------------------------------------------- the parts of a page

def header(page: Page, title: str, card, created: datetime, files: list[tuple[str, str]]) -> None:
    """Title, the notices, then when, what code and model, and each input file's name and sha256."""
    page.say(title, 15, bold=True, height=7)
    page.ln(1)
    notices = [NOT_A_DEVICE]
    if card is None or card.trained_on_phantoms:
        notices.append(PHANTOMS)
    page.notice_box(notices)
    model = f"model {card.model_version}" if card is not None else "no task model ran"
    page.say(f"Created {created.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC  |  app {code_version()}  |  "
             f"{model}", 8.5)
    for name, digest in files:
        page.say(f"Input file: {printable(name)}", 8.5, bold=True)
        page.say(f"sha256 {digest or 'not recorded'}", 8, mono=True)


def gate_section(page: Page, gate: dict, width: float = 0, x: float | None = None) -> None:
    verdict = {"ok": "passed", "warn": "WARNING: read the result with care",
               "refuse": "REFUSED: no diagnosis"}[gate["verdict"]]
    colour = {"ok": (6, 95, 70), "warn": (120, 53, 15), "refuse": (127, 29, 29)}[gate["verdict"]]
    page.say(f"Input gate: {gate['verdict']} ({verdict})", 10, bold=True, colour=colour, width=width, x=x)
    details = []
    if gate.get("routed_task"):
        details.append(f"router: {TASKS[gate['routed_task']].title if gate['routed_task'] in TASKS else gate['routed_task']}"
                       + (f" (P = {gate['routed_probability']:.2f})" if gate.get("routed_probability") is not None
                          else ""))
    if gate.get("ood_score") is not None:
        details.append(f"feature distance {gate['ood_score']:.2f} (threshold {gate['ood_threshold']:.2f})")
    if details:
        page.say("; ".join(details), 8.5, width=width, x=x)
    for reason in gate["reasons"]:
        page.say(f"- {reason}", 8.5, width=width, x=x)


def decision_rule(card) -> str:
    """How the card's probabilities become its decision, in words."""
    decision = card.decision
    if decision.kind == "each_above_threshold":
        return ("Decision rule: each finding is positive at or above its own operating threshold (chosen on "
                "validation data); positives are marked *.")
    if decision.kind == "grouped":
        return (f"Decision rule: P({decision.positive}) is the sum over {decision.group_name.replace('_', ' ')}s of "
                f"P({decision.group_name.replace('_', ' ')}, {decision.positive}), called {decision.positive} at or "
                f"above {decision.cut:.2f}; the {decision.group_name.replace('_', ' ')} is the one with the largest "
                "summed probability. The decided class is marked *.")
    return "Decision rule: the most probable class is the decision (no per-class threshold); it is marked *."


def marked_classes(card, probabilities: np.ndarray) -> set[str]:
    """The labels the decision calls: multi-label, every one at or above its threshold; grouped, the decided
    group's called member; else the top class."""
    decision, labels = card.decision, card.labels
    if decision.kind == "each_above_threshold":
        return set(decide(card, probabilities)["positive"])
    if decision.kind == "grouped":
        summary = grouped_summary(decision, probabilities)
        member = decision.positive if summary[decision.score_key] >= decision.cut else decision.negative
        return {f"{summary[decision.group_name]}_{member}"}
    return {labels[int(np.argmax(probabilities))]}


def probability_table(page: Page, card, probabilities: np.ndarray, x: float, width: float) -> None:
    """One row per class, most probable first: the label, P, a bar with the threshold's tick (multi-label)."""
    thresholds = card.multi_label
    marked = marked_classes(card, probabilities)
    row, label_width, value_width = 4.3, width * 0.40, 13.0
    threshold_width = 16.0 if thresholds else 0.0
    bar_width = width - label_width - value_width - threshold_width - 2
    page.set_x(x)
    page.style(8, bold=True)
    page.cell(label_width, row, "class")
    page.cell(value_width, row, "P", align="R")
    if thresholds:
        page.cell(threshold_width, row, "threshold", align="R")
    page.ln(row)
    for label, p in sorted(zip(card.labels, probabilities), key=lambda item: -item[1]):
        called = label in marked
        y = page.get_y()
        page.set_x(x)
        page.style(8, bold=called)
        page.cell(label_width, row, page.clean(("* " if called else "  ") + label))
        page.cell(value_width, row, f"{p:.3f}", align="R")
        if thresholds:
            page.cell(threshold_width, row, f"{card.thresholds[label]:.3f}", align="R")
        left = x + label_width + value_width + threshold_width + 2
        page.set_fill_color(229, 231, 235)
        page.rect(left, y + 1, bar_width, row - 2, style="F")
        page.set_fill_color(*((249, 115, 22) if called else (96, 165, 250)))
        page.rect(left, y + 1, bar_width * float(np.clip(p, 0, 1)), row - 2, style="F")
        if thresholds:
            page.set_fill_color(17, 24, 39)
            tick = left + bar_width * float(np.clip(card.thresholds[label], 0, 1))
            page.rect(min(tick, left + bar_width - 0.5), y + 0.4, 0.5, row - 0.8, style="F")
        page.ln(row)


def uncertainty_words(uncertainty: dict) -> str:
    level = {True: "high: the decision is near its boundary", False: "low", None: "not calibrated"}[uncertainty["high"]]
    cut = f", high at or above {uncertainty['high_above']:.2f}" if uncertainty.get("high_above") is not None else ""
    return f"Uncertainty {uncertainty['value']:.2f} ({level}{cut}); {uncertainty['method']}."


def metrics_line(card) -> str:
    """The task's headline test figures first, then its other single-number ones, up to four."""
    spec = TASKS.get(card.task)
    names = list(dict.fromkeys([*(spec.headline if spec else ()), *(spec.metrics if spec else ()), *card.metrics]))
    figures = [(name, card.metrics[name]) for name in names
               if isinstance(card.metrics.get(name), (int, float)) and not isinstance(card.metrics.get(name), bool)]
    split = card.metrics.get("split", "test")
    text = ", ".join(f"{name.replace('_', ' ')} {value:.3f}" for name, value in figures[:4])
    return f"Headline metrics ({split} split): {text or 'none recorded'}."


def card_section(page: Page, card) -> None:
    page.heading("Model card (summary)")
    if card is None:
        page.say("No task model ran: the router refused the image before choosing a task. The router and every "
                 "task model here are demo models trained on synthetic phantoms.", 8.5)
        return
    data, training = card.data, card.training
    trained = ("synthetic phantom radiographs" if card.trained_on_phantoms else data.get("kind", "unknown data"))
    page.say(f"{card.title}: {card.question.rstrip('.')}{'' if card.question.endswith('?') else '.'} Model {card.model_version}, backbone {card.backbone}, input "
             f"{card.size} px, {card.head} head.", 8.5)
    page.say(f"Trained on {trained} for {data.get('dataset', 'its task')} ({data.get('count', '?')} images, seed "
             f"{data.get('seed', '?')}); {training.get('epochs_run', '?')} epochs.", 8.5)
    page.say(metrics_line(card), 8.5)
    if card.notice:
        page.say(f"Notice: {card.notice}", 8.5, bold=True, colour=(127, 29, 29))


def footer_line(page: Page) -> None:
    page.ln(2)
    page.say("Generated by the radiograph classifier research demo. " + NOT_A_DEVICE, 7, colour=(80, 80, 80))


# ----------------------------------------------------------------------------- one analysis, one study

def one_page(draw) -> bytes:
    """The PDF of `draw(picture_height)` with the largest picture height at which it fits on one page (long
    gate reasons and file names take room from the pictures, never a second page)."""
    for height in PICTURE_HEIGHTS:
        page = draw(height)
        if page.page_no() == 1:
            break
    return bytes(page.output())


def analysis_report(analysis, created: datetime | None = None, fonts: Fonts | None = None,
                    class_index: int | None = None, opacity: float = 0.4) -> bytes:
    """One A4 page of one analysis (radiograph.service.Analysis); a refused image gets no probabilities."""
    created = created or datetime.now(UTC)
    return one_page(lambda box: analysis_page(analysis, created, fonts or default_fonts(), class_index, opacity,
                                              box))


def analysis_page(analysis, created: datetime, fonts: Fonts, class_index: int | None, opacity: float,
                  box: float) -> Page:
    card = analysis.card
    title = f"Radiograph report: {card.title if card else 'refused before a task was chosen'}"
    page = Page(fonts, title, created)
    header(page, title, card, created, [(analysis.name, analysis.sha256)])
    page.ln(2)
    top = page.get_y()
    half = (CONTENT - 4) / 2
    if analysis.refused:
        _, y, _, h = page.picture(analysis.display, MARGIN, top, half, box)
        below = page.caption("The image as decoded (refused: no model was run on it)", MARGIN, y + h + 1, half)
        page.set_xy(MARGIN + half + 4, top)
        gate_section(page, analysis.gate.as_dict(), width=half, x=MARGIN + half + 4)
        page.say("Refused: there is no diagnosis and no probability for this image.", 10, bold=True, width=half,
                 x=MARGIN + half + 4)
        page.set_y(max(page.get_y(), below) + 2)
    else:
        shown = analysis.shown_class if class_index is None else class_index
        _, y, _, h = page.picture(analysis.display, MARGIN, top, half, box)
        page.picture(analysis.overlay(shown, opacity), MARGIN + half + 4, top, half, box)
        below = page.caption("The image as decoded", MARGIN, y + h + 1, half)
        heat = "no positive evidence (flat map)" if analysis.flat[shown] else "warm: where the score rose"
        below = max(below, page.caption(f"Grad-CAM of {analysis.labels[shown]} ({analysis.model['cam_path']}); "
                                        f"{heat}", MARGIN + half + 4, y + h + 1, half))
        page.set_y(below + 2)
        analysis_findings(page, analysis)
    card_section(page, card)
    footer_line(page)
    return page


def analysis_findings(page: Page, analysis) -> None:
    """Left: decision, uncertainty, gate; right: the probabilities with their thresholds."""
    top, half = page.get_y(), (CONTENT - 4) / 2
    card, probabilities = analysis.card, analysis.probabilities
    page.say(analysis.decision()["text"], 11, bold=True, width=half)
    page.ln(0.5)
    page.say(uncertainty_words(uncertainty_summary(card, probabilities)), 8.5, width=half)
    page.say(decision_rule(card), 8.5, width=half)
    page.ln(1)
    gate_section(page, analysis.gate.as_dict(), width=half, x=MARGIN)
    for note in analysis.notes:
        page.say(f"Input warning: {note}", 8.5, width=half)
    left_bottom = page.get_y()
    page.set_y(top)
    probability_table(page, card, probabilities, MARGIN + half + 4, half)
    page.set_y(max(left_bottom, page.get_y()))


def study_report(views: list, study: dict, created: datetime | None = None, fonts: Fonts | None = None,
                 opacity: float = 0.4) -> bytes:
    """One A4 page of one study (Service.analyse_study's views and study JSON): the study's decision and gate,
    each view's overlay as a thumbnail with its P, and each view's file name and sha256."""
    created = created or datetime.now(UTC)
    return one_page(lambda height: study_page(views, study, created, fonts or default_fonts(), opacity,
                                              height / PICTURE_HEIGHTS[0]))


def study_page(views: list, study: dict, created: datetime, fonts: Fonts, opacity: float, scale: float) -> Page:
    """The study's page, its thumbnails `scale` times their largest size."""
    card = views[0].card
    rule = card.decision
    title = f"Radiograph study report: {card.title}, {len(views)} view(s)"
    page = Page(fonts, title, created)
    header(page, title, card, created, [])
    page.say(study["decision"]["text"], 11, bold=True)
    if "probabilities" in study:
        decision = study["decision"]
        page.say(f"P({rule.positive}) {decision[rule.score_key]:.3f}, the mean over the views that were read "
                 f"(called {rule.positive} at or above {rule.cut:.2f}); {rule.group_name.replace('_', ' ')}: "
                 f"{decision[rule.group_name]} ({decision[rule.group_score_key]:.2f}).", 8.5)
        page.say(uncertainty_words(study["uncertainty"]), 8.5)
    else:
        page.say("Every view was refused: there is no diagnosis and no probability for this study.", 9, bold=True)
    gate_section(page, study["gate"])
    page.ln(3)
    columns = 4
    cell = (CONTENT - (columns - 1) * 3) / columns
    rows = -(-len(views) // columns)
    box = min(cell, 110.0 / rows - 9) * scale
    for start in range(0, len(views), columns):
        y = page.get_y()
        for column, view in enumerate(views[start:start + columns]):
            x = MARGIN + column * (cell + 3)
            page.picture(view.overlay(None, opacity), x, y, cell, box, THUMBNAIL_PIXELS)
            figure = ("refused by the input gate" if view.refused else
                      f"P({rule.positive}) {grouped_summary(rule, view.probabilities)[rule.score_key]:.3f}"
                      + (" (warning)" if view.gate.verdict == "warn" else ""))
            page.caption(f"{printable(view.name)}\n{figure}", x, y + box + 0.5, cell, 7)
        page.set_y(y + box + 8)
    page.heading("Views: sha256 of each file, its name and its gate's verdict")
    for view in views:
        page.say(f"{view.sha256 or 'sha256 not recorded'}  {printable(view.name)} ({view.gate.verdict})", 7, mono=True)
    card_section(page, card)
    footer_line(page)
    return page
