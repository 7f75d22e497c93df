"""roberta-diffusion: generate | ar | compare | finetune | pipeline | eval.

Errors in what the user asked for (OS errors included) print one ``error:`` line and exit with status 2; nothing
is written then. Arguments and output paths are checked before any model loads; outputs are staged and moved
into place together only when the whole command succeeded. ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import torch
import yaml
from roberta_diffusion import defaults, models, paths, policies, threads, viz
from roberta_diffusion.canvas import check_room, infill_canvas, prefix_canvas, prompt_canvas
from roberta_diffusion.evaluate import ar_knobs
from roberta_diffusion.guided import PICKS, generate_guided
from roberta_diffusion.models import default_models, load_causal_lm, load_mlm, load_tokenizer
from roberta_diffusion.sampler import POLICIES, generate_ar, generate_diffusion
from roberta_diffusion.sampling import Sampling

from . import checks, commands
from .checks import prompt_text
from .runs import RunFailed, staged_files

EXIT_USAGE = 2
EXIT_BUG = 1  # an error the checks did not foresee: still one line, but not the user's fault
EXIT_PIPE = 141  # what a shell reports for a Unix tool stopped by a closed pipe (128 + SIGPIPE)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's help ends with its default, unless there is none to show (None, an off flag) or the help
    already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.default is False \
                or not action.option_strings:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with its errors as one ``error:`` line (no usage block), like every other CLI error, and the
    defaults in the help. Subparsers are made with the parent's class, so this covers them too."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def thread_count(text: str) -> int:
    """``--threads``'s type: a whole number, 1 or more."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of torch threads, 1 or more")
    return n


NO_THREADS = {"pipeline"}  # its notebooks run in their own kernels and set their threads there (cpu_threads)


