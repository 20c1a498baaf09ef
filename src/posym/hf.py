"""Interoperability with Hugging Face ``GPTJForCausalLM`` (weights map one to one)."""
from __future__ import annotations

import torch

from .model import GPTJ, ModelConfig


def hf_config(cfg: ModelConfig, n_positions: int = 2048):
    """A ``transformers.GPTJConfig`` describing the same network as ``cfg``."""
    from transformers import GPTJConfig

    if cfg.freq_mask is not None or cfg.attn_only:
        raise ValueError("GPT-J in transformers has no frequency mask or attention-only blocks; cannot export this model")
    if cfg.rotary_dim == 0:
        raise ValueError("a model without RoPE (rotary_dim 0) cannot be a GPTJForCausalLM: transformers' GPT-J "
                         "always rotates (rotary_dim 0 fails on the first forward pass)")
    return GPTJConfig(
        vocab_size=cfg.vocab_size, n_positions=n_positions, n_embd=cfg.d_model, n_layer=cfg.n_layer,
        n_head=cfg.n_head, rotary_dim=cfg.rotary_dim, n_inner=cfg.d_mlp, activation_function="gelu",
        resid_pdrop=cfg.resid_pdrop, embd_pdrop=cfg.embd_pdrop, attn_pdrop=cfg.attn_pdrop,
        layer_norm_epsilon=cfg.ln_eps, tie_word_embeddings=False, use_cache=False,
        bos_token_id=0, eos_token_id=0,
    )


def to_hf_state_dict(model: GPTJ) -> dict[str, torch.Tensor]:
    """Our parameter names -> ``GPTJForCausalLM`` parameter names."""
    out = {}
    for name, t in model.state_dict().items():
        if name.startswith("blocks."):
            name = "transformer.h." + name[len("blocks."):]
        elif name.startswith(("wte.", "ln_f.")):
            name = "transformer." + name
        out[name] = t.detach().clone()
    return out


def from_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in sd.items():
        if name.startswith("transformer.h."):
            name = "blocks." + name[len("transformer.h."):]
        elif name.startswith("transformer."):
            name = name[len("transformer."):]
        out[name] = t
    return out


def to_hf(model: GPTJ, n_positions: int = 2048):
    """Build a ``GPTJForCausalLM`` with our weights (eager attention, eval mode)."""
    from transformers import GPTJForCausalLM

    hf = GPTJForCausalLM(hf_config(model.cfg, n_positions=n_positions))
    sd = to_hf_state_dict(model)
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    # HF keeps non-persistent rotary buffers; any real parameter left out is a bug
    missing = [m for m in missing if not m.endswith(("embed_positions", "bias", "masked_bias")) or "lm_head" in m]
    if missing or unexpected:
        raise RuntimeError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return hf.eval()
