import sys, time, torch
sys.path.insert(0, '/work/main/lib')
from roberta_diffusion import models, collator as C
torch.set_num_threads(1); torch.manual_seed(0)
tok = models.load_tokenizer('/work/main/weights/tokenizer')
L = 64
allb = torch.load('/work/main/.gpu/train_blocks.pt')[:, :L].long()
blocks, valid = allb[1000:60000], allb[:256]
kind = sys.argv[1]; lr = 1e-3; steps = int(sys.argv[2])
from transformers import RobertaConfig, RobertaForMaskedLM
m = RobertaForMaskedLM(RobertaConfig(vocab_size=16384, hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=1, max_position_embeddings=128, type_vocab_size=1))
if kind == "qk5":
    with torch.no_grad():
        for layer in m.roberta.encoder.layer:
            layer.attention.self.query.weight.mul_(5); layer.attention.self.key.weight.mul_(5)
col = C.DiffusionCollator(tok, prefix_len=4)
opt = torch.optim.AdamW(m.parameters(), lr=lr, betas=(0.9, 0.98))
def loss_of(ids, g):
    col.generator = g
    masked = col.mask(ids, torch.full((len(ids),), 0.15))
    return m(input_ids=ids.masked_fill(masked, 4), attention_mask=torch.ones_like(ids), labels=torch.where(masked, ids, -100)).loss
t = time.time()
for step in range(steps + 1):
    m.train()
    for gp in opt.param_groups: gp["lr"] = lr * min(1, (step + 1) / 200)
    ids = blocks[torch.randint(0, len(blocks), (32,))]
    if kind == "short" and step < 300:
        start = int(torch.randint(0, L - 16, (1,)))
        ids = ids[:, start:start + 16]
    loss = loss_of(ids, torch.Generator().manual_seed(step)); loss.backward(); opt.step(); opt.zero_grad()
    if step % 125 == 0:
        m.eval()
        with torch.no_grad(): v = loss_of(valid, torch.Generator().manual_seed(0)).item()
        print(kind, step, round(v, 3), round(time.time() - t), flush=True)
