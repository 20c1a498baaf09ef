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
from ..analyze import attention_patterns, last_query_argmax, scores_by_group  # noqa: F401  (re-exported)
from ..functions import index_target_kind, selective_index_match, selective_index_read  # noqa: F401
from ..metrics import classify
from ..spec import PAPER_RUNS_HOW as _HOW, ChapterSpec, Param, Required, multiple_of, register

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
                ax.text(p, -r, tok, ha="center", va="center", fontsize=9 if len(tok) <= 2 else 8,
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
    ax.set_yticklabels(row_labels if row_labels is not None else [f"L{r}" for r in range(n_rows)], fontsize=9)
    ax.set_xticks(range(T))
    ax.set_xticklabels([str(p) for p in range(T)], fontsize=9)
    ax.tick_params(length=0)
    ax.grid(False)
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, fontsize=10, loc="left")
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


# -----------------------------------------------------------------------------------------------
# The page: prompts, runs, tables, figures and glued sentences

TASKS = ("number", "letter")
FIG1_PROMPTS = {"number": tuple("C B A 1 4 1 3 2 1".split()),
                "letter": tuple("C2 B1 A3 FA EC DE HF GD IG".split())}
FIG_WIDTH = 7.2  # inches: a figure at the book's column width keeps its text at the size it was set


def paper_tasks() -> dict:
    """``{name: Task}`` for the paper's two tasks."""
    from ..tasks import get_task

    return {name: get_task(name) for name in TASKS}


def _vocab(task: str):
    from ..tasks import get_task

    return get_task(task).vocab


def params_line(cfg) -> str:
    """The one-line summary of the chapter's parameters."""
    return f"scale {cfg.scale!r}: " + ", ".join(f"{k}={v!r}" for k, v in cfg.params.items())


def scale_warning(cfg):
    """A warning (Markdown) that the sentences interpret the paper-scale models; ``None`` at the paper scale.

    Also glues the scale (``scale_name``) and the number of probe prompts (``n_prompts_text``) for the captions.
    """
    from ..glue import glue_md

    glue_md({"scale_name": cfg.scale, "n_prompts_text": cfg.n_prompts})
    scale = cfg.scale
    if scale == "paper":
        return None
    from IPython.display import Markdown

    return Markdown(
        ":::{warning} Small scale\n"
        f"This copy of the chapter was executed at the `{scale}` scale: its models are small and briefly "
        "trained, and need not learn the tasks at all. The figures and tables are computed by the same code as at "
        "the `paper` scale, but the sentences that interpret the trained models were written for the paper-scale "
        "models (`make book` builds that version).\n:::")


def listing1():
    """Paper 2's Listing 1 (the basic functions as pseudo-code), in our rendering: the source of
    :func:`posym.functions.index`, :func:`~posym.functions.retrieval` and :func:`~posym.functions.reflexive`,
    as a Markdown code block."""
    import inspect

    from IPython.display import Markdown

    src = "\n\n".join(inspect.getsource(f).rstrip() for f in (F._index_read, F.index, F.retrieval, F.reflexive))
    return Markdown(f"```python\n{src}\n```")


def rewrite_table(steps: Sequence[Sequence[str]], name: str = "") -> pd.DataFrame:
    """The sequences of :func:`posym.functions.rewrite`, one row per step (``input``, ``after 1 step(s)``...)."""
    labels = [f"after {d} step(s)" if d else "input" for d in range(len(steps))]
    return pd.DataFrame(steps, index=pd.Index(labels, name=name or "step"))


def fig1_rewriting() -> dict:
    """The paper's Figure 1 prompts rewritten by their task's function until the last token is resolved:
    ``{task: (function name, steps needed, rewrite table)}``."""
    out = {}
    for name, prompt in FIG1_PROMPTS.items():
        fn = F.task_function(name)
        h = F.resolution_depth(prompt, fn)
        out[name] = (fn.__name__, h, rewrite_table(F.rewrite(prompt, fn, h), fn.__name__))
    return out


