"""Length-generalisation remedies (posym.rope, the model options): each against an independently written formula,
HF transformers' RoPE parameter functions where they exist, the identity at scale 1, and the default model unchanged."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from posym import rope
from posym.model import GPTJ, ModelConfig
from posym.rope import check_rope_scaling, length_factor, rope_angles, rope_cos_sin, scaled_angles

ROOT = Path(__file__).resolve().parents[1]


def _model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig.smoke(40, attn_pdrop=0.0, resid_pdrop=0.0, **kw)
    return GPTJ(cfg).eval()


def _x(T=30, B=3):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 40, (B, T), generator=g)


def _hf_config(rope_parameters, max_pos=17, d=128):
    transformers = pytest.importorskip("transformers")
    return transformers.LlamaConfig(hidden_size=d, num_attention_heads=1, num_key_value_heads=1,
                                    max_position_embeddings=max_pos, rope_parameters=rope_parameters)


# ---- the default model is unchanged ---------------------------------------------------------------------------

def test_default_config_dict_and_hash_unchanged():
    d = ModelConfig.paper(20).to_dict()
    assert not {"rope_scaling", "nope_layers", "position_sampling"} & set(d)
    cfg_file = ROOT / "data" / "paper" / "number-s0" / "config.json"
    if cfg_file.exists():  # a committed run's config hash is still its own
        from posym.train import TrainConfig

        rec = json.loads(cfg_file.read_text())
        assert TrainConfig.from_dict(rec["train"]).hash() == rec["config_hash"]


def test_default_model_bit_identical():
    m = _model()
    for blk in m.blocks:
        assert torch.equal(blk.attn.angles, rope_angles(m.cfg.rotary_dim, m.cfg.rope_base))
        assert blk.attn.dim_mask is None
    x = _x()
    before = m(x)
    for method in ("pi", "ntk", "yarn", "freq"):  # scale 1: the identity, bit for bit
        sc = {"method": method, "factor": 1.0}
        if method == "freq":
            sc["freqs"] = [[0, 1]] * m.cfg.n_layer
        m.set_rope_scaling(sc)
        assert torch.equal(m(x), before)
        assert all(blk.attn.dim_mask is None for blk in m.blocks)
    m.set_rope_scaling({"method": "base", "new_base": m.cfg.rope_base})
    assert torch.equal(m(x), before)
    m.set_rope_scaling(None)
    assert torch.equal(m(x), before)


def test_length_factor_identity_up_to_train_length():
    assert length_factor(5, 17) == 1.0 and length_factor(17, 17) == 1.0
    assert length_factor(170, 17) == pytest.approx(10.0)
    with pytest.raises(ValueError, match="length must be positive"):
        length_factor(0)


# ---- reference formulas ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("s", [1.5, 8.0, 300.0])
def test_position_interpolation(s):
    g = rope_angles(128, 1e4)
    ang, mul = scaled_angles(128, 1e4, {"method": "pi", "factor": s})
    assert mul == 1.0
    # positions times 1/s: the angle at position p is p/s * g_k
    p = torch.arange(50, dtype=torch.float64)
    assert torch.allclose(p[:, None] * ang[None], (p / s)[:, None] * g[None], rtol=1e-14, atol=0)
    hf = pytest.importorskip("transformers.modeling_rope_utils")
    inv, _ = hf._compute_linear_scaling_rope_parameters(
        _hf_config({"rope_type": "linear", "rope_theta": 1e4, "factor": s}), "cpu")
    assert torch.allclose(ang.float(), inv.float(), rtol=1e-6)


@pytest.mark.parametrize("L", [34, 170, 5000])
def test_ntk_base(L):
    d, s = 128, L / 17
    ang, _ = scaled_angles(d, 1e4, {"method": "ntk", "factor": s})
    ref = (1e4 * s ** (d / (d - 2))) ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    assert torch.allclose(ang, ref, rtol=1e-12)
    assert ang[0] == 1.0 and ang[-1] == pytest.approx(rope_angles(d, 1e4)[-1].item() / s, rel=1e-9)
    hf = pytest.importorskip("transformers.modeling_rope_utils")
    inv, _ = hf._compute_dynamic_ntk_parameters(
        _hf_config({"rope_type": "dynamic", "rope_theta": 1e4, "factor": 1.0}), "cpu", seq_len=L)
    assert torch.allclose(ang.float(), inv.float(), rtol=2e-5)


def _yarn_reference(d, base, s, L0, beta_fast=32.0, beta_slow=1.0):
    """YaRN written out from the paper: ramp over frequency indices between the correction dimensions."""
    def corr(r):
        return d * math.log(L0 / (2 * math.pi * r)) / (2 * math.log(base))
    lo, hi = max(math.floor(corr(beta_fast)), 0), min(math.ceil(corr(beta_slow)), d - 1)
    out = []
    for k in range(d // 2):
        g = base ** (-2 * k / d)
        gamma = min(1.0, max(0.0, (k - lo) / (hi - lo)))  # 0: extrapolate, 1: interpolate
        out.append((1 - gamma) * g + gamma * g / s)
    return torch.tensor(out, dtype=torch.float64), 0.1 * math.log(s) + 1.0


@pytest.mark.parametrize("s,L0,d,base", [(8.0, 17, 128, 1e4), (300.0, 17, 64, 1e4), (4.0, 2048, 128, 5e5)])
def test_yarn_ramp_and_temperature(s, L0, d, base):
    ang, mul = scaled_angles(d, base, {"method": "yarn", "factor": s, "train_length": L0})
    ref, ref_mul = _yarn_reference(d, base, s, L0)
    assert torch.allclose(ang, ref, rtol=1e-12) and mul == pytest.approx(ref_mul, rel=1e-14)
    hf = pytest.importorskip("transformers.modeling_rope_utils")
    inv, att = hf._compute_yarn_parameters(_hf_config({"rope_type": "yarn", "rope_theta": base, "factor": s,
                                                       "original_max_position_embeddings": L0}, d=d), "cpu")
    assert torch.allclose(ang.float(), inv.float(), rtol=1e-5)
    assert mul == pytest.approx(att, rel=1e-12)


def test_yarn_temperature_scales_rotated_logits():
    """The model's logits under YaRN: q and k of the rotated dims times (0.1 ln s + 1), i.e. logits times its square."""
    m = _model(rotary_dim=16)  # d_head 32: dims 16..31 are not rotated
    x = _x(T=12, B=2)
    s = 5.0
    m.set_rope_scaling({"method": "yarn", "factor": s})
    _, cache = m.run_with_cache(x, names=["blocks.1.attn.hook_attn_scores", "blocks.1.hook_resid_pre"])
    a = m.blocks[1].attn
    h = m.blocks[1].ln_1(cache["blocks.1.hook_resid_pre"])
    q, k = a.split_heads(a.q_proj(h)).double(), a.split_heads(a.k_proj(h)).double()
    ang, mul = scaled_angles(16, m.cfg.rope_base, {"method": "yarn", "factor": s})
    cos, sin = rope_cos_sin(torch.arange(12), ang, dtype=torch.float64)
    rot = lambda v: torch.cat((rope.apply_rope(v[..., :16], cos, sin) * mul, v[..., 16:]), -1)
    ref = rot(q) @ rot(k).transpose(-1, -2) / math.sqrt(32)
    got = cache["blocks.1.attn.hook_attn_scores"].double()
    mask = torch.ones(12, 12, dtype=torch.bool).tril()
    assert torch.allclose(got[..., mask], ref[..., mask], atol=1e-5)


