"""Tests for posym.model and posym.rope: equality with HF GPT-J, hook points, RoPE geometry, limits."""
from __future__ import annotations

import math

import pytest
import torch

from posym.hf import to_hf
from posym.model import GPTJ, ModelConfig
from posym.rope import apply_rope, rope_angles, rope_cos_sin, rotate_every_two, rotation_2d

from conftest import attn_only_model, randomize_

V = 136  # Number-task vocabulary size (120 letters + 16 integers)


def paper_model(seed: int = 0, **overrides) -> GPTJ:
    """The paper configuration with every parameter random (LayerNorm gains/biases and MLP/LM-head biases too)."""
    torch.manual_seed(seed)
    return randomize_(GPTJ(ModelConfig.paper(V, **overrides)), seed=seed).eval()


# -----------------------------------------------------------------------------
# equality with Hugging Face GPTJForCausalLM

@pytest.mark.parametrize("T, n_positions", [(17, 128), (300, 512)])
def test_matches_hf_gptj(T, n_positions, ledger):
    model = paper_model(seed=T)
    hf = to_hf(model, n_positions=n_positions)
    assert hf.config.n_positions == n_positions and hf.config.rotary_dim == 128
    # every HF parameter really is ours (no silently default-initialised tensor)
    ours = {n: p for n, p in model.named_parameters()}
    assert sum(p.numel() for p in hf.parameters()) == sum(p.numel() for p in ours.values())
    x = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(x).logits
        fast = model(x)
        hooked = model(x, fast=False)
        last_fast = model(x, last_only=True)
        last_hooked = model(x, last_only=True, fast=False)
    scale = ref.abs().max().item()
    diffs = {"fast": (fast - ref).abs().max().item(), "hooked": (hooked - ref).abs().max().item(),
             "last_only fast": (last_fast[:, -1] - ref[:, -1]).abs().max().item(),
             "last_only hooked": (last_hooked[:, -1] - ref[:, -1]).abs().max().item()}
    print(f"\nT={T}: max |logit| {scale:.2f}; max abs diff vs HF: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))
    assert scale > 1.0  # the random weights give non-trivial logits, so the bound below means something
    for k, v in diffs.items():
        ledger.rerun()
        assert v < 1e-4, f"{k} path differs from HF GPT-J by {v}"
    assert last_fast.shape == (3, 1, V)
    ledger.rerun()
    assert (fast - hooked).abs().max().item() < 1e-5


def test_hf_eager_attention_also_matches(ledger):
    model = paper_model(seed=3)
    hf = to_hf(model, n_positions=128)
    hf.set_attn_implementation("eager")
    x = torch.randint(0, V, (2, 17), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        d = (hf(x).logits - model(x)).abs().max().item()
    ledger.rerun()
    print(f"\neager HF vs ours: {d:.2e}")
    assert d < 1e-4


def test_hf_detects_a_changed_weight(ledger):
    """The comparison has teeth: perturbing one of our weights after export breaks equality."""
    model = paper_model(seed=4)
    hf = to_hf(model)
    with torch.no_grad():
        model.blocks[5].attn.k_proj.weight[3, 7] += 0.5
        ledger.fault()  # a weight changed after export
        d = (hf(torch.arange(17)[None] % V).logits - model(torch.arange(17)[None] % V)).abs().max().item()
    assert d > 1e-3


def test_training_mode_paths_agree_without_dropout(ledger):
    model = paper_model(seed=5, attn_pdrop=0.0, resid_pdrop=0.0).train()
    x = torch.randint(0, V, (4, 17), generator=torch.Generator().manual_seed(3))
    a = model(x, last_only=True)[:, -1]
    b = model(x, fast=False)[:, -1]
    ledger.rerun()
    assert (a - b).abs().max().item() < 1e-5
    # gradients agree too (the fast path is what training uses)
    ga = torch.autograd.grad(a.square().sum(), model.blocks[0].attn.q_proj.weight)[0]
    gb = torch.autograd.grad(b.square().sum(), model.blocks[0].attn.q_proj.weight)[0]
    ledger.rerun()
    assert (ga - gb).abs().max().item() < 1e-4 * max(1.0, ga.abs().max().item())


def test_dropout_is_active_in_training_mode_only(ledger):
    model = paper_model(seed=6)
    x = torch.randint(0, V, (4, 17), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        model.train()
        a, b = model(x), model(x)
        model.eval()
        c, d = model(x), model(x)
    ledger.rerun()
    assert not torch.equal(a, b)
    ledger.rerun()
    assert torch.equal(c, d)


# -----------------------------------------------------------------------------
# hook points

def test_hook_points_have_transformerlens_names_and_shapes(ledger):
    cfg = ModelConfig(vocab_size=20, n_layer=2, n_head=2, d_model=16, d_mlp=32)
    model = randomize_(GPTJ(cfg)).eval()
    B, T, H, Dh, D = 3, 9, 2, 8, 16
    x = torch.randint(0, 20, (B, T))
    logits, cache = model.run_with_cache(x)
    shapes = {"hook_resid_pre": (B, T, D), "attn.hook_q": (B, H, T, Dh), "attn.hook_k": (B, H, T, Dh),
              "attn.hook_v": (B, H, T, Dh), "attn.hook_rot_q": (B, H, T, Dh), "attn.hook_rot_k": (B, H, T, Dh),
              "attn.hook_attn_scores": (B, H, T, T), "attn.hook_pattern": (B, H, T, T), "attn.hook_z": (B, H, T, Dh),
              "hook_attn_out": (B, T, D), "hook_mlp_out": (B, T, D), "hook_resid_post": (B, T, D)}
    for l in range(2):
        for name, shape in shapes.items():
            key = f"blocks.{l}.{name}"
            assert key in cache, f"missing hook point {key}"
            assert tuple(cache[key].shape) == shape, (key, tuple(cache[key].shape))
    assert "hook_embed" in cache
    # the cached activations are the ones the model computed
    with torch.no_grad():
        ledger.rerun()
        assert torch.allclose(logits, model(x), atol=1e-5)
        for l in range(2):
            c = lambda n: cache[f"blocks.{l}.{n}"]
            pat = c("attn.hook_pattern")
            assert torch.allclose(pat.sum(-1), torch.ones(B, H, T), atol=1e-6)
            assert torch.equal(pat.triu(1), torch.zeros_like(pat))  # causal
            assert torch.allclose(pat, torch.softmax(c("attn.hook_attn_scores"), -1), atol=1e-6)
            cos, sin = rope_cos_sin(torch.arange(T), rope_angles(Dh))
            assert torch.allclose(c("attn.hook_rot_q"), apply_rope(c("attn.hook_q"), cos, sin), atol=1e-6)
            assert torch.allclose(c("attn.hook_rot_k"), apply_rope(c("attn.hook_k"), cos, sin), atol=1e-6)
            sc = c("attn.hook_rot_q") @ c("attn.hook_rot_k").transpose(-1, -2) / math.sqrt(Dh)
            mask = torch.ones(T, T, dtype=torch.bool).tril()
            assert torch.allclose(c("attn.hook_attn_scores")[..., mask], sc[..., mask], atol=1e-5)
        assert torch.allclose(cache["blocks.1.hook_resid_pre"], cache["blocks.0.hook_resid_post"])


def test_run_with_cache_last_only_and_name_filter(ledger):
    cfg = ModelConfig(vocab_size=20, n_layer=2, n_head=2, d_model=16, d_mlp=32)
    model = randomize_(GPTJ(cfg)).eval()
    x = torch.randint(0, 20, (2, 7))
    logits, cache = model.run_with_cache(x, names=lambda n: n.endswith("hook_pattern"), last_only=True)
    assert set(cache) == {"blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"}
    assert cache["blocks.0.attn.hook_pattern"].shape == (2, 2, 7, 7)
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, 2, 1, 7)  # the final block only needs the last row
    full, cache_full = model.run_with_cache(x, names=["blocks.1.attn.hook_pattern"])
    ledger.rerun()
    assert torch.allclose(cache["blocks.1.attn.hook_pattern"][:, :, 0], cache_full["blocks.1.attn.hook_pattern"][:, :, -1],
                          atol=1e-6)
    assert torch.allclose(logits[:, -1], full[:, -1], atol=1e-5)
    with ledger.raises(KeyError, match="no_such_hook"):
        model.run_with_cache(x, names=["blocks.0.no_such_hook"])
    assert not model._hooked()  # hooks are removed afterwards, even after an error


def test_a_hook_that_modifies_an_activation_changes_the_output(ledger):
    model = paper_model(seed=7)
    x = torch.randint(0, V, (2, 17), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        base = model(x)
        with model.hooks([("blocks.3.attn.hook_pattern", lambda t, name: None)]):  # observe only
            same = model(x)
        uniform = lambda t, name: torch.tril(torch.ones_like(t)) / torch.tril(torch.ones_like(t)).sum(-1, keepdim=True)
        with model.hooks([("blocks.3.attn.hook_pattern", uniform)]):
            assert model._hooked()
            changed = model(x)
        zero_resid = lambda t, name: torch.zeros_like(t)
        with model.hooks([("blocks.11.hook_resid_pre", zero_resid)]):
            zeroed = model(x)
        after = model(x)
    ledger.rerun()
    assert (same - base).abs().max().item() < 1e-5
    assert (changed - base).abs().max().item() > 1e-2
    # with the residual stream zeroed, every position gives the same logits
    assert (zeroed - zeroed[:, :1]).abs().max().item() < 1e-5
    ledger.rerun()
    assert torch.equal(after, base) and not model._hooked()


# -----------------------------------------------------------------------------
# RoPE geometry, NoPE, frequency mask

def test_rope_frequencies_match_paper_table_1():
    g = rope_angles(128)
    assert g.shape == (64,)
    assert g[0].item() == 1.0
    # Paper 2, Table 1: frequency ID 2 -> 0.8660, ID 10 -> 0.2738, ID 42 -> 0.0027 (IDs are 1-based)
    assert round(g[1].item(), 4) == 0.8660 and round(g[9].item(), 4) == 0.2738 and round(g[41].item(), 4) == 0.0027
    assert torch.all(g[1:] < g[:-1])


def test_rope_is_an_interleaved_rotation_and_depends_only_on_relative_position(ledger):
    gen = torch.Generator().manual_seed(0)
    R = 16
    angles = rope_angles(R)
    q = torch.randn(R, dtype=torch.float64, generator=gen)
    k = torch.randn(R, dtype=torch.float64, generator=gen)
    pos = torch.tensor([0, 3, 7, 16, 1000, 4999])
    cos, sin = rope_cos_sin(pos, angles, dtype=torch.float64)
    rq, rk = apply_rope(q.expand(len(pos), R), cos, sin), apply_rope(k.expand(len(pos), R), cos, sin)
    # pair f at position p is rho(p g_f) applied to (x_{2f}, x_{2f+1})
    for t, p in enumerate(pos.tolist()):
        for f in (0, 3, 7):
            expect = rotation_2d(p * angles[f].item()) @ q[2 * f:2 * f + 2]
            assert torch.allclose(rq[t, 2 * f:2 * f + 2], expect, atol=1e-12)
    assert torch.allclose(rotate_every_two(rotate_every_two(q)), -q)
    # <R_i q, R_j k> = q^T R_{j-i} k: depends on i - j only (also far beyond 128 positions)
    for (i, j), shift in [((3, 0), 1000), ((16, 7), 4983), ((7, 3), 993)]:
        ti, tj = pos.tolist().index(i), pos.tolist().index(j)
        c2, s2 = rope_cos_sin(torch.tensor([i + shift, j + shift]), angles, dtype=torch.float64)
        a = (rq[ti] * rk[tj]).sum()
        b = (apply_rope(q[None], c2[:1], s2[:1]) * apply_rope(k[None], c2[1:], s2[1:])).sum()
        rel_c, rel_s = rope_cos_sin(torch.tensor([j - i]), angles, dtype=torch.float64)
        c = (q * apply_rope(k[None], rel_c, rel_s)[0]).sum()
        assert abs(a - b) < 1e-9 and abs(a - c) < 1e-9
    # a partial rotary_dim leaves the other dims untouched
    x = torch.randn(5, 12, dtype=torch.float64, generator=gen)
    c, s = rope_cos_sin(torch.arange(5), rope_angles(8), dtype=torch.float64)
    assert torch.equal(apply_rope(x, c, s)[:, 8:], x[:, 8:])
    with ledger.raises(ValueError, match="rotary_dim"):
        rope_angles(7)


def test_attention_logits_invariant_to_a_global_position_shift():
    model = paper_model(seed=8)
    attn = model.blocks[0].attn
    h = torch.randn(2, 17, 128, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        q0, k0, _ = attn.qkv(h, torch.arange(17))
        q1, k1, _ = attn.qkv(h, torch.arange(17) + 3000)
    s0, s1 = q0 @ k0.transpose(-1, -2), q1 @ k1.transpose(-1, -2)
    assert not torch.allclose(q0, q1)  # the rotated vectors do change ...
    assert (s0 - s1).abs().max().item() < 1e-3 * s0.abs().max().item()  # ... their dot products do not


def test_nope_attention_is_permutation_equivariant():
    """rotary_dim=0: permuting the key tokens (the query stays last) permutes the query's attention row."""
    torch.manual_seed(0)
    T = 12
    x = torch.randint(0, V, (4, T), generator=torch.Generator().manual_seed(7))
    perm = torch.randperm(T - 1, generator=torch.Generator().manual_seed(8))
    xp = x.clone()
    xp[:, :T - 1] = x[:, perm]

    def row(model, inp):
        _, cache = model.run_with_cache(inp, names=["blocks.0.attn.hook_pattern"])
        return cache["blocks.0.attn.hook_pattern"][:, :, -1]

    nope = randomize_(GPTJ(ModelConfig.paper(V, rotary_dim=0)), qk_scale=5.0).eval()
    a, b = row(nope, x), row(nope, xp)
    assert (a[..., :T - 1][..., perm] - b[..., :T - 1]).abs().max().item() < 1e-6
    assert (a[..., -1] - b[..., -1]).abs().max().item() < 1e-6
    # with RoPE the same permutation does not simply permute the row (the test can fail)
    rope = randomize_(GPTJ(ModelConfig.paper(V)), qk_scale=5.0).eval()
    a, b = row(rope, x), row(rope, xp)
    assert (a[..., :T - 1][..., perm] - b[..., :T - 1]).abs().max().item() > 1e-3


@pytest.mark.parametrize("k", [0, 5, 63])
def test_freq_mask_zeroes_q_and_k_outside_the_kept_frequency(k, ledger):
    mask = [f == k for f in range(64)]
    model = randomize_(GPTJ(ModelConfig.paper(V, freq_mask=mask))).eval()
    x = torch.randint(0, V, (2, 17), generator=torch.Generator().manual_seed(9))
    logits, cache = model.run_with_cache(x)
    keep = torch.zeros(128, dtype=torch.bool)
    keep[2 * k:2 * k + 2] = True
    for l in (0, 11):
        for name in ("hook_q", "hook_k", "hook_rot_q", "hook_rot_k"):
            t = cache[f"blocks.{l}.attn.{name}"]
            assert torch.equal(t[..., ~keep], torch.zeros_like(t[..., ~keep])), name
            assert t[..., keep].abs().max().item() > 1e-3, name
        # the logit is the frequency-k 2-D head: |q_k| |k_j| cos(angle)
        q, kk = cache[f"blocks.{l}.attn.hook_rot_q"], cache[f"blocks.{l}.attn.hook_rot_k"]
        sc = cache[f"blocks.{l}.attn.hook_attn_scores"]
        ref = (q[..., keep] @ kk[..., keep].transpose(-1, -2)) / math.sqrt(128)
        tril = torch.ones(17, 17, dtype=torch.bool).tril()
        assert torch.allclose(sc[..., tril], ref[..., tril], atol=1e-5)
    with torch.no_grad():
        ledger.rerun()
        assert (model(x) - logits).abs().max().item() < 1e-5  # the fast path applies the mask too


# -----------------------------------------------------------------------------
# lengths and bad configurations

@pytest.mark.slow
def test_no_128_position_cap_5000_tokens(ledger):
    model = paper_model(seed=9)
    x = torch.randint(0, V, (1, 5000), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        last = model(x, last_only=True)
    assert last.shape == (1, 1, V) and torch.isfinite(last).all()
    # the distant context is used: the last 600 tokens alone (re-positioned from 0) give other logits
    with torch.no_grad():
        full_last = model(x[:, -600:], last_only=True)
    assert (last - full_last).abs().max().item() > 1e-4  # no silent truncation
    # and the fused last-only path equals the hooked, full-sequence path at this length
    small = randomize_(GPTJ(ModelConfig(vocab_size=V, n_layer=2, d_model=32, d_mlp=64)), seed=1).eval()
    with torch.no_grad():
        a = small(x, last_only=True)[:, -1]
        b = small(x, fast=False)[:, -1]
    ledger.rerun()
    assert (a - b).abs().max().item() < 1e-4


def test_max_seq_len_is_enforced_with_a_clear_error(ledger):
    model = GPTJ(ModelConfig(vocab_size=20, n_layer=1, d_model=16, d_mlp=32, max_seq_len=32)).eval()
    model(torch.zeros(1, 32, dtype=torch.long))
    for fast in (True, False):
        with ledger.raises(ValueError, match=r"sequence length 33 exceeds .*max_seq_len=32"):
            model(torch.zeros(1, 33, dtype=torch.long), fast=fast)
    with ledger.raises(ValueError, match="token id out of range"):
        model(torch.full((1, 4), 20))
    with ledger.raises(ValueError, match="batch, seq"):
        model(torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize("kwargs, field", [
    (dict(n_layer=0), "n_layer"),
    (dict(n_layer=-2), "n_layer"),
    (dict(n_head=3), "n_head"),
    (dict(d_model=0), "d_model"),
    (dict(rotary_dim=7), "rotary_dim"),
    (dict(rotary_dim=130), "rotary_dim"),
    (dict(rotary_dim=-2), "rotary_dim"),
    (dict(freq_mask=(True,) * 63), "freq_mask"),
    (dict(rotary_dim=8, freq_mask=(True,) * 64), "freq_mask"),
    (dict(attn_pdrop=1.5), "attn_pdrop"),
    (dict(resid_pdrop=-0.1), "resid_pdrop"),
    (dict(d_mlp=0), "d_mlp"),
    (dict(max_seq_len=0), "max_seq_len"),
    (dict(vocab_size=0), "vocab_size"),
])
def test_bad_config_raises_value_error_naming_the_field(kwargs, field, ledger):
    base = dict(vocab_size=V)
    base.update(kwargs)
    with ledger.raises(ValueError, match=field):
        ModelConfig(**base)


def test_unknown_preset_and_unknown_fields(ledger):
    with ledger.raises(ValueError, match="preset.*'huge'"):
        ModelConfig.preset("huge", V)
    with ledger.raises(ValueError, match="unknown ModelConfig fields.*n_layers"):
        ModelConfig.from_dict({"vocab_size": V, "n_layers": 2})
    cfg = ModelConfig.preset("smoke", V, rotary_dim=8, freq_mask=[True, False, True, False])
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_paper_preset_matches_the_paper():
    cfg = ModelConfig.paper(V)
    assert (cfg.n_layer, cfg.n_head, cfg.d_model, cfg.d_head, cfg.d_mlp) == (12, 1, 128, 128, 512)
    assert (cfg.rotary_dim, cfg.n_freqs, cfg.rope_base) == (128, 64, 10000.0)
    assert (cfg.attn_pdrop, cfg.resid_pdrop, cfg.embd_pdrop, cfg.ln_eps) == (0.1, 0.1, 0.0, 1e-5)
    assert cfg.max_seq_len is None and not cfg.attn_only
    model = GPTJ(cfg)
    n = model.num_params()
    # 12 x (4 x 128^2 attention + 2 x 128 x 512 + 512 + 128 MLP + 2 x 128 LN) + embeddings + LM head + final LN
    expect = 12 * (4 * 128 ** 2 + 2 * 128 * 512 + 512 + 128 + 256) + V * 128 + 128 * V + V + 256
    assert n == expect