def fig1_rewriting_tables() -> list:
    """:func:`fig1_rewriting` as one table per prompt, captioned with the function and the steps it needs."""
    from ..display import table

    return [table(steps, caption=f"{name}: {fn} resolves the last token in {h} steps", index=True)
            for name, (fn, h, steps) in fig1_rewriting().items()]


def layer_plans(n_layers: int = 12) -> pd.DataFrame:
    """The function :func:`posym.functions.layer_plan` applies at each layer, for the first test prompt of
    each task and hop count (first three letters of its name)."""
    from ..tasks import balanced_eval_set

    plans = {}
    for name, task in paper_tasks().items():
        for h in range(1, 5):
            s = next(x for x in balanced_eval_set(task, 4, seed=0, split="test") if x.hops == h)
            fns, _ = F.layer_plan(s.tokens, name, n_layers)
            plans[(name, h)] = [f.__name__[:3] for f in fns]
    return pd.DataFrame(plans, index=pd.Index([f"L{l}" for l in range(n_layers)], name="layer")).T \
        .rename_axis(["task", "hops"])


def pick(task, hops: int, k: int):
    """The ``k``-th test prompt with ``hops`` hops (from the hop-balanced test prompts)."""
    from ..tasks import balanced_eval_set

    pool = balanced_eval_set(task, 4 * (k + 1), seed=0, split="test")
    return [s for s in pool if s.hops == hops][k]


def chosen_prompts(hops: int, example: int) -> dict:
    """``{task: the example-th test prompt with hops hops}``: the prompts the chapter draws."""
    return {name: pick(task, hops, example) for name, task in paper_tasks().items()}


def prompts_text(chosen: dict) -> str:
    """One line per chosen prompt: the task, the prompt with its answer, and its chain."""
    return "\n".join(f"{name:6s} {s.text()}   chain {s.chain}" for name, s in chosen.items())


def plot_rewriting(chosen: dict):
    """Fig. 3C/D: each chosen prompt rewritten depth by depth by its task's function (:func:`draw_rewriting`)."""
    import matplotlib.pyplot as plt

    hops = max(s.hops for s in chosen.values())
    fig, axes = plt.subplots(len(chosen), 1, figsize=(FIG_WIDTH, 2.0 * (hops + 2) + 0.5), squeeze=False)
    for ax, (name, s) in zip(axes[:, 0], chosen.items()):
        draw_rewriting(ax, s.tokens, name, title=f"{name.capitalize()}: {s.text()}")
    return fig


#: the smoke-scale runs: the smoke preset (TrainConfig.smoke) with these overrides
SMOKE_TRAIN = {"steps": 50}


