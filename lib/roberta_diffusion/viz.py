"""Seeing a generation: pure renders of one step (HTML or text) and of several runs on one wall clock, a
terminal printer, and GIFs (one run, or diffusion vs autoregressive side by side on a shared clock) laid out
by ``layout`` so that every token shows.

``render_step`` / ``render_clock`` are pure and are what the tests and the widgets call; the widgets
(``workbench.panel``: ``step_scrubber``, ``generation_panel``, ``clock_panel``) only wire controls to them.
"""

from __future__ import annotations

import html as html_lib
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib import colormaps
from matplotlib.animation import FuncAnimation, PillowWriter

from .layout import MASK_GLYPH, Board
from .paths import atomic_path
from .trace import Trace, masked_share


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


def render_step(trace: Trace, step: int, tokenizer, sample: int = 0, color_by: str = "step", label: str | None = None,
                clock: float | None = None) -> str:
    """HTML of the canvas at ``step``: pinned text bold, generated tokens coloured, masks grey. The header is
    ``step_title``'s (``label`` names the run, ``clock`` is a shared wall-clock time to show)."""
    _check_step(trace, step)
    ids = trace.ids[step, sample]
    pieces = token_pieces(tokenizer, ids, trace.mask_token_id)
    colours = step_colours(trace, step, sample, color_by)
    spans = []
    for piece, colour, token, attended, pinned in zip(pieces, colours, ids.tolist(), trace.attention[sample].tolist(),
                                                      trace.pinned[sample].tolist(), strict=True):
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
    header = html_lib.escape(step_title(trace, step, label, clock))
    return (f'<div class="rd-step" data-step="{step}" style="font-family:monospace;white-space:pre-wrap">'
            f'<b>{header}</b><br>{"".join(spans)}</div>')


def render_clock(traces: list[Trace], tokenizers: list, now: float, labels: list[str] | None = None,
                 sample: int = 0, color_by: str = "step") -> str:
    """HTML of several runs side by side at wall-clock time ``now``: each at the step it had reached then."""
    labels = labels or [t.kind for t in traces]
    cells = [f'<div style="flex:1;min-width:0">{render_step(t, step_at(t, now), tok, sample, color_by, label, now)}</div>'
             for t, tok, label in zip(traces, tokenizers, labels, strict=True)]
    return f'<div class="rd-clock" style="display:flex;gap:1.5em">{"".join(cells)}</div>'


def _check_step(trace: Trace, step: int) -> None:
    if not 0 <= step <= trace.steps:
        raise ValueError(f"step={step} is outside 0..{trace.steps}")


def print_progress(tokenizer, mask_id: int, total_steps: int, every: int = 1, stream=None, generated=None):
    """An ``on_step`` callback that prints the canvas after each step (every ``every`` steps).

    ``generated``: ``[L]`` bool of the positions the sampler fills (or a function returning it, called at the
    first step, after the sampler has checked its arguments); the share printed is then ``Trace.masked_share``'s,
    the one the GIF and the slider show. Without it, the share is of the whole canvas, prompt included."""
    stream = stream or sys.stdout
    state = {"generated": generated}

    def on_step(step: int, ids: torch.Tensor) -> None:
        if step % every and step != total_steps:
            return
        free = state["generated"]
        if callable(free):
            free = state["generated"] = free()
        if free is None:
            free = torch.ones_like(ids[0], dtype=torch.bool)
        share = float(masked_share(ids[0], free.to(ids.device), mask_id))
        text = "".join(token_pieces(tokenizer, ids[0], mask_id)).strip()
        print(f"--- step {step}/{total_steps} · {share:.0%} masked", file=stream)
        print(text, file=stream, flush=True)

    return on_step


def _frame_steps(n_steps: int, max_frames: int | None) -> list[int]:
    if max_frames is None or n_steps + 1 <= max_frames:
        return list(range(n_steps + 1))
    picks = torch.linspace(0, n_steps, max_frames).round().long().unique().tolist()
    return picks


def _panel_content(trace, tokenizer, step, sample, color_by, cache):
    att = trace.attention[sample].bool()
    pieces = token_pieces(tokenizer, trace.ids[step, sample], trace.mask_token_id, cache)
    colours = step_colours(trace, step, sample, color_by)
    return [p for p, a in zip(pieces, att, strict=True) if a], [c for c, a in zip(colours, att, strict=True) if a]


