"""``roberta-diffusion``: generate | ar | compare | finetune | pipeline | eval.

Errors in what the user asked for (OS errors included) print one ``error:`` line and exit with status 2; nothing
is written then. Arguments and output paths are checked before any model loads; outputs are staged and moved
into place together only when the whole command succeeded. ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import traceback
from pathlib import Path

import torch
import yaml
from roberta_diffusion import defaults, models, viz
from roberta_diffusion.canvas import check_room, infill_canvas, prefix_canvas, prompt_canvas
from roberta_diffusion.defaults import READABLE
from roberta_diffusion.models import default_models, load_causal_lm, load_mlm, load_tokenizer
from roberta_diffusion.sampler import generate_ar, generate_diffusion

from . import checks, commands
from .checks import prompt_text
from .runs import RunFailed, staged_files

EXIT_USAGE = 2
EXIT_BUG = 1  # an error the checks did not foresee: still one line, but not the user's fault


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one ``error:`` line (no usage block), like every other CLI error.
    Subparsers are made with the parent's class, so this covers them too."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", help="text to continue (asked for interactively when left out)")

    p.add_argument("--top-k", type=int, default=READABLE["top_k"], help=f"0 turns top-k off (default {READABLE['top_k']})")
    p.add_argument("--top-p", type=float, default=READABLE["top_p"], help=f"1 turns top-p off (default {READABLE['top_p']})")
    p.add_argument("--temperature", type=float, default=READABLE["temperature"])
    p.add_argument("--prefix-len", type=int, default=defaults.PREFIX_LEN,
                   help="pin this many tokens (<s> included), left-padding shorter prompts (default: the whole prompt)")
    p.add_argument("--max-len", type=int, default=defaults.MAX_LEN, help=f"canvas length in tokens (default {defaults.MAX_LEN})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--graph", action="store_true", help="CUDA: replay each step as a CUDA graph (same tokens, faster)")
    p.add_argument("--animation", type=Path, help="write a GIF of the steps here")
    p.add_argument("--json", type=Path, help="write the trace summary and text here")
    p.add_argument("--quiet", action="store_true", help="print only the final text")


def _diffusion_args(p):
    p.add_argument("--model", help="masked LM: folder or hub name (default: the shipped weights)")

    p.add_argument("--steps", type=int, default=READABLE["steps"])
    # --strategy: the flag's first name, kept as an alias
    p.add_argument("--policy", "--strategy", dest="policy", default=READABLE["policy"], help=f"random | seed-remask (the seed's) | confidence | "
                   f"margin | entropy | threshold (default {READABLE['policy']}, see README: Readable by default)")
    p.add_argument("--schedule", default=READABLE["schedule"], help="linear | cosine")
    p.add_argument("--block-size", type=int, default=None, help="fill the canvas block by block (semi-autoregressive)")
    p.add_argument("--threshold", type=float, default=defaults.THRESHOLD, help="confidence bar of the threshold policy")
    p.add_argument("--infill", action="store_true", help="treat PROMPT as a text with <mask> / <mask*N> spans to fill")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="roberta-diffusion", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback too (also "
                        "accepted after the subcommand)")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="diffusion generation with a masked LM")
    _sampling_args(gen)
    _diffusion_args(gen)
    gen.set_defaults(handler=_generator("mlm"))
    ar = sub.add_parser("ar", help="autoregressive baseline with a causal LM")
    _sampling_args(ar)
    ar.add_argument("--model", help="causal LM: folder or hub name (default: the shipped baseline)")
    ar.set_defaults(handler=_generator("ar"))
    cmp = sub.add_parser("compare", help="both, side by side, with timings")
    _sampling_args(cmp)
    _diffusion_args(cmp)
    cmp.add_argument("--ar-model", help="causal LM for the baseline (default: the shipped baseline)")
    cmp.set_defaults(handler=run_compare)

    commands.add_subcommands(sub)
    return parser


def _generator(kind: str):
    """The handler of ``generate`` (kind "mlm") or ``ar``: ``run_generate``, exit status 0."""
    def handler(args) -> int:
        run_generate(args, kind)
        return 0
    return handler


def _read_prompt(prompt: str | None) -> str:
    if prompt is not None:
        if not prompt.strip():
            raise ValueError("the prompt is empty: give some text for the model to continue")
        return prompt_text(prompt)
    try:
        if sys.stdin is not None and sys.stdin.isatty():
            return prompt_text(input("Prompt: "))
        text = sys.stdin.read() if sys.stdin is not None else ""
    except UnicodeDecodeError:
        raise ValueError("the prompt on stdin is not valid UTF-8: pass text in UTF-8") from None
    if not text.strip():
        raise ValueError("no prompt given: pass it as an argument, e.g. roberta-diffusion generate \"The city\"")
    return prompt_text(text.strip(), "the prompt on stdin")


def _load(kind: str, name: str | None, device):
    if name is None:
        model, tokenizer = default_models(kind, say=lambda m: print(m, file=sys.stderr))
        return model.to(device), tokenizer
    loader = load_mlm if kind == "mlm" else load_causal_lm
    return loader(name, device=device), load_tokenizer(name)


def check_sampling(args, kind: str) -> None:
    """Every flag of generate / ar / compare, before a model is loaded (``kind``: "mlm", "ar" or "compare")."""
    checks.output_path("--animation", args.animation, ".gif")
    checks.output_path("--json", args.json, ".json")
    checks.device("--device", args.device)
    checks.seed("--seed", args.seed)
    # ranges are the samplers' to check (their messages name the flag); they let inf and nan through
    checks.finite("--temperature", args.temperature)
    checks.finite("--top-p", args.top_p)
    checks.model_folder("--model", args.model)
    checks.model_folder("--ar-model", getattr(args, "ar_model", None))
    if args.prefix_len is not None and args.prefix_len >= args.max_len:
        raise ValueError(f"--prefix-len {args.prefix_len} must be smaller than --max-len {args.max_len}: nothing would "
                         "be generated")
    if kind == "ar":
        return
    checks.in_range("--steps", args.steps, 1)
    checks.finite("--threshold", args.threshold)
    if args.block_size is not None:
        checks.in_range("--block-size", args.block_size, 1)
    if kind == "compare" and args.infill:
        raise ValueError("compare --infill: the autoregressive baseline only continues a prompt and cannot fill "
                         "gaps; use generate --infill for infilling")
    if not args.infill and args.prefix_len is not None and 0 < args.prefix_len < args.max_len \
            and args.steps > args.max_len - args.prefix_len:
        raise ValueError(f"--steps {args.steps} is more than the {args.max_len - args.prefix_len} positions to fill "
                         f"(--max-len {args.max_len} - --prefix-len {args.prefix_len}): use at most that many steps")


def _check_steps(canvas, steps: int, what: str) -> None:
    free = int((~canvas.fixed).sum(dim=1).max())
    if 0 < free < steps:
        raise ValueError(f"--steps {steps} is more than the {free} {what}: use at most {free} steps")


def run_generate(args, kind: str):
    check_sampling(args, kind)
    prompt = _read_prompt(args.prompt)
    if kind == "mlm" and args.infill:
        checks.infill_masks(prompt, args.max_len)
    device = models.pick_device(args.device)  # through the module: tests stand in for it
    model, tokenizer = _load(kind, args.model, device)
    checks.canvas_fits("--max-len", args.max_len, model)
    common = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed, graph=args.graph)
    mask_id = tokenizer.mask_token_id if kind == "mlm" else -1
    if kind == "mlm":
        total = args.steps
        if args.infill:
            start = infill_canvas(tokenizer, prompt)
            _check_steps(start, args.steps, "masked positions of the infill text")
        else:  # the whole prompt is pinned: a prompt that fills the canvas is refused here
            start = prompt_canvas(tokenizer, prompt, args.prefix_len, args.max_len)
            _check_steps(start, args.steps, f"positions to fill (--max-len {args.max_len} minus the "
                                            f"{int(start.fixed[0].sum())}-token prompt)")
        free = ~start.fixed[0] & start.attention[0].bool()  # the positions the sampler fills (the masked share)
        progress = None if args.quiet else viz.print_progress(tokenizer, mask_id, total, generated=free)
        if args.infill:
            trace = generate_diffusion(model, tokenizer, canvas=start, steps=args.steps,
                                       policy=args.policy, schedule=args.schedule, block_size=args.block_size,
                                       threshold=args.threshold, on_step=progress, **common)
        else:
            trace = generate_diffusion(model, tokenizer, prompt, steps=args.steps, policy=args.policy,
                                       schedule=args.schedule, prefix_len=args.prefix_len, max_len=args.max_len,
                                       block_size=args.block_size, threshold=args.threshold, on_step=progress, **common)
    else:

        width = prefix_canvas(tokenizer, prompt, args.prefix_len).ids.shape[1]  # the whole prompt, never cut
        check_room(width, args.max_len)
        total = args.max_len - width
        free = torch.arange(args.max_len) >= width
        progress = None if args.quiet else viz.print_progress(tokenizer, mask_id, total, every=max(1, total // 8),
                                                              generated=free)
        trace = generate_ar(model, tokenizer, prompt, max_len=args.max_len, prefix_len=args.prefix_len,
                            on_step=progress, **common)
    _report(trace, tokenizer, args)
    return trace, tokenizer


def _report(trace, tokenizer, args):

    # per step as well as per token: a diffusion step costs the same for 6 new tokens as for 240
    print(f"=== {trace.kind}: {trace.new_tokens} new tokens in {trace.steps} steps, {trace.total_time:.3f} s "
          f"({1000 * trace.total_time / max(1, trace.steps):.1f} ms a step, {_rate(trace.tokens_per_second)} tokens/s)")
    print(trace.texts[0])
    with staged_files({"animation": args.animation, "json": args.json}) as tmp:  # both files, or neither
        if args.animation:
            viz.animate(trace, tokenizer, tmp["animation"], max_frames=None if trace.kind == "diffusion" else 60)
        if args.json:
            tmp["json"].write_text(json.dumps({**trace.summary(), "text": trace.texts[0]}, indent=2))
    if args.animation:
        print(f"animation: {args.animation}")


def _rate(per_second: float) -> str:
    """Three significant figures without an exponent: "1.46" for a six-token fill, not "1"; "1520", not "1.52e+03"."""
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.3g}"


def run_compare(args):
    check_sampling(args, "compare")
    prompt = _read_prompt(args.prompt)
    device = models.pick_device(args.device)  # through the module: tests stand in for it
    mlm, mlm_tok = _load("mlm", args.model, device)
    causal, ar_tok = _load("ar", args.ar_model, device)
    for model in (mlm, causal):
        checks.canvas_fits("--max-len", args.max_len, model)
    common = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                  prefix_len=args.prefix_len, max_len=args.max_len, graph=args.graph)
    diff = generate_diffusion(mlm, mlm_tok, prompt, steps=args.steps, policy=args.policy, schedule=args.schedule,
                              block_size=args.block_size, threshold=args.threshold, **common)
    ar = generate_ar(causal, ar_tok, prompt, **common)
    width = 60
    left = textwrap.wrap(diff.texts[0], width) or [""]
    right = textwrap.wrap(ar.texts[0], width) or [""]
    print(f"{'DIFFUSION (' + diff.settings['policy'] + ')':<{width}} | AUTOREGRESSIVE")
    for i in range(max(len(left), len(right))):
        print(f"{left[i] if i < len(left) else '':<{width}} | {right[i] if i < len(right) else ''}")
    rows = [("wall time (s)", f"{diff.total_time:.3f}", f"{ar.total_time:.3f}"),
            ("steps / forward passes", f"{diff.forward_passes}", f"{ar.forward_passes}"),
            ("new tokens", f"{diff.new_tokens}", f"{ar.new_tokens}"),
            ("ms / step", f"{1000 * diff.total_time / max(1, diff.steps):.1f}",
             f"{1000 * ar.total_time / max(1, ar.steps):.1f}"),
            ("tokens / s", _rate(diff.tokens_per_second), _rate(ar.tokens_per_second))]
    print(f"\n{'':<24}{'diffusion':>12}{'AR':>12}")
    for name, a, b in rows:
        print(f"{name:<24}{a:>12}{b:>12}")

    with staged_files({"animation": args.animation, "json": args.json}) as tmp:  # both files, or neither
        if args.animation:
            viz.animate_comparison([diff, ar], [mlm_tok, ar_tok], tmp["animation"], labels=["diffusion", "autoregressive"])
        if args.json:
            tmp["json"].write_text(json.dumps({"diffusion": {**diff.summary(), "text": diff.texts[0]},
                                               "ar": {**ar.summary(), "text": ar.texts[0]}}, indent=2))
    if args.animation:
        print(f"animation: {args.animation}")


AS_FLAGS = {"lower max_len": "lower --max-len", "set graph=False": "drop --graph", "set compile=False": "drop --compile",
            "use device='cpu'": "use --device cpu"}


def error_line(err: BaseException) -> tuple[str, int]:
    """The one ``error:`` line for ``err`` and the exit status: 2 for bad input and OS errors (a full disk, a
    read-only folder), 1 for anything the checks did not foresee."""
    if isinstance(err, RunFailed):
        text, status = str(err), EXIT_BUG
    elif isinstance(err, OSError) and err.strerror and err.filename:
        text, status = f"{err.filename}: {err.strerror} (check the path, its permissions and the free space)", EXIT_USAGE
    elif isinstance(err, (ValueError, OSError, yaml.YAMLError)):
        text, status = str(err), EXIT_USAGE
    elif isinstance(err, MemoryError):
        text, status = "out of memory: lower --max-len, --steps or the batch size", EXIT_USAGE
    else:
        text, status = f"unexpected {type(err).__name__}: {err} (rerun with --debug for the traceback)", EXIT_BUG
    text = " ".join(str(text).split())
    for argument, flag in AS_FLAGS.items():  # the library names its own arguments; here they are flags
        text = text.replace(argument, flag)
    return "error: " + (text if len(text) <= 500 else text[:500] + " ..."), status


def run(parser: argparse.ArgumentParser, handler, argv: list[str] | None = None) -> int:
    """Parse ``argv`` with ``parser`` and return ``handler(args)`` (or 0): every error becomes one ``error:`` line
    and its status (``error_line``). ``--debug`` anywhere on the line (so it can be added to a failing command's
    end) shows the traceback too. The benchmark tools run through this frame as well."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = parser.parse_args([a for a in argv if a != "--debug"])
    try:
        return handler(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as err:  # noqa: BLE001 - every error becomes one line; --debug shows the traceback
        if debug:
            traceback.print_exc()
        line, status = error_line(err)
        print(line, file=sys.stderr)
        return status


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), lambda args: args.handler(args), argv)


if __name__ == "__main__":
    sys.exit(main())
