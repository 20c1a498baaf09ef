"""Head roles: the basic functions of Paper 2 (Sec. 3.2-3.3, Fig. 3) next to what trained heads do.

The "Head roles and basic functions" chapter uses this module to

* draw the idealised depth-wise rewriting of a prompt by Index / Retrieval / Reflexive (Fig. 3C/D) and the
  information flow of a trained model (Fig. 3A/B) on the same kind of grid (:func:`draw_layer_grid`,
  :func:`draw_rewriting`, :func:`draw_flow`);
* read where each trained head's last query attends (:func:`last_query_argmax`) and describe it by the role
  of the attended position in the prompt's chain (:func:`target_roles`);
* score how well each trained head matches the idealised function closest to it (:func:`match_summary`,
  built on :func:`posym.functions.match_rate`), against the rate a head attending at random would reach;
* classify every trained head as positional / symbolic / mixed from its final scores, over seeds
  (:func:`head_classes`, :func:`class_summary`);
* split a head's positional and symbolic scores by a property of the prompt (:func:`scores_by_group`), which
  shows why layer 0 of the Number model is mixed: it implements *selective* Index, which reads a letter at
  distance ``i`` and stays put when that token is a number, a content-dependent gate.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import functions as F
from ..metrics import classify
from ..spec import ChapterSpec, Param, Required, register

#: Quoted from Paper 2 (arXiv 2605.31558) (Fig. 3, Sec. 3.3).
PAPER_ROLES = {
    "fig3a_prompt": tuple("n h n v h y r s 6 3 2 7 7 8 4 7 2".split()),  # Fig. 3A (4 hops, answer n)
    "number": "Index (positional) in the first layers, then Reflexive, implemented symbolically",
    "letter": "Retrieval and Reflexive, both symbolic, in every layer",
    "reflexive": "symbolic in trained models (a 'nontrivial empirical observation')",
}

ROLES = ("query (self)", "first hop", "other chain token", "answer", "off the chain")


# -----------------------------------------------------------------------------------------------
# Idealised rewriting

def rewriting_arcs(seqs: Sequence[Sequence[str]], fns: Sequence) -> pd.DataFrame:
    """The reads of the idealised computation ``layer_plan`` returns (``seqs[l]`` enters layer ``l``, which
    applies ``fns[l]``): one row per layer and position with ``layer, pos, read`` (the position read, from
    :func:`posym.functions.ideal_attention`; NaN where undefined) and ``changed`` (the token is rewritten)."""
    rows = []
    for l, fn in enumerate(fns):
        s, nxt = seqs[l], seqs[l + 1]
        for p in range(len(s)):
            r = F.ideal_attention(s, fn, p)
            rows.append({"layer": l, "function": fn.__name__, "pos": p, "read": np.nan if r is None else r,
                         "changed": s[p] != nxt[p]})
    return pd.DataFrame(rows)


def draw_layer_grid(ax, rows: Sequence[Sequence[str]], arcs: pd.DataFrame, *, color: str, focus: int = -1,
                    row_labels: Sequence[str] | None = None, title: str | None = None, ideal: dict | None = None,
                    show_all: bool = True, target_window: int = 8):
    """Draw tokens by layer and one arc per read, in the manner of Paper 2's Fig. 3.

    ``rows[r]`` are the tokens shown on row ``r`` (row 0, the input, at the top; ``""`` draws a dot).  ``arcs``
    has columns ``layer`` (arc from row ``layer`` to row ``layer + 1``), ``pos`` (the reading position),
    ``read`` (the position read) and optionally ``weight`` (line width).  Arcs of position ``focus`` (the last
    query by default) are drawn in ``color``; the others, if ``show_all``, in light grey.  ``ideal`` maps a
    layer to the position(s) the idealised function would read for ``focus``: they get a hollow ring.
    Returns the number of focus arcs drawn.
    """
    from matplotlib.patches import FancyArrowPatch

    from ..plotting import COLORS

    n_rows, T = len(rows), len(rows[0])
    focus = focus % T
    ax.set_xlim(-0.8, T - 0.2)
    ax.set_ylim(-(n_rows - 1) - 0.6, 0.7)
    ax.axvspan(-0.5, target_window - 0.5, color=COLORS["target_window"], alpha=0.6, lw=0, zorder=0)
    drawn = 0
    for _, a in arcs.iterrows():
        if np.isnan(a["read"]):
            continue
        l, p, q = int(a["layer"]), int(a["pos"]), int(a["read"])
        is_focus = p == focus
        if not is_focus and not show_all:
            continue
        w = float(a["weight"]) if "weight" in arcs.columns else 1.0
        style = dict(color=color if is_focus else "#C8C8C8", lw=(0.6 + 2.2 * w) if is_focus else 0.3 + 0.6 * w,
                     alpha=1.0 if is_focus else 0.7, zorder=3 if is_focus else 1)
        arrow = FancyArrowPatch((q, -l), (p, -(l + 1)), arrowstyle="-|>", mutation_scale=8 if is_focus else 5,
                                shrinkA=6, shrinkB=6, connectionstyle="arc3,rad=0.0", **style)
        ax.add_patch(arrow)
        drawn += is_focus
    for r, toks in enumerate(rows):
        for p, tok in enumerate(toks):
            on_focus = p == focus
            if tok:
                ax.text(p, -r, tok, ha="center", va="center", fontsize=7.5 if len(tok) <= 2 else 6,
                        fontweight="bold" if on_focus else "normal", zorder=5,
                        bbox=dict(boxstyle="circle,pad=0.25", fc="white", ec=color if on_focus else "#888888",
                                  lw=1.2 if on_focus else 0.6))
            else:
                ax.plot(p, -r, "o", ms=3, color="#888888", zorder=4)
    if ideal:
        for l, qs in ideal.items():
            for q in np.atleast_1d(qs):
                ax.plot(q, -l, "o", ms=15, mfc="none", mec="black", mew=1.2, zorder=6)
    ax.set_yticks([-r for r in range(n_rows)])
    ax.set_yticklabels(row_labels if row_labels is not None else [f"L{r}" for r in range(n_rows)], fontsize=7)
    ax.set_xticks(range(T))
    ax.set_xticklabels([str(p) for p in range(T)], fontsize=7)
    ax.tick_params(length=0)
    ax.grid(False)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    return drawn


def draw_rewriting(ax, seq: Sequence[str], task, n_layers: int | None = None, color: str | None = None,
                   title: str | None = None):
    """Fig. 3C/D: the prompt rewritten by its task's function (Index or Retrieval) at every position in
    parallel, one depth per row, then Reflexive.  ``n_layers`` defaults to the resolution depth + 1.

    Every rewritten token gets an arc from the position it was read at; the last position's reads are in the
    task colour.  Returns the :func:`rewriting_arcs` table.
    """
    from ..plotting import task_color

    name = task if isinstance(task, str) else task.name
    fn = F.task_function(name)
    h = F.resolution_depth(seq, fn)
    if n_layers is None:
        n_layers = (h if h is not None else 4) + 1
    fns, seqs = F.layer_plan(seq, name, n_layers)
    arcs = rewriting_arcs(seqs, fns)
    shown = arcs[arcs["changed"] | (arcs["pos"] == len(seq) - 1)]
    shown = shown[~((shown["function"] == "reflexive") & (shown["pos"] != len(seq) - 1))]
    labels = ["input"] + [f"after L{l} ({f.__name__})" for l, f in enumerate(fns)]
    draw_layer_grid(ax, seqs, shown, color=color or task_color(name), row_labels=labels, title=title)
    return arcs


# -----------------------------------------------------------------------------------------------
# What trained heads do

@torch.no_grad()
def attention_patterns(model, samples, vocab) -> torch.Tensor:
    """Head-0 attention of every layer and query position: (N, L, T, T)."""
    from ..tasks import to_tensors

    x, _, _ = to_tensors(samples, vocab)
    names = [f"blocks.{l}.attn.hook_pattern" for l in range(model.cfg.n_layer)]
    model.eval()
    _, cache = model.run_with_cache(x, names=names)
    return torch.stack([cache[n][:, 0] for n in names], dim=1).float()


def last_query_argmax(model, samples, vocab, batch_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Arg-max key position and its weight for the last query of every layer: two arrays (N, L)."""
    args, weights = [], []
    for s in range(0, len(samples), batch_size):
        p = attention_patterns(model, samples[s:s + batch_size], vocab)[:, :, -1]  # (n, L, T)
        w, a = p.max(-1)
        args.append(a.numpy())
        weights.append(w.numpy())
    return np.concatenate(args), np.concatenate(weights)


