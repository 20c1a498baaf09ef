"""Rotary position embeddings (RoPE), GPT-J convention.

GPT-J rotates *interleaved* pairs: frequency ``k`` (0-based) acts on dimensions ``(2k, 2k+1)``.
Its angle is ``g_k = base ** (-2k / rotary_dim)``; ``k = 0`` is the fastest rotation.  The papers
number frequencies from 1 ("frequency ID 1" is ``g = 1``); we use 0-based indices in code and say
"ID" (1-based) only in plots and tables, via :func:`frequency_id`.

A vector rotated at position ``i`` and a key rotated at position ``j`` give
``<R_i q, R_j k> = q^T R_{j-i} k``: the logit depends on positions only through ``i - j``.
"""
from __future__ import annotations

import math

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
    theta = positions.to(torch.float64)[..., None] * angles.to(torch.float64)  # (T, F), or (B, T, F) for (B, T)
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


# ---------------------------------------------------------------------------------------------
# Length-generalisation remedies: rescaled rotations
# ---------------------------------------------------------------------------------------------
#
# Every remedy below is a new set of angles per layer (and, for YaRN, a factor on the rotated part of q and k),
# so the model, the metrics and the length analyses need no other change.  ``factor`` is the extension ratio
# ``s = L / L_train`` (1 or less: the remedy is the identity); :func:`length_factor` gives it for a prompt length.
#
# * ``"pi"``   position interpolation (Chen et al., 2023): positions times ``1/s``, i.e. every angle ``g_k / s``;
# * ``"ntk"``  NTK-aware base scaling: the base becomes ``base * s^(d/(d-2))`` (``d = rotary_dim``), which leaves
#              the fastest frequency unchanged and interpolates the slowest one by exactly ``s``;
# * ``"yarn"`` YaRN (Peng et al., 2023): per frequency, a linear ramp between extrapolation (the angle unchanged)
#              and interpolation (``g_k / s``), over the frequency indices between the two correction dimensions
#              ``d(r) = d ln(L_train / (2 pi r)) / (2 ln base)`` for ``r = beta_fast`` (32) and ``beta_slow`` (1)
#              full rotations in the training length (floored/ceiled as in the authors' code); plus the attention
#              temperature ``sqrt(1/t) = 0.1 ln s + 1`` multiplying the rotated part of q and of k (so the logits
#              of the rotated dims scale by ``(0.1 ln s + 1)^2``);
# * ``"base"`` a plain change of base to ``new_base`` (independent of the length);
# * ``"freq"`` ours: position interpolation (``g_k / s``) of only the frequencies each layer uses
#              (``freqs[layer]``: 0-based frequency indices), the others unchanged.

REMEDIES = ("pi", "ntk", "yarn", "base", "freq")
_REMEDY_KEYS = {"pi": {"factor"}, "ntk": {"factor"}, "yarn": {"factor", "train_length", "beta_fast", "beta_slow"},
                "base": {"new_base"}, "freq": {"factor", "freqs"}}


def length_factor(length: int, train_length: int = 17) -> float:
    """The extension ratio ``s = max(1, length / train_length)`` of a remedy for prompts of ``length`` tokens."""
    if not (isinstance(length, (int, float)) and length > 0):
        raise ValueError(f"length must be positive, got {length!r}")
    if not (isinstance(train_length, (int, float)) and train_length > 0):
        raise ValueError(f"train_length must be positive, got {train_length!r}")
    return max(1.0, float(length) / float(train_length))


def check_rope_scaling(scaling: dict | None, n_layer: int | None = None, n_freqs: int | None = None) -> dict | None:
    """Validate a remedy (``{"method": ..., parameters}``) and return it normalised (a new dict), or None.

    One clear error naming the problem: an unknown method or parameter, a factor or base that is not positive,
    a frequency index or layer out of range.
    """
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise ValueError(f"rope_scaling must be a dict with a 'method', got {type(scaling).__name__}")
    s = dict(scaling)
    method = s.pop("method", None)
    if method not in REMEDIES:
        raise ValueError(f"unknown RoPE remedy {method!r}: choose one of {', '.join(REMEDIES)}")
    unknown = set(s) - _REMEDY_KEYS[method]
    if unknown:
        raise ValueError(f"RoPE remedy {method!r} has no parameter(s) {sorted(unknown)}; "
                         f"it takes {sorted(_REMEDY_KEYS[method])}")
    out = {"method": method}
    if method != "base":
        f = s.get("factor", 1.0)
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or f <= 0:
            raise ValueError(f"RoPE remedy {method!r}: factor must be a positive number, got {f!r}")
        out["factor"] = float(f)
    if method == "base":
        b = s.get("new_base")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or b <= 1:
            raise ValueError(f"RoPE remedy 'base': new_base must be a number > 1, got {b!r}")
        out["new_base"] = float(b)
    if method == "yarn":
        tl = s.get("train_length", 17)
        if isinstance(tl, bool) or not isinstance(tl, int) or tl <= 0:
            raise ValueError(f"RoPE remedy 'yarn': train_length must be a positive integer, got {tl!r}")
        bf, bs = s.get("beta_fast", 32.0), s.get("beta_slow", 1.0)
        for name, v in (("beta_fast", bf), ("beta_slow", bs)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"RoPE remedy 'yarn': {name} must be positive, got {v!r}")
        if not bf > bs:
            raise ValueError(f"RoPE remedy 'yarn': beta_fast ({bf}) must exceed beta_slow ({bs})")
        out.update(train_length=int(tl), beta_fast=float(bf), beta_slow=float(bs))
    if method == "freq":
        fr = s.get("freqs")
        if not isinstance(fr, (list, tuple)) or not all(isinstance(x, (list, tuple)) for x in fr):
            raise ValueError("RoPE remedy 'freq': freqs must be a list with one list of frequency indices per layer")
        if n_layer is not None and len(fr) != n_layer:
            raise ValueError(f"RoPE remedy 'freq': freqs has {len(fr)} layers, the model has {n_layer}")
        norm = []
        for l, ks in enumerate(fr):
            ks = sorted({int(k) for k in ks})
            bad = [k for k in ks if k < 0 or (n_freqs is not None and k >= n_freqs)]
            if bad:
                raise ValueError(f"RoPE remedy 'freq': layer {l} has frequency indices {bad} outside "
                                 f"[0, {n_freqs if n_freqs is not None else 'n_freqs'})")
            norm.append(ks)
        out["freqs"] = norm
    return out


