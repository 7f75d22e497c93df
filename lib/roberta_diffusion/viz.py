"""Seeing a generation: a pure render of one step (HTML or text), a terminal printer, GIF animations
(one run, or diffusion vs autoregressive side by side on a shared clock), and an ipywidgets scrubber.

``render_step`` is pure and is what the tests and the slider call; the slider only wires it up.
"""

from __future__ import annotations

import html as html_lib
from pathlib import Path

import torch

from .trace import Trace

MASK_GLYPH = "░"  # how a still-masked position is shown (one glyph a position)


def token_pieces(tokenizer, ids: torch.Tensor, mask_id: int, cache: dict | None = None) -> list[str]:
    """The surface text of each id in ``ids [L]``; masks become ``MASK_GLYPH`` plus the space before them."""
    cache = {} if cache is None else cache
    pieces = []
    printable = lambda text: "".join(c if c.isprintable() or c == "\n" else "·" for c in text)  # noqa: E731
    for token in ids.tolist():
        if token == mask_id:
            pieces.append(" " + MASK_GLYPH)
            continue
        if token not in cache:
            cache[token] = "" if token in tokenizer.all_special_ids else printable(tokenizer.decode([token]))
        pieces.append(cache[token])
    return pieces


def step_colours(trace: Trace, step: int, sample: int = 0, color_by: str = "step") -> list[tuple | None]:
    """RGBA colour of each position at ``step`` (None: pinned / plain). By commit step or by confidence."""
    from matplotlib import colormaps

    if color_by not in ("step", "confidence"):
        raise ValueError(f"color_by={color_by!r}: use 'step' or 'confidence'")
    gen = trace.generated[sample]
    if color_by == "step":
        committed = trace.committed_at[sample].float()
        values = (committed / max(trace.steps, 1)).clamp(0, 1)
        cmap = colormaps["viridis"]
    else:
        values = trace.confidence[sample].nan_to_num(0.0).clamp(0, 1)
        cmap = colormaps["RdYlGn"]
    current = trace.ids[step, sample]
    return [cmap(float(v)) if g and int(t) != trace.mask_token_id else None
            for v, g, t in zip(values, gen, current, strict=True)]


def render_text(trace: Trace, step: int, tokenizer, sample: int = 0) -> str:
    """Plain text of the canvas at ``step`` (padding dropped, masks as ``MASK_GLYPH``)."""
    _check_step(trace, step)
    row = trace.ids[step, sample][trace.attention[sample].bool()]
    return "".join(token_pieces(tokenizer, row, trace.mask_token_id)).strip()


def render_step(trace: Trace, step: int, tokenizer, sample: int = 0, color_by: str = "step") -> str:
    """HTML of the canvas at ``step``: pinned text plain, generated tokens coloured, masks grey."""
    _check_step(trace, step)
    ids = trace.ids[step, sample]
    pieces = token_pieces(tokenizer, ids, trace.mask_token_id)
    colours = step_colours(trace, step, sample, color_by)
    spans = []
    for piece, colour, token, attended, pinned in zip(pieces, colours, ids.tolist(), trace.attention[sample].tolist(),
                                                      trace.fixed[sample].tolist(), strict=True):
        if not attended:
            continue
        text = html_lib.escape(piece).replace("\n", "<br>")
        if token == trace.mask_token_id:
            spans.append(f'<span class="mask" style="color:#aaa">{text}</span>')
        elif pinned:
            spans.append(f'<span class="pinned" style="font-weight:bold">{text}</span>')
        else:
            r, g, b, _ = colour
            spans.append(f'<span style="background:rgba({int(r*255)},{int(g*255)},{int(b*255)},0.35)">{text}</span>')
    masked = float(trace.masked_share()[step])
    header = f"<b>{trace.kind} · step {step}/{trace.steps}</b> · {masked:.0%} masked · {sum(trace.step_times[:step]):.3f} s"
    return f'<div style="font-family:monospace;white-space:pre-wrap">{header}<br>{"".join(spans)}</div>'


