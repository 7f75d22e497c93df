"""The generate, ar and compare commands: check every flag before a model loads, sample, print the steps and the
summary, and write the outputs together only when the whole command succeeded (``cli`` builds their parsers)."""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import asdict, replace

import torch
from roberta_diffusion import models, paths, viz
from roberta_diffusion.canvas import check_room, infill_canvas, prefix_canvas, prompt_canvas
from roberta_diffusion.evaluate import ar_knobs
from roberta_diffusion.guided import CORRECTION_SHARE, PICKS, generate_guided
from roberta_diffusion.models import default_models, load_causal_lm, load_mlm, load_tokenizer
from roberta_diffusion.sampler import generate_ar, generate_diffusion
from roberta_diffusion.sampling import Sampling

from . import checks
from .checks import prompt_text
from .runs import staged_files


def handler(kind: str):
    """The handler of ``generate`` (kind "mlm") or ``ar``: ``run_generate``, exit status 0."""
    def run(args) -> int:
        run_generate(args, kind)
        return 0
    return run


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
    checks.in_range("--corrections", args.corrections, 0)
    if args.correction_share is None:
        args.correction_share = CORRECTION_SHARE
    elif not args.corrections:
        raise ValueError("--correction-share without --corrections R redraws nothing: add --corrections 8")
    checks.finite("--correction-share", args.correction_share)
    if not 0 < args.correction_share <= 1:
        raise ValueError(f"--correction-share {args.correction_share}: use a share in (0, 1], e.g. 0.1")
    if args.pick not in PICKS:
        raise ValueError(f"--pick {args.pick!r}: choose one of {', '.join(PICKS)}")
    if args.pick == "importance" and args.candidates > 1 and args.corrections:
        raise ValueError("--pick importance with --corrections: corrected texts have no importance weight; use "
                         "--pick likelihood")
    if args.candidates == 1 and not args.corrections and args.guide:
        raise ValueError("--guide without --candidates N (N > 1) or --corrections R guides nothing: add --candidates 8")
    checks.model_folder("--guide", args.guide)
    if kind == "compare" and (twin_guided(args) or args.guide):
        raise ValueError("compare --candidates / --corrections: the twin guides by reading the AR twin, which compare "
                         "races against; use generate --candidates N / --corrections R")
    if kind == "compare" and args.infill:
        raise ValueError("compare --infill: the autoregressive baseline only continues a prompt and cannot fill "
                         "gaps; use generate --infill for infilling")
    return sampling


def twin_guided(args) -> bool:
    """Whether the AR twin takes part: choosing among candidates or pointing at tokens to redraw."""
    return args.candidates > 1 or args.corrections > 0


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
            sampling = replace(sampling, steps=clamp_steps(start, args.steps, "masked positions in the infill text"))
        else:
            start, sampling = prompt_start(tokenizer, prompt, args, sampling)
        free = ~start.pinned[0] & start.attention[0].bool()  # the positions the sampler fills (the masked share)
        if not args.quiet:
            print(f"sampling: {sampling}")
            if args.fast:
                print(f"model: {paths.portable(args.model)} (--fast: the distilled few-step model)")
        progress = None if args.quiet else viz.print_progress(tokenizer, mask_id, sampling.steps, generated=free)
        knobs = dict(sampling=sampling, graph=args.graph, on_step=progress)
        if twin_guided(args):
            guide, _ = _load("ar", args.guide, device)
            trace = generate_guided(model, guide, tokenizer, canvas=start, candidates=args.candidates, pick=args.pick,
                                    corrections=args.corrections, correction_share=args.correction_share, **knobs)
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
        rounds = trace.settings.get("corrections", 0)
        print(f"=== {trace.kind}: {trace.new_tokens} new tokens in {trace.described_steps()}, {trace.total_time:.3f} s "
              f"({1000 * trace.total_time / max(1, trace.steps):.1f} ms a {'pass' if rounds else 'step'}, "
              f"{_rate(trace.tokens_per_second)} tokens/s)")
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


def prompt_start(tokenizer, prompt: str, args, sampling: Sampling):
    """The canvas of a prompt continued to ``--max-len`` (the whole prompt pinned: one that fills the canvas is
    refused here) and ``sampling`` with its steps lowered, with a note, to the positions there are to fill."""
    start = prompt_canvas(tokenizer, prompt, args.prefix_len, args.max_len)
    steps = clamp_steps(start, args.steps, f"positions to fill (--max-len {args.max_len} minus the "
                                           f"{int(start.pinned[0].sum())}-token prompt)")
    return start, replace(sampling, steps=steps)


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
    _, sampling = prompt_start(mlm_tok, prompt, args, sampling)
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
