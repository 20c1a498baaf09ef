"""Chapter infrastructure of the companion book.

Every chapter is a MyST markdown notebook in ``book/`` whose first code cell is tagged
``parameters`` and holds ``scale = "smoke"`` plus the chapter's parameters, all ``None`` (meaning
"the scale's default"). The next cell calls::

    from posym import book
    cfg = book.setup("data", scale, seed=seed, n_samples=n_samples, ...)

:func:`setup` validates every parameter against the chapter's :class:`ChapterSpec` (type, range,
choices, files that must exist in ``data/`` at this scale) and stops the chapter with one
:class:`ParameterError` that names the parameter and says what to run. It then applies the shared
figure style, seeds ``random``/``numpy``/``torch`` and returns a :class:`ChapterConfig`.

The parameter sets (``smoke``, ``teaching``, ``paper``) of a chapter live in its module,
``posym/chapters/<name>.py`` (a :class:`posym.spec.ChapterSpec`), and nowhere else; :func:`load_spec`
imports only the chapter asked for. Papermill only passes ``scale`` (and any explicit override).

:func:`execute_chapter` runs one chapter with papermill (used by ``scripts/run_chapters.py`` and the
tests); it writes the executed notebook only if the chapter succeeds. Measured runtimes are kept in
``book/runtimes.csv`` and shown at the top of each chapter by :func:`runtime_note`.
"""
from __future__ import annotations

import ast
import csv
import datetime as _dt
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import spec as _spec
from .glue import glue_md  # noqa: F401  (re-exported: pages glue their text values with book.glue_md)
from .results import data_dir, repo_root  # noqa: F401  (re-exported: chapters and scripts use book.data_dir)
from .spec import (SCALE_HELP, SCALES, BadCase, ChapterSpec, Param, ParameterError,  # noqa: F401  (re-exported)
                   Required)

#: The one line that installs the pinned stack where ``posym`` is missing (e.g. Google Colab).
#: Every chapter's setup cell runs exactly this line (``tests/test_book.py`` checks it). The repository URL
#: is written once, as ``repository.url`` in ``_config.yml``; the pages say ``@REPO_URL@`` and the book build
#: and ``make notebooks`` fill it in (:func:`posym.results.repo_url` reads it).
REPO_URL_MARKER = "@REPO_URL@"
COLAB_INSTALL = (
    f"git clone -q --depth 1 {REPO_URL_MARKER} posym-src && "
    "pip install -q -r posym-src/requirements.txt && pip install -q --no-deps -e posym-src"
)

RUNTIME_COLUMNS = ("chapter", "scale", "seconds", "cpu", "cores", "date")


# -----------------------------------------------------------------------------
# Validation and setup

# -----------------------------------------------------------------------------
# Chapters: found by name, loaded on demand

def chapter_names() -> tuple[str, ...]:
    """Every chapter module in ``posym/chapters/`` (found without importing them)."""
    import pkgutil

    from . import chapters
    return tuple(sorted(m.name for m in pkgutil.iter_modules(chapters.__path__) if not m.name.startswith("_")))


def load_spec(chapter: str) -> ChapterSpec:
    """The :class:`ChapterSpec` of ``chapter``, importing its module (``posym.chapters.<chapter>``) if needed."""
    if chapter not in _spec.CHAPTERS:
        if chapter not in chapter_names():
            raise ParameterError(f"unknown chapter {chapter!r}; known chapters: {', '.join(chapter_names())}",
                                 param="chapter")
        import importlib
        importlib.import_module(f"posym.chapters.{chapter}")
        if chapter not in _spec.CHAPTERS:
            raise ParameterError(f"posym/chapters/{chapter}.py registers no ChapterSpec named {chapter!r}",
                                 param="chapter")
    return _spec.CHAPTERS[chapter]


def all_specs() -> dict[str, ChapterSpec]:
    """Every chapter's specification (imports every chapter module)."""
    return {name: load_spec(name) for name in chapter_names()}


def validate(chapter: str, scale: Any, params: Mapping[str, Any] | None = None,
             data_root: Path | None = None) -> dict[str, Any]:
    """:func:`posym.spec.validate` after loading the chapter's module."""
    load_spec(chapter)
    return _spec.validate(chapter, scale, params, data_root=data_root)


def bad_cases(chapter: str) -> list[BadCase]:
    """:func:`posym.spec.bad_cases` after loading the chapter's module."""
    load_spec(chapter)
    return _spec.bad_cases(chapter)


