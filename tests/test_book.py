"""The book's chapter machinery: parameter validation, setup, runtimes, chapter sources, plotting,
the papermill runner (bad parameters leave nothing behind), the nbval sanitizer and the HTML checker."""
from __future__ import annotations

import random
import re
from pathlib import Path

import jupytext
import matplotlib
import nbformat

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import load_script  # noqa: E402

from posym import book, plotting, tasks  # noqa: E402
from posym import spec as spec_module  # noqa: E402
from posym.spec import ChapterSpec, Param, ParameterError, Required  # noqa: E402

REPO = Path(__file__).resolve().parents[1]




def chapter_sources() -> list[Path]:
    return load_script("bookutil").notebook_chapters(REPO)


# -----------------------------------------------------------------------------
# Parameter validation

@pytest.mark.parametrize("scale", book.SCALES)
def test_every_scale_has_valid_defaults(scale):
    for name, spec in book.all_specs().items():
        params = book.validate(name, scale, {})
        assert set(params) == set(spec.params)


def test_none_means_scale_default_and_explicit_values_win():
    assert book.validate("data", "smoke", {"n_samples": None})["n_samples"] == 4_000
    assert book.validate("data", "paper", {})["n_samples"] == 432_000
    assert book.validate("data", "smoke", {"n_samples": 123})["n_samples"] == 123
    assert book.validate("data", "smoke", {"n_samples": np.int64(7)})["n_samples"] == 7


BAD_VALUES = [
    # (scale, params, parameter the message must name, words the message must contain)
    ("huge", {}, "scale", ["'smoke'", "make book PARAMS=smoke"]),
    (None, {}, "scale", ["'paper'"]),
    (3, {}, "scale", ["one of"]),
    ("smoke", {"n_samples": "many"}, "n_samples", ["an integer", "'many'"]),
    ("smoke", {"n_samples": 3.5}, "n_samples", ["an integer", "float"]),
    ("smoke", {"n_samples": 1000.0}, "n_samples", ["an integer"]),
    ("smoke", {"n_samples": True}, "n_samples", ["an integer", "bool"]),
    ("smoke", {"n_samples": -5}, "n_samples", [">= 1", "-5"]),
    ("smoke", {"n_samples": 0}, "n_samples", [">= 1"]),
    ("smoke", {"split": "val", "n_samples": 5000}, "n_samples", ["at most", "2400"]),
    ("paper", {"split": "test"}, "n_samples", ["at most", "45_600"]),
    ("smoke", {"n_examples": 9}, "n_examples", ["[1, 8]", "9"]),
    ("smoke", {"n_swap": -1}, "n_swap", ["got -1"]),
    ("smoke", {"seed": -1}, "seed", ["[0,", "got -1"]),
    ("smoke", {"seed": "0"}, "seed", ["an integer"]),
    ("smoke", {"split": "training"}, "split", ["'train'", "'training'"]),
    ("smoke", {"split": 1}, "split", ["one of"]),
    ("smoke", {"n_sample": 10}, "n_sample", ["unknown parameter", "n_samples"]),
]


@pytest.mark.parametrize("scale, params, name, words", BAD_VALUES)
def test_bad_parameters_raise_one_clear_error(scale, params, name, words):
    with pytest.raises(ParameterError) as err:
        book.validate("data", scale, params)
    e = err.value
    assert e.param == name
    msg = str(e)
    assert f"'{name}'" in msg, msg
    for w in words:
        assert w.replace("_", "") in msg.replace("_", ""), (w, msg)
    assert isinstance(e, ValueError)


def test_setup_raises_before_touching_anything(monkeypatch):
    touched = []
    monkeypatch.setattr(plotting, "apply_style", lambda: touched.append("style"))
    monkeypatch.setattr(book, "seed_everything", lambda s: touched.append("seed"))
    with pytest.raises(ParameterError):
        book.setup("data", "smoke", n_samples=-1)
    assert touched == []


def test_unknown_chapter():
    with pytest.raises(ParameterError, match="unknown chapter 'nope'"):
        book.validate("nope", "smoke", {})


@pytest.fixture
def results_chapter(monkeypatch):
    """A chapter that reads a committed result at the paper scale."""
    spec = ChapterSpec(
        name="results-demo",
        params={"steps": Param(int, {"smoke": 10, "teaching": 100, "paper": 6750}, min=1),
                "lr": Param(float, 1e-4, min=0.0, max=1.0)},
        requires={"paper": (Required("runs/number/metrics.csv", "posym reproduce --scale paper",
                                     "positional/symbolic scores of the paper-scale runs"),)},
    )
    monkeypatch.setitem(spec_module.CHAPTERS, spec.name, spec)
    return spec


def test_missing_data_file_names_scale_file_and_command(results_chapter, tmp_path):
    book.validate("results-demo", "smoke", {}, data_root=tmp_path)  # smoke trains, needs nothing
    with pytest.raises(ParameterError) as err:
        book.validate("results-demo", "paper", {}, data_root=tmp_path)
    msg = str(err.value)
    assert err.value.param == "scale"
    assert "runs/number/metrics.csv" in msg and "missing" in msg
    assert "posym reproduce --scale paper" in msg and "PARAMS=smoke" in msg
    (tmp_path / "runs" / "number").mkdir(parents=True)
    (tmp_path / "runs" / "number" / "metrics.csv").write_text("step\n")
    assert book.validate("results-demo", "paper", {}, data_root=tmp_path)["steps"] == 6750


def test_optional_results_are_listed_not_fatal(monkeypatch, tmp_path):
    spec = ChapterSpec(name="optional-demo", params={},
                       requires={"paper": (Required("runs/x.csv", "posym reproduce --scale paper", optional=True),)})
    monkeypatch.setitem(spec_module.CHAPTERS, spec.name, spec)
    monkeypatch.setenv("POSYM_DATA_DIR", str(tmp_path))
    cfg = book.setup("optional-demo", "paper")
    assert [r.path for r in cfg.missing] == ["runs/x.csv"]
    note = book.missing_note(cfg).data
    assert "data/runs/x.csv" in note and "posym reproduce --scale paper" in note
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "x.csv").write_text("")
    assert book.setup("optional-demo", "paper").missing == ()
    assert book.missing_note(book.setup("optional-demo", "paper")) is None


def test_data_dir_follows_environment(results_chapter, tmp_path, monkeypatch):
    monkeypatch.setenv("POSYM_DATA_DIR", str(tmp_path))
    assert book.data_dir() == tmp_path.resolve()
    with pytest.raises(ParameterError, match=re.escape(str(tmp_path))):
        book.validate("results-demo", "paper", {})


@pytest.mark.parametrize("params, name", [({"steps": 0}, "steps"), ({"steps": -100}, "steps"),
                                          ({"lr": -1e-3}, "lr"), ({"lr": float("nan")}, "lr"),
                                          ({"lr": "fast"}, "lr"), ({"steps": 2.5}, "steps")])
def test_steps_and_rates(results_chapter, params, name):
    with pytest.raises(ParameterError) as err:
        book.validate("results-demo", "smoke", params)
    assert err.value.param == name
    assert book.validate("results-demo", "smoke", {"lr": 1})["lr"] == 1.0  # int accepted for float


def test_spec_must_give_every_scale():
    with pytest.raises(ValueError, match="every scale"):
        ChapterSpec(name="x", params={"n": Param(int, {"smoke": 1, "paper": 2})})
    with pytest.raises(ValueError, match="reserved"):
        ChapterSpec(name="x", params={"scale": Param(str, "smoke")})


def test_multiple_of_names_the_first_parameter_that_is_not(ledger):
    check = spec_module.multiple_of(4, ("n_prompts", "n_margin"), "hop-balanced prompts")
    assert check({"n_prompts": 8, "n_margin": 12}) is None and check({"n_prompts": None, "n_margin": 4}) is None
    ledger.bad_input()
    assert check({"n_prompts": 8, "n_margin": 6}) == ("n_margin", "must be a multiple of 4 (hop-balanced prompts), got 6")
    with pytest.raises(ParameterError, match="chapter 'lego': parameter 'n_prompts' must be a multiple of 2"):
        book.setup("lego", "smoke", n_prompts=41)


def test_setup_returns_config_and_seeds(monkeypatch):
    cfg = book.setup("data", "smoke", seed=3)
    assert cfg.chapter == "data" and cfg.scale == "smoke" and cfg.seed == 3 and cfg.n_samples == 4000
    a = (random.random(), np.random.rand())
    book.setup("data", "smoke", seed=3)
    assert (random.random(), np.random.rand()) == a
    with pytest.raises(AttributeError):
        cfg.not_a_parameter  # noqa: B018
    assert cfg.elapsed() >= 0


def test_figures_as_text_shows_the_text_line_without_drawing(monkeypatch):
    """POSYM_FIGURES=text (the nbval runs): setup leaves figures their text line only, so none is drawn."""
    from IPython.core.interactiveshell import InteractiveShell
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    assert book.figures_as_text() is False  # no kernel: nothing to change
    shell = InteractiveShell.instance()
    try:
        shell.display_formatter.active_types = shell.display_formatter.format_types  # as in a kernel
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.plot([1, 2])
        set_matplotlib_formats("png")  # what a kernel shows: the drawn image
        assert sorted(shell.display_formatter.format(fig)[0]) == ["image/png", "text/plain"]
        book.setup("data", "smoke")
        assert "image/png" in shell.display_formatter.format(fig)[0]  # the variable is not set
        monkeypatch.setenv(book.FIGURES_ENV, "text")
        book.setup("data", "smoke")
        data, _ = shell.display_formatter.format(fig)
        assert sorted(data) == ["text/plain"] and data["text/plain"].startswith("<Figure size")
        plt.close(fig)
    finally:
        InteractiveShell.clear_instance()


# -----------------------------------------------------------------------------
# Runtimes

def test_runtime_table_records_and_replaces(tmp_path):
    path = tmp_path / "runtimes.csv"
    assert "not measured yet" in book.runtime_table("data", path)
    book.record_runtime("data", "smoke", 12.34, path)
    book.record_runtime("data", "smoke", 10.0, path)
    book.record_runtime("data", "paper", 600.0, path)
    rows = book.read_runtimes(path)
    assert [(r["scale"], r["seconds"]) for r in rows] == [("smoke", "10.0"), ("paper", "600.0")]
    table = book.runtime_table("data", path)
    assert "10 s" in table and "10.0 min" in table and "`teaching`" in table
    assert "not measured yet" in table  # teaching


def test_committed_runtimes_cover_every_chapter_and_scale():
    rows = book.read_runtimes(REPO / "book" / "runtimes.csv")
    have = {(r["chapter"], r["scale"]) for r in rows}
    for src in chapter_sources():
        for scale in book.SCALES:
            assert (src.stem, scale) in have, f"book/runtimes.csv lacks {src.stem}/{scale}: run `make runtimes`"


# -----------------------------------------------------------------------------
# Chapter sources

def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_toc_lists_existing_pages():
    bookutil = load_script("bookutil")
    for f in bookutil.toc_files(REPO):
        assert (REPO / f"{f}.md").is_file(), f


@pytest.mark.parametrize("src", chapter_sources(), ids=lambda p: p.stem)
def test_chapter_structure(src):
    """Parameters cell first, every parameter None by default, setup next with the shared install line."""
    nb = jupytext.read(src)
    name = src.stem
    assert name in book.chapter_names(), f"add posym/chapters/{name}.py registering a ChapterSpec for {name!r}"
    spec = book.load_spec(name)
    cells = code_cells(nb)
    assert "parameters" in cells[0].metadata.get("tags", []), "the first code cell must be tagged parameters"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    ns: dict = {}
    exec(cells[0].source, ns)
    assert ns["scale"] == "smoke"
    for p in spec.params:
        assert p in ns and ns[p] is None, f"parameter {p!r} must default to None (the scale's default)"
    setup = cells[1].source
    assert "!" + book.COLAB_INSTALL in setup, "setup cell must run posym.book.COLAB_INSTALL verbatim"
    call = re.search(r"book\.setup\(([^)]*)\)", setup, re.S)
    assert call and call.group(1).split(",")[0].strip().strip("\"'") == name
    for p in spec.params:
        assert re.search(rf"\b{p}\s*=\s*{p}\b", call.group(1)), f"setup() must receive {p}"
    # no cell writes files relative to the working directory
    for c in cells:
        assert "savefig(" not in c.source and "to_csv(" not in c.source