def _check_step(trace: Trace, step: int) -> None:
    if not 0 <= step <= trace.steps:
        raise ValueError(f"step={step} is outside 0..{trace.steps}")


def print_progress(tokenizer, mask_id: int, total_steps: int, every: int = 1, stream=None):
    """An ``on_step`` callback that prints the canvas after each step (every ``every`` steps)."""
    import sys

    stream = stream or sys.stdout

    def on_step(step: int, ids: torch.Tensor) -> None:
        if step % every and step != total_steps:
            return
        masked = (ids == mask_id).float().mean().item()
        text = "".join(token_pieces(tokenizer, ids[0], mask_id)).strip()
        print(f"--- step {step}/{total_steps} · {masked:.0%} of the canvas masked", file=stream)
        print(text, file=stream, flush=True)

    return on_step


def _frame_steps(n_steps: int, max_frames: int | None) -> list[int]:
    if max_frames is None or n_steps + 1 <= max_frames:
        return list(range(n_steps + 1))
    picks = torch.linspace(0, n_steps, max_frames).round().long().unique().tolist()
    return picks


class _TextPanel:
    """Lays the canvas out as wrapped monospace tokens in one matplotlib axes."""

    def __init__(self, ax, font_size: float = 9):
        self.ax, self.font_size = ax, font_size
        box = ax.get_window_extent()  # pixels; a monospace glyph is ~0.6 em wide, a line ~1.45 em tall
        em = font_size * ax.figure.dpi / 72
        self.width = max(20, int(box.width / (0.62 * em)) - 2)
        self.line_h = 1.45 * em / box.height
        ax.set_axis_off()
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        self.artists = []

    def draw(self, pieces: list[str], colours: list, title: str):
        for artist in self.artists:
            artist.remove()
        self.artists = [self.ax.text(0, 1.0, title, fontsize=self.font_size + 1.5, weight="bold", va="top",
                                     family="monospace")]
        col, line = 0, 1
        char_w, line_h = 1.0 / self.width, self.line_h
        for piece, colour in zip(pieces, colours, strict=True):
            for k, chunk in enumerate(piece.split("\n")):
                if k:
                    col, line = 0, line + 1
                if not chunk:
                    continue
                if col + len(chunk) > self.width and col:
                    col, line = 0, line + 1
                    chunk = chunk.lstrip()
                y = 1.0 - (line + 1) * line_h - 0.02
                if y < 0:
                    return
                style = dict(color="#999999") if chunk.strip() == MASK_GLYPH else dict(color="black")
                box = dict(facecolor=colour, alpha=0.45, pad=0.05, linewidth=0) if colour is not None else None
                self.artists.append(self.ax.text(col * char_w, y, chunk, fontsize=self.font_size, va="baseline",
                                                 family="monospace", bbox=box, **style))
                col += len(chunk)


def _panel_content(trace, tokenizer, step, sample, color_by, cache):
    att = trace.attention[sample].bool()
    pieces = token_pieces(tokenizer, trace.ids[step, sample], trace.mask_token_id, cache)
    colours = step_colours(trace, step, sample, color_by)
    return [p for p, a in zip(pieces, att, strict=True) if a], [c for c, a in zip(colours, att, strict=True) if a]


def _save_gif(fig, update, n_frames: int, path, fps: float) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation, PillowWriter

    from .paths import atomic_path

    try:
        with atomic_path(path) as tmp:  # no half-written GIF under the final name
            FuncAnimation(fig, update, frames=n_frames, blit=False).save(tmp, writer=PillowWriter(fps=fps))
    finally:
        plt.close(fig)
    return Path(path)


