"""The data-constrained picture: held-out perplexity of the masked LM and of GPT-2 against epochs and against
training compute, read from the histories that ``train.train`` writes (``history.json`` + ``train_config.json``
of a shipped model, or ``config.json`` of a run folder).

Compute is the usual ``6 N D`` (N parameters, D training tokens) for both models, so that the two axes differ only
by a constant per model. A model that continued another (``init``) also gets the tokens its starting weights had
seen (``prior_tokens`` in its history), so a curve starts where its weights really were; the held-out points of
the runs before it (``earlier``: absolute tokens and bounds) are drawn too, so the curve is the whole path, and the
evaluations of earlier runs after the weights that were carried on (``branches``) are drawn dashed from there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogFormatter, LogFormatterSciNotation

from . import paths
from .history import History


def load_curve(folder: Path, label: str | None = None, prior_tokens: int | None = None) -> dict:
    """``{"label", "epochs", "flops", "ppl", "best"}`` of one training history; perplexity = exp(held-out bound).

    ``folder`` holds ``history.json`` and ``train_config.json`` (a shipped model) or ``config.json`` (a run).
    ``prior_tokens`` (default: the history's own ``prior_tokens``, else 0) shifts the run's points."""
    folder = Path(folder)
    history = History.load(folder / "history.json")
    config_file = folder / "train_config.json" if (folder / "train_config.json").exists() else folder / "config.json"
    config = json.loads(config_file.read_text())
    if not history.eval_bound:
        raise ValueError(f"{folder / 'history.json'} has no held-out bound (eval_bound): train it with this version")
    block_tokens = history.train_blocks * config["block_size"]
    tokens_per_step = config["batch_size"] * config["block_size"]
    prior_tokens = history.prior_tokens if prior_tokens is None else prior_tokens
    tokens = history.earlier["tokens"] + [prior_tokens + step * tokens_per_step for step in history.eval_step]
    ppl = [math.exp(b) for b in history.earlier["eval_bound"] + history.eval_bound]
    best = min(range(len(ppl)), key=ppl.__getitem__)

    def axes(points: list[int]) -> dict:
        return {"epochs": [t / block_tokens for t in points], "flops": [6 * history.parameters * t for t in points]}

    return {"label": label or config["objective"], "objective": config["objective"], **axes(tokens), "ppl": ppl,
            "best": {"epochs": tokens[best] / block_tokens, "ppl": ppl[best],
                     "flops": 6 * history.parameters * tokens[best]},
            "branches": [{**axes(b["tokens"]), "ppl": [math.exp(x) for x in b["eval_bound"]]}
                         for b in history.branches]}


def continued(before: History, before_config: dict) -> dict:
    """The lineage fields of a run that continued the weights another run exported (its best evaluation),
    from that run's history and config: ``prior_tokens``, the tokens those weights had seen; ``earlier``, the
    held-out points on their path (absolute tokens); ``branches``, the points of evaluations after the exported
    one (training that went on and was not carried forward), each from its branch point; ``discarded_tokens``, the
    training those branches cost."""
    if before.best_step is None:
        raise ValueError("the run to continue has no held-out evaluation (best_step is None): its weights have no "
                         "place on a curve; evaluate it (eval_every <= max_steps) or start the curve here")
    step_tokens = before_config["batch_size"] * before_config["block_size"]
    prior, best, earlier = before.prior_tokens, before.best_step, before.earlier
    points = [(step, prior + step * step_tokens, bound) for step, bound in zip(before.eval_step, before.eval_bound,
                                                                                strict=True)]
    kept = [(t, b) for step, t, b in points if step <= best]
    tail = [(t, b) for step, t, b in points if step >= best]
    branch = [{"tokens": [t for t, _ in tail], "eval_bound": [b for _, b in tail]}] if len(tail) > 1 else []
    return {"prior_tokens": prior + best * step_tokens,
            "earlier": {"tokens": earlier["tokens"] + [t for t, _ in kept],
                        "eval_bound": earlier["eval_bound"] + [b for _, b in kept]},
            "branches": before.branches + branch,
            "discarded_tokens": before.discarded_tokens + before.tokens - best * step_tokens}


def crossover(mlm: dict, ar: dict, axis: str = "flops") -> float | None:
    """The first ``axis`` value where the masked LM's perplexity is at or below the best GPT-2 reached by then
    (None if it never is within the two curves)."""
    for x, p in zip(mlm[axis], mlm["ppl"], strict=True):
        reached = [q for y, q in zip(ar[axis], ar["ppl"], strict=True) if y <= x]
        if reached and p <= min(reached):
            return x
    return None


def plot_data_constrained(curves: list[dict], path: Path | None = None, title: str = "", ymax: float | None = None):
    """Two panels, perplexity against epochs and against training FLOPs (log), the best point of each curve
    marked; saved to ``path`` when given. Returns the figure.

    ``ymax`` (default: 3 x the worst best point) keeps a diverged run from squashing the rest; a curve that leaves
    the frame says how high it went, where it leaves."""
    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 40, 60, 100 rather than 6 x 10^1

    ymax = ymax or 3 * max(curve["best"]["ppl"] for curve in curves)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for curve in curves:
        style = "o-" if curve["objective"] == "mlm" else "s-"
        for ax, axis in zip(axes, ("epochs", "flops"), strict=True):
            line, = ax.plot(curve[axis], curve["ppl"], style, ms=3, label=curve["label"])
            ax.plot([curve["best"][axis]], [curve["best"]["ppl"]], "*", ms=12, color=line.get_color())
            for branch in curve.get("branches", []):  # training after the weights carried forward: dashed
                ax.plot(branch[axis], branch["ppl"], "--", lw=1, color=line.get_color())
            for points in [curve, *curve.get("branches", [])]:
                off_scale(ax, points[axis], points["ppl"], ymax, line.get_color())
    for ax, xlabel in zip(axes, ("epochs of the training text", "training compute, 6 N D (FLOPs)"), strict=True):
        ax.set(xlabel=xlabel, ylabel="held-out perplexity (MLM: ELBO bound)", yscale="log", ylim=(None, ymax))
        ax.yaxis.set_major_formatter(plain)
        # minor ticks (20, 30, ... 90 between decades) labelled only where there is room: all of them up to 0.8
        # decade (the shipped pair's 40 to 160), 2, 3, 4, 6 x 10^n up to 1.5, none beyond; labelling every one put
        # them on top of each other when a run's tiny model stretched the axis over decades
        ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.8)))
        ax.grid(alpha=0.3, which="both")
    axes[1].set_xscale("log")
    axes[1].xaxis.set_minor_formatter(WideMinorLabels())
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


class WideMinorLabels(LogFormatterSciNotation):
    """Minor labels of a log axis whose labels are wide (2 x 10^16): only at 2 and 5 x 10^n, and only where the
    axis spans under a decade (beyond, the 10^n labels suffice). matplotlib's own choice, 2, 3, 4 and 6 x 10^n,
    printed 3 x 10^15 and 4 x 10^15 over each other on a span of 0.7 decade."""

    def __init__(self):
        super().__init__(labelOnlyBase=False, minor_thresholds=(math.inf, math.inf))  # the choice is made below

    def __call__(self, x, pos=None):
        low, high = sorted(self.axis.get_view_interval())
        mantissa = round(x / 10 ** math.floor(math.log10(x) + 1e-9)) if x > 0 else 0
        if low <= 0 or math.log10(high / low) > 1 or mantissa not in (2, 5):
            return ""
        return super().__call__(x, pos)


def off_scale(ax, xs: list[float], ppl: list[float], ymax: float, color) -> None:
    """Where a line first leaves the frame, say how high it went."""
    above = [x for x, p in zip(xs, ppl, strict=True) if p > ymax]
    if above:
        ax.annotate(f"off the scale from here: up to {max(ppl):,.0f}", (above[0], ymax), xytext=(-8, -14),
                    textcoords="offset points", ha="right", fontsize=8, color=color)


def shipped_and_run(run_dir: Path, objectives: list[str], path: Path):
    """Notebook 02's figure: the shipped pair's curves and this run's, with the best points and the crossover."""
    shipped = [load_curve(paths.SHIPPED_MLM, "shipped diffusion RoBERTa"),
               load_curve(paths.SHIPPED_AR, "shipped GPT-2 twin")]
    this_run = [load_curve(Path(run_dir) / objective, f"this run: {objective}") for objective in objectives]
    figure = plot_data_constrained(shipped + this_run, path)
    mlm, ar = shipped[0]["best"], shipped[1]["best"]
    print(f"shipped: masked LM {mlm['ppl']:.1f} at {mlm['epochs']:.0f} epochs, GPT-2 {ar['ppl']:.1f} at "
          f"{ar['epochs']:.0f} epochs; crossover (FLOPs): {crossover(shipped[0], shipped[1])}")
    return figure


def plot_losses(histories: dict[str, History], path: Path):
    """Train and held-out loss against steps, one panel per objective; saved to ``path``. Returns the figure."""
    fig, axes = plt.subplots(1, len(histories), figsize=(5.5 * len(histories), 3.5), squeeze=False)
    for ax, (objective, h) in zip(axes[0], histories.items(), strict=True):
        ax.plot(h.step, h.train_loss, label="train")
        ax.plot(h.eval_step, h.eval_loss, "o-", label="held-out")
        ax.set(title=f"{objective} loss", xlabel="step", ylabel="cross-entropy (nats)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig
