"""Student notebooks (`make exercises`, scripts/make_exercises.py) and their answer checks (posym.exercises).

The MyST-to-Jupyter conversion, the shape of every student notebook (no solution, an answer cell after each
exercise, a check cell where the exercise has a check, no raw MyST), that a check never raises, and the
student notebook as the last run of nbval checks it (``check_notebook``): the chapter's cells carry the
chapter's outputs, and after each exercise the blank answer and its check (expected: "no answer yet") come
before the reference answer (the solution's code) and its check (expected: "right"). ``make test`` executes
those notebooks at the smoke scale in its nbval stage (scripts/nbval_copies.py ``--students``).
"""
from __future__ import annotations

import re
from pathlib import Path

import jupytext
import nbformat
import pytest
from conftest import load_script

from posym import exercises as EX

ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def mx():
    return load_script("make_exercises")


@pytest.fixture(scope="module")
def chapters():
    return load_script("bookutil").notebook_chapters()


def glue_for(mx, src):
    return mx.glued_values(ROOT / "_build" / "executed" / "smoke" / f"{src.stem}.ipynb")


# -----------------------------------------------------------------------------
# Conversion

def test_myst_to_jupyter_markdown(mx):
    glue = {"gamma": {"text/markdown": "0.1", "text/plain": "'0.1'"}, "n": {"text/plain": "3.14159"}}
    conv = mx.Converter(glue, "ch")
    src = "\n".join([
        "(sec-x)=",
        "## Exercises",
        "",
        "````{admonition} Exercise 2: the angle {math}`\\theta`",
        ":class: note",
        "",
        "With {math}`\\gamma` = {glue:md}`gamma` and {glue:text}`n:.2f` see {ref}`the text <sec-x>`",
        "and {cite:p}`a2020,b2021`.",
        "",
        "```{dropdown} Hint",
        "Use {math}`x^2`.",
        "```",
        "",
        "```python",
        "x = {math}`not converted in code`",
        "```",
        "````",
        "",
        "```{math}",
        ":label: eq-1",
        "a = b",
        "```",
        "",
        "```{admonition} What you will learn",
        ":class: tip",
        "- one",
        "```",
    ])
    out = conv.convert(src)
    assert "### Exercise 2: the angle $\\theta$" in out
    assert "With $\\gamma$ = 0.1 and 3.14 see the text" in out and "[a2020, b2021]" in out
    assert "<details><summary>Hint</summary>" in out and "Use $x^2$." in out and "</details>" in out
    assert "x = {math}`not converted in code`" in out          # code blocks are left alone
    assert "$$\na = b\n$$" in out and ":label:" not in out and ":class:" not in out
    assert "> **What you will learn**" in out and "> - one" in out
    assert "(sec-x)=" not in out and "{admonition}" not in out and "{dropdown}" not in out
    assert conv.missing_glue == set()
    conv.convert("{glue:md}`nope`")
    assert conv.missing_glue == {"nope"}


def test_exercise_labels(mx):
    assert mx.exercise_label("dynamics", "Exercise 2: how robust") == "dynamics-2"
    assert mx.exercise_label("data", "Exercise: solve two prompts by hand") == "data-1"
    assert mx.exercise_label("data", "What you will learn") is None


# -----------------------------------------------------------------------------
# The student notebooks of the book

def test_every_student_notebook_has_answer_and_check_cells(mx, chapters):
    all_labels = []
    for src in chapters:
        nb, rep = mx.student_notebook(src, glue_for(mx, src))
        labels = rep["exercises"]
        all_labels += labels
        assert not any("solution" in c.metadata.get("tags", []) for c in nb.cells), src.name
        cells = nb.cells
        for label in labels:
            heading = [i for i, c in enumerate(cells) if c.cell_type == "markdown"
                       and re.search(r"^### Exercise", c.source, re.M) and label.split("-")[-1] in c.source
                       or c.cell_type == "markdown" and f"### Exercise:" in c.source and label.endswith("-1")]
            assert heading, f"{src.name}: no heading for {label}"
            answers = [i for i, c in enumerate(cells) if c.cell_type == "code" and c.source.startswith(f"# {label}:")]
            assert len(answers) == 1, f"{src.name}: {label} needs one answer cell"
            a = answers[0]
            assert "answer = None" in cells[a].source
            if label in EX.EXERCISES:
                assert f'exercises.check("{label}", answer' in cells[a + 1].source
        for c in cells:
            if c.cell_type == "markdown":
                for raw in ("{math}", "{glue", "{admonition}", "{dropdown}", "{ref}", "{cite"):
                    assert raw not in c.source, f"{src.name}: raw {raw} left in the markdown"
            else:
                assert "@REPO_URL@" not in c.source
    assert all_labels, "the book has exercises"
    # every check belongs to an exercise of the book
    stale = sorted(set(EX.EXERCISES) - set(all_labels))
    assert not stale, f"checks without an exercise: {stale}"


