"""CPU probe of the masked-LM plateau: does a small MLM learn to use its context? (cpu_plateau_probe.md)

2 layers x 128, L=64, 15 % masks (prefix 4; env RATIOS=continuous for t ~ U(0, 1), DIMS and L for other shapes,
CURRICULUM for short crops first), batch 32, AdamW lr warm-up 200 steps, held-out loss every EVERY steps.
Run from the repository root after scripts/prepare_gpu_inputs.sh:

    PYTHONPATH=lib python reports/2026-11-28-h200-training/cpu_plateau_probe.py KIND LR STEPS [EVERY]

KIND: roberta | preln | sinus (RoBERTa, sinusoidal position init) | qk5 (RoBERTa, query/key init x5) |
      mimetic / mimetic-big (RoBERTa, sinusoidal positions of amplitude 0.05 / 0.1 and query = key = identity
      at init, so that attention starts out local: models.locality_init) | mimetic:AMPLITUDE:QK_SCALE |
      short (RoBERTa, first 300 steps on 16-token crops) | bert | modernbert (rotary) | ar (GPT-2 control)
"""

import os
import sys
import time

import torch
from roberta_diffusion import collator as C
from roberta_diffusion import models, train

# env DEVICE (cpu | cuda: bf16 autocast), BATCH, PREFIX, WARMUP for the GPU recipe's set-up (64, 16, 200)
DEVICE = torch.device(os.environ.get("DEVICE", "cpu"))
BATCH, PREFIX, WARMUP = (int(os.environ.get(k, d)) for k, d in (("BATCH", 32), ("PREFIX", 4), ("WARMUP", 200)))
torch.set_num_threads(int(os.environ.get("THREADS", 1)))
torch.manual_seed(0)
tok = models.load_tokenizer("weights/tokenizer")
L = int(os.environ.get("L", 64))  # canvas length
allb = torch.load(".gpu/train_blocks.pt")[:, :L].long().to(DEVICE)
blocks, valid = allb[1000:60000], allb[:256]
kind, lr, steps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
every = int(sys.argv[4]) if len(sys.argv) > 4 else 250
# env DIMS="layers,hidden,heads[,dropout]" for other shapes (the GPU recipe: 6,384,6,0.1)
layers, hidden, heads, *rest = (float(v) for v in os.environ.get("DIMS", "2,128,4").split(","))
dims = dict(hidden=int(hidden), intermediate=4 * int(hidden), heads=int(heads), layers=int(layers),
            dropout=rest[0] if rest else 0.0)

if kind == "ar":
    m = models.fresh_causal_lm(tok, "tiny", max_len=L, **dims)
elif kind == "bert":
    from transformers import BertConfig, BertForMaskedLM

    m = BertForMaskedLM(BertConfig(vocab_size=16384, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=512, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                   pad_token_id=1, max_position_embeddings=128))
else:
    arch = {"preln": "roberta-prelayernorm", "modernbert": "modernbert"}.get(kind, "roberta")
    m = models.fresh_mlm(tok, "tiny", max_len=L, arch=arch, **dims)
    with torch.no_grad():
        if kind.startswith("mimetic"):
            amplitude, qk_scale = {"mimetic": (0.05, 1.0), "mimetic-big": (0.1, 1.0)}.get(
                kind, tuple(float(v) for v in kind.split(":")[1:]))
            # env SPREAD=1: every head sees the whole spectrum of the sinusoid (as plateau_escape_init does)
            models.locality_init(m, amplitude=amplitude, qk_scale=qk_scale, spread_heads=bool(os.environ.get("SPREAD")))
        if kind == "sinus":
            pe = m.roberta.embeddings.position_embeddings.weight
            pos = torch.arange(pe.shape[0]).float().unsqueeze(1)
            ang = pos / (10000 ** (torch.arange(0, pe.shape[1], 2).float() / pe.shape[1]))
            pe[:, 0::2] = 0.05 * torch.sin(ang)
            pe[:, 1::2] = 0.05 * torch.cos(ang)
        if os.environ.get("BIAS") == "unigram":
            # the output bias starts at log unigram frequencies, so the loss starts at the unigram entropy and the
            # hidden states are not pushed to one shared vector to produce the unigram distribution
            counts = torch.bincount(blocks.flatten().cpu(), minlength=m.config.vocab_size).float() + 1
            m.get_output_embeddings().bias.copy_(torch.log(counts / counts.sum()))
        # env ZERO_TYPE=1: the one token-type row (added to every position, a pure constant) starts at zero;
        # HEAD_GAMMA=x: the output head's LayerNorm weight starts at x (0: logits start input-independent);
        # BRANCH=x: attention and MLP output projections start x times smaller (post-LN residual branches, Admin-like)
        if os.environ.get("ZERO_TYPE") and hasattr(m, "roberta"):
            m.roberta.embeddings.token_type_embeddings.weight.zero_()
        if "HEAD_GAMMA" in os.environ:
            m.lm_head.layer_norm.weight.fill_(float(os.environ["HEAD_GAMMA"]))
        if "TOKEN_SCALE" in os.environ:  # token embeddings (tied to the output layer) start x times larger
            m.get_input_embeddings().weight.mul_(float(os.environ["TOKEN_SCALE"]))
        if "BRANCH" in os.environ:
            for layer in m.roberta.encoder.layer:
                layer.attention.output.dense.weight.mul_(float(os.environ["BRANCH"]))
                layer.output.dense.weight.mul_(float(os.environ["BRANCH"]))
        if kind == "qk5":
            for layer in m.roberta.encoder.layer:
                layer.attention.self.query.weight.mul_(5)
                layer.attention.self.key.weight.mul_(5)