def flow_table(model, sample, vocab) -> pd.DataFrame:
    """Arg-max attention of every query position in every layer for one prompt: rows ``layer, pos, read,
    weight`` (the input of :func:`draw_layer_grid`)."""
    p = attention_patterns(model, [sample], vocab)[0]  # (L, T, T)
    w, a = p.max(-1)
    L, T = a.shape
    return pd.DataFrame({"layer": np.repeat(np.arange(L), T), "pos": np.tile(np.arange(T), L),
                         "read": a.reshape(-1).numpy().astype(float), "weight": w.reshape(-1).numpy()})


def chain_trace(flow: pd.DataFrame, sample, value: str = "read") -> pd.DataFrame:
    """The rows of :func:`flow_table` for the positions on the prompt's chain (query first, answer last):
    index ``"<pos> <token>"``, one column per layer, holding the position read (or ``value="weight"``)."""
    piv = flow.pivot(index="pos", columns="layer", values=value)
    out = piv.loc[list(sample.chain)]
    if value == "read":
        out = out.astype(int)
    out.index = pd.Index([f"{p} {sample.tokens[p]}" for p in sample.chain], name="position")
    out.columns = pd.Index([f"L{l}" for l in out.columns], name="layer")
    return out


def draw_flow(ax, sample, flow: pd.DataFrame, task: str, n_layers: int, color: str | None = None,
              show_all: bool = True, title: str | None = None):
    """Fig. 3A/B: a trained model's arg-max attention by layer on one prompt.

    Row 0 shows the prompt; row ``l + 1`` the state after layer ``l``, labelled with the token the *idealised*
    computation (:func:`posym.functions.layer_plan`) holds there, so that the arcs of the trained model (an arc
    from the key read in row ``l`` to the query in row ``l + 1``; last query in colour, width = attention weight)
    can be compared with the rewriting; hollow rings mark where the idealised Index / Retrieval reads for the
    last query.  Returns the number of last-query arcs drawn.
    """
    from ..plotting import task_color

    fns, seqs = F.layer_plan(sample.tokens, task, n_layers)
    ideal = {}
    for l, fn in enumerate(fns):
        r = F.reads(seqs[l], fn, -1)
        if r and fn is not F.reflexive:  # Reflexive may read any copy: no single place to mark
            ideal[l] = list(r)
    labels = ["input"] + [f"after L{l} ({fns[l].__name__[:5]}.)" for l in range(n_layers)]
    return draw_layer_grid(ax, seqs, flow, color=color or task_color(task), row_labels=labels, ideal=ideal,
                           show_all=show_all, title=title)


