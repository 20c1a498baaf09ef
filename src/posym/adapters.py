"""Attention layouts of Hugging Face RoPE models, for the positional and symbolic scores of :mod:`posym.scores`.

The fast metric needs, for every layer, the *pre-RoPE* query of the last token and the pre-RoPE keys of every
position, per head, together with the rotation, the attention scale, the logit soft-cap and the mask the model
itself applies.  Nothing here re-implements a model: an adapter runs the ``transformers`` model once and reads
those quantities where the model computes them.

* **Queries and keys** are taken at the call of the model's own ``apply_rotary_pos_emb`` (the module-level
  function of the attention class's module is wrapped for the duration of one forward pass).  Whatever the model
  did before the rotation -- fused ``qkv`` projections (GPT-NeoX, Phi-3), biases (Qwen2), q/k RMS norms (Qwen3,
  Gemma 3) -- is already in them.  GPT-J rotates only the first ``rotary_dim`` dimensions and passes the rotary
  part alone to its function, so its queries and keys are read from ``q_proj``/``k_proj`` instead.
* **The rotation** is the one the model applies: the ``(cos, sin)`` tensors it hands to every decoder layer
  (``position_embeddings``, attention scaling of scaled RoPE variants included).  What an adapter adds is the
  *pairing* of dimensions: ``rotate_half`` models turn dimensions ``(f, f + R/2)`` together, GPT-J neighbouring
  pairs ``(2f, 2f + 1)``.  Dimensions beyond the rotary ones (partial rotary: GPT-NeoX/Pythia, GPT-J, Phi-3
  variants) are position-free.
* **Mask, scale, soft-cap**: the attention mask the model passes to each layer (causal, sliding window), the
  attention module's ``scaling`` and ``attn_logit_softcapping`` (Gemma 2).
* **The re-run** (:func:`rerun_rows`) calls the real decoder layer on hidden states with two rows exchanged,
  with exactly the keyword arguments the model passed it, and reads the attention weights the layer's attention
  module returns (eager attention).  It is the slow reference for the fast method.

Grouped-query attention: query head ``h`` reads key/value head ``h // (H / H_kv)``; keys are expanded to the
query heads.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Sequence

import torch



def swapped_batches(h: torch.Tensor, pairs: torch.Tensor, chunk: int):
    """For each prompt ``n`` of the hidden states ``h`` (N, T, d): the unswapped row followed by one row per swap
    ``(i, j)`` of ``pairs`` (S, 2) with positions i and j exchanged, in chunks of ``chunk`` rows.  Yields
    ``(n, rows)``; rows is (≤ chunk, T, d)."""
    S = len(pairs)
    s_idx = torch.arange(1, S + 1)
    for n in range(h.shape[0]):
        batch = h[n][None].repeat(S + 1, 1, 1)
        batch[s_idx, pairs[:, 0]] = h[n, pairs[:, 1]]
        batch[s_idx, pairs[:, 1]] = h[n, pairs[:, 0]]
        for s in range(0, S + 1, chunk):
            yield n, batch[s:s + chunk]

class _Done(Exception):
    """Stops a forward pass once the layers asked for have run."""


class ScoresError(ValueError):
    """A problem with the model or the prompts that the user can fix; the message is one line."""


@dataclass(frozen=True)
class Layout:
    """Where an architecture keeps its layers and attention, and how it pairs RoPE dimensions."""

    name: str  # shown to users, e.g. "Llama / Mistral / SmolLM"
    layers: str  # attribute path from the *ForCausalLM model to the list of decoder layers
    attn: str  # attribute of a decoder layer holding its attention module
    pairing: str  # "half" (rotate_half) or "interleaved" (GPT-J's rotate_every_two)
    capture: str = "rope_fn"  # "rope_fn": at apply_rotary_pos_emb; "proj": q_proj/k_proj outputs (GPT-J)


_DECODER = dict(layers="model.layers", attn="self_attn", pairing="half")

#: model_type (``config.json``) -> layout
LAYOUTS: dict[str, Layout] = {
    "llama": Layout("Llama / SmolLM", **_DECODER),
    "mistral": Layout("Mistral", **_DECODER),
    "qwen2": Layout("Qwen2", **_DECODER),
    "qwen3": Layout("Qwen3 (q/k norms)", **_DECODER),
    "gemma": Layout("Gemma", **_DECODER),
    "gemma2": Layout("Gemma 2 (soft-capping, sliding windows)", **_DECODER),
    "gemma3_text": Layout("Gemma 3 (q/k norms, sliding windows)", **_DECODER),
    "phi3": Layout("Phi-3", **_DECODER),
    "mixtral": Layout("Mixtral", **_DECODER),
    "qwen3_moe": Layout("Qwen3-MoE (q/k norms)", **_DECODER),
    "olmo": Layout("OLMo", **_DECODER),
    "olmo2": Layout("OLMo 2 (q/k norms)", **_DECODER),
    "starcoder2": Layout("StarCoder2", **_DECODER),
    "granite": Layout("Granite", **_DECODER),
    "gpt_neox": Layout("GPT-NeoX / Pythia (partial rotary)", layers="gpt_neox.layers", attn="attention",
                       pairing="half"),
    "gptj": Layout("GPT-J (interleaved, partial rotary)", layers="transformer.h", attn="attn",
                   pairing="interleaved", capture="proj"),
}

#: architectures known to have no rotary position embedding (learned, absolute or ALiBi positions)
NO_ROPE = ("gpt2", "gpt_bigcode", "gpt_neo", "opt", "bloom", "mpt", "bert", "roberta", "distilbert", "t5", "bart",
           "xglm", "biogpt", "mbart", "ctrl", "openai-gpt", "xlnet")


def supported() -> str:
    """One line naming the supported ``model_type`` values."""
    return ", ".join(f"{k} ({v.name})" for k, v in LAYOUTS.items())


def _has_rope(config) -> bool:
    keys = ("rope_parameters", "rope_theta", "rotary_dim", "rotary_pct", "rotary_emb_base", "rope_scaling")
    return any(getattr(config, k, None) is not None for k in keys)


def layout_for(config) -> Layout:
    """The layout of a ``transformers`` config; one-line errors for models without RoPE and unknown ones."""
    mt = getattr(config, "model_type", None)
    if mt in LAYOUTS:
        return LAYOUTS[mt]
    if mt in NO_ROPE or not _has_rope(config):
        raise ScoresError(f"model type {mt!r} has no rotary position embedding (RoPE); the positional and symbolic "
                          f"scores of this tool need a RoPE model. Supported: {supported()}")
    raise ScoresError(f"model type {mt!r} is not supported. Supported: {supported()}")


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class LayerCapture:
    """What one forward pass gave for one layer (prompts N, tokens T, query heads H, head dim d)."""

    hidden: torch.Tensor  # (N, T, D) the residual stream entering the layer
    kwargs: dict  # the keyword arguments the model called the layer with
    q: torch.Tensor  # (N, H, d) pre-RoPE query of the last token
    k: torch.Tensor  # (N, H, T, d) pre-RoPE keys, expanded to the query heads
    cos: torch.Tensor  # (B, T, F) cos(p g_f) of the model's rotation (attention scaling included), B = 1 or N
    sin: torch.Tensor  # (B, T, F)
    visible: torch.Tensor  # (T,) bool: the keys the last query may attend to (the model's own mask)


class Adapter:
    """A ``transformers`` causal LM seen through its attention layout (eval mode, eager attention)."""

    def __init__(self, model, layout: Layout | None = None):
        self.model = model
        self.layout = layout or layout_for(model.config)
        self.layers = _get(model, self.layout.layers)
        a0 = self.attention(0)
        cfg = model.config
        self.n_heads = int(getattr(cfg, "num_attention_heads"))
        self.n_kv_heads = int(getattr(cfg, "num_key_value_heads", None) or self.n_heads)
        self.head_dim = int(getattr(a0, "head_dim", None) or getattr(a0, "head_size", None)
                            or cfg.hidden_size // self.n_heads)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def max_positions(self) -> int | None:
        cfg = self.model.config
        for k in ("max_position_embeddings", "n_positions"):
            v = getattr(cfg, k, None)
            if v:
                return int(v)
        return None

    def attention(self, layer: int):
        return getattr(self.layers[layer], self.layout.attn)

    def scale(self, layer: int) -> float:
        return float(self.attention(layer).scaling)

    def softcap(self, layer: int) -> float | None:
        v = getattr(self.attention(layer), "attn_logit_softcapping", None)
        return float(v) if v else None

    def describe(self) -> dict:
        cfg = self.model.config
        return {"model_type": cfg.model_type, "layout": self.layout.name, "layers": self.n_layers,
                "query_heads": self.n_heads, "kv_heads": self.n_kv_heads, "head_dim": self.head_dim,
                "pairing": self.layout.pairing}

    # -----------------------------------------------------------------------------------------
    def _rope_module(self, layer: int):
        mod = sys.modules[type(self.attention(layer)).__module__]
        if not hasattr(mod, "apply_rotary_pos_emb"):
            raise ScoresError(f"{mod.__name__} has no apply_rotary_pos_emb: the {self.layout.name} layout does not "
                              "fit this version of transformers")
        return mod

    @torch.no_grad()
    def capture(self, input_ids: torch.Tensor, layers: Sequence[int] | None = None,
                hidden: dict[int, torch.Tensor] | None = None) -> dict[int, LayerCapture]:
        """Run the model once on ``input_ids`` (N, T) and capture, for every layer in ``layers``, its input,
        its keyword arguments, the pre-RoPE last query and keys, the rotation and the last query's mask row.

        ``hidden``: optional {layer: (N, T, D)} hidden states that *replace* the layer's input (the rest of the
        model runs as usual); used to plant hand-built inputs in a real layer."""
        layers = list(range(self.n_layers)) if layers is None else [int(l) for l in layers]
        want = set(layers)
        got: dict[int, dict] = {l: {} for l in layers}
        current = [None]
        handles = []

        last = max(layers)

        def pre(l, module, args, kwargs):
            current[0] = l
            if l > last:
                raise _Done  # nothing after the last wanted layer is needed
            if l in want:
                if hidden is not None and l in hidden:
                    if args:
                        args = (hidden[l], *args[1:])
                    else:
                        kwargs = {**kwargs, "hidden_states": hidden[l]}
                h = args[0] if args else kwargs["hidden_states"]
                got[l]["hidden"] = h.detach()
                got[l]["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
                return args, kwargs
            return None

        for l in range(self.n_layers):
            handles.append(self.layers[l].register_forward_pre_hook(
                lambda m, a, k, l=l: pre(l, m, a, k), with_kwargs=True))
        patches = []
        if self.layout.capture == "rope_fn":
            mods = {id(m): m for m in (self._rope_module(l) for l in layers)}.values()
            for mod in mods:
                orig = mod.apply_rotary_pos_emb

                def wrapped(q, k, cos, sin, *a, _orig=orig, **kw):
                    st = got.get(current[0])
                    if st is not None and "q" not in st:
                        st["q"], st["k"], st["cs"] = q.detach(), k.detach(), (cos.detach(), sin.detach())
                    return _orig(q, k, cos, sin, *a, **kw)

                patches.append((mod, orig))
                mod.apply_rotary_pos_emb = wrapped
        else:  # projections (GPT-J): (N, T, H * d) outputs
            for l in layers:
                attn = self.attention(l)
                for kind in ("q", "k"):
                    handles.append(getattr(attn, f"{kind}_proj").register_forward_hook(
                        lambda m, i, o, l=l, kind=kind: got[l].__setitem__(kind, o.detach())))
        was_training = self.model.training
        self.model.eval()
        try:
            base = _get(self.model, self.layout.layers.rsplit(".", 1)[0])  # the backbone (no vocabulary projection)
            base(input_ids=input_ids, use_cache=False)
        except _Done:
            pass
        finally:
            for mod, orig in patches:
                mod.apply_rotary_pos_emb = orig
            for h in handles:
                h.remove()
            self.model.train(was_training)
        return {l: self._finish(l, got[l], input_ids.shape) for l in layers}

    def _finish(self, layer: int, st: dict, shape) -> LayerCapture:
        N, T = shape
        H, d = self.n_heads, self.head_dim
        if "q" not in st:
            raise ScoresError(f"layer {layer} did not apply a rotary embedding (a layer without RoPE?); this tool "
                              "scores RoPE attention only")
        q, k = st["q"], st["k"]
        if self.layout.capture == "proj":
            q = q.view(N, T, H, d).transpose(1, 2)
            k = k.view(N, T, -1, d).transpose(1, 2)
            sin, cos = st["kwargs"]["position_embeddings"]  # GPT-J hands (sin, cos), F = rotary_dim / 2 each
        else:
            cos, sin = st["cs"]
            if cos.dim() == 4:
                cos, sin = cos[:, 0], sin[:, 0]
            F = cos.shape[-1] // 2
            cos, sin = cos[..., :F], sin[..., :F]  # rotate_half: the second half repeats the first
        if q.shape[1] != H or q.shape[2] != T:
            raise ScoresError(f"layer {layer}: unexpected query shape {tuple(q.shape)}")
        q = q[:, :, -1]
        groups = H // k.shape[1]
        k = k.repeat_interleave(groups, dim=1) if groups > 1 else k
        mask = st["kwargs"].get("attention_mask")
        if isinstance(mask, dict):  # some models pass one mask per layer type
            mask = mask.get(getattr(self.attention(layer), "layer_type", "full_attention"))
        if mask is None:
            visible = torch.ones(T, dtype=torch.bool)
        else:
            row = mask[:, 0, -1, -T:] if mask.dim() == 4 else mask[:, -1, -T:]
            vis = row if row.dtype == torch.bool else row > torch.finfo(row.dtype).min / 2
            if not (vis == vis[:1]).all():
                raise ScoresError("the prompts of one batch have different attention masks (padding?); "
                                  "prompts must be scored without padding")
            visible = vis[0].cpu()
        return LayerCapture(hidden=st["hidden"], kwargs=st["kwargs"], q=q, k=k, cos=cos, sin=sin, visible=visible)

    # -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def rerun_rows(self, input_ids: torch.Tensor, layer: int, pairs: torch.Tensor, chunk: int = 512,
                   cap: LayerCapture | None = None):
        """The last query's attention row of ``layer`` on the original input and after every swap ``(i, j)``
        of ``pairs`` (positions in the prompt), by calling the real decoder layer on hidden states whose rows
        i and j are exchanged, with the keyword arguments the model gave it (mask, positions, rotation).
        Returns ``D`` (N, H, T) and ``Dp`` (N, H, S, T), in the model's dtype."""
        if cap is None:
            cap = self.capture(input_ids, [layer])[layer]
        h = cap.hidden
        N, T, Dm = h.shape
        S = len(pairs)
        block = self.layers[layer]
        attn = self.attention(layer)
        rows: list[torch.Tensor] = []
        grab = attn.register_forward_hook(
            lambda m, i, o: rows.append(None if o[1] is None else o[1][:, :, -1].detach()))
        was_training = self.model.training
        self.model.eval()
        try:
            for n, part in swapped_batches(h, pairs, chunk):
                block(part, **_expand(cap.kwargs, n, N, len(part)))
        finally:
            grab.remove()
            self.model.train(was_training)
        if any(r is None for r in rows):
            raise ScoresError("the attention module returned no weights; load the model with "
                              "attn_implementation='eager'")
        out = torch.cat(rows).view(N, S + 1, -1, T).transpose(1, 2)  # (N, H, S+1, T)
        return out[:, :, 0], out[:, :, 1:]