def _save_gif(board: Board, update, n_frames: int, path, fps: float) -> Path:
    try:
        with atomic_path(path) as tmp:  # no half-written GIF under the final name
            FuncAnimation(board.fig, update, frames=n_frames, blit=False).save(tmp, writer=PillowWriter(fps=fps))
    finally:
        plt.close(board.fig)
    return Path(path)


def step_title(trace: Trace, step: int, label: str | None = None, clock: float | None = None) -> str:
    """A panel's title: what ran, the step, the masked share (``Trace.masked_share``) and the time."""
    share = float(trace.masked_share()[step])
    done = " ✓" if step == trace.steps else ""
    when = f"t = {clock:.2f} s" if clock is not None else f"{sum(trace.step_times[:step]):.2f} s"
    return f"{label or trace.kind} · step {step}/{trace.steps}{done} · {share:.0%} masked · {when}"


def animation_board(trace: Trace, tokenizer, sample: int = 0, color_by: str = "step",
                    max_frames: int | None = None) -> tuple[Board, list[int], callable]:
    """The figure ``animate`` writes, already sized for every frame: ``(board, steps, draw)``, where
    ``draw(frame)`` draws frame ``frame`` (of ``steps``) and returns its text artists."""
    steps = _frame_steps(trace.steps, max_frames)
    board, cache = Board(1, panel_width=9.0, font_size=9.0, dpi=90), {}

    def content(step):
        return [_panel_content(trace, tokenizer, step, sample, color_by, cache)], [step_title(trace, step)]

    board.fit(content(step) for step in steps)
    return board, steps, lambda frame: board.draw(*content(steps[frame]))


def animate(trace: Trace, tokenizer, path, sample: int = 0, color_by: str = "step", fps: float = 2.0,
            max_frames: int | None = None) -> Path:
    """GIF of one generation, one frame per step (``max_frames`` subsamples long AR traces)."""
    board, steps, draw = animation_board(trace, tokenizer, sample, color_by, max_frames)
    return _save_gif(board, draw, len(steps), path, fps)


def step_at(trace: Trace, now: float) -> int:
    """The last step ``trace`` had finished ``now`` seconds into its run (its steps' own wall times)."""
    # float64: in float32 the rounded end of a clock can fall just short of a run's own cumulative time, and
    # the last frame would then not show that run finished
    done = torch.tensor([0.0] + list(trace.step_times), dtype=torch.float64).cumsum(0)
    return int((done <= now + 1e-12).sum().item()) - 1


def compare_frames(traces: list[Trace], n_frames: int) -> list[tuple[float, list[int]]]:
    """Shared clock: ``n_frames`` times from 0 to the slowest run's end; at each, every trace's latest step."""
    end = max(t.total_time for t in traces)
    clock = torch.linspace(0, end, n_frames, dtype=torch.float64).tolist()
    return [(now, [step_at(t, now) for t in traces]) for now in clock]


def comparison_board(traces: list[Trace], tokenizers: list, labels: list[str] | None = None, sample: int = 0,
                     n_frames: int = 40, color_by: str = "step") -> tuple[Board, list, callable]:
    """The figure ``animate_comparison`` writes, sized for every frame: ``(board, frames, draw)``."""
    labels = labels or [t.kind for t in traces]
    frames = compare_frames(traces, n_frames)
    board = Board(len(traces), panel_width=6.5, font_size=8.0, dpi=80)
    caches = [{} for _ in traces]

    def content(frame):
        now, steps = frames[frame]
        parts = [_panel_content(t, tok, step, sample, color_by, cache)
                 for t, tok, step, cache in zip(traces, tokenizers, steps, caches, strict=True)]
        titles = [step_title(t, step, label, now) for t, step, label in zip(traces, steps, labels, strict=True)]
        return parts, titles

    board.fit(content(i) for i in range(len(frames)))
    return board, frames, lambda frame: board.draw(*content(frame))


def animate_comparison(traces: list[Trace], tokenizers: list, path, labels: list[str] | None = None,
                       sample: int = 0, n_frames: int = 40, fps: float = 8.0, color_by: str = "step") -> Path:
    """Side-by-side GIF on one wall clock: each panel shows the step its run had reached at that time."""
    board, frames, draw = comparison_board(traces, tokenizers, labels, sample, n_frames, color_by)
    return _save_gif(board, draw, len(frames), path, fps)