def target_roles(argmax: np.ndarray, samples) -> pd.DataFrame:
    """Where the last query of each layer attends, by the role of that position in the prompt's chain.

    ``argmax`` is (N, L).  Roles: the query itself, the first hop's target (``chain[1]``), another token on the
    chain, the answer (``chain[-1]``; for 1-hop prompts the first hop *is* the answer and counts as answer) or a
    position off the chain.  Returns a layer x role table of fractions of prompts.
    """
    a = np.asarray(argmax)
    N, L = a.shape
    counts = np.zeros((L, len(ROLES)))
    for i, s in enumerate(samples):
        ch = s.chain
        for l in range(L):
            q = int(a[i, l])
            if q == ch[0]:
                k = 0
            elif q == ch[-1]:
                k = 3
            elif len(ch) > 2 and q == ch[1]:
                k = 1
            elif q in ch:
                k = 2
            else:
                k = 4
            counts[l, k] += 1
    return pd.DataFrame(counts / N, index=pd.Index(range(L), name="layer"), columns=list(ROLES))


def chance_rate(layer_seqs: Sequence[Sequence[Sequence[str]]], fn, n_layers: int, pos: int = -1) -> np.ndarray:
    """The match rate (:func:`posym.functions.match_rate`) of a head whose arg-max is uniform over the keys
    ``0..pos``: per layer, the mean over prompts (where ``fn`` is defined) of ``|reads| / (pos + 1)``."""
    fn = F.get_function(fn)
    out = np.full(n_layers, np.nan)
    for l in range(n_layers):
        rates = []
        for seqs in layer_seqs:
            s = seqs[l]
            p = pos % len(s)
            r = F.reads(s, fn, pos)
            if r:
                rates.append(len(r) / (p + 1))
        if rates:
            out[l] = float(np.mean(rates))
    return out