class TrainedModels:
    """The chapter's trained models at a scale: the committed runs (``paper``), the runs shared with the
    learning-dynamics chapter under ``_build/runs/teaching`` (``teaching``, trained there if missing) or
    runs trained from scratch in a temporary folder (``smoke``, :data:`SMOKE_TRAIN`).

    ``root`` holds the runs (``<task>-s<seed>``), ``models`` the seed-0 final model of each task and
    ``n_layers`` their depths (they may differ per task).  :meth:`cleanup` removes a temporary folder."""

    def __init__(self, scale: str, n_seeds: int, n_prompts: int, data_dir=None):
        from .. import runs
        from ..train import list_checkpoints, load_checkpoint

        self.scale, self.seeds = scale, list(range(n_seeds))
        self._runs = runs.ChapterRuns(scale, TASKS, self.seeds, n_prompts, data_dir, prefix="posym-roles-",
                                      smoke=SMOKE_TRAIN, final_only=True)
        self.root, self.workdir = self._runs.root, self._runs.workdir
        if scale == "paper":  # the committed runs; final checkpoints of seed 0
            paths = {name: self.root / f"{name}-s0" / "final.pt" for name in TASKS}
        else:  # the last checkpoint of the runs trained here (teaching: shared with the learning-dynamics chapter)
            paths = {name: list_checkpoints(self.root / f"{name}-s0")[-1][1] for name in TASKS}
        self.models = {name: load_checkpoint(p)[0] for name, p in paths.items()}
        self.n_layers = {name: m.cfg.n_layer for name, m in self.models.items()}

    def describe(self) -> dict:
        """``{task: "<layers> layers x <heads> head, d_model <d>"}``."""
        return {name: f"{m.cfg.n_layer} layers x {m.cfg.n_head} head, d_model {m.cfg.d_model}"
                for name, m in self.models.items()}

    def final_scores(self) -> pd.DataFrame:
        """The scores of every head at the last checkpoint of each run (the chapter's seeds)."""
        from ..results import load_table

        scores = load_table(self.root, "scores")
        scores = scores[scores["seed"].isin(self.seeds)]
        return scores[scores["step"] == scores.groupby(["task", "seed"])["step"].transform("max")]

    def flows(self, chosen: dict) -> dict:
        """``{task: flow_table}`` of the seed-0 model on the chosen prompt; at the paper scale, checked against
        the committed flow traces (:meth:`check_committed_flow`)."""
        flows = {name: flow_table(self.models[name], chosen[name], _vocab(name)) for name in TASKS}
        self.check_committed_flow(flows, chosen)
        return flows

    def fig3a(self) -> tuple:
        """The Number model on the paper's Figure 3A prompt (:func:`fig3a_flow`); glues :func:`fig3a_glue`."""
        from ..glue import glue_md

        s3a, flow, pred = fig3a_flow(self.models["number"])
        glue_md(fig3a_glue(flow, s3a, self.n_layers["number"]))
        return s3a, flow, pred

    def last_query_reads(self, n_prompts: int) -> tuple:
        """``(probe, argmax, where)``: the hop-balanced test prompts per task (:func:`probe_prompts`), the arg-max
        key of every layer's last query on them (``{task: (N, L) array}``) and :func:`target_roles`."""
        probe = probe_prompts(n_prompts)
        argmax = {name: last_query_argmax(self.models[name], probe[name], _vocab(name))[0] for name in TASKS}
        where = {name: target_roles(argmax[name], probe[name]) for name in TASKS}
        return probe, argmax, where

    def classes(self, gamma: float) -> pd.DataFrame:
        """:func:`class_summary` of the heads' classes at the last checkpoint, over the chapter's seeds."""
        return class_summary(head_classes(self.final_scores(), gamma))

    def check_committed_flow(self, flows: dict, chosen: dict) -> None:
        """At the paper scale, assert that the committed flow traces (``flow.parquet``) agree with ``flows``
        wherever they hold the same prompt (the same computation on the same model)."""
        if self.scale != "paper":
            return
        for name in TASKS:
            committed = pd.read_parquet(self.root / f"{name}-s0" / "flow.parquet")
            for text in committed["text"].unique():
                if text == chosen[name].text():
                    c = committed[committed["text"] == text]
                    assert (c["argmax_pos"].to_numpy() == flows[name]["read"].to_numpy().astype(int)).all()

    def cleanup(self) -> None:
        """Remove the temporary folder of runs trained from scratch (nothing otherwise)."""
        self._runs.cleanup()


