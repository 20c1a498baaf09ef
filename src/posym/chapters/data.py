"""The "Data" chapter (book/data.md): the Number and Letter tasks as ``posym.tasks`` generates them.

Everything the page shows is computed here, from the task generators only:

* the paper's example prompts (Fig. 1, Fig. 3A) solved by each task's rule (:func:`fig1_samples`,
  :func:`fig3a_sample`) and generated prompts (:func:`worked_examples`), with their tables and drawings;
* the vocabularies (:func:`vocab_table`, :func:`letter_id_grid`);
* the balance of a split over hop counts, answer positions and answers (:func:`balance_frame`,
  :func:`share_table`, :func:`per_answer_table`, :func:`plot_balance`);
* the positions the chains visit (:func:`visit_frequencies`, :func:`plot_visits`);
* the swap experiment that separates the two tasks (:func:`swap_experiment`, :func:`plot_swap`);
* the exercise's prompts (:func:`puzzles`).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import tasks
from ..spec import ChapterSpec, Param, fmt as _fmt, register

#: The two prompts of the paper's Figure 1 (a target window of three tokens, capital letters).
FIG1_PROMPTS = {"number": tuple("C B A 1 4 1 3 2 1".split()),
                "letter": tuple("C2 B1 A3 FA EC DE HF GD IG".split())}
#: The 17-token Number prompt of the paper's Figure 3A.
FIG3A_PROMPT = tuple("n h n v h y r s 6 3 2 7 7 8 4 7 2".split())

FIG_WIDTH = 7.2  # inches: a figure at the book's column width keeps its text at the size it was set


def paper_tasks() -> dict:
    """``{name: Task}`` for the paper's two tasks, Number first."""
    return {name: tasks.get_task(name) for name in tasks.PAPER_TASKS}


def params_line(cfg) -> str:
    """The one-line summary of the chapter's parameters printed under the imports."""
    return f"scale {cfg.scale!r}: " + ", ".join(f"{k}={v!r}" for k, v in cfg.params.items())


# -----------------------------------------------------------------------------------------------
# Example prompts

def solved(task, tokens: Sequence[str]) -> tasks.Sample:
    """``tokens`` as a :class:`posym.tasks.Sample`, solved by the task's own rule."""
    return tasks.Sample(tuple(tokens), *tasks.get_task(task).solve(tuple(tokens)))


def fig1_samples() -> dict:
    """The paper's Figure 1 prompts, solved: ``{task: Sample}``."""
    return {name: solved(name, prompt) for name, prompt in FIG1_PROMPTS.items()}


def fig3a_sample() -> tasks.Sample:
    """The paper's Figure 3A prompt (Number task), solved."""
    return solved("number", FIG3A_PROMPT)


def worked_examples(task, n: int, seed: int = 0) -> list:
    """``n`` prompts of the validation split sorted by hop count: the first ``ceil(n / 4)`` prompts of each hop
    count (:func:`posym.tasks.balanced_eval_set`), cut to ``n``."""
    per_hop = -(-n // tasks.MAX_HOPS)
    pool = tasks.balanced_eval_set(task, per_hop * tasks.MAX_HOPS, seed=seed, split="val")
    return sorted(pool, key=lambda s: s.hops)[:n]


def samples_table(samples: Mapping[str, Sequence] | Mapping[str, tasks.Sample]) -> pd.DataFrame:
    """One row per prompt: ``task, prompt, answer, hops, chain`` (``samples``: task -> Sample or list)."""
    rows = []
    for name, ss in samples.items():
        for s in ([ss] if isinstance(ss, tasks.Sample) else ss):
            rows.append({"task": name, "prompt": " ".join(s.tokens), "answer": s.answer, "hops": s.hops,
                         "chain": " → ".join(map(str, s.chain))})
    return pd.DataFrame(rows)


def _figure(n_rows: int, height: float):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n_rows, 1, figsize=(FIG_WIDTH, height), squeeze=False)
    return fig, axes[:, 0]


def plot_fig1(samples: Mapping[str, tasks.Sample]):
    """The paper's Figure 1 redrawn: the two prompts with their hop chains."""
    from ..plotting import draw_hop_chain, task_color

    fig, axes = _figure(2, 4.4)
    for ax, name in zip(axes, ["number", "letter"]):
        draw_hop_chain(samples[name], ax, color=task_color(name), target_window=3,
                       title=f"{name.capitalize()} task (paper's Fig. 1)")
    return fig


