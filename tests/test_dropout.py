"""Dropout masks from the C kernel (posym.dropout): torch's own masks, bit for bit, and the same training."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from posym import ckernel
from posym import dropout as D


def _kernel_or_skip():
    if ckernel.rng_kernel() is None:
        pytest.skip("no C compiler here: the dropout kernel cannot be built (torch's dropout runs instead)")


def _reference_mask(state: torch.Tensor, n: int, keep: float) -> tuple[np.ndarray, np.ndarray]:
    """Torch's CPU Bernoulli draws written out in numpy from its generator state: the Mersenne Twister MT19937
    (twist when `left` runs out, tempering), two 32-bit words (hi, lo) per element, u = (hi:lo mod 2^53) 2^-53,
    kept iff u < keep; returns the mask (0 or 1, float32) and the state afterwards."""
    b = bytearray(state.numpy().tobytes())
    left = int.from_bytes(b[8:12], "little", signed=True)
    nxt = int.from_bytes(b[16:24], "little")
    s = np.frombuffer(bytes(b[24:24 + 624 * 8]), dtype=np.uint64).astype(np.uint32)
    words = np.empty(2 * n, dtype=np.uint64)
    got = 0
    while got < 2 * n:
        left -= 1
        if left == 0:
            for i in range(624):  # in place and in order, as the recurrence is defined
                y = (int(s[i]) & 0x80000000) | (int(s[(i + 1) % 624]) & 0x7FFFFFFF)
                s[i] = int(s[(i + 397) % 624]) ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
            left, nxt = 624, 0
        y = int(s[nxt])
        nxt += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        words[got] = y & 0xFFFFFFFF
        got += 1
    bits = ((words[0::2] << np.uint64(32)) | words[1::2]) & np.uint64((1 << 53) - 1)
    mask = (bits.astype(np.float64) * 2.0 ** -53 < keep).astype(np.float32)
    out = bytearray(b)
    out[8:12] = int(left).to_bytes(4, "little", signed=True)
    out[16:24] = int(nxt).to_bytes(8, "little")
    out[24:24 + 624 * 8] = s.astype(np.uint64).tobytes()
    return mask, np.frombuffer(bytes(out), dtype=np.uint8)


@pytest.mark.parametrize("n, skip", [(1, 0), (311, 0), (312, 1), (313, 7), (700, 623), (1, 623), (2000, 300)])
def test_kernel_draws_the_mersenne_twister_bernoulli_masks(n, skip, ledger):
    """On any CPU: the kernel's masks and generator state equal torch's CPU algorithm written out in numpy, across
    twists of the generator (pairs of words split by a twist included)."""
    _kernel_or_skip()
    g = torch.Generator().manual_seed(1000 + n + skip)
    if skip:
        torch.randint(2, (skip,), generator=g)  # move the generator off a block boundary
    before = g.get_state()
    for keep in (0.9, 0.5):
        want, state = _reference_mask(g.get_state(), n, keep)
        got = D.mask((n,), keep, generator=g)
        assert np.array_equal(got.numpy(), want * np.float32(torch.ones(()).div_(keep).item()))
        assert np.array_equal(g.get_state().numpy(), state)
        ledger.rerun()
    assert not torch.equal(before, g.get_state())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("keep", [0.9, 0.5, 0.123456789, 1 - 1e-12])
def test_dropout_equals_torchs_dropout(keep, dtype, ledger):
    """posym's dropout equals ``F.dropout`` element for element and leaves torch's generator where it leaves it:
    with the kernel's masks where the kernel agrees with torch's ``bernoulli_`` (checked at first use), with
    torch's own where it does not."""
    for n, skip in ((5000, 0), (624, 3), (1, 1), (64 * 17 * 128, 11)):
        x = torch.randn(n, generator=torch.Generator().manual_seed(n)).to(dtype)
        outs = []
        for fn in (D.dropout, F.dropout):
            torch.manual_seed(n + skip)
            torch.rand(skip)
            outs.append((fn(x, 1.0 - keep), torch.get_rng_state()))
        (a, sa), (b, sb) = outs
        assert a.dtype == dtype and torch.equal(a, b) and torch.equal(sa, sb)
        ledger.rerun()
    if D.available():  # here the masks came from the kernel: the mask itself equals torch's noise
        a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
        want = torch.empty(999, dtype=dtype).bernoulli_(keep, generator=a).div_(keep)
        assert torch.equal(D.mask((999,), keep, dtype, generator=b), want)


