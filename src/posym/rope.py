"""Rotary position embeddings (RoPE), GPT-J convention.

GPT-J rotates *interleaved* pairs: frequency ``k`` (0-based) acts on dimensions ``(2k, 2k+1)``.
Its angle is ``g_k = base ** (-2k / rotary_dim)``; ``k = 0`` is the fastest rotation.  The papers
number frequencies from 1 ("frequency ID 1" is ``g = 1``); we use 0-based indices in code and say
"ID" (1-based) only in plots and tables, via :func:`frequency_id`.

A vector rotated at position ``i`` and a key rotated at position ``j`` give
``<R_i q, R_j k> = q^T R_{j-i} k``: the logit depends on positions only through ``i - j``.
"""
from __future__ import annotations

import torch


def rope_angles(rotary_dim: int, base: float = 10000.0) -> torch.Tensor:
    """Angles ``g_k = base^(-2k/rotary_dim)`` for ``k = 0..rotary_dim/2-1`` (float64, shape (rotary_dim/2,))."""
    if rotary_dim < 0 or rotary_dim % 2:
        raise ValueError(f"rotary_dim must be a non-negative even number, got {rotary_dim}")
    if rotary_dim == 0:
        return torch.zeros(0, dtype=torch.float64)
    if base <= 0:
        raise ValueError(f"rope base must be positive, got {base}")
    k = torch.arange(0, rotary_dim, 2, dtype=torch.float64)
    return base ** (-k / rotary_dim)


def frequency_id(k: int) -> int:
    """1-based frequency ID used by the papers for the 0-based index ``k``."""
    return k + 1


def rope_cos_sin(positions: torch.Tensor, angles: torch.Tensor, dtype=torch.float32):
    """cos/sin tables for ``positions`` (shape (T,)) -> two tensors of shape (T, 2*len(angles)).

    Each angle is repeated twice (interleaved layout), so the tables multiply a vector directly.
    Computed in float64 and cast, so long positions (5,000+) keep their precision.
    """
    theta = positions.to(torch.float64)[:, None] * angles.to(torch.float64)[None, :]  # (T, F)
    theta = theta.repeat_interleave(2, dim=-1)  # (T, 2F)
    return theta.cos().to(dtype), theta.sin().to(dtype)


def rotate_every_two(x: torch.Tensor) -> torch.Tensor:
    """(x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...): multiplication by i on each interleaved pair."""
    x1 = x[..., ::2]
    x2 = x[..., 1::2]
    return torch.stack((-x2, x1), dim=-1).flatten(-2)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of ``x`` (..., T, D); the rest pass through unchanged.

    ``cos``/``sin`` have shape (T, R) and broadcast over leading dims.
    """
    r = cos.shape[-1]
    if r == 0:
        return x
    xr, xp = x[..., :r], x[..., r:]
    xr = xr * cos + rotate_every_two(xr) * sin
    return torch.cat((xr, xp), dim=-1) if xp.shape[-1] else xr


def rotation_2d(angle: float) -> torch.Tensor:
    """The 2x2 rotation matrix rho(angle) (float64), matching one RoPE pair: (x0, x1) -> rho @ (x0, x1)."""
    a = torch.as_tensor(angle, dtype=torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    return torch.stack((torch.stack((c, -s)), torch.stack((s, c))))