def plot_examples(samples: Sequence[tasks.Sample], task: str):
    """One task's worked examples, one prompt per row, with their hop chains."""
    from ..plotting import draw_hop_chain, task_color

    fig, axes = _figure(len(samples), 1.95 * len(samples))
    for ax, s in zip(axes, samples):
        draw_hop_chain(s, ax, color=task_color(task))
    return fig


# -----------------------------------------------------------------------------------------------
# Vocabularies

def _id_range(vocab, toks) -> str:
    ids = [vocab.stoi[t] for t in toks]
    assert ids == list(range(ids[0], ids[-1] + 1)), "ids of one kind are contiguous"
    return f"{ids[0]}–{ids[-1]}"


def _preview(toks, k: int = 4) -> str:
    return ", ".join(toks[:k]) + (f", …, {toks[-1]}" if len(toks) > k else "")


def vocab_table() -> pd.DataFrame:
    """Token kinds of both tasks: where they occur, how many there are, their id range and a preview."""
    number, letter = tasks.get_task("number"), tasks.get_task("letter")
    kinds = [("number", number, "letter (ALPH)", "target window 0–7", number.letters),
             ("number", number, "integer (INT)", "instructions 8–15, query 16", number.numbers),
             ("letter", letter, "letter–number", "target window 0–7", letter.target_tokens),
             ("letter", letter, "letter–letter", "instructions 8–15, query 16", letter.instruction_tokens)]
    return pd.DataFrame([{"task": t, "kind": kind, "where": where, "count": len(toks),
                          "ids": _id_range(task.vocab, toks), "tokens": _preview(toks)}
                         for t, task, kind, where, toks in kinds])


def vocab_sizes() -> dict:
    """``{task: vocabulary size including <pad>}``."""
    return {name: len(task.vocab) for name, task in paper_tasks().items()}


def letter_id_grid(seconds: str = "numbers") -> pd.DataFrame:
    """Ids of the Letter task's tokens: rows the first letter, columns the second symbol (``"numbers"`` for the
    letter–number tokens, ``"letters"`` for the letter–letter ones)."""
    letter = tasks.get_task("letter")
    cols = getattr(letter, seconds)
    return pd.DataFrame([[letter.vocab.stoi[a + b] for b in cols] for a in letter.letters],
                        index=pd.Index(letter.letters, name="first"), columns=pd.Index(cols, name="second"))


# -----------------------------------------------------------------------------------------------
# Balance

def balance_arrays(split: str, seed: int, n: int) -> dict:
    """``{task: TaskDataset.arrays()}`` of the first ``n`` prompts of ``split``."""
    return {name: tasks.TaskDataset(task, split=split, seed=seed, size=n).arrays()
            for name, task in paper_tasks().items()}


def balance_frame(arrays: Mapping[str, dict]) -> pd.DataFrame:
    """One row per prompt: ``task, hops, answer position, answer`` (the answer as a token)."""
    frames = []
    for name, a in arrays.items():
        task = tasks.get_task(name)
        frames.append(pd.DataFrame({"task": name, "hops": a["hops"], "answer position": a["answer_pos"],
                                    "answer": np.asarray(task.vocab.tokens, dtype=object)[a["y"]]}))
    return pd.concat(frames, ignore_index=True)


def share_table(df: pd.DataFrame, column: str):
    """Share of each task's prompts per value of ``column`` (4 decimals), one row per task, as a table."""
    from ..display import table

    shares = pd.crosstab(df["task"], df[column], normalize="index").round(4)
    return table(shares, caption=f"Share of prompts per {'hop count' if column == 'hops' else column}",
                 index=True, digits=4)


def _answer_counts(df: pd.DataFrame, name: str) -> pd.Series:
    task = tasks.get_task(name)
    return df.loc[df["task"] == name, "answer"].value_counts().reindex(task.answer_tokens, fill_value=0)


