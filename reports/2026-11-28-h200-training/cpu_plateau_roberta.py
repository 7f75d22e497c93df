import math, sys, time, torch
from roberta_diffusion import models, train, collator as C
torch.set_num_threads(1); torch.manual_seed(0)
tok = models.load_tokenizer('weights/tokenizer')
L = 64
allb = torch.load('.gpu/train_blocks.pt')[:, :L].long()
blocks, valid = allb[1000:60000], allb[:256]
kind = sys.argv[1]; lr = float(sys.argv[2]); steps = int(sys.argv[3])
dims = dict(hidden=128, intermediate=512, heads=4, layers=2, dropout=0.0)
if kind == "ar":
    m = models.fresh_causal_lm(tok, "tiny", max_len=L, **dims)
else:
    m = models.fresh_mlm(tok, "tiny", max_len=L, arch="roberta-prelayernorm" if kind == "preln" else "roberta", **dims)
    if kind == "sinus":
        pe = m.roberta.embeddings.position_embeddings.weight
        pos = torch.arange(pe.shape[0]).float().unsqueeze(1); i = torch.arange(0, pe.shape[1], 2).float()
        ang = pos / (10000 ** (i / pe.shape[1]))
        with torch.no_grad():
            pe[:, 0::2] = 0.05 * torch.sin(ang); pe[:, 1::2] = 0.05 * torch.cos(ang)
col = C.DiffusionCollator(tok, prefix_len=4)
opt = torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.98))
def loss_of(ids, g):
    if kind == "ar": return train.causal_lm_loss(m, {"input_ids": ids})
    col.generator = g
    masked = col.mask(ids, torch.full((len(ids),), 0.15))
    return train.masked_lm_loss(m, {"input_ids": ids.masked_fill(masked, 4), "attention_mask": torch.ones_like(ids), "labels": torch.where(masked, ids, -100)})
t = time.time()
for step in range(steps + 1):
    m.train()
    for gp in opt.param_groups: gp["lr"] = lr * min(1, (step + 1) / 200)
    ids = blocks[torch.randint(0, len(blocks), (32,))]
    loss = loss_of(ids, torch.Generator().manual_seed(step)); loss.backward(); opt.step(); opt.zero_grad()
    if step % 250 == 0:
        m.eval()
        with torch.no_grad(): v = loss_of(valid, torch.Generator().manual_seed(0)).item()
        print(kind, lr, step, round(v, 3), round(time.time() - t), flush=True)