def plot_flow(sample, flow: pd.DataFrame, task: str, n_layers: int, title: str | None = None):
    """Fig. 3A/B for one model and prompt (:func:`draw_flow`), as a Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(FIG_WIDTH, 0.55 * n_layers + 1.6))
    draw_flow(ax, sample, flow, task, n_layers, title=title)
    return fig


def plot_flows(chosen: dict, flows: dict, n_layers: dict):
    """Fig. 3A/B: the information flow of each task's model on its chosen prompt, one panel per task."""
    import matplotlib.pyplot as plt

    heights = [0.55 * n_layers[name] + 1.6 for name in chosen]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(FIG_WIDTH, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (name, s) in zip(axes[:, 0], chosen.items()):
        draw_flow(ax, s, flows[name], name, n_layers[name], title=f"{name.capitalize()} model: {s.text()}")
    return fig


def chain_tables(flows: dict, chosen: dict) -> list:
    """:func:`chain_trace` of each task's chosen prompt, as captioned tables."""
    from ..display import table

    return [table(chain_trace(flows[name], s), index=True,
                  caption=f"{name}: position read by each chain position (rows: query first, answer last)")
            for name, s in chosen.items()]


def fig3a_tables(sample, flow: pd.DataFrame, pred: str) -> list:
    """The Figure 3A prompt's chain trace: the position read and its attention weight, as two tables."""
    from ..display import table

    head = f"{sample.text()}  chain {sample.chain}; the model answers {pred!r}. "
    return [table(chain_trace(flow, sample), caption=head + "Position read by each chain position", index=True),
            table(chain_trace(flow, sample, value="weight").round(2), caption="Its attention weight", index=True,
                  digits=2)]


def fig3a_flow(model) -> tuple:
    """The Number model on the paper's Figure 3A prompt: ``(sample, flow table, the model's answer)``."""
    from ..tasks import Sample, get_task, to_tensors

    task = get_task("number")
    s3a = Sample(PAPER_ROLES["fig3a_prompt"], *task.solve(PAPER_ROLES["fig3a_prompt"]))
    flow = flow_table(model, s3a, task.vocab)
    x, _, _ = to_tensors([s3a], task.vocab)
    with torch.no_grad():
        pred = task.vocab.tokens[int(model(x, last_only=True)[0, -1].argmax())]
    return s3a, flow, pred


def fig3a_glue(flow: pd.DataFrame, sample, n_layers: int) -> dict:
    """The glued readings of the Figure 3A flow: what position 8 reads in layer 0, position 10 in layer 1, and
    the last token in layers 0-4."""
    tr = chain_trace(flow, sample)
    return {"f3a_pos8_L0": str(tr.iloc[3, 0]),
            "f3a_pos10_L1": str(tr.iloc[2, 1] if n_layers > 1 else "n/a"),
            "f3a_last": ", ".join(f"L{l}: {v}" for l, v in enumerate(tr.iloc[0, :5]))}


def probe_prompts(n: int) -> dict:
    """``{task: n hop-balanced test prompts}`` on which the heads are compared with the basic functions."""
    from ..tasks import balanced_eval_set

    return {name: balanced_eval_set(task, n, seed=0, split="test") for name, task in paper_tasks().items()}


def plot_target_roles(where: dict):
    """Heat maps of :func:`target_roles`, one per task: the fraction of prompts by where each layer's last
    query attends."""
    import matplotlib.pyplot as plt

    n = max(w.shape[0] for w in where.values())
    fig, axes = plt.subplots(1, len(where), figsize=(FIG_WIDTH, 0.32 * n + 2.4))
    for ax, (name, w) in zip(axes, where.items()):
        im = ax.imshow(w.to_numpy(), vmin=0, vmax=1, aspect="auto", cmap="cividis")
        ax.set_xticks(range(w.shape[1]), w.columns, rotation=35, ha="right", fontsize=9)
        ax.set_yticks(range(w.shape[0]), [f"L{l}" for l in range(w.shape[0])], fontsize=9)
        for (i, j), v in np.ndenumerate(w.to_numpy()):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=9, color="white" if v < 0.5 else "black")
        ax.set_title(f"{name.capitalize()} model", fontsize=10)
        ax.grid(False)
    fig.colorbar(im, ax=axes, shrink=0.8, label="fraction of prompts")
    return fig


def where_tables(where: dict) -> list:
    """:func:`target_roles` of each task's model as captioned tables (3 decimals)."""
    from ..display import table

    return [table(w.round(3), caption=f"{name} model: fraction of prompts by where the last query attends",
                  index=True, digits=3) for name, w in where.items()]


def match_tables(argmax: dict, probe: dict, where: dict, n_layers: dict) -> dict:
    """``{task: match_summary}``, with the Number model's ``selective index`` match rate added; glues the
    numbers of the sentences on the match rates (:func:`match_glue`)."""
    from ..glue import glue_md

    match = {name: match_summary(argmax[name], probe[name], name) for name in TASKS}
    match["number"]["selective index"] = selective_index_match(argmax["number"], probe["number"])
    glue_md(match_glue(match, where, n_layers))
    return match