def match_summary(argmax: np.ndarray, samples, task: str) -> pd.DataFrame:
    """How well each layer's last-query attention matches the idealised functions, per layer.

    Three candidates, each scored by :func:`posym.functions.match_rate` on ``samples`` and compared with
    :func:`chance_rate`:

    * ``<fn> (plan)``: the task's function (Index or Retrieval) on the idealised input of the layer
      (:func:`posym.functions.layer_plan`: one hop per layer, Reflexive once resolved; on a resolved token the
      function reads the token itself);
    * ``<fn> (first hop)``: the same function on the *raw* prompt at every layer: "reads the first hop's
      target", what a head implementing the function on the query's own token does;
    * ``reflexive (plan)``: reads any earlier position holding the same token as the last position of the
      idealised input (so, once resolved, any copy of the answer).

    ``skill = (rate - chance) / (1 - chance)`` puts the candidates on one scale (0: no better than attending
    at random, 1: always where the function reads); ``closest`` is the candidate with the largest skill.
    """
    a = np.asarray(argmax)
    L = a.shape[1]
    fn = F.task_function(task)
    seqs = [s.tokens for s in samples]
    plans = [F.layer_plan(s, task, L)[1] for s in seqs]
    raw = [[s] * L for s in seqs]
    cands = {f"{fn.__name__} (plan)": (fn, plans), f"{fn.__name__} (first hop)": (fn, raw),
             "reflexive (plan)": (F.reflexive, plans)}
    rows = []
    for name, (f, ls) in cands.items():
        rate = F.match_rate(a, ls, f)
        chance = chance_rate(ls, f, L)
        skill = (rate - chance) / (1 - chance)
        for l in range(L):
            rows.append({"layer": l, "candidate": name, "match": rate[l], "chance": chance[l], "skill": skill[l]})
    df = pd.DataFrame(rows)
    wide = df.pivot(index="layer", columns="candidate", values=["match", "chance", "skill"])
    best = df.loc[df.groupby("layer")["skill"].idxmax()].set_index("layer")
    out = pd.DataFrame(index=pd.Index(range(L), name="layer"))
    for name in cands:
        out[f"{name}"] = wide[("match", name)]
        out[f"{name} chance"] = wide[("chance", name)]
    out["closest"] = best["candidate"]
    out["match"] = best["match"]
    out["skill"] = best["skill"]
    return out


def reflexive_split(argmax: np.ndarray, samples, task: str) -> pd.DataFrame:
    """How the trained heads keep a resolved token: per layer, among the prompts whose idealised plan
    (:func:`posym.functions.layer_plan`) applies Reflexive there, the fraction whose last query attends to
    itself (a *positional* Reflexive), to *another* position holding the same token in the idealised input (a
    *symbolic* Reflexive: a copy of the answer), or elsewhere.  Columns ``itself, another copy, elsewhere,
    prompts``; NaN where no prompt is in Reflexive."""
    a = np.asarray(argmax)
    L = a.shape[1]
    counts = np.zeros((L, 4))
    for i, s in enumerate(samples):
        fns, seqs = F.layer_plan(s.tokens, task, L)
        last = len(s.tokens) - 1
        for l, fn in enumerate(fns):
            if fn is not F.reflexive:
                continue
            q = int(a[i, l])
            k = 0 if q == last else (1 if seqs[l][q] == seqs[l][last] else 2)
            counts[l, k] += 1
            counts[l, 3] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = counts[:, :3] / counts[:, 3:4]
    out = pd.DataFrame(frac, index=pd.Index(range(L), name="layer"), columns=["itself", "another copy", "elsewhere"])
    out["prompts"] = counts[:, 3].astype(int)
    return out


# -----------------------------------------------------------------------------------------------
# Classification of the trained heads

def head_classes(final_scores: pd.DataFrame, gamma: float = 0.1) -> pd.DataFrame:
    """The class of every head from its scores (:func:`posym.metrics.classify`): adds a ``kind`` column."""
    f = final_scores.copy()
    f["kind"] = [classify(p, s, gamma) for p, s in zip(f["pos"], f["sym"])]
    return f


def class_summary(classes: pd.DataFrame) -> pd.DataFrame:
    """Per task and layer, over seeds: the most common class with its count, and the mean scores.

    Columns ``task, layer, class, seeds, pos, sym, per seed`` (``per seed`` lists ``P``/``S``/``m``)."""
    rows = []
    for (task, layer), g in classes.sort_values("seed").groupby(["task", "layer"], sort=False):
        counts = g["kind"].value_counts()
        top = counts.index[0]
        rows.append({"task": task, "layer": int(layer), "class": top, "seeds": f"{counts.iloc[0]}/{len(g)}",
                     "pos": float(g["pos"].mean()), "sym": float(g["sym"].mean()),
                     "per seed": " ".join({"positional": "P", "symbolic": "S", "mixed": "m"}[k] for k in g["kind"])})
    order = {"number": 0, "letter": 1}
    return pd.DataFrame(rows).sort_values(["task", "layer"], key=lambda c: c.map(order) if c.name == "task" else c) \
        .reset_index(drop=True)