# env CURRICULUM="LEN:STEPS": train the first STEPS steps on LEN-token crops (kind `short`: 16 tokens, 300 steps)
short_len, short_steps = map(int, os.environ.get("CURRICULUM", "16:300" if kind == "short" else "0:0").split(":"))
m.to(DEVICE)
if os.environ.get("FREEZE_BIAS"):  # FREEZE_BIAS=1: every bias but the output layer's stays at its init (zero)
    for name, p in m.named_parameters():
        if (name.endswith("bias") and name != "lm_head.bias") or "token_type" in name:
            p.requires_grad_(False)
col = C.DiffusionCollator(tok, prefix_len=PREFIX)
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.98))


RATIOS = os.environ.get("RATIOS", "0.15")  # a fixed share | "continuous" (t ~ U(0, 1), the GPU recipe) | "0-0.3" (U(0, 0.3))


def mask_ratios(n, g):
    if RATIOS == "continuous":
        return torch.rand(n, generator=g).clamp(min=1e-3)
    if "-" in RATIOS:
        low, high = map(float, RATIOS.split("-"))
        return low + (high - low) * torch.rand(n, generator=g)
    return torch.full((n,), float(RATIOS))


def loss_of(ids, g):
    if kind == "ar":
        return train.causal_lm_loss(m, {"input_ids": ids})
    col.generator = g
    masked = col.mask(ids, mask_ratios(len(ids), g).to(DEVICE))
    return train.masked_lm_loss(m, {"input_ids": ids.masked_fill(masked, tok.mask_token_id),
                                    "attention_mask": torch.ones_like(ids), "labels": torch.where(masked, ids, -100)})


def position_similarity(ids):
    """Mean cosine between the last hidden states of different positions of a row, on a 30 %-masked batch:
    near 1 means the representations have collapsed onto one vector (nothing position- or context-specific)."""
    col.generator = torch.Generator().manual_seed(1)
    noisy = ids.masked_fill(col.mask(ids, torch.full((len(ids),), 0.3, device=DEVICE)), tok.mask_token_id)
    hidden = m(input_ids=noisy, output_hidden_states=True).hidden_states[-1].float()  # [B, L, H]
    unit = torch.nn.functional.normalize(hidden, dim=-1)
    cos = unit @ unit.transpose(1, 2)  # [B, L, L]
    n = cos.shape[-1]
    return ((cos.sum(dim=(1, 2)) - n) / (n * (n - 1))).mean().item()


start = time.time()
for step in range(steps + 1):
    m.train()
    for group in opt.param_groups:
        group["lr"] = lr * min(1, (step + 1) / WARMUP)
    ids = blocks[torch.randint(0, len(blocks), (BATCH,))]
    if step < short_steps:
        crop = int(torch.randint(0, L - short_len, (1,)))
        ids = ids[:, crop : crop + short_len]
    with torch.autocast(DEVICE.type, torch.bfloat16, enabled=DEVICE.type == "cuda"):
        loss = loss_of(ids, torch.Generator().manual_seed(step))
    loss.backward()
    opt.step()
    opt.zero_grad()
    if step % every == 0:
        m.eval()
        with torch.no_grad():
            with torch.autocast(DEVICE.type, torch.bfloat16, enabled=DEVICE.type == "cuda"):
                held = loss_of(valid, torch.Generator().manual_seed(0)).item()
                similarity = 0.0 if kind == "ar" else position_similarity(valid)
        print(kind, lr, step, round(held, 3), round(time.time() - start), f"cos={similarity:.3f}", flush=True)