@pytest.mark.parametrize("src", chapter_sources(), ids=lambda p: p.stem)
def test_chapter_has_learning_note_runtime_and_hidden_solutions(src):
    text = src.read_text()
    assert "What you will learn" in text
    assert f'book.runtime_note("{src.stem}")' in text
    nb = jupytext.read(src)
    solution = [c for c in nb.cells if "solution" in c.metadata.get("tags", [])]
    if "Exercise" in text:
        assert solution, "mark exercise solutions with the tag `solution`"
    for c in solution:
        if c.cell_type == "code":
            assert "hide-cell" in c.metadata.get("tags", []) or "remove-cell" in c.metadata.get("tags", [])


def test_exercises_strip_solutions(tmp_path):
    mod = load_script("make_exercises")
    assert mod.main(["--out", str(tmp_path)]) == 0
    import nbformat
    for src in chapter_sources():
        nb = nbformat.read(tmp_path / f"{src.stem}.ipynb", as_version=4)
        assert not any("solution" in c.metadata.get("tags", []) for c in nb.cells)
        assert any("Exercise" in c.source for c in nb.cells)


# -----------------------------------------------------------------------------
# Executing a chapter with bad parameters (papermill, a real kernel)

def _snapshot(*folders: Path) -> dict[str, float]:
    out = {}
    for f in folders:
        for p in f.rglob("*"):
            if "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts:
                out[str(p)] = p.stat().st_mtime
    return out


CHAPTER_NAMES = sorted(book.all_specs())


def _first_bad_case(chapter: str) -> book.BadCase:
    """The bad value each chapter is executed with end to end: a value of the wrong type for its first parameter."""
    return next(c for c in book.bad_cases(chapter) if c.kind == "wrong type" and c.param != "scale")


def test_every_chapter_has_a_bad_case_batch_covering_every_parameter():
    for name, spec in book.all_specs().items():
        cases = book.bad_cases(name)
        assert {c.param for c in cases} >= set(spec.params) | {"scale"}, name
        kinds = {c.kind for c in cases}
        assert {"unknown scale", "unknown parameter", "wrong type"} <= kinds, name
        if spec.requires.get("paper"):
            assert "missing results folder" in kinds, name


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTER_NAMES)
def test_bad_parameters_stop_the_chapter_and_write_nothing(tmp_path, chapter, ledger):
    """papermill executes the whole chapter with one bad value: it stops with one ParameterError naming the
    parameter, leaves no output notebook and writes nothing into book/ or data/."""
    case = _first_bad_case(chapter)
    out_dir = tmp_path / "executed"
    before = _snapshot(REPO / "book", REPO / "data")
    ledger.bad_input()
    with pytest.raises(book.ChapterError) as err:
        book.execute_chapter(REPO / "book" / f"{chapter}.md", out_dir / f"{chapter}.ipynb", case.scale,
                             dict(case.overrides))
    e = err.value
    assert e.ename == "ParameterError"
    assert f"parameter '{case.param}'" in e.evalue
    assert not out_dir.exists(), "a failed chapter must not leave an output notebook"
    assert list(tmp_path.iterdir()) == []
    assert _snapshot(REPO / "book", REPO / "data") == before, "a failed chapter must not write into book/ or data/"


def _chapter_head(chapter: str) -> tuple[str, list[str]]:
    """The chapter's parameters cell and its code cells up to and including the one that calls book.setup."""
    cells = [c for c in jupytext.read(REPO / "book" / f"{chapter}.md").cells if c.cell_type == "code"]
    k = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    end = next(i for i, c in enumerate(cells) if i > k and "book.setup(" in c.source)
    return cells[k].source, [c.source for c in cells[k + 1:end + 1]]


#: Before each case: remove every name the previous case defined (parameters, ``book``, ``cfg``...), as
#: ``%reset -f`` does, without its garbage collection of the whole heap (most of a case's time otherwise).
_CLEAR_NAMESPACE = ("for _name in [n for n in list(globals()) if not n.startswith('_') and n not in "
                    "('In', 'Out', 'get_ipython', 'exit', 'quit')]:\n    del globals()[_name]")


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTER_NAMES)
def test_every_bad_parameter_of_every_chapter_is_refused_in_its_first_cells(chapter, tmp_path, ledger):
    """Every case of ``book.bad_cases(chapter)`` run through the chapter's own first cells in a real kernel,
    with the parameters injected as papermill injects them: each stops at the setup cell with exactly one
    ParameterError that names the parameter, and nothing is written (kernel folder, book/, data/)."""
    from jupyter_client.manager import start_new_kernel
    from papermill.translators import translate_parameters

    params_src, head = _chapter_head(chapter)
    cases = book.bad_cases(chapter)
    cwd, empty = tmp_path / "cwd", tmp_path / "empty-data"
    cwd.mkdir()
    empty.mkdir()
    before = _snapshot(REPO / "book", REPO / "data")
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(cwd))
    try:
        # one-line tracebacks: the reply's ename/evalue are what is checked, and IPython's full traceback
        # formatting costs more than the case itself
        kc.execute_interactive("%xmode Minimal", timeout=60, output_hook=lambda msg: None)
        for case in cases:
            env = (f"import os as _os; _os.environ['POSYM_DATA_DIR'] = {str(empty)!r}" if case.empty_data
                   else "import os as _os; _os.environ.pop('POSYM_DATA_DIR', None)")
            injected = translate_parameters("python3", "python", {"scale": case.scale, **case.overrides},
                                            "Parameters")
            cells = [_CLEAR_NAMESPACE, params_src, injected, env, *head]
            errors = []
            for src in cells:
                reply = kc.execute_interactive(src, timeout=120, output_hook=lambda msg: None)
                if reply["content"]["status"] == "error":
                    errors.append((src, reply["content"]["ename"], reply["content"]["evalue"]))
                    break
            ledger.bad_input()
            assert len(errors) == 1, f"{chapter} {case.id}: the chapter ran past its setup cell"
            src, ename, evalue = errors[0]
            assert src == head[-1], f"{chapter} {case.id}: failed in the wrong cell: {ename}: {evalue}"
            assert ename == "ParameterError", (case.id, ename, evalue)
            assert f"'{case.param}'" in evalue and f"chapter {chapter!r}" in evalue, (case.id, evalue)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert list(cwd.iterdir()) == [] and list(empty.iterdir()) == [], "a refused chapter wrote files"
    assert _snapshot(REPO / "book", REPO / "data") == before, "a refused chapter wrote into book/ or data/"


# -----------------------------------------------------------------------------
# Plotting

def test_palette_is_okabe_ito_and_semantic():
    assert plotting.COLORS["positional"] == plotting.task_color("number") == "#0072B2"
    assert plotting.COLORS["symbolic"] == plotting.task_color("letter") == "#D55E00"
    assert len(set(plotting.PALETTE)) == len(plotting.PALETTE)
    assert set(plotting.HOP_COLORS) == {1, 2, 3, 4}
    with pytest.raises(ValueError):
        plotting.task_color("words")
    plotting.apply_style()
    first = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][0]
    assert matplotlib.colors.to_hex(first) == "#0072b2"


@pytest.mark.parametrize("task_name", tasks.PAPER_TASKS)
def test_draw_hop_chain_draws_one_arc_per_hop(task_name):
    task = tasks.get_task(task_name)
    for s in tasks.balanced_eval_set(task, 4, split="val"):
        fig, ax = plt.subplots()
        plotting.draw_hop_chain(s, ax)
        assert len(plotting.chain_arrows(ax)) == s.hops
        texts = [t.get_text() for t in ax.texts]
        for tok in s.tokens:
            assert tok in texts
        boxes = [p for p in ax.patches if type(p).__name__ == "Rectangle"]
        assert len(boxes) == len(s.tokens)
        assert str(s.answer_pos) in ax.get_title(loc="left")
        plt.close(fig)


def test_draw_hop_chain_paper_figure_and_longer_prompts():
    task = tasks.get_task("number")
    toks = "C B A 1 4 1 3 2 1".split()
    s = tasks.Sample(tuple(toks), *task.solve(toks))
    ax = plotting.draw_hop_chain(s, target_window=3)
    labels = [t.get_text() for t in ax.texts]
    assert {"\u22124", "\u22121", "\u22122"} <= set(labels)
    plt.close(ax.figure)
    long = task.extend_target_window(tasks.TaskDataset("number", "val")[0], 20, np.random.default_rng(0))
    ax = plotting.draw_hop_chain(long)
    assert len(plotting.chain_arrows(ax)) == long.hops
    plt.close(ax.figure)
    with pytest.raises(ValueError):
        plotting.draw_hop_chain(tasks.Sample(("a", "1"), "a", 1, (1, 5)))


# -----------------------------------------------------------------------------
# nbval sanitizer

