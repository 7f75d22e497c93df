"""The training section of ``python -m benchmarks.bench``: masked-LM tokens/s and MFU at B x L, for several paths.

- ``eager``: ``losses.masked_lm_loss`` (the head only on masked rows: a data-dependent shape);
- ``compile``: the same with the encoder compiled;
- ``compile-dense+cudagraphs``: fixed shapes end to end, the head on every position, compiled and replayed as CUDA
  graphs;
- ``compile-fixed+cudagraphs``: fixed shapes with the head on ``DiffusionCollator.max_masked`` positions (stratified
  ratios bound the masked count), compiled and graphed; ``-nomask`` also leaves out the all-ones attention mask;
  ``-dropout0`` builds the model without dropout, another recipe (``TrainConfig.dropout = 0``), timed to show what
  dropout costs. (Holding SDPA to the flash kernel inside the compiled step failed while dynamo traced it, torch
  2.11 on an H200: runs ``-q``/``-r``; that row was dropped.)
"""

from __future__ import annotations

import torch
from roberta_diffusion.collator import DiffusionCollator
from roberta_diffusion.compiling import compile_body
from roberta_diffusion.losses import bounded_head_loss, masked_lm_loss, masked_lm_loss_dense

from .common import bench_model, error_row, timed_median, training_flops_per_token

TRAIN_VARIANTS = ("eager", "compile", "compile-dense+cudagraphs", "compile-fixed+cudagraphs",
                  "compile-fixed+cudagraphs-nomask", "compile-fixed+cudagraphs-dropout0")
# the default set with --compile on CUDA: the last is an A/B row (another recipe) to ask for by name
DEFAULT_VARIANTS = TRAIN_VARIANTS[:5]


def train_variants(args, device) -> list[str]:
    if args.train_variants:
        chosen = [v for v in args.train_variants.split(",") if v]
        unknown = set(chosen) - set(TRAIN_VARIANTS)
        if unknown:
            raise ValueError(f"--train-variants: unknown {', '.join(sorted(unknown))}; use {', '.join(TRAIN_VARIANTS)}")
        return chosen
    if not args.compile:
        return ["eager"]
    return list(DEFAULT_VARIANTS) if device.type == "cuda" else ["eager", "compile"]


def _training_batch(tok, args, device, mode: str, drop_attention_mask: bool):
    """One fixed training batch on ``device`` and the collator that made it."""
    collator = DiffusionCollator(tok, args.prefix_len, mode, generator=torch.Generator().manual_seed(2))
    blocks = torch.randint(5, len(tok), (args.train_batch, args.max_len), generator=torch.Generator().manual_seed(1))
    drop = {"mask_ratio"} | ({"attention_mask"} if drop_attention_mask else set())
    return {k: v.to(device) for k, v in collator(blocks).items() if k not in drop}, collator


def bench_training(tok, args, device, peak, spec) -> list[dict]:
    rows = []
    for variant in train_variants(args, device):
        fixed = variant.startswith("compile-fixed")
        # -nomask: packed blocks have no padding, so the all-ones mask can be left out and SDPA picks its own
        # kernel (an A/B: on an H200 that step was slower, 23.6 against 18.6 ms; benchmarks/README.md, run -n)
        batch, collator = _training_batch(tok, args, device, "stratified" if fixed else "continuous",
                                          variant.endswith("nomask"))
        predicted = float((batch["labels"] != -100).float().mean())
        # fresh fp32 weights: the optimiser keeps fp32 masters
        mlm = bench_model("mlm", args, tok, device, **({"dropout": 0.0} if variant.endswith("dropout0") else {}))
        mlm.train()
        loss_fn = masked_lm_loss
        if variant == "compile":
            compile_body(mlm)  # the encoder: the head runs on a different number of rows each step
        elif variant == "compile-dense+cudagraphs":
            # fixed shapes end to end (the head on every position, masked in the loss), so inductor can take the
            # whole forward and backward and replay them as CUDA graphs
            loss_fn = torch.compile(masked_lm_loss_dense, mode="reduce-overhead", dynamic=False)
        elif fixed:
            # fixed shapes with the head on a bounded number of positions (stratified ratios bound the masked count)
            loss_fn = torch.compile(bounded_head_loss(collator, args.train_batch, args.max_len), mode="reduce-overhead",
                                    dynamic=False)
        optimizer = torch.optim.AdamW(mlm.parameters(), lr=1e-4, fused=device.type == "cuda")

        def step(mlm=mlm, optimizer=optimizer, loss_fn=loss_fn, batch=batch):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = loss_fn(mlm, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        try:
            step()  # compile (if any) happens here, outside the timing
            step()
            seconds = timed_median(step, device, args.repeats)
        except Exception as err:
            rows.append(error_row(err, impl=variant))
            print(rows[-1], flush=True)
            continue
        tokens_per_s = args.train_batch * args.max_len / seconds
        achieved = training_flops_per_token(mlm, args.max_len, predicted) * tokens_per_s / 1e12
        rows.append({"impl": variant, "batch": args.train_batch, "seq_len": args.max_len, "ms_per_step": round(1e3 * seconds, 2),
                     "tokens_per_s": round(tokens_per_s, 1), "predicted_share": round(predicted, 3),
                     "model_tflops": round(achieved, 3), "mfu": round(achieved / peak, 4)}
                    | ({"mfu_vs_spec_peak": round(achieved / spec, 4)} if spec else {}))
        print(rows[-1], flush=True)  # as it comes: a run cut short still shows what it measured
    return rows