def test_attention_equals_sdpa_in_training(ledger):
    """The math path written out, with the kernel's mask: forward and gradients bit for bit those of torch's SDPA
    with dropout (causal, and the single last query row of ``last_only``), and the same generator state."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(8, 1, 17, 128, requires_grad=True) for _ in range(3))
    for causal, qq in ((True, q), (False, q[:, :, -1:])):
        outs = []
        for fn in (F.scaled_dot_product_attention, D.attention):
            torch.manual_seed(5)
            o = fn(qq, k, v, dropout_p=0.1, is_causal=causal)
            outs.append((o, torch.autograd.grad(o.square().sum(), (q, k, v)), torch.get_rng_state()))
        (o1, g1, s1), (o2, g2, s2) = outs
        assert torch.equal(o1, o2) and all(torch.equal(a, b) for a, b in zip(g1, g2)) and torch.equal(s1, s2)
        ledger.rerun()
    # without dropout it is SDPA itself
    assert torch.equal(D.attention(q, k, v, 0.0, True), F.scaled_dot_product_attention(q, k, v, is_causal=True))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_is_bit_identical_with_the_kernels_masks(precision, ledger):
    """Three training steps of a model with dropout 0.1, the fast and the hooked path, in each precision of
    ``posym train``: the same losses, weights and generator state with the kernel's masks as with torch's."""
    from posym.model import GPTJ, ModelConfig
    from posym.train import half_gemms, precision_context

    cfg = ModelConfig.smoke(20, n_layer=3)
    x = torch.randint(0, 20, (16, 9), generator=torch.Generator().manual_seed(0))
    for fast in (True, False):
        runs = []
        for torch_masks in (False, True):
            torch.manual_seed(0)
            model = GPTJ(cfg).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            losses = []
            with D.torch_masks() if torch_masks else contextlib.nullcontext():
                for _ in range(3):
                    with precision_context(precision):
                        logits = model(x, last_only=True, fast=fast)[:, -1]
                    loss = F.cross_entropy(logits.float(), x[:, 0])
                    opt.zero_grad()
                    with half_gemms(precision):
                        loss.backward()
                    opt.step()
                    losses.append(loss.item())
            runs.append((losses, [p.detach().clone() for p in model.parameters()], torch.get_rng_state()))
        (l1, p1, s1), (l2, p2, s2) = runs
        assert l1 == l2 and all(torch.equal(a, b) for a, b in zip(p1, p2)) and torch.equal(s1, s2)
        ledger.rerun()


def test_training_draws_every_mask_with_the_kernel(monkeypatch):
    """Where the kernel agrees with torch, a training forward pass (fast and hooked path) leaves no mask to
    torch: neither ``F.dropout`` with p > 0 nor SDPA with dropout is called (the queries reach the attention
    transposed, the patterns and block outputs contiguous)."""
    from posym.model import GPTJ, ModelConfig

    calls = []

    class Spy:
        @staticmethod
        def dropout(x, p, training=True, inplace=False):
            calls.append(("dropout", p if training else 0.0))
            return F.dropout(x, p, training, inplace)

        @staticmethod
        def scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False):
            calls.append(("sdpa", dropout_p))
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)

    monkeypatch.setattr(D, "F", Spy)
    model = GPTJ(ModelConfig.smoke(20, n_layer=3)).train()
    x = torch.randint(0, 20, (4, 9))
    for fast in (True, False):
        model(x, last_only=True, fast=fast)
    with torch.no_grad():  # evaluation: SDPA without dropout, dropout layers off
        model.eval()(x, last_only=True)
    kinds = {k for k, _ in calls}
    assert kinds <= {"dropout", "sdpa"}
    if D.available():
        assert all(p == 0.0 for _, p in calls), calls
    else:
        assert any(p > 0.0 for _, p in calls)


def test_dropout_keeps_torchs_behaviour_where_the_kernel_does_not_apply():
    """Evaluation mode, p = 0, p = 1, a bad p, bf16 under autocast, a transposed input and in-place dropout
    behave as torch's."""
    x = torch.randn(4, 5)
    assert D.dropout(x, 0.1, training=False) is x
    assert D.dropout(x, 0.0) is x
    assert torch.equal(D.dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        D.dropout(x, 1.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(3)
        a = D.dropout(x.bfloat16(), 0.5)
        torch.manual_seed(3)
        b = F.dropout(x.bfloat16(), 0.5)
    assert torch.equal(a, b)
    t = torch.randn(6, 5).t()  # not contiguous: torch's mask follows the memory order
    torch.manual_seed(5)
    a = D.dropout(t, 0.5)
    torch.manual_seed(5)
    assert torch.equal(a, F.dropout(t, 0.5))
    m = D.Dropout(0.25)
    assert isinstance(m, torch.nn.Dropout) and repr(m) == repr(torch.nn.Dropout(0.25)) and m.state_dict() == {}
    y = x.clone()
    torch.manual_seed(4)
    out = D.dropout(y, 0.5, inplace=True)
    torch.manual_seed(4)
    assert out is y and torch.equal(out, F.dropout(x, 0.5))


def test_no_kernel_without_a_compiler(monkeypatch, tmp_path):
    """No compiler or POSYM_C_KERNEL=0: torch's dropout, and asking for a kernel mask says why it cannot."""
    monkeypatch.setattr(ckernel, "_loaded", {})
    monkeypatch.setattr(D, "_usable", {})
    monkeypatch.setenv("POSYM_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "/bin/false")
    assert ckernel.rng_kernel() is None and not D.available() and not list(tmp_path.iterdir())
    x = torch.randn(50)
    torch.manual_seed(1)
    a = D.dropout(x, 0.3)
    torch.manual_seed(1)
    assert torch.equal(a, F.dropout(x, 0.3))
    with pytest.raises(RuntimeError, match="dropout C kernel is not available"):
        D.mask((3,), 0.9)
    monkeypatch.setattr(ckernel, "_loaded", {})
    monkeypatch.setattr(D, "_usable", {})
    monkeypatch.delenv("CC")
    monkeypatch.setenv("POSYM_C_KERNEL", "0")
    assert ckernel.rng_kernel() is None and not D.available()


def test_kernel_refuses_a_state_torch_would_not_write(ledger):
    """A generator state whose position torch would never write (left = 0) is refused, not read past its end."""
    _kernel_or_skip()
    state = torch.Generator().manual_seed(0).get_state()
    out = torch.empty(4)
    state[8:12] = torch.tensor([0], dtype=torch.int32).view(torch.uint8)  # left = 0
    assert ckernel.rng_kernel()(out.data_ptr(), 4, math.ceil(0.9 * 2 ** 53), 1.0, state.data_ptr()) == 1
    ledger.fault()
