"""roberta-diffusion: generate | ar | compare | finetune | pipeline | eval.

Errors in what the user asked for (OS errors included) print one ``error:`` line and exit with status 2; nothing
is written then. Arguments and output paths are checked before any model loads; outputs are staged and moved
into place together only when the whole command succeeded. ``--debug`` shows the traceback as well.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

import yaml
from roberta_diffusion import defaults, paths, threads
from roberta_diffusion.policies import POLICIES
from roberta_diffusion.sampling import Sampling

from . import checks, commands, generate
from .runs import RunFailed

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
                   help=f"which masked positions each step commits: {' | '.join(POLICIES)} (redraw: the original "
                        "project's decoder)")
    p.add_argument("--schedule", default=readable.schedule, help="how the masked share falls: linear | cosine")
    p.add_argument("--semi-ar-block", "--block-size", action=checks.Store, type=int, default=readable.semi_ar_block,
                   help="fill the canvas this many free positions at a time (semi-autoregressive)")
    p.add_argument("--threshold", type=float, default=readable.threshold, help="confidence bar of the threshold policy")
    p.add_argument("--infill", action="store_true", help="treat PROMPT as a text with <mask> / <mask*N> spans to fill")
    for rule in (r for r in POLICIES.values() if r.knob):  # each policy's own knob, refused under another policy
        p.add_argument(f"--{rule.knob.replace('_', '-')}", type=float, default=None,
                       help=f"policy {rule.name}: {rule.summary} (default: {rule.knob_default:g} under {rule.name})")
    p.add_argument("--candidates", type=int, default=1,
                   help="twin-guided: draw this many texts in one batch and keep the one the guide prefers")
    p.add_argument("--pick", default="likelihood", help="twin-guided: likelihood (best of N) | importance (resampled)")
    p.add_argument("--corrections", type=int, default=0,
                   help="twin-guided: rounds in which the guide points at the tokens that fit worst and the masked LM "
                        "redraws them in context (each round: two forward passes)")
    p.add_argument("--correction-share", type=float, default=None,
                   help="twin-guided: the share of the generated tokens one correction round redraws (default: 0.1)")
    p.add_argument("--guide", help="twin-guided: causal LM sharing the vocabulary (default: the shipped GPT-2 twin)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="roberta-diffusion", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="on an error, show the traceback too (also "
                        "accepted after the subcommand)")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="diffusion generation with a masked LM")
    _sampling_args(gen)
    _diffusion_args(gen)
    gen.set_defaults(handler=generate.handler("mlm"))
    ar = sub.add_parser("ar", help="autoregressive baseline with a causal LM")
    _sampling_args(ar)
    ar.add_argument("--model", help="causal LM: folder or hub name (default: the shipped baseline)")
    ar.set_defaults(handler=generate.handler("ar"))
    cmp = sub.add_parser("compare", help="both, side by side, with timings")
    _sampling_args(cmp)
    _diffusion_args(cmp)
    cmp.add_argument("--ar-model", help="causal LM for the baseline (default: the shipped baseline)")
    cmp.set_defaults(handler=generate.run_compare)

    commands.add_subcommands(sub)
    add_threads_flag(parser)  # here too, not only in run: a command line recorded with --threads parses back
    return parser


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