def test_sanitizer_rounds_floats_and_strips_volatile_text():
    from nbval.plugin import get_sanitize_patterns

    patterns = get_sanitize_patterns((REPO / "tests" / "nbval_sanitize.cfg").read_text())

    def clean(s: str) -> str:
        for rx, rep in patterns:
            s = re.sub(rx, rep, s)
        return s

    assert clean("0.33333333333333337") == clean("0.3333333333333333")
    assert clean("loss 1.23456789e-05") == clean("loss 1.23451111e-05")
    assert clean("0.1235") != clean("0.1245")
    assert clean("<Figure at 0x7f3a2b1c9d90>") == clean("<Figure at 0x7f00aa11bb22>")
    assert clean("ran in 3.9 s") == clean("ran in 12.0 s")
    assert clean("2026-05-29T10:11:12.5") == clean("2027-01-01 00:00:00")
    assert clean(" 45%|####5     | 45/100 [00:01<00:02, 30.12it/s]") == \
        clean(" 46%|####6     | 46/100 [00:02<00:01, 29.00it/s]")
    assert clean("hops 1 2 3 4") == "hops 1 2 3 4"  # plain integers are kept


# -----------------------------------------------------------------------------
# HTML checker (pure parts; the browser itself runs in `make browser-check`)

def test_check_html_static_rules(tmp_path):
    ch = load_script("check_html")
    assert ch.is_external("https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js")
    assert ch.is_external("//fonts.googleapis.com/css")
    for local in ("_static/x.js", "../_images/a.png", "http://127.0.0.1:8000/a", "data:image/png;base64,xx",
                  "#top", "http://localhost/x"):
        assert not ch.is_external(local), local
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "ok.js").write_text("")
    (tmp_path / "index.html").write_text(
        '<html><head><title>t</title><script src="_static/ok.js"></script>'
        '<script src="https://cdn.example.org/x.js"></script>'
        '<link rel="stylesheet" href="https://fonts.example.org/f.css"></head>'
        '<body><a href="https://arxiv.org/abs/2605.31558">paper</a><img src="missing.png"></body></html>')
    problems, pages, n_links = ch.static_check(tmp_path)
    text = "\n".join(problems)
    assert "cdn.example.org" in text and "fonts.example.org" in text and "missing.png" in text
    assert "arxiv.org" not in text and n_links == 1
    assert len(problems) == 3


def test_check_html_detects_unrendered_math():
    ch = load_script("check_html")
    src = ch.parse('<html><title>t</title><main><span class="math">\\(x\\)</span>'
                   '<div class="proof definition">d</div></main></html>')
    net = {"page": {"http://127.0.0.1:1/a.js"}, "background": set(), "connected": set(), "udp_probes": set()}
    good = '<html><title>t</title><main><span class="math"><mjx-container>x</mjx-container></span>' \
           '<div class="proof definition">d</div><pre>$not math$ in code</pre></main></html>'
    assert ch.check_page("p.html", src, good, net, set())[0] == []
    bad = '<html><title>t</title><main><span class="math">\\(x\\)</span> and $y$</main></html>'
    problems = "\n".join(ch.check_page("p.html", src, bad, net, set())[0])
    assert "MathJax typeset 0 of 1" in problems and "raw" in problems and "proof" in problems
    leaky = dict(net, page={"https://cdn.example.org/x.js"}, connected={"93.184.216.34:443"})
    problems = "\n".join(ch.check_page("p.html", src, good, leaky, set())[0])
    assert "cdn.example.org" in problems and "93.184.216.34" in problems


# -----------------------------------------------------------------------------
# README testing counts (scripts/testing_report.py)