@dataclass
class ChapterConfig:
    """What :func:`setup` returns: chapter name, scale, validated parameters, paths, start time."""

    chapter: str
    scale: str
    params: dict[str, Any]
    data_dir: Path
    started: float = field(default_factory=time.perf_counter)
    missing: tuple[Required, ...] = ()  # optional results absent from data_dir

    def __getattr__(self, name: str) -> Any:
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def finish(self) -> float:
        """Print and return the seconds since :func:`setup` (tag the cell ``nbval-ignore-output``)."""
        s = self.elapsed()
        print(f"Chapter {self.chapter!r} at scale {self.scale!r} ran in {s:.1f} s "
              f"(after setup; {platform.processor() or platform.machine()}, {os.cpu_count()} cores).")
        return s


def seed_everything(seed: int) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (if installed)."""
    random.seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch
        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def injected_parameters() -> list[str]:
    """Names assigned by the cell papermill injects (it starts with ``# Parameters``) in the running IPython
    kernel (the latest such cell), if any.  papermill only warns about a parameter the notebook does not
    declare; :func:`setup` refuses it, so a misspelt ``-p n_sample 10`` cannot silently run the chapter with
    the default."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return []
    ip = get_ipython()
    if ip is None:
        return []
    cells = [src for src in ip.user_ns.get("In", [])
             if isinstance(src, str) and src.lstrip().startswith("# Parameters")]
    if not cells:
        return []
    try:
        tree = ast.parse(cells[-1])  # the latest injection (papermill injects one)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)]


#: ``POSYM_FIGURES=text`` makes :func:`setup` show every figure as its text line only (see :func:`figures_as_text`).
FIGURES_ENV = "POSYM_FIGURES"


def figures_as_text() -> bool:
    """Show figures in this kernel as their text line (``<Figure size 700x360 with 1 Axes>``), without drawing them.

    For re-executions that compare text outputs only: nbval never compares images, so the test runs of
    ``make test`` (nbval, the student notebooks) skip the drawing, about a sixth of a chapter's time. Every
    figure is still built; the chapters stage draws them all. Returns whether an IPython kernel was found.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return False
    ip = get_ipython()
    if ip is None:
        return False
    from matplotlib_inline.backend_inline import set_matplotlib_formats

    set_matplotlib_formats()  # no image format: the display keeps the figure's text/plain only
    return True


def setup(chapter: str, scale: str, **params: Any) -> ChapterConfig:
    """Validate the chapter's parameters, apply the figure style, seed everything.

    Raises :class:`ParameterError` (one message naming the parameter and what to run) before
    anything else happens.
    """
    for name in injected_parameters():
        if name != "scale" and name not in params:
            validate(chapter, scale, {**params, name: None})  # raises: unknown parameter, naming it
    full = validate(chapter, scale, params)
    from posym import plotting

    plotting.apply_style()
    if os.environ.get(FIGURES_ENV, "").strip().lower() == "text":
        figures_as_text()
    try:
        import pandas as pd
        pd.set_option("display.precision", 4)
        pd.set_option("display.max_columns", 40)
        pd.set_option("display.width", 120)
        pd.set_option("display.max_colwidth", 120)
    except ImportError:  # pragma: no cover
        pass
    seed_everything(int(full.get("seed", 0)))
    root = data_dir()
    missing = tuple(r for r in load_spec(chapter).requires.get(scale, ()) if r.optional and not (root / r.path).exists())
    return ChapterConfig(chapter=chapter, scale=scale, params=full, data_dir=root, missing=missing)


def missing_note(cfg: ChapterConfig):
    """A warning (Markdown) listing the optional results missing at this scale, or ``None``."""
    if not cfg.missing:
        return None
    from IPython.display import Markdown

    lines = [f":::{{warning}} Missing results for scale `{cfg.scale}`",
             "This chapter shows what it can without them. To produce them:", ""]
    for r in cfg.missing:
        what = f" ({r.what})" if r.what else ""
        lines.append(f"* `data/{r.path}`{what}: run `{r.how}`")
    lines.append(":::")
    return Markdown("\n".join(lines))


# -----------------------------------------------------------------------------
# Runtimes

def runtimes_path() -> Path:
    root = repo_root()
    return (root if root is not None else Path.cwd()) / "book" / "runtimes.csv"


def read_runtimes(path: Path | None = None) -> list[dict[str, str]]:
    path = path or runtimes_path()
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def record_runtime(chapter: str, scale: str, seconds: float, path: Path | None = None) -> None:
    """Store a measured runtime (replacing the previous one for this chapter and scale)."""
    path = path or runtimes_path()
    rows = [r for r in read_runtimes(path) if (r["chapter"], r["scale"]) != (chapter, scale)]
    rows.append({
        "chapter": chapter, "scale": scale, "seconds": f"{seconds:.1f}",
        "cpu": _cpu_name(), "cores": str(os.cpu_count()),
        "date": _dt.date.today().isoformat(),
    })
    rows.sort(key=lambda r: (r["chapter"], SCALES.index(r["scale"]) if r["scale"] in SCALES else 99))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUNTIME_COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def runtime_table(chapter: str, path: Path | None = None) -> str:
    """Markdown table of the measured CPU runtime of ``chapter`` at each scale."""
    rows = {r["scale"]: r for r in read_runtimes(path) if r["chapter"] == chapter}
    lines = ["| scale | what it is for | measured runtime (CPU) |", "|---|---|---|"]
    for s in SCALES:
        r = rows.get(s)
        if r:
            when = f"{_human(float(r['seconds']))} on {r['cores']} CPU cores (measured {r['date']})"
        else:
            when = "not measured yet (`make runtimes`)"
        lines.append(f"| `{s}` | {SCALE_HELP[s]} | {when} |")
    return "\n".join(lines)


def runtime_note(chapter: str, path: Path | None = None):
    """The runtime table as displayable Markdown (put it in a cell tagged ``remove-input``)."""
    from IPython.display import Markdown

    return Markdown(runtime_table(chapter, path))


# -----------------------------------------------------------------------------
# Executing chapters

class ChapterError(RuntimeError):
    """A chapter failed while executing; ``ename``/``evalue`` are the notebook's exception."""

    def __init__(self, chapter: str, ename: str, evalue: str):
        super().__init__(f"chapter {chapter!r} failed: {ename}: {evalue}")
        self.chapter, self.ename, self.evalue = chapter, ename, evalue


def is_notebook_source(path: Path) -> bool:
    """True for a MyST markdown notebook (jupytext header with a kernelspec)."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---"):
        return False
    end = text.find("\n---", 3)
    head = text[:end] if end > 0 else ""
    return "kernelspec:" in head and "jupytext:" in head


def execute_chapter(source: Path | str, output: Path | str, scale: str, overrides: Mapping[str, Any] | None = None,
                    cwd: Path | str | None = None, timeout: int | None = 3600) -> float:
    """Execute a MyST notebook chapter with papermill at ``scale``; return wall seconds.

    The executed notebook is written to ``output`` only if every cell succeeds; on failure nothing is
    left behind and :class:`ChapterError` carries the notebook's exception (e.g. a
    :class:`ParameterError` message).
    """
    import jupytext
    import nbformat
    import papermill as pm

    source, output = Path(source), Path(output)
    chapter = source.stem
    parameters = {"scale": scale, **dict(overrides or {})}
    nb = jupytext.read(source)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    tmpdir = Path(tempfile.mkdtemp(prefix=f"posym-{chapter}-"))
    tmp_out = tmpdir / output.name
    t0 = time.perf_counter()
    try:
        try:
            with _kernel_stderr(tmpdir / "kernel.log"):
                pm.execute_notebook(nb, str(tmp_out), parameters=parameters, cwd=str(cwd or source.parent),
                                    progress_bar=False, log_output=False, execution_timeout=timeout,
                                    kernel_name=nb.metadata["kernelspec"].get("name", "python3"))
        except pm.PapermillExecutionError as e:
            raise ChapterError(chapter, e.ename, e.evalue) from None
        seconds = time.perf_counter() - t0
        out_nb = nbformat.read(tmp_out, as_version=4)
        out_nb.metadata["posym"] = {"chapter": chapter, "scale": scale, "runtime_s": round(seconds, 1),
                                    "parameters": parameters}
        nbformat.write(out_nb, tmp_out)
        output.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp_out), str(output))
        return seconds
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


#: What a kernel prints on every run that says nothing about the chapter: the local kernel's TCP notice and
#: the interrupt that ends its event loop at shutdown.
_KERNEL_NOISE = ("Kernel is running over TCP without encryption", "KeyboardInterrupt caught in kernel")


@contextmanager
def _kernel_stderr(log: Path):
    """Send what the kernel (and papermill) write to file descriptor 2 into ``log`` while a chapter runs; on
    the way out, pass on every line except the kernel's routine noise (:data:`_KERNEL_NOISE`)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "wb") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        try:
            text = log.read_text(errors="replace")
        except OSError:
            text = ""
        keep = [line for line in text.splitlines() if line.strip() and not any(n in line for n in _KERNEL_NOISE)]
        if keep:
            print("\n".join(keep), file=sys.stderr, flush=True)