def _expand(kwargs: dict, n: int, N: int, b: int) -> dict:
    """The layer's keyword arguments for prompt ``n``, repeated ``b`` times (tensors whose first dim is N;
    others, e.g. positions shared by all prompts, broadcast as they are)."""
    def one(v):
        if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == N:
            return v[n:n + 1].expand(b, *v.shape[1:])
        if isinstance(v, tuple):
            return tuple(one(x) for x in v)
        if isinstance(v, dict):
            return {k: one(x) for k, x in v.items()}
        return v
    return {k: one(v) for k, v in kwargs.items()}


# ---------------------------------------------------------------------------------------------
# TransformerLens
# ---------------------------------------------------------------------------------------------


def is_hooked_transformer(model) -> bool:
    """A TransformerLens ``HookedTransformer`` (recognised by its config, without importing TransformerLens)."""
    return hasattr(getattr(model, "cfg", None), "positional_embedding_type") and hasattr(model, "blocks")


class LensAdapter:
    """A TransformerLens ``HookedTransformer`` with rotary attention, with the interface of :class:`Adapter`.

    The pre-RoPE queries and keys come from the ``hook_q``/``hook_k`` hook points of every attention layer; the
    rotation is the layer's own ``apply_rotary`` applied to unit vectors (one per frequency), and is checked
    against what the model itself rotated, ``hook_rot_q``/``hook_rot_k``.  The scale is ``1 / attn_scale``, the
    soft-cap ``cfg.attn_scores_soft_cap``, and local layers see the last ``cfg.window_size`` keys.  The re-run
    calls the real block on swapped ``hook_resid_pre`` states and reads ``hook_pattern``."""

    def __init__(self, model):
        cfg = model.cfg
        if cfg.positional_embedding_type != "rotary":
            raise ScoresError(f"this HookedTransformer uses {cfg.positional_embedding_type!r} position embeddings, "
                              "not rotary ones (RoPE); the scores of this tool need RoPE")
        self.model = model
        pairing = "interleaved" if getattr(cfg, "rotary_adjacent_pairs", False) else "half"
        self.layout = Layout("TransformerLens HookedTransformer", layers="blocks", attn="attn", pairing=pairing,
                             capture="lens")
        self.layers = model.blocks
        self.n_heads = int(cfg.n_heads)
        self.n_kv_heads = int(getattr(cfg, "n_key_value_heads", None) or cfg.n_heads)
        self.head_dim = int(cfg.d_head)
        self.max_positions = int(cfg.n_ctx)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def attention(self, layer: int):
        return self.layers[layer].attn

    def scale(self, layer: int) -> float:
        cfg = self.model.cfg
        return 1.0 / float(self.attention(layer).attn_scale) if cfg.use_attn_scale else 1.0

    def softcap(self, layer: int) -> float | None:
        cap = float(getattr(self.model.cfg, "attn_scores_soft_cap", -1.0) or -1.0)
        return cap if cap > 0 else None

    def describe(self) -> dict:
        cfg = self.model.cfg
        return {"model_type": "transformer_lens", "layout": self.layout.name, "layers": self.n_layers,
                "query_heads": self.n_heads, "kv_heads": self.n_kv_heads, "head_dim": self.head_dim,
                "pairing": self.layout.pairing, "rotary_dim": int(cfg.rotary_dim)}

    def _rotation(self, layer: int, T: int, dtype):
        """cos, sin (1, T, F) of the layer's own rotation, from ``apply_rotary`` on unit vectors."""
        R = int(self.model.cfg.rotary_dim)
        F = R // 2
        x = torch.zeros(1, T, F, self.head_dim, dtype=dtype)
        re = torch.arange(F) if self.layout.pairing == "half" else 2 * torch.arange(F)
        im = re + F if self.layout.pairing == "half" else re + 1
        x[0, :, torch.arange(F), re] = 1.0  # "head" f holds the unit vector of frequency f
        y = self.attention(layer).apply_rotary(x, 0)
        f = torch.arange(F)
        return y[:, :, f, re[f]], y[:, :, f, im[f]]

    @torch.no_grad()
    def capture(self, input_ids: torch.Tensor, layers: Sequence[int] | None = None,
                hidden: dict[int, torch.Tensor] | None = None) -> dict[int, LayerCapture]:
        layers = list(range(self.n_layers)) if layers is None else [int(l) for l in layers]
        got: dict[int, dict] = {l: {} for l in layers}
        hooks = []
        for l in layers:
            def resid(t, hook, l=l):
                if hidden is not None and l in hidden:
                    t = hidden[l].to(t.dtype)
                got[l]["hidden"] = t.detach()
                return t
            hooks.append((f"blocks.{l}.hook_resid_pre", resid))
            for name in ("q", "k", "rot_q", "rot_k"):
                hooks.append((f"blocks.{l}.attn.hook_{name}",
                              lambda t, hook, l=l, name=name: got[l].__setitem__(name, t.detach())))
        was_training = self.model.training
        self.model.eval()
        try:
            self.model.run_with_hooks(input_ids, fwd_hooks=hooks, stop_at_layer=max(layers) + 1)
        finally:
            self.model.train(was_training)
        N, T = input_ids.shape
        cfg = self.model.cfg
        out = {}
        for l in layers:
            st = got[l]
            q, k = st["q"].transpose(1, 2), st["k"].transpose(1, 2)  # (N, heads, T, d)
            cos, sin = self._rotation(l, T, q.dtype)
            self._check_rotation(l, q, k, st["rot_q"].transpose(1, 2), st["rot_k"].transpose(1, 2), cos, sin)
            groups = self.n_heads // k.shape[1]
            k = k.repeat_interleave(groups, dim=1) if groups > 1 else k
            visible = torch.ones(T, dtype=torch.bool)
            types = getattr(cfg, "attn_types", None)
            if types is not None and types[l] == "local" and T > cfg.window_size:
                visible[:T - cfg.window_size] = False
            out[l] = LayerCapture(hidden=st["hidden"], kwargs={}, q=q[:, :, -1], k=k, cos=cos, sin=sin,
                                  visible=visible)
        return out

    def _check_rotation(self, layer, q, k, rq, rk, cos, sin):
        """The rotation read from ``apply_rotary`` must reproduce ``hook_rot_q``/``hook_rot_k``."""
        F = cos.shape[-1]
        R = 2 * F
        if self.layout.pairing == "half":
            sl_r, sl_i = slice(0, F), slice(F, R)
        else:
            sl_r, sl_i = slice(0, R, 2), slice(1, R, 2)
        c, s = cos[:, None], sin[:, None]  # (1, 1, T, F)
        for x, rx in ((q, rq), (k, rk)):
            xr, xi = x[..., sl_r], x[..., sl_i]
            err = max(float((xr * c - xi * s - rx[..., sl_r]).abs().max()),
                      float((xi * c + xr * s - rx[..., sl_i]).abs().max()),
                      float((x[..., R:] - rx[..., R:]).abs().max()) if R < x.shape[-1] else 0.0)
            if err > 1e-4 * max(1.0, float(rx.abs().max())):
                raise ScoresError(f"layer {layer}: hook_rot_q/hook_rot_k are not the rotation of hook_q/hook_k "
                                  f"that apply_rotary describes (difference {err:.1e}); this RoPE variant is not "
                                  "supported")

    @torch.no_grad()
    def rerun_rows(self, input_ids: torch.Tensor, layer: int, pairs: torch.Tensor, chunk: int = 512,
                   cap: LayerCapture | None = None):
        """As :meth:`Adapter.rerun_rows`: the real block on swapped ``hook_resid_pre`` states, ``hook_pattern``."""
        if cap is None:
            cap = self.capture(input_ids, [layer])[layer]
        h = cap.hidden
        N, T, _ = h.shape
        S = len(pairs)
        rows: list[torch.Tensor] = []
        grab = self.attention(layer).hook_pattern.register_forward_hook(
            lambda m, i, o: rows.append(o[:, :, -1].detach()))
        try:
            for _, part in swapped_batches(h, pairs, chunk):
                self.layers[layer](part)
        finally:
            grab.remove()
        out = torch.cat(rows).view(N, S + 1, -1, T).transpose(1, 2)
        return out[:, :, 0], out[:, :, 1:]


def adapter_for(model):
    """:class:`LensAdapter` for a TransformerLens ``HookedTransformer``, else :class:`Adapter`."""
    return LensAdapter(model) if is_hooked_transformer(model) else Adapter(model)
