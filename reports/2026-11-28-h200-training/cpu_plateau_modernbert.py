import sys, time, torch
from transformers import ModernBertConfig, ModernBertForMaskedLM
from roberta_diffusion import models, collator as C, collator
torch.set_num_threads(2); torch.manual_seed(0)
tok = models.load_tokenizer('weights/tokenizer')
L = 64
allb = torch.load('.gpu/train_blocks.pt')[:, :L].long()
blocks, valid = allb[1000:60000], allb[:256]
cfg = ModernBertConfig(vocab_size=16384, hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=L, pad_token_id=1, bos_token_id=0, eos_token_id=2, cls_token_id=0, sep_token_id=2,
    local_attention=L, layer_types=["full_attention"]*2, attention_dropout=0.0, mlp_dropout=0.0, embedding_dropout=0.0)
m = ModernBertForMaskedLM(cfg)
col = C.DiffusionCollator(tok, prefix_len=4)
opt = torch.optim.AdamW(m.parameters(), lr=float(sys.argv[1]), betas=(0.9, 0.98))
def loss_of(ids, g):
    col.generator = g
    masked = col.mask(ids, torch.full((len(ids),), 0.15))
    logits = m(input_ids=ids.masked_fill(masked, 4), attention_mask=torch.ones_like(ids)).logits
    return collator.diffusion_loss(logits, torch.where(masked, ids, -100))
t = time.time(); lr = float(sys.argv[1])
for step in range(2001):
    m.train()
    for gp in opt.param_groups: gp["lr"] = lr * min(1, (step + 1) / 200)
    ids = blocks[torch.randint(0, len(blocks), (32,))]
    loss = loss_of(ids, torch.Generator().manual_seed(step)); loss.backward(); opt.step(); opt.zero_grad()
    if step % 250 == 0:
        m.eval()
        with torch.no_grad(): v = loss_of(valid, torch.Generator().manual_seed(0)).item()
        print("modernbert", lr, step, round(v, 3), round(time.time() - t), flush=True)