def per_answer_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per task: number of answers, expected prompts per answer, the smallest and largest count and their ratio."""
    rows = []
    for name in df["task"].unique():
        counts = _answer_counts(df, name)
        n_ans = len(tasks.get_task(name).answer_tokens)
        rows.append({"task": name, "answers": n_ans, "expected per answer": counts.sum() / n_ans,
                     "min": int(counts.min()), "max": int(counts.max()),
                     "max / min": round(counts.max() / max(counts.min(), 1), 3)})
    return pd.DataFrame(rows).set_index("task")


def balance_glue(per_answer: pd.DataFrame) -> dict:
    """The glued sentences of the balance section: ``max_dev`` (largest relative deviation of an answer's count
    from its expectation) and ``noise_scale`` (``1/sqrt(m)`` per task)."""
    dev = max(max(r["max"] / r["expected per answer"] - 1, 1 - r["min"] / r["expected per answer"])
              for _, r in per_answer.iterrows())
    noise = " (number) and ".join(f"{1 / np.sqrt(m):.1%}" for m in per_answer["expected per answer"]) + " (letter)"
    return {"max_dev": f"{dev:.1%}", "noise_scale": noise}


def plot_balance(df: pd.DataFrame):
    """Three panels: prompts per hop count, per answer position, and the spread of prompts per answer token
    (count / expected count, one box per task)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ..plotting import COLORS, task_color

    names = list(df["task"].unique())
    palette = {name: task_color(name) for name in names}
    fig, axes = plt.subplots(1, 3, figsize=(FIG_WIDTH, 3.3), gridspec_kw={"width_ratios": [1, 1.6, 1]})
    sns.countplot(data=df, x="hops", hue="task", palette=palette, ax=axes[0])
    axes[0].set(title="Hop counts", ylabel="prompts")
    axes[0].set_ylim(0, axes[0].get_ylim()[1] * 1.35)
    sns.move_legend(axes[0], "upper center", ncol=1, title=None, fontsize=9)
    sns.countplot(data=df, x="answer position", hue="task", palette=palette, ax=axes[1], legend=False)
    axes[1].set(title="Answer positions", ylabel="")
    ratios = pd.concat([pd.DataFrame({"task": name, "count / expected": c.to_numpy() / (c.sum() / len(c))})
                        for name in names for c in [_answer_counts(df, name)]])
    sns.boxplot(data=ratios, x="task", y="count / expected", hue="task", palette=palette, ax=axes[2],
                legend=False, fliersize=2)
    axes[2].axhline(1.0, color=COLORS["neutral"], lw=1, ls="--")
    axes[2].set(title="Per answer token", xlabel="")
    for ax in axes:
        ax.tick_params(labelsize=9)
        ax.yaxis.label.set_size(10)
        ax.xaxis.label.set_size(10)
        ax.title.set_size(10)
    return fig


def visit_frequencies(a: dict) -> pd.DataFrame:
    """P(position p is on the chain | hop count), from the chain array of :meth:`TaskDataset.arrays`."""
    rows = []
    for h in range(1, tasks.MAX_HOPS + 1):
        chains = a["chain"][a["hops"] == h]
        counts = np.bincount(chains[chains >= 0], minlength=tasks.SEQ_LEN)
        rows.append(counts / len(chains))
    return pd.DataFrame(rows, index=pd.Index(range(1, tasks.MAX_HOPS + 1), name="hops"),
                        columns=pd.Index(range(tasks.SEQ_LEN), name="position"))


def visit_gap(visits: Mapping[str, pd.DataFrame]) -> float:
    """The largest difference between the two tasks' visit frequencies."""
    return float((visits["number"] - visits["letter"]).abs().to_numpy().max())


def plot_visits(visits: Mapping[str, pd.DataFrame]):
    """Heat maps of :func:`visit_frequencies`, one per task, stacked, with one colour bar."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(len(visits), 1, figsize=(FIG_WIDTH, 2.3 * len(visits) + 0.4), sharex=True)
    for ax, (name, v) in zip(axes, visits.items()):
        sns.heatmap(v, ax=ax, vmin=0, vmax=1, cmap="cividis", annot=True, fmt=".1f", annot_kws={"fontsize": 9},
                    cbar=False)
        ax.set_title(f"{name.capitalize()} task: fraction of chains visiting each position", fontsize=10)
        ax.tick_params(labelsize=9, rotation=0)
        ax.yaxis.label.set_size(10)
        ax.xaxis.label.set_size(10)
    axes[0].set_xlabel("")
    cbar = fig.colorbar(axes[0].collections[0], ax=list(axes), shrink=0.9, pad=0.02)
    cbar.ax.tick_params(labelsize=9)
    return fig


# -----------------------------------------------------------------------------------------------
# The swap experiment

def swap(tokens: Sequence[str], i: int, j: int) -> tuple:
    """``tokens`` with positions ``i`` and ``j`` exchanged."""
    t = list(tokens)
    t[i], t[j] = t[j], t[i]
    return tuple(t)


def swap_experiment(n: int, seed: int) -> pd.DataFrame:
    """Swap the answer with another target-window token in ``n`` test prompts per task and solve again: the
    fraction of prompts whose answer stays at the same position, and whose answer stays the same token."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, task in paper_tasks().items():
        a = tasks.TaskDataset(task, split="test", seed=seed, size=n).arrays()
        prompts = np.asarray(task.vocab.tokens, dtype=object)[a["x"]]
        same_pos = same_token = 0
        for tokens, pos in zip(prompts, a["answer_pos"]):
            j = int(rng.choice([k for k in range(tasks.TARGET_WINDOW) if k != pos]))
            answer, _, chain = task.solve(swap(tokens, int(pos), j))
            same_pos += chain[-1] == pos
            same_token += answer == tokens[pos]
        rows.append({"task": name, "prompts": n, "answer stays at the same position": same_pos / n,
                     "answer stays the same token": same_token / n})
    return pd.DataFrame(rows).set_index("task").round(4)