def test_plain_base_and_used_frequencies():
    ang, mul = scaled_angles(64, 1e4, {"method": "base", "new_base": 1e6})
    assert torch.equal(ang, rope_angles(64, 1e6)) and mul == 1.0
    g = rope_angles(64, 1e4)
    freqs = [[0, 3], [], [31]]
    for layer, ks in enumerate(freqs):
        ang, _ = scaled_angles(64, 1e4, {"method": "freq", "factor": 4.0, "freqs": freqs}, layer)
        for k in range(32):
            assert ang[k] == (g[k] / 4.0 if k in ks else g[k])


def test_model_paths_agree_under_each_remedy():
    """Fast path, hooked path, metrics' residual inputs and the length analysis' scores use each layer's angles."""
    from posym import longprompts as LG
    from posym.metrics import residual_inputs

    m = _model()
    x = _x(T=40)
    F = m.cfg.n_freqs
    for sc in ({"method": "pi", "factor": 3.0}, {"method": "ntk", "factor": 3.0}, {"method": "yarn", "factor": 3.0},
               {"method": "base", "new_base": 1e6}, {"method": "freq", "factor": 3.0,
                                                     "freqs": [[0], [], [1, 2], list(range(F))]}):
        m.set_rope_scaling(sc)
        fast, hooked = m(x), m(x, fast=False)
        assert torch.allclose(fast, hooked, atol=1e-5), sc
        ref: list = []
        m(x, resid_out=ref, fast=False)
        for a, b in zip(residual_inputs(m, x), ref):
            assert torch.allclose(a, b, atol=1e-5), sc
        logits, _ = LG.last_query_scores(m, x, [0])
        assert torch.allclose(logits, hooked[:, -1], atol=1e-5), sc
    m.set_rope_scaling(None)


