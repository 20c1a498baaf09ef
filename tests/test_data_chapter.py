"""posym.chapters.data: the data chapter's examples, vocabulary and balance tables, swap experiment and figures."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from posym import tasks  # noqa: E402
from posym.chapters import data  # noqa: E402
from posym.display import Table  # noqa: E402


def test_paper_prompts_are_solved_by_the_task_rules():
    fig1 = data.fig1_samples()
    assert fig1["number"].answer == "C" and fig1["letter"].answer == "C2"
    assert fig1["number"].chain == fig1["letter"].chain == (8, 7, 5, 4, 0)  # the same positions in both tasks
    s3a = data.fig3a_sample()
    assert (s3a.answer, s3a.hops, s3a.chain) == ("n", 4, (16, 14, 10, 8, 2))
    t = data.samples_table(fig1)
    assert list(t.columns) == ["task", "prompt", "answer", "hops", "chain"]
    assert t.loc[0, "chain"] == "8 → 7 → 5 → 4 → 0"


@pytest.mark.parametrize("n, hops", [(1, [1]), (4, [1, 2, 3, 4]), (6, [1, 1, 2, 2, 3, 3])])
def test_worked_examples_are_sorted_by_hop_count(n, hops):
    ex = data.worked_examples("number", n)
    assert [s.hops for s in ex] == hops
    assert len(data.samples_table({"number": ex})) == n


def test_vocabulary_tables():
    v = data.vocab_table()
    assert len(v) == 4 and set(v["task"]) == {"number", "letter"}
    assert v.set_index("kind").loc["integer (INT)", "count"] == 16
    sizes = data.vocab_sizes()
    assert sizes == {name: len(t.vocab) for name, t in data.paper_tasks().items()}
    grid = data.letter_id_grid("numbers")
    assert grid.shape == (8, 8) and grid.index.name == "first"
    letter = tasks.get_task("letter")
    assert grid.loc["c", "2"] == letter.vocab.stoi["c2"]
    assert data.letter_id_grid("letters").shape == (8, 8)


def test_balance_tables_and_glued_sentences():
    arrays = data.balance_arrays("val", 0, 800)
    df = data.balance_frame(arrays)
    assert len(df) == 1_600 and list(df["task"].unique()) == ["number", "letter"]
    shares = data.share_table(df, "hops")
    assert isinstance(shares, Table)
    assert np.allclose(shares.frame.drop(columns="task").sum(axis=1), 1.0, atol=1e-3)  # shares rounded to 4 decimals
    per = data.per_answer_table(df)
    assert list(per.index) == ["number", "letter"]
    assert per.loc["number", "answers"] == len(tasks.get_task("number").answer_tokens)
    assert per.loc["letter", "expected per answer"] == pytest.approx(800 / per.loc["letter", "answers"])
    g = data.balance_glue(per)
    assert g["max_dev"].endswith("%") and g["noise_scale"].endswith("(letter)")
    visits = {name: data.visit_frequencies(a) for name, a in arrays.items()}
    for v in visits.values():
        assert v.shape == (tasks.MAX_HOPS, tasks.SEQ_LEN)
        assert np.allclose(v[16], 1.0)  # every chain starts at the query
        assert np.allclose(v.loc[:, :7].sum(axis=1), 1.0)  # and ends once in the target window
    assert 0 <= data.visit_gap(visits) < 0.2


def test_swap_moves_the_letter_answer_and_keeps_the_number_position():
    assert data.swap(("a", "b", "c"), 0, 2) == ("c", "b", "a")
    res = data.swap_experiment(200, 0)
    assert res.loc["number", "answer stays at the same position"] == 1.0
    assert res.loc["letter", "answer stays the same token"] == 1.0
    assert res.loc["letter", "answer stays at the same position"] == 0.0


def test_exercise_prompts_and_solution():
    pz = data.puzzles(0)
    assert {s.hops for s in pz.values()} == {3}
    assert data.puzzle_table(pz).shape == (2, tasks.SEQ_LEN)
    lines = data.solution_lines(pz).splitlines()
    assert len(lines) == 2 and lines[0].startswith("number: 16 (")
    assert lines[1].endswith(f"answer {pz['letter'].answer}")


def test_figures_have_one_panel_per_prompt_and_fit_the_column():
    fig1 = data.fig1_samples()
    ex = {name: data.worked_examples(name, 4) for name in ("number", "letter")}
    df = data.balance_frame(data.balance_arrays("val", 0, 400))
    figs = [data.plot_fig1(fig1), data.plot_examples(ex["number"], "number"), data.plot_balance(df),
            data.plot_visits({name: data.visit_frequencies(a) for name, a in data.balance_arrays("val", 0, 400).items()}),
            data.plot_swap(ex, 4), data.plot_puzzles(data.puzzles(0))]
    assert [len([a for a in f.axes if a.get_visible()]) for f in figs] == [2, 4, 3, 3, 4, 2]  # visits: + colour bar
    assert all(f.get_size_inches()[0] <= 7.5 for f in figs)
    plt.close("all")