def yarn_ramp(rotary_dim: int, base: float, train_length: int, beta_fast: float = 32.0,
              beta_slow: float = 1.0) -> torch.Tensor:
    """YaRN's extrapolation weight per frequency (float64, shape (rotary_dim/2,)): 1 keeps the angle, 0 interpolates.

    The ramp is linear in the frequency index between the correction dimensions of ``beta_fast`` and ``beta_slow``
    rotations within ``train_length`` tokens (floored and ceiled, clipped to ``[0, rotary_dim - 1]``).
    """
    def corr(rot):
        return rotary_dim * math.log(train_length / (rot * 2 * math.pi)) / (2 * math.log(base))

    low, high = max(math.floor(corr(beta_fast)), 0), min(math.ceil(corr(beta_slow)), rotary_dim - 1)
    if low == high:
        high += 0.001
    k = torch.arange(rotary_dim // 2, dtype=torch.float64)
    return 1.0 - ((k - low) / (high - low)).clamp(0.0, 1.0)


def yarn_attention_factor(factor: float) -> float:
    """YaRN's ``sqrt(1/t) = 0.1 ln s + 1`` (1 for ``s <= 1``): the factor on the rotated part of q and of k."""
    return 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0


def scaled_angles(rotary_dim: int, base: float, scaling: dict | None, layer: int = 0) -> tuple[torch.Tensor, float]:
    """The remedied angles of ``layer`` (float64, (rotary_dim/2,)) and the factor on the rotated part of q and k.

    ``scaling`` as accepted by :func:`check_rope_scaling` (None: plain RoPE, :func:`rope_angles`, factor 1).
    """
    g = rope_angles(rotary_dim, base)
    if scaling is None or rotary_dim == 0:
        return g, 1.0
    sc = check_rope_scaling(scaling, n_freqs=rotary_dim // 2)
    m = sc["method"]
    if m == "base":
        return rope_angles(rotary_dim, sc["new_base"]), 1.0
    s = sc["factor"]
    if s <= 1.0:  # no extension: the identity (bit for bit)
        return g, 1.0
    if m == "pi":
        return g / s, 1.0
    if m == "ntk":
        d = rotary_dim
        return (rope_angles(d, base * s ** (d / (d - 2))) if d > 2 else g / s), 1.0
    if m == "yarn":
        keep = yarn_ramp(rotary_dim, base, sc["train_length"], sc["beta_fast"], sc["beta_slow"])
        return g / s * (1.0 - keep) + g * keep, yarn_attention_factor(s)
    # "freq"
    ks = sc["freqs"][layer] if layer < len(sc["freqs"]) else []
    out = g.clone()
    if ks:
        out[ks] = g[ks] / s
    return out, 1.0


# ---------------------------------------------------------------------------------------------
# Randomised positions in training
# ---------------------------------------------------------------------------------------------
POSITION_SAMPLING = ("offset", "subsample")


def check_position_sampling(sampling: dict | None) -> dict | None:
    """Validate ``{"kind": "offset" | "subsample", "max_position": M}`` (M: positions are drawn from [0, M))."""
    if sampling is None:
        return None
    if not isinstance(sampling, dict):
        raise ValueError(f"position_sampling must be a dict with a 'kind', got {type(sampling).__name__}")
    s = dict(sampling)
    kind = s.pop("kind", None)
    if kind not in POSITION_SAMPLING:
        raise ValueError(f"unknown position sampling {kind!r}: choose one of {', '.join(POSITION_SAMPLING)}")
    m = s.pop("max_position", None)
    if s:
        raise ValueError(f"position sampling has no parameter(s) {sorted(s)}; it takes ['kind', 'max_position']")
    if isinstance(m, bool) or not isinstance(m, int) or m <= 0:
        raise ValueError(f"position sampling: max_position must be a positive integer, got {m!r}")
    return {"kind": kind, "max_position": m}


def sample_positions(sampling: dict, batch: int, length: int, generator: torch.Generator | None = None,
                     device=None) -> torch.Tensor:
    """(batch, length) position ids drawn per prompt, increasing, in ``[0, max_position)``.

    ``"offset"``: ``o + arange(length)`` with ``o`` uniform in ``[0, max_position - length]``.  RoPE logits depend
    on positions only through ``i - j``, so this changes nothing but rounding (tested).
    ``"subsample"`` (randomised positional encodings, Ruoss et al., 2023): a uniformly random sorted subset of
    ``length`` distinct positions, so the distances between tokens vary from prompt to prompt.
    """
    sc = check_position_sampling(sampling)
    M = sc["max_position"]
    if length > M:
        raise ValueError(f"position sampling: {length} tokens do not fit in max_position={M}")
    if sc["kind"] == "offset":
        o = torch.randint(0, M - length + 1, (batch, 1), generator=generator, device=device)
        return o + torch.arange(length, device=device)
    r = torch.rand(batch, M, generator=generator, device=device)
    return r.topk(length, dim=-1).indices.sort(dim=-1).values