def add_threads_flag(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` on every command of ``parser`` (the CLI's and the benchmark tools'), for ``run`` to apply."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for sub in subparsers:
        for name, child in sub.choices.items():
            if name not in NO_THREADS:
                add_threads_flag(child)
    if not subparsers and "--threads" not in parser._option_string_actions:
        parser.add_argument("--threads", type=thread_count, default=None,
                            help="torch threads (default: the cores other processes leave free, measured at the "
                                 "start, at least 1; OMP_NUM_THREADS when set)")


SPECIAL_TEXT = ("special-token text in the prompt (<s>, </s>, <pad>, <unk>, <mask>: the model would read it as "
                "a control token, not as text) is refused; with --infill, <mask> and <mask*N> mark the blanks")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="?", help="text to continue (asked for interactively when left out); "
                   + SPECIAL_TEXT)
    readable = Sampling.readable()
    p.add_argument("--top-k", type=int, default=readable.top_k, help="sample among the k likeliest tokens; 0 turns top-k off")
    p.add_argument("--top-p", type=float, default=readable.top_p, help="sample within this probability mass; 1 turns top-p off")
    p.add_argument("--temperature", type=float, default=readable.temperature, help="above 0; lower is surer, higher more varied")
    p.add_argument("--prefix-len", type=int, default=defaults.PREFIX_LEN,
                   help="pin this many tokens (<s> included), left-padding shorter prompts (default: the whole prompt)")
    p.add_argument("--max-len", type=int, default=defaults.MAX_LEN, help="canvas length in tokens, prompt included")
    p.add_argument("--seed", type=int, default=readable.seed, help="random seed: the same seed gives the same text")
    p.add_argument("--device", default="auto", help="auto (CUDA > MPS > CPU) | cpu | cuda | mps")
    p.add_argument("--graph", action="store_true", help="CUDA: replay each step as a CUDA graph (same tokens, faster)")
    p.add_argument("--animation", type=Path, help="write a GIF of the steps here")
    p.add_argument("--json", type=Path, help="write the trace summary and text here")
    p.add_argument("--quiet", action="store_true", help="print only the final text")


def _diffusion_args(p):
    p.add_argument("--model", help="masked LM: folder or hub name (default: the shipped weights)")
    readable = Sampling.readable()
    p.add_argument("--fast", action="store_true",
                   help=f"the distilled few-step model ({paths.portable(str(paths.SHIPPED_FAST))}) at "
                        f"{Sampling.distilled().steps} steps unless --steps says otherwise")
    p.add_argument("--steps", type=int, default=None,
                   help=f"denoising steps (forward passes); lowered, with a note, to the number of positions to fill "
                        f"(default: {readable.steps}); {Sampling.distilled().steps} with --fast")
    p.add_argument("--policy", "--strategy", action=checks.Store, default=readable.policy,
                   help=f"which masked positions each step commits: {' | '.join(POLICIES)} (seed-remask: the seed's "
                        "decoder)")
    p.add_argument("--schedule", default=readable.schedule, help="how the masked share falls: linear | cosine")
    p.add_argument("--semi-ar-block", "--block-size", action=checks.Store, type=int, default=readable.semi_ar_block,
                   help="fill the canvas this many free positions at a time (semi-autoregressive)")
    p.add_argument("--threshold", type=float, default=readable.threshold, help="confidence bar of the threshold policy")
    p.add_argument("--infill", action="store_true", help="treat PROMPT as a text with <mask> / <mask*N> spans to fill")
    for rule in (r for r in policies.POLICIES.values() if r.knob):  # each policy's own knob, refused under another policy
        p.add_argument(f"--{rule.knob.replace('_', '-')}", type=float, default=None,
                       help=f"policy {rule.name}: {rule.summary} (default: {rule.knob_default:g} under {rule.name})")
    p.add_argument("--candidates", type=int, default=1,
                   help="twin-guided: draw this many texts in one batch and keep the one the guide prefers")
    p.add_argument("--pick", default="likelihood", help="twin-guided: likelihood (best of N) | importance (resampled)")
    p.add_argument("--guide", help="twin-guided: causal LM sharing the vocabulary (default: the shipped GPT-2 twin)")


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
    add_threads_flag(parser)  # here too, not only in run: a command line recorded with --threads parses back
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


def pick_model(args) -> None:
    """``--fast``: the distilled model and its step count; otherwise the readable default's steps."""
    start = Sampling.distilled() if args.fast else Sampling.readable()
    if args.fast:
        if args.model:
            raise ValueError(f"--fast picks the distilled model, --model {args.model} another: keep one of them")
        args.model = str(paths.SHIPPED_FAST)
    if args.steps is None:
        args.steps = start.steps


def check_sampling(args, kind: str) -> Sampling | None:
    """Every flag of generate / ar / compare, before a model is loaded (``kind``: "mlm", "ar" or "compare"); the
    diffusion kinds' ``Sampling``."""
    if kind != "ar":
        pick_model(args)
    checks.output_path("--animation", args.animation, ".gif")
    checks.output_path("--json", args.json, ".json")
    checks.device("--device", args.device)
    checks.seed("--seed", args.seed)
    # named as flags here, before a model loads, for ar too (the rest of the ranges are Sampling's)
    checks.finite("--temperature", args.temperature)
    checks.finite("--top-p", args.top_p)
    checks.model_folder("--model", args.model)
    checks.model_folder("--ar-model", getattr(args, "ar_model", None))
    if args.prefix_len is not None and args.prefix_len >= args.max_len:
        raise ValueError(f"--prefix-len {args.prefix_len} must be smaller than --max-len {args.max_len}: nothing would "
                         "be generated")
    if kind == "ar":
        return None
    sampling = checks.sampling_from(args)
    checks.in_range("--candidates", args.candidates, 1)
    if args.pick not in PICKS:
        raise ValueError(f"--pick {args.pick!r}: choose one of {', '.join(PICKS)}")
    if args.candidates == 1 and args.guide:
        raise ValueError("--guide without --candidates N (N > 1) guides nothing: add --candidates 8")
    checks.model_folder("--guide", args.guide)
    if kind == "compare" and (args.candidates > 1 or args.guide):
        raise ValueError("compare --candidates: twin-guided selection reads the AR twin, which compare races against; "
                         "use generate --candidates N")
    if kind == "compare" and args.infill:
        raise ValueError("compare --infill: the autoregressive baseline only continues a prompt and cannot fill "
                         "gaps; use generate --infill for infilling")
    return sampling


def refuse_special_text(prompt: str, tokenizer, infill: bool = False) -> None:
    """Refuse a prompt holding a special token's text (``</s>``, ``<mask>``, ...): the tokenizer turns it into the
    control token, so ``</s>`` would end the text and ``<mask>`` open a blank no one asked for. ``--infill``
    texts keep ``<mask>``, their blanks (``<mask*N>`` is expanded before tokenizing)."""
    allowed = {tokenizer.mask_token} if infill else set()
    found = [t for t in tokenizer.all_special_tokens if t and t not in allowed and t in prompt]
    if found:
        fix = "use --infill to mark blanks with <mask>" if found[0] == tokenizer.mask_token else "leave it out"
        raise ValueError(f"the prompt holds {found[0]!r}, which the model reads as its special token, not as text: "
                         f"{fix} (special-token text is refused, see --help)")


def clamp_steps(canvas, steps: int, what: str) -> int:
    """``steps``, or the number of positions to fill when that is smaller, said on stderr: a step past one a
    position would commit nothing (the sampler would run it as an empty forward pass). One rule for
    ``--infill`` and a prompt alike, so ``--steps 32`` fills a 12-token blank with 12 steps."""
    free = int((~canvas.pinned & canvas.attention.bool()).sum(dim=1).max())
    if 0 < free < steps:
        print(f"note: --steps {steps} lowered to {free}: there are only {free} {what}", file=sys.stderr)
        return free
    return steps


def run_generate(args, kind: str):
    sampling = check_sampling(args, kind)
    prompt = _read_prompt(args.prompt)
    if kind == "mlm" and args.infill:
        checks.infill_masks(prompt, args.max_len)
    device = models.pick_device(args.device)  # through the module: tests stand in for it
    model, tokenizer = _load(kind, args.model, device)
    refuse_special_text(prompt, tokenizer, infill=kind == "mlm" and args.infill)
    checks.canvas_fits("--max-len", args.max_len, model)
    mask_id = tokenizer.mask_token_id if kind == "mlm" else -1
    if kind == "mlm":
        if args.infill:
            start = infill_canvas(tokenizer, prompt)
            steps = clamp_steps(start, args.steps, "masked positions in the infill text")
        else:  # the whole prompt is pinned: a prompt that fills the canvas is refused here
            start = prompt_canvas(tokenizer, prompt, args.prefix_len, args.max_len)
            steps = clamp_steps(start, args.steps, f"positions to fill (--max-len {args.max_len} minus the "
                                                   f"{int(start.pinned[0].sum())}-token prompt)")
        free = ~start.pinned[0] & start.attention[0].bool()  # the positions the sampler fills (the masked share)
        sampling = replace(sampling, steps=steps)
        if not args.quiet:
            print(f"sampling: {sampling}")
            if args.fast:
                print(f"model: {paths.portable(args.model)} (--fast: the distilled few-step model)")
        progress = None if args.quiet else viz.print_progress(tokenizer, mask_id, steps, generated=free)
        knobs = dict(sampling=sampling, graph=args.graph, on_step=progress)
        if args.candidates > 1:
            guide, _ = _load("ar", args.guide, device)
            trace = generate_guided(model, guide, tokenizer, canvas=start, candidates=args.candidates, pick=args.pick,
                                    **knobs)
        elif args.infill:
            trace = generate_diffusion(model, tokenizer, canvas=start, **knobs)
        else:  # from the prompt, so the trace records the pinned width the library works out
            trace = generate_diffusion(model, tokenizer, prompt, prefix_len=args.prefix_len, max_len=args.max_len,
                                       **knobs)
    else:

        width = prefix_canvas(tokenizer, prompt, args.prefix_len).ids.shape[1]  # the whole prompt, never cut
        check_room(width, args.max_len)
        total = args.max_len - width
        free = torch.arange(args.max_len) >= width
        progress = None if args.quiet else viz.print_progress(tokenizer, mask_id, total, every=max(1, total // 8),
                                                              generated=free)
        trace = generate_ar(model, tokenizer, prompt, max_len=args.max_len, prefix_len=args.prefix_len,
                            on_step=progress, graph=args.graph, seed=args.seed, **ar_knobs(args))
    _report(trace, tokenizer, args)
    return trace, tokenizer


def _report(trace, tokenizer, args):
    if not args.quiet:  # --quiet: the final text alone, for pipes and scripts
        # per step as well as per token: a diffusion step costs the same for 6 new tokens as for 240
        print(f"=== {trace.kind}: {trace.new_tokens} new tokens in {trace.steps} steps, {trace.total_time:.3f} s "
              f"({1000 * trace.total_time / max(1, trace.steps):.1f} ms a step, {_rate(trace.tokens_per_second)} tokens/s)")
    print(trace.texts[0])
    with staged_files({"animation": args.animation, "json": args.json}) as tmp:  # both files, or neither
        if args.animation:
            viz.animate(trace, tokenizer, tmp["animation"], max_frames=None if trace.kind == "diffusion" else 60)
        if args.json:  # the threads too: a time means little without them
            tmp["json"].write_text(json.dumps({**_json_summary(trace), "torch_threads": torch.get_num_threads()},
                                              indent=2))
    if args.animation and not args.quiet:
        print(f"animation: {args.animation}")


def _rate(per_second: float) -> str:
    """Three significant figures without an exponent: "1.46" for a six-token fill, not "1"; "1520", not "1.52e+03"."""
    return f"{per_second:.0f}" if per_second >= 100 else f"{per_second:.3g}"


def _json_summary(trace) -> dict:
    """A trace's summary and text for ``--json``; a diffusion run's ``Sampling`` whole (``Sampling(**json["sampling"])``)."""
    whole = {"sampling": asdict(Sampling.of(trace.settings))} if trace.kind == "diffusion" else {}
    return {**trace.summary(), **whole, "text": trace.texts[0]}


def run_compare(args):
    sampling = check_sampling(args, "compare")
    prompt = _read_prompt(args.prompt)
    device = models.pick_device(args.device)  # through the module: tests stand in for it
    mlm, mlm_tok = _load("mlm", args.model, device)
    causal, ar_tok = _load("ar", args.ar_model, device)
    for tokenizer in (mlm_tok, ar_tok):
        refuse_special_text(prompt, tokenizer)
    for model in (mlm, causal):
        checks.canvas_fits("--max-len", args.max_len, model)
    common = dict(prefix_len=args.prefix_len, max_len=args.max_len, graph=args.graph)
    start = prompt_canvas(mlm_tok, prompt, args.prefix_len, args.max_len)
    steps = clamp_steps(start, args.steps, f"positions to fill (--max-len {args.max_len} minus the "
                                           f"{int(start.pinned[0].sum())}-token prompt)")
    sampling = replace(sampling, steps=steps)
    print(f"sampling: {sampling}")
    diff = generate_diffusion(mlm, mlm_tok, prompt, sampling, **common)
    ar = generate_ar(causal, ar_tok, prompt, seed=args.seed, **ar_knobs(args), **common)
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
            tmp["json"].write_text(json.dumps({"diffusion": _json_summary(diff), "ar": _json_summary(ar)}, indent=2))
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
    end) shows the traceback too. Every command gets ``--threads`` (``add_threads_flag``) and runs on
    ``threads.use``'s count; a closed stdout ends it quietly. The benchmark tools run through this frame as well."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    add_threads_flag(parser)
    args = parser.parse_args([a for a in argv if a != "--debug"])
    try:
        if hasattr(args, "threads"):
            threads.use(args.threads)
        status = handler(args) or 0
        sys.stdout.flush()  # a closed pipe must surface here, not in the interpreter's flush at exit
        return status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`... | head -2`): stop quietly, as Unix tools do; stdout now points nowhere, so
        # the interpreter's last flush cannot raise again
        _silence_stdout()
        return EXIT_PIPE
    except Exception as err:  # noqa: BLE001 - every error becomes one line; --debug shows the traceback
        if debug:
            traceback.print_exc()
        line, status = error_line(err)
        print(line, file=sys.stderr)
        return status


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # stdout replaced by an object without a file (tests)
        pass


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), lambda args: args.handler(args), argv)


if __name__ == "__main__":
    sys.exit(main())
