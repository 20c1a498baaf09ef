"""Dropout with torch's own masks, drawn by a C kernel: the same bits, the same generator state, less time.

torch draws a dropout mask on the CPU with ``bernoulli_``, one element at a time from its Mersenne Twister (on
some CPUs it uses MKL's generator instead), about 6 ns per element: the 36 masks of a paper-scale training step
(12 layers x attention pattern, attention output, MLP output) take 15-20 ms of it.  :func:`dropout` draws the
same masks from the same generator in blocks (``rng_kernel.c``, through :mod:`posym.ckernel`) and leaves the
generator exactly where ``bernoulli_`` would have, so training gives the same numbers, bit for bit, with or
without it (``tests/test_dropout.py``).

It is used only where it is known to agree: the first call checks the kernel against torch's own ``bernoulli_`` on
a private generator (a few thousand elements across a twist of the generator), and a CPU where torch draws
differently (MKL) or a process without a C compiler (or with ``POSYM_C_KERNEL=0``) keeps
``torch.nn.functional.dropout``.  Floating-point CPU tensors on the default generator take the kernel (under
autocast too: dropout runs in its input's dtype).

:func:`attention` is ``scaled_dot_product_attention`` for training: with dropout, torch's CPU SDPA runs its
composite "math" implementation, which :func:`attention` writes out op for op (scaled q and k, a -inf causal
mask, ``_safe_softmax``) so that the pattern's dropout can take the kernel's mask; without dropout, or where the
kernel is not used, it calls SDPA itself.
"""
from __future__ import annotations

import math
import threading
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import ckernel

_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_STATE_BYTES = 5056  # torch's CPU generator state: the Mersenne Twister's 624 words and its position
_check_lock = threading.Lock()
_draw_lock = threading.Lock()
_usable: dict = {}


def _threshold(keep: float) -> int:
    """ceil(keep * 2^53): an element is kept iff its 53 random bits are below it (see rng_kernel.c)."""
    return math.ceil(keep * 2.0 ** 53)


def _scale(keep: float, dtype: torch.dtype) -> float:
    """The value of a kept element, as torch's ``noise.div_(keep)`` computes it in ``dtype``."""
    return torch.ones((), dtype=dtype).div_(keep).item()


def mask(shape, keep: float, dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None,
         fn=None) -> torch.Tensor:
    """``torch.empty(shape, dtype=dtype).bernoulli_(keep, generator=generator).div_(keep)`` by the C kernel ``fn``
    (default: :func:`posym.ckernel.rng_kernel`), advancing ``generator`` (default: torch's default CPU generator)
    as that call would.  A draw by torch itself in another thread during the call would be lost (posym trains in
    one thread per process).  The kernel writes float32; a mask of another dtype is 0 or torch's own 1/keep in
    that dtype (``tests/test_dropout.py`` checks float64, bfloat16 and float16 against torch)."""
    fn = fn or ckernel.rng_kernel()
    if fn is None:
        raise RuntimeError("the dropout C kernel is not available (no C compiler, or POSYM_C_KERNEL=0)")
    gen = generator if generator is not None else torch.default_generator
    out = torch.empty(shape, dtype=torch.float32)
    with _draw_lock:  # read, advance and write back the state as one step among posym's own threads
        state = gen.get_state()
        if state.numel() != _STATE_BYTES or state.dtype != torch.uint8:
            raise RuntimeError(f"unexpected CPU generator state ({state.numel()} bytes, {state.dtype})")
        code = fn(out.data_ptr(), out.numel(), _threshold(keep), _scale(keep, torch.float32), state.data_ptr())
        if code:
            raise RuntimeError("the CPU generator's state is not one torch writes (its position is out of range)")
        gen.set_state(state)
    if dtype != torch.float32:
        out = (out != 0).to(dtype).mul_(_scale(keep, dtype))
    return out


def available() -> bool:
    """True when the kernel is built and draws exactly torch's masks on this CPU (checked once per process)."""
    with _check_lock:
        if "ok" not in _usable:
            _usable["ok"] = _self_check()
        return _usable["ok"]


@contextmanager
def torch_masks():
    """Within this block dropout draws its masks with torch's own ``bernoulli_`` (for comparisons)."""
    with _check_lock:
        before = _usable.get("off", False)
        _usable["off"] = True
    try:
        yield
    finally:
        _usable["off"] = before


def _self_check() -> bool:
    fn = ckernel.rng_kernel()
    if fn is None:
        return False
    try:
        for seed, keep, n, skip in ((1234, 0.9, 3001, 5), (7, 0.5, 700, 0), (99, 0.3, 1, 623)):
            a, b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            if skip:  # start mid-block, and once a single word before a twist
                torch.rand(skip, generator=a)
                torch.rand(skip, generator=b)
            want = torch.empty(n).bernoulli_(keep, generator=a).div_(keep)
            got = mask((n,), keep, generator=b, fn=fn)
            if not (torch.equal(want, got) and torch.equal(a.get_state(), b.get_state())):
                return False
    except RuntimeError:
        return False
    return True


def _takes_kernel(x: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype in _DTYPES and not x.is_nested and not _usable.get("off")
            and available())


def dropout(x: torch.Tensor, p: float, training: bool = True, inplace: bool = False) -> torch.Tensor:
    """``torch.nn.functional.dropout`` with the mask drawn by the C kernel where it agrees with torch's."""
    # contiguous only: torch fills a mask shaped like x in x's memory order, the kernel in row-major order
    if (not training or p == 0.0 or not 0.0 < p < 1.0 or x.numel() == 0 or not x.is_contiguous()
            or not _takes_kernel(x)):
        return F.dropout(x, p, training, inplace)
    noise = mask(x.shape, 1.0 - p, x.dtype)
    return x.mul_(noise) if inplace else x * noise


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its masks through :func:`dropout` (same parameters, state dict and output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training, self.inplace)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0,
              is_causal: bool = False) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)``, q (B, H, Tq, Dh),
    k and v (B, H, T, Dh); with dropout, the same composite arithmetic as torch's CPU math path with the
    pattern's mask from :func:`dropout`."""
    if (dropout_p == 0.0 or q.dtype not in (torch.float32, torch.float64) or torch.is_autocast_enabled("cpu")
            or not _takes_kernel(q)):  # torch's math path computes half precision in float32: not written out here
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=is_causal)
    s = math.sqrt(1.0 / math.sqrt(q.shape[-1]))  # torch scales q and k by the square root of the scale each
    scores = (q * s) @ (k.transpose(-2, -1) * s)  # (B, H, Tq, T)
    if is_causal:
        Tq, T = q.shape[-2], k.shape[-2]
        keep = torch.ones(Tq, T, dtype=torch.bool).tril()
        scores = scores + torch.zeros(Tq, T, dtype=q.dtype).masked_fill_(keep.logical_not(), -math.inf)
    pattern = torch.ops.aten._safe_softmax(scores, -1)
    return dropout(pattern, dropout_p) @ v