@torch.no_grad()
def scores_by_group(model, samples, vocab, layer: int, groups: Sequence) -> pd.DataFrame:
    """Positional and symbolic scores and normalised entropy of ``layer``'s head per prompt, averaged within
    each value of ``groups`` (one label per sample).  Columns ``group, prompts, pos, sym, entropy_norm``."""
    import math

    from ..metrics import layer_scores, residual_inputs
    from ..tasks import to_tensors

    x, _, _ = to_tensors(samples, vocab)
    model.eval()
    resid = residual_inputs(model, x)[layer]
    sc = layer_scores(model, layer, resid)
    df = pd.DataFrame({"group": list(groups), "pos": sc.pos[:, 0].numpy(), "sym": sc.sym[:, 0].numpy(),
                       "entropy_norm": sc.entropy[:, 0].numpy() / math.log(x.shape[1])})
    out = df.groupby("group", sort=True).agg(prompts=("pos", "size"), pos=("pos", "mean"), sym=("sym", "mean"),
                                             entropy_norm=("entropy_norm", "mean"))
    return out.reset_index()


def selective_index_read(seq: Sequence[str], pos: int = -1) -> int:
    """Where a head computing *selective* Index (Def. F.1 taken literally) reads from ``pos``: ``pos - i`` when
    the number ``i`` there points at a letter (which is copied), and ``pos`` itself otherwise (the token is kept).

    :func:`posym.functions.ideal_attention` reads ``pos - i`` in both cases; this variant makes the
    content-dependent gate visible.
    """
    p = pos % len(seq)
    if F.is_number(seq[p]):
        q = p - int(seq[p])
        if q >= 0 and not F.is_number(seq[q]):
            return q
    return p


def selective_index_match(argmax: np.ndarray, samples) -> np.ndarray:
    """Per layer, the fraction of prompts whose last query attends where selective Index reads on the raw
    prompt (:func:`selective_index_read`)."""
    a = np.asarray(argmax)
    want = np.array([selective_index_read(s.tokens) for s in samples])
    return (a == want[:, None]).mean(axis=0)


def index_target_kind(samples) -> list[str]:
    """For Number prompts: whether the query's own number points at a letter (the 1-hop prompts, where
    selective Index copies it) or at another number (Index leaves the query as it is)."""
    out = []
    for s in samples:
        q = len(s.tokens) - 1 - int(s.tokens[-1])
        out.append("points at a letter" if q >= 0 and not F.is_number(s.tokens[q]) else "points at a number")
    return out


# -----------------------------------------------------------------------------
# The chapter's parameters

_HOW = "python scripts/paper_runs.py --scale paper --seeds 0-4 --device cuda  (see data/README.md)"


def _checks(p: dict):
    if p["n_prompts"] % 4:
        return "n_prompts", f"must be a multiple of 4 (hop-balanced prompts), got {p['n_prompts']}"
    return None


register(ChapterSpec(
    name="roles",
    params={
        "hops": Param(int, 3, "hop count of the example whose information flow is drawn", min=1, max=4),
        "example": Param(int, 0, "which test prompt with that hop count (0 = the first one of the test split)",
                         min=0, max=99),
        "n_prompts": Param(int, {"smoke": 100, "teaching": 200, "paper": 300},
                           "test prompts on which the trained heads are compared with the basic functions",
                           min=4, max=2_000),
        "n_seeds": Param(int, {"smoke": 1, "teaching": 1, "paper": 5},
                         "seeds whose final heads are classified (trained at smoke/teaching, read at paper)",
                         min=1, max=5),
        "gamma": Param(float, 0.1, "purity tolerance: pure positional iff pos >= 1 - gamma and sym <= gamma",
                       min=0.0, max=0.5),
    },
    requires={"paper": tuple(
        [Required(f"paper/{t}-s0/final.pt", _HOW, f"the final {t.capitalize()} checkpoint, seed 0")
         for t in ("number", "letter")]
        + [Required(f"paper/{t}-s{s}/scores.parquet", _HOW, "positional/symbolic scores per checkpoint")
           for t in ("number", "letter") for s in range(5)])},
    checks=(_checks,),
))