def test_checks_never_raise_and_never_reveal():
    for label in EX.labels():
        for bad in (None, Ellipsis, "nonsense", 12345, [1, 2], {"x": 1}, float("nan")):
            assert EX._judge(label, bad, {})[0] is False
    ok, msg = EX._judge("dynamics-1", None, {})
    assert not ok and "no answer yet" in msg and "answer = " in msg
    ok, msg = EX._judge("data-1", {"number": "a", "letter": "b"}, {})
    assert not ok and "globals()" in msg
    assert EX._judge("nope-9", 1, {})[0] is False


def test_statement_based_checks_pass_and_fail():
    import math
    # dynamics-1: computed with posym.metrics from the statement's numbers
    assert EX._judge("dynamics-1", (0.89, 0.02, "nope"), {})[0] is False
    theta, n = 0.8, 17
    dist = {t: abs((t * theta + math.pi) % (2 * math.pi) - math.pi) for t in range(1, n)}
    t = min(dist, key=dist.get)
    right = (min(1 - math.cos(theta), 2 * math.pi ** 2 / n ** 2), t, 1 - math.cos(t * theta))
    assert EX._judge("geometry-2", right, {}) == (True, "right")
    ok, msg = EX._judge("geometry-2", (right[0], t + 1, right[2]), {})
    assert not ok and "check t" in msg and str(t) not in msg.split("check")[-1].replace("t", "")
    assert EX._judge("geometry-1", [1.5, 1.5, 1.5000000001], {})[0] is True
    assert EX._judge("geometry-1", [1.5, 1.7, 1.5], {})[0] is False


# -----------------------------------------------------------------------------
# The student notebooks as nbval's last run (executed in `make test`, see scripts/nbval_copies.py)

CHAPTERS_WITH_CHECKS = sorted({label.rsplit("-", 1)[0] for label in EX.labels()})


def fake_executed(src: Path, path: Path) -> list:
    """``src`` as if executed: each code cell gets one distinct output; returns the outputs of the cells that
    are not solutions, in order."""
    nb = jupytext.read(src)
    kept = []
    for k, c in enumerate(nb.cells):
        if c.cell_type == "code":
            c.execution_count = k
            c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"output of cell {k}\n")]
            if "solution" not in c.metadata.get("tags", []):
                kept.append(c.outputs)
    nbformat.write(nb, path)
    return kept


@pytest.mark.parametrize("chapter", CHAPTERS_WITH_CHECKS)
def test_check_notebook_compares_the_chapter_and_expects_blank_then_right(mx, chapter, tmp_path):
    src = ROOT / "book" / f"{chapter}.md"
    executed = tmp_path / f"{chapter}.ipynb"
    chapter_outputs = fake_executed(src, executed)
    nb, rep = mx.check_notebook(src, executed)
    code = [c for c in nb.cells if c.cell_type == "code"]
    tags = [c.metadata.get("tags", []) for c in code]
    # the chapter's cells (solutions removed) carry what the chapter printed, in order
    assert [c.outputs for c, t in zip(code, tags) if "answer" not in t and "check" not in t] == chapter_outputs
    assert not any("solution" in t for t in tags)
    assert rep["checked"]
    ref, _ = mx.student_notebook(src, {}, reference=True)
    ref_src = {c.source.split(":", 1)[0][2:]: c.source for c in ref.cells if "answer" in c.metadata.get("tags", [])}
    for label in rep["checked"]:
        at = [i for i, c in enumerate(code) if c.source.startswith(f"# {label}:")]
        assert len(at) == 2, label
        blank, check1, answer, check2 = code[at[0]:at[0] + 4]
        assert code[at[1]] is answer and "answer = None" in blank.source and answer.source == ref_src[label]
        for c in (blank, answer):
            assert "nbval-ignore-output" in c.metadata["tags"] and not c.outputs
        no_answer, right = EX.expected_lines(label)
        for c, line, ok in ((check1, no_answer, False), (check2, right, True)):
            assert f'exercises.check("{label}", answer' in c.source
            assert "nbval-ignore-output" not in c.metadata["tags"]
            assert [o.get("text") for o in c.outputs] == [line + "\n", None]
            assert c.outputs[1]["data"] == {"text/plain": repr(ok)} and c.execution_count
    assert "no answer yet" in EX.expected_lines(rep["checked"][0])[0]
    nbformat.validate(nb)
