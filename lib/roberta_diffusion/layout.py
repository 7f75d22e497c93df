"""Drawing a canvas into a matplotlib figure so that all of it shows: the GIF writers' layout.

Text is laid out in pixels from measured extents (the renderer's own width of each string, line breaks kept),
word by word: the pieces of one word sit edge to edge in one box (each piece keeps its own colour), and a line
wraps only between words. The figure's height is computed from the laid-out frames before anything is drawn,
so the longest frame fits; titles get their own measured rows above each panel, so they cannot overlap.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib.pyplot as plt
from matplotlib.font_manager import FontProperties
from matplotlib.patches import Rectangle

MASK_GLYPH = "░"  # how a still-masked position is shown (one glyph a position)
FONT = "DejaVu Sans Mono"  # ships with matplotlib, so the measured layout is the same on every machine
LINE = 1.5  # line height in ems
MARGIN = 0.6  # margin around a panel, in ems


@dataclass
class Run:
    """One piece of text placed on a panel: pixel position of its left edge and baseline line, its look."""

    text: str
    x: float
    line: int
    width: float
    colour: tuple | None  # background (RGBA) of a generated token; None: none
    kind: str  # "mask" | "pinned" | "generated"


def piece_kind(piece: str, colour) -> str:
    if piece.strip() == MASK_GLYPH:
        return "mask"
    return "pinned" if colour is None else "generated"


def words(pieces: list[str], colours: list) -> list[tuple[str, list[tuple[str, tuple | None, str]]]]:
    """Group token pieces into ``(break, parts)``: ``break`` is what comes before the word ("\\n" per line
    break, else its leading whitespace), ``parts`` the word's pieces ``(text, colour, kind)``. A piece that does
    not start with whitespace continues the word before it (BPE's word pieces); a mask is a word of its own."""
    out: list[tuple[str, list]] = []
    for piece, colour in zip(pieces, colours, strict=True):
        kind = piece_kind(piece, colour)
        for k, chunk in enumerate(piece.split("\n")):
            if k:
                out.append(("\n", []))
            if not chunk:
                continue
            stripped = chunk.lstrip()
            lead = chunk[: len(chunk) - len(stripped)]
            starts_word = bool(lead) or kind == "mask" or not out or not out[-1][1] or out[-1][1][-1][2] == "mask"
            if starts_word:
                out.append((lead, []))
            if stripped:
                out[-1][1].append((stripped, colour, kind))
    return out


class Measure:
    """Pixel widths of strings in one font, from the figure's renderer (cached per string)."""

    def __init__(self, fig, size: float):
        self.renderer = fig.canvas.get_renderer()
        self.props = {w: FontProperties(family=FONT, size=size, weight=w) for w in ("normal", "bold")}
        self.cache: dict = {}
        self.em = size * fig.dpi / 72

    def __call__(self, text: str, weight: str = "normal") -> float:
        key = (text, weight)
        if key not in self.cache:
            # bracketed by visible glyphs: the renderer's extent is the ink, which would drop leading and
            # trailing spaces; the difference of two bracketed strings is the advance of ``text`` itself
            wide = self.renderer.get_text_width_height_descent(f"|{text}|", self.props[weight], ismath=False)[0]
            bare = self.renderer.get_text_width_height_descent("||", self.props[weight], ismath=False)[0]
            self.cache[key] = wide - bare
        return self.cache[key]


def layout(pieces: list[str], colours: list, width: float, measure: Measure) -> list[Run]:
    """Place every piece within ``width`` pixels; returns the runs (the last run's ``line`` + 1 lines)."""
    runs: list[Run] = []
    x, line = 0.0, 0
    for lead, parts in words(pieces, colours):
        if lead == "\n":
            x, line = 0.0, line + 1
            continue
        sizes = [measure(text, "bold" if kind == "pinned" else "normal") for text, _, kind in parts]
        gap = measure(lead) if x > 0 else 0.0  # a wrapped or line-starting word drops its leading space
        if x > 0 and x + gap + sum(sizes) > width:
            x, line, gap = 0.0, line + 1, 0.0
        x += gap
        for (text, colour, kind), size in zip(parts, sizes, strict=True):
            if x > 0 and x + size > width:  # a word longer than a line breaks between its pieces
                x, line = 0.0, line + 1
            runs.append(Run(text, x, line, size, colour, kind))
            x += size
    return runs


def n_lines(runs: list[Run]) -> int:
    return runs[-1].line + 1 if runs else 1


class Board:
    """A figure of ``n`` text panels side by side, each ``panel_width`` inches wide. ``fit(frames)`` sizes the
    figure so that every frame's text fits; ``draw(contents, titles)`` draws one frame."""

    def __init__(self, n: int, panel_width: float = 9.0, font_size: float = 9.0, dpi: int = 90):
        self.n, self.font_size = n, font_size
        self.fig = plt.figure(figsize=(panel_width * n, 2.0), dpi=dpi)
        self.measure = Measure(self.fig, font_size)
        self.title_measure = Measure(self.fig, font_size + 1)
        em = self.measure.em
        self.line_h, self.margin = LINE * em, MARGIN * em
        self.panel_px = panel_width * dpi
        self.text_width = self.panel_px - 2 * self.margin
        self.title_rows, self.text_rows = 1, 1
        self.artists: list = []

    def title_lines(self, title: str) -> list[str]:
        """``title`` split into rows that fit the panel: at its `` · `` separators, and a part wider than the
        panel (a long label) between its words."""
        fits = lambda text: self.title_measure(text, "bold") <= self.text_width  # noqa: E731
        rows: list[str] = []
        for part in title.split(" · "):
            if rows and fits(rows[-1] + " · " + part):
                rows[-1] += " · " + part
                continue
            line = ""
            for word in part.split(" "):
                if line and not fits(f"{line} {word}"):
                    rows.append(line)
                    line = word
                else:
                    line = f"{line} {word}" if line else word
            rows.append(line)
        return rows

    def fit(self, frames) -> None:
        """``frames``: iterable of ``(contents, titles)``, ``contents`` one ``(pieces, colours)`` per panel."""
        for contents, titles in frames:
            for (pieces, colours), title in zip(contents, titles, strict=True):
                self.text_rows = max(self.text_rows, n_lines(layout(pieces, colours, self.text_width, self.measure)))
                self.title_rows = max(self.title_rows, len(self.title_lines(title)))
        height_px = 2 * self.margin + (self.title_rows + 0.5 + self.text_rows) * self.line_h
        self.fig.set_size_inches(self.fig.get_size_inches()[0], height_px / self.fig.dpi)
        self.height_px = height_px

    def draw(self, contents, titles) -> list:
        """Draw one frame (replacing the last); returns the text artists, titles first in each panel."""
        for artist in self.artists:
            artist.remove()
        self.artists = []
        fig, h = self.fig, self.fig.get_size_inches()[1] * self.fig.dpi
        px = lambda x, y: (x / (self.panel_px * self.n), 1 - y / h)  # noqa: E731 - pixels from the top left
        texts = []
        for i, ((pieces, colours), title) in enumerate(zip(contents, titles, strict=True)):
            left = i * self.panel_px + self.margin
            for row, text in enumerate(self.title_lines(title)):
                t = fig.text(*px(left, self.margin + (row + 0.8) * self.line_h), text, family=FONT, weight="bold",
                             size=self.font_size + 1, va="baseline")
                texts.append(t)
            top = self.margin + (self.title_rows + 0.5) * self.line_h
            for run in layout(pieces, colours, self.text_width, self.measure):
                y = top + run.line * self.line_h
                if run.colour is not None:
                    box = Rectangle(px(left + run.x, y + 0.95 * self.line_h), run.width / (self.panel_px * self.n),
                                    0.9 * self.line_h / h, transform=fig.transFigure, facecolor=run.colour,
                                    alpha=0.45, linewidth=0)
                    fig.add_artist(box)
                    self.artists.append(box)
                t = fig.text(*px(left + run.x, y + 0.75 * self.line_h), run.text, family=FONT, size=self.font_size,
                             va="baseline", color="#999999" if run.kind == "mask" else "black",
                             weight="bold" if run.kind == "pinned" else "normal")
                texts.append(t)
        self.artists += texts
        return texts