# ---- training remedies ------------------------------------------------------------------------------------------

def test_nope_layers_and_partial_rotary():
    m = _model(nope_layers=(1, 3), rotary_dim=8)
    assert m.blocks[1].attn.angles.abs().max() == 0 and m.blocks[3].attn.angles.abs().max() == 0
    assert torch.equal(m.blocks[0].attn.angles, rope_angles(8, 1e4))
    x = _x()
    assert torch.allclose(m(x), m(x, fast=False), atol=1e-5)
    assert m.cfg.to_dict()["nope_layers"] == [1, 3]
    assert ModelConfig.from_dict(m.cfg.to_dict()) == m.cfg


def test_random_offset_is_a_noop_for_rope():
    """RoPE logits depend on positions only through i - j: an offset changes only rounding."""
    plain = _model()
    off = _model(position_sampling={"kind": "offset", "max_position": 4096})
    off.load_state_dict(plain.state_dict())
    off.train()  # sampling acts in training only (dropout is 0 here)
    x = _x()
    torch.manual_seed(3)
    a = off(x, last_only=True)
    assert torch.allclose(a, plain(x, last_only=True), atol=1e-4)
    off.eval()
    assert torch.equal(off(x), plain(x))


def test_subsample_positions():
    g = torch.Generator().manual_seed(0)
    p = rope.sample_positions({"kind": "subsample", "max_position": 256}, 64, 17, generator=g)
    assert p.shape == (64, 17) and int(p.min()) >= 0 and int(p.max()) < 256
    assert bool((p.diff(dim=-1) > 0).all())
    assert p.diff(dim=-1).float().mean() > 5  # the gaps vary well beyond 1
    m = _model(position_sampling={"kind": "subsample", "max_position": 64})
    m.train()
    y = m(_x(T=17), last_only=True)
    y.sum().backward()  # trains
    with pytest.raises(ValueError, match="do not fit"):
        rope.sample_positions({"kind": "subsample", "max_position": 8}, 2, 17)


# ---- bad input: one clear error ----------------------------------------------------------------------------------

@pytest.mark.parametrize("sc,match", [
    ({"method": "rope2"}, "unknown RoPE remedy 'rope2'"),
    ({"method": "pi", "factor": 0}, "factor must be a positive number"),
    ({"method": "pi", "factor": -2.0}, "factor must be a positive number"),
    ({"method": "ntk", "factor": 2.0, "beta": 3}, "has no parameter"),
    ({"method": "base"}, "new_base must be a number > 1"),
    ({"method": "yarn", "factor": 2.0, "beta_fast": 1.0}, "beta_fast"),
    ({"method": "freq", "factor": 2.0, "freqs": [[0]]}, "freqs has 1 layers"),
    ({"method": "freq", "factor": 2.0, "freqs": [[0], [99], [], []]}, "outside"),
    ("pi", "must be a dict"),
])
def test_bad_remedies(sc, match):
    with pytest.raises(ValueError, match=match):
        check_rope_scaling(sc, n_layer=4, n_freqs=16)
    with pytest.raises(ValueError, match=match):
        _model(rope_scaling=sc)


def test_bad_training_options():
    with pytest.raises(ValueError, match="unknown position sampling"):
        _model(position_sampling={"kind": "shuffle", "max_position": 10})
    with pytest.raises(ValueError, match="max_position must be a positive integer"):
        _model(position_sampling={"kind": "offset", "max_position": 0})
    with pytest.raises(ValueError, match="nope_layers"):
        _model(nope_layers=(9,))