def match_display(match: dict) -> list:
    """The match tables as captioned tables (3 decimals)."""
    from ..display import table

    return [table(m.round(3), caption=f"{name} model", index=True, digits=3) for name, m in match.items()]


def reflexive_table(argmax: dict, probe: dict, n_layers: dict):
    """The Number model's :func:`reflexive_split` as a table (3 decimals); glues :func:`reflexive_glue`."""
    from ..glue import glue_md
    from ..display import table

    split = reflexive_split(argmax["number"], probe["number"], "number")
    glue_md(reflexive_glue(split, n_layers["number"]))
    return table(split.round(3), caption="Number model, prompts in Reflexive: where the last query attends",
                 index=True, digits=3)


def match_glue(match: dict, where: dict, n_layers: dict) -> dict:
    """The glued numbers of the sentences on the match rates (percentages)."""
    mn, ml = match["number"], match["letter"]
    nn, nl = n_layers["number"], n_layers["letter"]
    return {
        "num_first_hop": ", ".join(f"{v:.0%}" for v in mn["index (first hop)"].iloc[1:4]),
        "num_refl_late": f"{mn['reflexive (plan)'].iloc[min(5, nn - 1):].min():.0%}",
        "num_refl_chance": f"{mn['reflexive (plan) chance'].iloc[min(5, nn - 1):].mean():.0%}",
        "num_l0_sel": f"{mn['selective index'].iloc[0]:.0%}",
        "num_l0_index": f"{mn['index (plan)'].iloc[0]:.0%}",
        "let_l0_retr": f"{ml['retrieval (plan)'].iloc[0]:.0%}",
        "let_refl_late": f"{ml['reflexive (plan)'].iloc[min(4, nl - 1):].min():.0%}",
        "index_chance": f"{mn['index (first hop) chance'].iloc[0]:.0%}",
        "num_l4_index": f"{mn['index (first hop)'].iloc[min(4, nn - 1)]:.0%}",
        "num_l4_self": f"{where['number']['query (self)'].iloc[min(4, nn - 1)]:.0%}",
    }


def reflexive_glue(split: pd.DataFrame, n_layers: int) -> dict:
    """The glued numbers on how the Number model keeps the answer from layer 6 on."""
    late = split.iloc[min(6, n_layers - 1):]
    return {"refl_copy_late": f"{late['another copy'].min():.0%}", "refl_self_late": f"{late['itself'].max():.0%}"}


def layer_summary(match: dict, classes: pd.DataFrame, n_layers: dict) -> pd.DataFrame:
    """Per task and layer of the seed-0 models: the class (majority over seeds) and the closest basic function
    with its match rate and skill."""
    rows = []
    for name in TASKS:
        m = match[name]
        c = classes[classes["task"] == name].set_index("layer")
        for l in range(n_layers[name]):
            rows.append({"task": name, "layer": l, "class": c.loc[l, "class"], "seeds": c.loc[l, "seeds"],
                         "closest function": m.loc[l, "closest"], "match": m.loc[l, "match"],
                         "skill": m.loc[l, "skill"]})
    return pd.DataFrame(rows)


def rewrite_report(sample, steps: Sequence[Sequence[str]]) -> str:
    """For a rewriting of ``sample`` (:func:`posym.functions.rewrite`): one line per step listing the positions
    that change, then the number of steps against the hop count, and the answer."""
    lines = [f"step {d}: positions {[p for p in range(len(steps[d])) if steps[d][p] != steps[d - 1][p]]} change"
             for d in range(1, len(steps))]
    lines.append(f"{len(steps) - 1} steps for a {sample.hops}-hop prompt; answer {steps[-1][-1]} "
                 f"(solver: {sample.answer})")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# The chapter's parameters

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
    checks=(multiple_of(4, ("n_prompts",), "hop-balanced prompts"),),
))