def animate(trace: Trace, tokenizer, path, sample: int = 0, color_by: str = "step", fps: float = 2.0,
            max_frames: int | None = None) -> Path:
    """GIF of one generation, one frame per step (``max_frames`` subsamples long AR traces)."""
    import matplotlib.pyplot as plt

    steps = _frame_steps(trace.steps, max_frames)
    fig, ax = plt.subplots(figsize=(9, _figure_height([trace], tokenizer, sample, 9 * 72 / (0.62 * 9), 9)), dpi=90)
    panel, cache = _TextPanel(ax), {}

    def update(frame):
        step = steps[frame]
        pieces, colours = _panel_content(trace, tokenizer, step, sample, color_by, cache)
        share = float(trace.masked_share()[step])
        panel.draw(pieces, colours, f"{trace.kind} · step {step}/{trace.steps} · {share:.0%} masked · "
                                    f"{sum(trace.step_times[:step]):.2f} s")
        return panel.artists

    return _save_gif(fig, update, len(steps), path, fps)


def _figure_height(traces, tokenizer, sample: int, chars_per_line: float, font_size: float) -> float:
    """Inches of figure height that fit the final canvas (so short canvases do not leave a blank page)."""
    longest = max(len(render_text(t, t.steps, tokenizer, sample)) for t in traces)
    lines = longest / (0.8 * chars_per_line) + 2  # 0.8: word wrap wastes some of each line; 2: title and margin
    return min(9.0, max(2.0, lines * 1.45 * font_size / 72 / 0.8))


def compare_frames(traces: list[Trace], n_frames: int) -> list[tuple[float, list[int]]]:
    """Shared clock: ``n_frames`` times from 0 to the slowest run's end; at each, every trace's latest step."""
    end = max(t.total_time for t in traces)
    # float64 throughout: in float32 the rounded end of the clock can fall just short of a run's own cumulative
    # time, and the last frame would then not show that run finished
    clock = torch.linspace(0, end, n_frames, dtype=torch.float64).tolist()
    frames = []
    for now in clock:
        steps = []
        for t in traces:
            done = torch.tensor([0.0] + t.step_times, dtype=torch.float64).cumsum(0)
            steps.append(int((done <= now + 1e-12).sum().item()) - 1)
        frames.append((now, steps))
    return frames


def animate_comparison(traces: list[Trace], tokenizers: list, path, labels: list[str] | None = None,
                       sample: int = 0, n_frames: int = 40, fps: float = 8.0, color_by: str = "step") -> Path:
    """Side-by-side GIF on one wall clock: each panel shows the step its run had reached at that time."""
    import matplotlib.pyplot as plt

    labels = labels or [t.kind for t in traces]
    frames = compare_frames(traces, n_frames)
    height = max(_figure_height([t], tok, sample, 6.5 * 72 / (0.62 * 8), 8) for t, tok in zip(traces, tokenizers, strict=True))
    fig, axes = plt.subplots(1, len(traces), figsize=(6.5 * len(traces), height), dpi=80)
    panels = [_TextPanel(ax, 8) for ax in axes]
    caches = [{} for _ in traces]

    def update(frame):
        now, steps = frames[frame]
        for panel, trace, tok, step, label, cache in zip(panels, traces, tokenizers, steps, labels, caches, strict=True):
            pieces, colours = _panel_content(trace, tok, step, sample, color_by, cache)
            done = " ✓" if step == trace.steps else ""
            panel.draw(pieces, colours, f"{label} · t = {now:.2f} s · step {step}/{trace.steps}{done}")
        return []

    return _save_gif(fig, update, len(frames), path, fps)


def step_scrubber(trace: Trace, tokenizer, sample: int = 0, color_by: str = "step"):
    """An ipywidgets slider over the steps with the rendered canvas below it. Returns the VBox;
    ``box.children[0]`` is the slider, ``box.children[1]`` the HTML it drives."""
    import ipywidgets as widgets

    slider = widgets.IntSlider(value=trace.steps, min=0, max=trace.steps, step=1, description="step",
                               continuous_update=True, layout=widgets.Layout(width="95%"))
    view = widgets.HTML(render_step(trace, trace.steps, tokenizer, sample, color_by))

    def on_change(change):
        view.value = render_step(trace, change["new"], tokenizer, sample, color_by)

    slider.observe(on_change, names="value")
    return widgets.VBox([slider, view])