def test_testing_report_writes_and_checks_the_readme_block(tmp_path, capsys):
    tr = load_script("testing_report")
    ledger = {"exitstatus": 0, "tests": {"passed": 10, "skipped": 1},
              "kinds": {"bad_input": "bad inputs tried (x)", "fault": "faults injected (y)", "rerun": "reruns compared"},
              "totals": {"bad_input": 7, "fault": 2, "rerun": 0},
              "by_test": {"tests/test_a.py::t1": {"bad_input": 5}, "tests/test_b.py::t2[x]": {"bad_input": 2, "fault": 2}}}
    lpath, readme = tmp_path / "ledger.json", tmp_path / "README.md"
    import json
    lpath.write_text(json.dumps(ledger))
    readme.write_text(f"intro\n{tr.BEGIN}\nold\n{tr.END}\noutro\n")
    args = ["--ledger", str(lpath), "--readme", str(readme)]
    assert tr.main(args + ["--check"]) == 1  # stale
    assert tr.main(args + ["--write"]) == 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old" not in text
    assert "| bad inputs tried (x) | 7 |" in text and "| tests passed | 10 |" in text
    assert "`test_a.py` (5), `test_b.py` (2)" in text
    assert tr.main(args + ["--check"]) == 0
    ledger["exitstatus"] = 1
    lpath.write_text(json.dumps(ledger))
    with pytest.raises(SystemExit, match="did not pass"):
        tr.main(args + ["--check"])


def test_xdist_schedules_by_file_except_the_spread_tests():
    from conftest import SPREAD_TESTS, xdist_scope

    for name in SPREAD_TESTS:  # each listed test exists, so a rename cannot silently stop the spreading
        file, fn = name.split("::")
        assert re.search(rf"^def {fn}\(", (REPO / "tests" / file).read_text(), re.M), name
    assert xdist_scope("tests/test_x.py::test_y[1]") == "tests/test_x.py"
    assert xdist_scope("tests/test_x.py::TestZ::test_y") == "tests/test_x.py"
    case = "tests/test_book.py::test_every_bad_parameter_of_every_chapter_is_refused_in_its_first_cells[data]"
    assert xdist_scope(case) == case


def test_nbval_copies_are_independent_runs_run_by_run(tmp_path, monkeypatch):
    nc = load_script("nbval_copies")
    executed = tmp_path / "smoke"
    executed.mkdir()
    for name in ("a", "b"):
        (executed / f"{name}.ipynb").write_text(f'{{"name": "{name}"}}')
    monkeypatch.setattr(nc, "longest_first", lambda names, scale: sorted(names, reverse=True))
    paths = nc.make_copies(executed, 3, tmp_path / "nbval")
    assert [p.relative_to(tmp_path / "nbval").as_posix() for p in paths] == [
        "run1/b.ipynb", "run1/a.ipynb", "run2/b.ipynb", "run2/a.ipynb", "run3/b.ipynb", "run3/a.ipynb"]
    assert all(p.read_text() == (executed / p.name).read_text() for p in paths)
    paths = nc.make_copies(executed, 1, tmp_path / "nbval")  # a second call starts from an empty folder
    assert sorted(p.name for p in (tmp_path / "nbval").rglob("*.ipynb")) == ["a.ipynb", "b.ipynb"]
    with pytest.raises(SystemExit):
        nc.make_copies(tmp_path / "empty", 3, tmp_path / "nbval")


def test_nbval_copies_last_run_holds_the_student_notebooks(tmp_path, monkeypatch):
    """``--students``: the last run's chapters with checks are their student notebooks (built by
    ``make_exercises.check_notebook`` from the executed chapter); the other chapters and runs are copies."""
    nc = load_script("nbval_copies")
    executed = tmp_path / "smoke"
    executed.mkdir()
    for name in ("data", "teaching"):
        nbformat.write(jupytext.read(REPO / "book" / f"{name}.md"), executed / f"{name}.ipynb")
    (executed / "nochecks.ipynb").write_text('{"name": "nochecks"}')
    monkeypatch.setattr(nc, "longest_first", lambda names, scale: sorted(names))
    built = []
    real = nc.make_exercises.check_notebook
    monkeypatch.setattr(nc.make_exercises, "check_notebook", lambda src, ex: built.append(src.stem) or real(src, ex))
    paths = nc.make_copies(executed, 2, tmp_path / "nbval", students=True)
    assert [p.relative_to(tmp_path / "nbval").as_posix() for p in paths] == [
        "run1/data.ipynb", "run1/nochecks.ipynb", "run1/teaching.ipynb",
        "run2/data.ipynb", "run2/nochecks.ipynb", "run2/teaching.ipynb"]
    assert built == ["data", "teaching"]
    for p in paths:
        if p.parent.name == "run1" or p.stem == "nochecks":
            assert p.read_text() == (executed / p.name).read_text()
        else:
            nb = nbformat.read(p, as_version=4)
            assert any("check" in c.metadata.get("tags", []) for c in nb.cells)