def plot_swap(examples: Mapping[str, Sequence[tasks.Sample]], n_examples: int):
    """For each task, a worked example (two hops, or fewer if fewer examples) and the same prompt after swapping
    its answer with another target-window token, solved again."""
    import matplotlib.pyplot as plt

    from ..plotting import draw_hop_chain, task_color

    fig, axes = plt.subplots(4, 1, figsize=(FIG_WIDTH, 8.4))
    axes = axes.reshape(2, 2).T  # column = task: prompt above, swapped prompt below
    for col, (name, samples) in enumerate(examples.items()):
        s = next(x for x in samples if x.hops == min(2, n_examples))
        j = 0 if s.answer_pos != 0 else 1
        swapped = solved(name, swap(s.tokens, s.answer_pos, j))
        draw_hop_chain(s, axes[0, col], color=task_color(name), title=f"{name.capitalize()} task: a prompt")
        draw_hop_chain(swapped, axes[1, col], color=task_color(name),
                       title=f"after swapping positions {s.answer_pos} and {j}: answer {swapped.answer} "
                             f"at position {swapped.answer_pos}")
    return fig


# -----------------------------------------------------------------------------------------------
# The exercise

def puzzles(seed: int = 0) -> dict:
    """The exercise's prompts: for each task, the first 3-hop prompt of the test split."""
    return {name: next(s for s in tasks.TaskDataset(task, split="test", seed=seed, size=200) if s.hops == 3)
            for name, task in paper_tasks().items()}


def puzzle_table(puzzles: Mapping[str, tasks.Sample]) -> pd.DataFrame:
    """The exercise's prompts, one row per task, one column per position."""
    return pd.DataFrame([s.tokens for s in puzzles.values()], index=pd.Index(list(puzzles), name="task")) \
        .rename_axis("position", axis=1)


def solution_lines(puzzles: Mapping[str, tasks.Sample]) -> str:
    """The solution of the exercise: each prompt's chain as ``position (token)`` steps, and its answer."""
    out = []
    for name, s in puzzles.items():
        answer, _, chain = tasks.get_task(name).solve(s.tokens)
        steps = " → ".join(f"{p} ({s.tokens[p]})" for p in chain)
        out.append(f"{name}: {steps};  answer {answer}")
    return "\n".join(out)


def plot_puzzles(puzzles: Mapping[str, tasks.Sample]):
    """The exercise's prompts with their hop chains drawn."""
    from ..plotting import draw_hop_chain, task_color

    fig, axes = _figure(len(puzzles), 2.0 * len(puzzles))
    for ax, (name, s) in zip(axes, puzzles.items()):
        draw_hop_chain(s, ax, color=task_color(name))
    return fig


# -----------------------------------------------------------------------------------------------
# The chapter's parameters


def _data_checks(params: dict) -> tuple[str, str] | None:
    from posym.tasks import SPLIT_SIZES

    size = SPLIT_SIZES[params["split"]]
    if params["n_samples"] > size:
        return "n_samples", (f"must be at most the size of split {params['split']!r} ({_fmt(size)}), "
                             f"got {_fmt(params['n_samples'])}")
    return None


register(ChapterSpec(
    name="data",
    params={
        "seed": Param(int, 0, "base seed of the data sets (the paper's splits use 0)", min=0, max=2**31 - 1),
        "split": Param(str, "train", "split whose balance is measured", choices=("train", "val", "test")),
        "n_samples": Param(int, {"smoke": 4_000, "teaching": 20_000, "paper": 432_000},
                           "prompts per task used for the balance statistics", min=1),
        "n_examples": Param(int, 4, "worked examples drawn per task", min=1, max=8),
        "n_swap": Param(int, {"smoke": 1_000, "teaching": 2_000, "paper": 20_000},
                        "prompts per task in the swap experiment", min=1, max=45_600),
    },
    checks=(_data_checks,),
))
