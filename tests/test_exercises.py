"""Student notebooks (`make exercises`, scripts/make_exercises.py) and their answer checks (posym.exercises).

Fast tests: the MyST-to-Jupyter conversion, the shape of every student notebook (no solution, an answer cell
after each exercise, a check cell where the exercise has a check, no raw MyST), and that a check never
raises. The slow test (`-m slow`, about the time of the chapters at the smoke scale) executes every student
notebook at the smoke scale with, after each exercise, the blank answer and its check (which must fail
gracefully: a message, no exception) and then the reference answer (the solution's code) and its check (which
must pass). One execution per chapter covers both.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

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
# Executing the student notebooks (slow)

def combined(mx, src):
    """The student notebook with, after each exercise, the blank answer + check, then the reference + check."""
    glue = glue_for(mx, src)
    blank, rep = mx.student_notebook(src, glue)
    ref, _ = mx.student_notebook(src, glue, reference=True)
    ref_answers = {c.source.split(":", 1)[0][2:]: c for c in ref.cells
                   if c.cell_type == "code" and "answer" in c.metadata.get("tags", [])}
    cells = []
    for c in blank.cells:
        cells.append(c)
        if c.cell_type == "code" and "check" in c.metadata.get("tags", []):
            label = re.search(r'check\("([^"]+)"', c.source).group(1)
            cells += [nbformat.v4.new_code_cell(ref_answers[label].source), nbformat.v4.new_code_cell(c.source)]
    cells.append(nbformat.v4.new_code_cell(
        "import json\nfrom posym import exercises\nprint('HISTORY ' + json.dumps(exercises.HISTORY))"))
    for k, c in enumerate(cells):
        c["id"] = f"t{k}"
    blank.cells = cells
    return blank, rep


CHAPTERS_WITH_CHECKS = sorted({label.rsplit("-", 1)[0] for label in EX.labels()})


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS_WITH_CHECKS)
def test_student_notebook_runs_blank_and_with_the_reference_answers(mx, chapter, tmp_path):
    import papermill as pm

    src = ROOT / "book" / f"{chapter}.md"
    nb, rep = combined(mx, src)
    out = tmp_path / f"{chapter}.ipynb"
    pm.execute_notebook(nb, str(out), parameters={"scale": "smoke"}, cwd=str(ROOT / "book"), progress_bar=False,
                        kernel_name="python3", execution_timeout=1800)
    done = nbformat.read(out, as_version=4)
    text = "\n".join(o.get("text", "") for c in done.cells if c.cell_type == "code" for o in c.get("outputs", [])
                     if o.get("output_type") == "stream")
    history = json.loads(re.search(r"^HISTORY (.*)$", text, re.M).group(1))
    for label in rep["checked"]:
        runs = [ok for lab, ok in history if lab == label]
        assert runs == [False, True], f"{label}: blank then reference should give [False, True], got {runs}\n{text[-3000:]}"
    assert text.count("no answer yet") >= len(rep["checked"])
