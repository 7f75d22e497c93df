"""Load or build the models and tokenizer: hub name or local folder, fresh configs (our own BPE tokenizer: bpe.py).

Offline-first: a local folder always works; a hub name works when online or cached, and otherwise fails
with one line that says which local folder to use instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import transformers
from safetensors import SafetensorError
from transformers.utils import logging as hf_logging

from .bpe import fallback_tokenizer
from .paths import SHIPPED_AR, SHIPPED_MLM, SHIPPED_TOKENIZER
from .plateau import locality_init

# Sizes for fresh models: "small" is the shipped pair's, "judge" the third GPT-2 that scores samples, "base"
# matches roberta-base / gpt2.
SIZES = {
    "tiny": dict(hidden=64, layers=2, heads=2, intermediate=128),
    "small": dict(hidden=384, layers=6, heads=6, intermediate=1536),
    "judge": dict(hidden=512, layers=8, heads=8, intermediate=2048),  # the independent judge: larger than the pair
    "base": dict(hidden=768, layers=12, heads=12, intermediate=3072),
}


def pick_device(preference: str | torch.device | None = None) -> torch.device:
    """CUDA > MPS > CPU unless told (a name or a torch.device); an unavailable explicit choice is an error,
    not a silent fallback."""
    if isinstance(preference, torch.device):
        return preference
    if preference and preference != "auto":
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {preference!r} asked for but CUDA is not available: use device='cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {preference!r} asked for but MPS is not available: use device='cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _is_local(name_or_path) -> bool:
    text = str(name_or_path)
    return isinstance(name_or_path, Path) or text.startswith((".", "/", "~")) or os.sep in text and Path(text).exists()


def _check_folder(name_or_path, what: str) -> None:
    path = Path(name_or_path).expanduser()
    if _is_local(name_or_path) and not path.exists():
        raise FileNotFoundError(f"{what} folder {path} does not exist: check the path, or train/download it first")
    if path.is_dir() and not (path / "config.json").exists() and what != "tokenizer":
        raise FileNotFoundError(f"{what} folder {path} has no config.json: it is not a save_pretrained folder")


def _load(loader, name_or_path, what: str, **kwargs):
    _check_folder(name_or_path, what)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # stderr is for errors: the CLI promises one line on failure
    try:
        return loader(str(name_or_path), **kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        local = Path(str(name_or_path)).expanduser().exists()
        if local:
            raise ValueError(
                f"{what} folder {name_or_path} is corrupt or incomplete ({type(err).__name__}: {str(err).splitlines()[0][:160]}): "
                "re-save it with save_pretrained or retrain"
            ) from err
        raise FileNotFoundError(
            f"{what} {name_or_path!r} is not a local folder and could not be fetched from the hub (offline?): "
            "pass a local folder such as weights/roberta-diffusion-small"
        ) from err
    finally:
        if bars:
            hf_logging.enable_progress_bar()


# a folder holding none of these has no vocabulary: transformers would build an empty tokenizer from config.json
# alone (five special tokens), and a model would "generate" an empty text without a word of warning
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model")


def load_tokenizer(name_or_path):
    folder = Path(str(name_or_path)).expanduser()
    if folder.is_dir() and not any((folder / f).exists() for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"{folder} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt): save "
                                f"the model's tokenizer there (tokenizer.save_pretrained), e.g. copy in {SHIPPED_TOKENIZER}'s files")
    return _load(transformers.AutoTokenizer.from_pretrained, name_or_path, "tokenizer")


def load_mlm(name_or_path, device=None, dtype=torch.float32):
    """A masked LM for diffusion. A causal LM folder is refused with a line saying so."""
    config = _load(transformers.AutoConfig.from_pretrained, name_or_path, "model")
    if getattr(config, "is_decoder", False) or config.model_type in CAUSAL_ONLY_TYPES:
        raise ValueError(
            f"{name_or_path} is a causal LM ({config.model_type}), not a masked LM: use it with `ar`, "
            "and give the diffusion sampler a masked LM such as roberta-base"
        )
    model = _load(transformers.AutoModelForMaskedLM.from_pretrained, name_or_path, "model", dtype=dtype)
    return model.to(pick_device(device)).eval()


CAUSAL_ONLY_TYPES = {"gpt2", "gpt_neo", "gptj", "llama", "mistral", "opt", "qwen2", "qwen3", "phi", "gemma"}


def load_causal_lm(name_or_path, device=None, dtype=torch.float32):
    config = _load(transformers.AutoConfig.from_pretrained, name_or_path, "model")
    if not getattr(config, "is_decoder", False) and config.model_type not in CAUSAL_ONLY_TYPES:
        raise ValueError(f"{name_or_path} is not a causal LM ({config.model_type}): pass e.g. gpt2")
    model = _load(transformers.AutoModelForCausalLM.from_pretrained, name_or_path, "model", dtype=dtype)
    return _name_causal_loss(model).to(pick_device(device)).eval()


def _name_causal_loss(model):
    """transformers picks a model's loss by its class name; ``GPT2LMHeadModel`` matches none, so its first forward
    with labels warned "`loss_type=None` was set in the config but it is unrecognized" (in notebook 02's output)
    before using ``ForCausalLM`` anyway. Naming that same loss keeps the loss and drops the false alarm."""
    if getattr(model, "loss_type", "") is None:
        model.loss_type = "ForCausalLM"
    return model


def max_canvas_len(model) -> int:
    """Longest sequence the model can take. RoBERTa reserves ``pad_token_id + 1`` position slots."""
    config = model.config
    if config.model_type in ("roberta", "roberta-prelayernorm", "xlm-roberta", "camembert"):
        return config.max_position_embeddings - (config.pad_token_id or 0) - 1
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    return 10**9


def masked_lm_logits(model, input_ids, attention_mask, rows) -> torch.Tensor:
    """Logits ``[N, V]`` at the ``N`` positions where ``rows [B, L]`` is True.

    Where the model is an encoder plus an ``lm_head`` (RoBERTa), the vocabulary projection runs only on those
    rows: with a 50k vocabulary it is a large share of a forward pass, and most positions do not need it. Other
    masked LMs (and wrapped models, e.g. DDP) fall back to full logits.
    """
    return _logits_at(model, input_ids, attention_mask, lambda t: t[rows])


def gathered_logits(model, input_ids, attention_mask, index) -> torch.Tensor:
    """Logits ``[B * F, V]`` at the positions ``index [B, F]`` of each row: ``masked_lm_logits`` with a fixed
    shape (no boolean indexing, so no host synchronisation; a CUDA graph can replay it)."""
    return _logits_at(model, input_ids, attention_mask,
                      lambda t: t.gather(1, index.unsqueeze(-1).expand(-1, -1, t.shape[-1])))  # [B, F, X]


def flat_logits(model, input_ids, attention_mask, index) -> torch.Tensor:
    """Logits ``[K, V]`` at the positions ``index [K]`` of the flattened ``[B * L]`` canvas: the head runs on those
    ``K`` rows only, with fixed shapes (``losses.masked_lm_loss_fixed``)."""
    return _logits_at(model, input_ids, attention_mask, lambda t: t.flatten(0, 1)[index])


def _logits_at(model, input_ids, attention_mask, pick) -> torch.Tensor:
    """Logits ``[N, V]`` at the positions ``pick`` selects from a ``[B, L, X]`` tensor: from the encoder's hidden
    states before the head where the model splits that way, else from the full logits."""
    encoder, head = _encoder_and_head(model)
    if encoder is not None:
        hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # [B, L, H]
        logits = head(pick(hidden))
    else:
        logits = pick(model(input_ids=input_ids, attention_mask=attention_mask).logits)
    return logits.reshape(-1, logits.shape[-1])


def _encoder_and_head(model):
    """``(encoder, head)`` where a masked LM splits that way (RoBERTa: ``lm_head``; ModernBERT: ``head`` then
    ``decoder``), else ``(None, None)``."""
    prefix = getattr(model, "base_model_prefix", None)
    encoder = getattr(model, prefix, None) if prefix else None
    if encoder is None:
        return None, None
    if getattr(model, "lm_head", None) is not None:
        return encoder, model.lm_head
    if getattr(model, "head", None) is not None and getattr(model, "decoder", None) is not None:
        return encoder, lambda hidden: model.decoder(model.head(hidden))
    return None, None


def is_masked_lm(model) -> bool:
    return type(model).__name__.endswith("ForMaskedLM")


MLM_ARCHS = ("roberta", "roberta-prelayernorm", "modernbert")


def fresh_mlm(tokenizer, size: str = "tiny", max_len: int = 256, seed: int = 0, arch: str = "roberta",
              locality: float = 0.0, **overrides):
    """A randomly initialised masked LM sized by ``SIZES[size]``, matched to ``tokenizer``.

    ``arch``: ``"roberta"`` (``RobertaForMaskedLM``, post-LN, learned absolute positions, as roberta-base);
    ``"roberta-prelayernorm"``; ``"modernbert"`` (rotary positions). From scratch, the absolute-position models
    sit on the unigram plateau for thousands of updates (their attention must first discover locality);
    ``locality > 0`` starts RoBERTa with local attention (``locality_init``), and ``plateau_escape_init`` is the
    start that lets it learn at the shipped size.
    """
    if arch not in MLM_ARCHS:
        raise ValueError(f"unknown arch {arch!r}: choose one of {', '.join(MLM_ARCHS)}")
    if locality < 0 or (locality and arch == "modernbert"):
        raise ValueError(f"locality={locality}: use an amplitude >= 0, and only with learned positions (not arch='modernbert')")
    dims = _dims(size, overrides)
    dropout = overrides.get("dropout", 0.1)
    shared = dict(vocab_size=_vocab_size(tokenizer), hidden_size=dims["hidden"], num_hidden_layers=dims["layers"],
                  num_attention_heads=dims["heads"], intermediate_size=dims["intermediate"],
                  pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    if arch == "modernbert":
        # its MLP is gated (GeGLU: two input projections), so 2/3 of the width keeps the parameter count of a
        # plain MLP of the preset width — the same count as the GPT-2 baseline of the same size
        if "intermediate" not in overrides:
            shared["intermediate_size"] = dims["intermediate"] * 2 // 3
        config = transformers.ModernBertConfig(
            **shared, max_position_embeddings=max_len, cls_token_id=tokenizer.bos_token_id,
            sep_token_id=tokenizer.eos_token_id, layer_types=["full_attention"] * dims["layers"],
            local_attention=max_len, attention_dropout=dropout, mlp_dropout=dropout, embedding_dropout=dropout)
        return transformers.ModernBertForMaskedLM(config).eval()

    config_class, model_class = {
        "roberta": (transformers.RobertaConfig, transformers.RobertaForMaskedLM),
        "roberta-prelayernorm": (transformers.RobertaPreLayerNormConfig, transformers.RobertaPreLayerNormForMaskedLM),
    }[arch]
    # RoBERTa numbers positions from pad_token_id + 1, so max_len tokens need that many more slots
    config = config_class(**shared, max_position_embeddings=max_len + tokenizer.pad_token_id + 1, type_vocab_size=1,
                          hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    model = model_class(config).eval()
    if locality:
        locality_init(model, amplitude=locality)
    return model


def fresh_causal_lm(tokenizer, size: str = "tiny", max_len: int = 256, seed: int = 0, **overrides):
    """A randomly initialised ``GPT2LMHeadModel`` of the same depth/width as ``fresh_mlm(size)``."""
    dims = _dims(size, overrides)
    dropout = overrides.get("dropout", 0.1)
    config = transformers.GPT2Config(
        vocab_size=_vocab_size(tokenizer), n_embd=dims["hidden"], n_layer=dims["layers"], n_head=dims["heads"],
        n_inner=dims["intermediate"], n_positions=max_len, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, resid_pdrop=dropout,
        embd_pdrop=dropout, attn_pdrop=dropout)
    torch.manual_seed(seed)
    return _name_causal_loss(transformers.GPT2LMHeadModel(config)).eval()


def _dims(size, overrides):
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}: choose one of {', '.join(SIZES)}")
    return {**SIZES[size], **{k: v for k, v in overrides.items() if k in SIZES[size]}}


def _vocab_size(tokenizer) -> int:
    # round up to a multiple of 64: faster matmuls, and room is harmless
    return -(-len(tokenizer) // 64) * 64


def model_summary(model) -> str:
    params = sum(p.numel() for p in model.parameters())
    c = model.config
    return f"{type(model).__name__} {params / 1e6:.1f}M params, {c.num_hidden_layers} layers x {c.hidden_size}"


def default_models(kind: str = "mlm", say=print):
    """``(model, tokenizer)`` for ``kind`` in ``{"mlm", "ar"}``: the shipped weights when present, else a
    tiny random model (its output is noise) with a line saying so."""
    folder = SHIPPED_MLM if kind == "mlm" else SHIPPED_AR
    if (folder / "config.json").exists():
        loader = load_mlm if kind == "mlm" else load_causal_lm
        return loader(folder, device="cpu"), load_tokenizer(folder)
    say(f"note: no shipped weights at {folder}; using a tiny random {kind.upper()} (its text is noise). "
        "Pass --model to use a trained one.")
    # the shipped tokenizer when present, so that both fallback models (and any shipped one) share a vocabulary
    tokenizer = load_tokenizer(SHIPPED_TOKENIZER) if (SHIPPED_TOKENIZER / "tokenizer.json").exists() else fallback_tokenizer()
    model = fresh_mlm(tokenizer) if kind == "mlm" else fresh_causal_lm(tokenizer)
    return model, tokenizer
