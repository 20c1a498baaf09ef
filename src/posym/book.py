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

The parameter sets (``smoke``, ``teaching``, ``paper``) of every chapter live here, in
:data:`CHAPTERS`, and nowhere else. Papermill only passes ``scale`` (and any explicit override).

:func:`execute_chapter` runs one chapter with papermill (used by ``scripts/run_chapters.py`` and the
tests); it writes the executed notebook only if the chapter succeeds. Measured runtimes are kept in
``book/runtimes.csv`` and shown at the top of each chapter by :func:`runtime_note`.
"""
from __future__ import annotations

import ast
import csv
import datetime as _dt
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

SCALES = ("smoke", "teaching", "paper")
SCALE_HELP = {
    "smoke": "fast, for CI and a first look (the whole book in minutes on 2 CPU cores)",
    "teaching": "for a class on a laptop (about 5 minutes per training chapter on CPU)",
    "paper": "the paper's scale; reads committed full-scale results from data/ and trains nothing long",
}

#: The one line that installs the pinned stack where ``posym`` is missing (e.g. Google Colab).
#: Every chapter's setup cell runs exactly this line (``tests/test_book.py`` checks it).
#: ``github.com/posym/posym`` is a placeholder organisation until the repository is published.
REPO_URL = "https://github.com/posym/posym"
COLAB_INSTALL = (
    f"git clone -q --depth 1 {REPO_URL} posym-src && "
    "pip install -q -r posym-src/requirements.txt && pip install -q --no-deps -e posym-src"
)

RUNTIME_COLUMNS = ("chapter", "scale", "seconds", "cpu", "cores", "date")


class ParameterError(ValueError):
    """A chapter parameter is invalid. ``param`` names it; the message says what to run."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


# -----------------------------------------------------------------------------
# Specifications

_MISSING = object()


@dataclass(frozen=True)
class Param:
    """One chapter parameter.

    ``kind`` is ``int``, ``float``, ``str`` or ``bool`` (``bool`` is never accepted for ``int``; an
    ``int`` is accepted for ``float``). ``default`` is either one value for every scale or a dict
    ``{scale: value}``. ``min``/``max`` are inclusive bounds; ``choices`` lists allowed values.
    """

    kind: type
    default: Any
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None

    def default_for(self, scale: str) -> Any:
        if isinstance(self.default, Mapping):
            return self.default[scale]
        return self.default

    def describe(self) -> str:
        kind = {int: "an integer", float: "a number", str: "a string", bool: "True or False"}[self.kind]
        if self.choices is not None:
            return f"one of {', '.join(repr(c) for c in self.choices)}"
        if self.min is not None and self.max is not None:
            return f"{kind} in [{_fmt(self.min)}, {_fmt(self.max)}]"
        if self.min is not None:
            return f"{kind} >= {_fmt(self.min)}"
        if self.max is not None:
            return f"{kind} <= {_fmt(self.max)}"
        return kind


@dataclass(frozen=True)
class Required:
    """A file or folder, relative to ``data/``, that a chapter needs at some scale.

    A missing required result stops the chapter with a :class:`ParameterError`. With
    ``optional=True`` the chapter runs anyway: the result is listed in ``cfg.missing`` and
    :func:`missing_note` tells the reader which result is missing and how to produce it.
    """

    path: str
    how: str  # the command that produces it
    what: str = ""  # what it is, for the error message
    optional: bool = False


@dataclass(frozen=True)
class ChapterSpec:
    """Parameters, scale defaults and required results of one chapter."""

    name: str
    params: Mapping[str, Param]
    requires: Mapping[str, tuple[Required, ...]] = field(default_factory=dict)
    # extra checks across parameters: f(params) -> None or (parameter name, message)
    checks: tuple[Callable[[dict], tuple[str, str] | None], ...] = ()

    def __post_init__(self) -> None:
        for pname, p in self.params.items():
            if pname in ("scale", "chapter"):
                raise ValueError(f"{pname!r} is reserved and cannot be a chapter parameter")
            if isinstance(p.default, Mapping) and set(p.default) != set(SCALES):
                raise ValueError(f"chapter {self.name!r}: default of {pname!r} must give every scale {SCALES}")
        unknown = set(self.requires) - set(SCALES)
        if unknown:
            raise ValueError(f"chapter {self.name!r}: requirements for unknown scales {sorted(unknown)}")

    def defaults(self, scale: str) -> dict[str, Any]:
        return {k: p.default_for(scale) for k, p in self.params.items()}


CHAPTERS: dict[str, ChapterSpec] = {}


def register(spec: ChapterSpec) -> ChapterSpec:
    """Add (or replace) a chapter specification."""
    CHAPTERS[spec.name] = spec
    return spec


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) >= 10_000:
        return f"{x:_}"
    return repr(x) if isinstance(x, str) else str(x)


# --- the data chapter ------------------------------------------------------------

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


# The other chapters register their specs from posym/chapters/<name>.py (one module per chapter);
# they are imported at the end of this module.


# -----------------------------------------------------------------------------
# Validation and setup

def _is_checkout(folder: Path) -> bool:
    return ((folder / "pyproject.toml").is_file() and (folder / "src" / "posym").is_dir()
            and (folder / "_toc.yml").is_file())


def repo_root() -> Path | None:
    """The posym checkout to work in: the one that holds the current directory (so that a second clone
    writes its own ``_build/`` and reads its own ``data/``), else the one this package was installed from
    (``None`` for a non-editable install run outside any checkout)."""
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if _is_checkout(folder):
            return folder
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "posym").is_dir():
            return parent
    return None


def data_dir() -> Path:
    """Where committed results live: ``$POSYM_DATA_DIR``, else ``data/`` of :func:`repo_root`."""
    env = os.environ.get("POSYM_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root / "data") if root is not None else (Path.cwd() / "data").resolve()


def _check_value(chapter: str, name: str, p: Param, value: Any) -> Any:
    def fail(why: str) -> ParameterError:
        return ParameterError(
            f"chapter {chapter!r}: parameter {name!r} must be {p.describe()}, {why}.\n"
            f"  Leave it as None to use the scale's default, or pass a valid value, e.g. "
            f"`-p {name} {p.default_for('smoke')!r}` to scripts/run_chapters.py or papermill.", param=name)

    got = f"got {value!r} ({type(value).__name__})"
    if p.kind is bool:
        if not isinstance(value, bool):
            raise fail(got)
    elif p.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            try:
                import numpy as np
                if isinstance(value, np.integer):
                    value = int(value)
                else:
                    raise fail(got)
            except ImportError:  # pragma: no cover
                raise fail(got) from None
    elif p.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(got)
        value = float(value)
        if not math.isfinite(value):
            raise fail(got)
    elif p.kind is str:
        if not isinstance(value, str):
            raise fail(got)
    if p.choices is not None and value not in p.choices:
        raise fail(f"got {value!r}")
    if p.min is not None and value < p.min:
        raise fail(f"got {_fmt(value)}")
    if p.max is not None and value > p.max:
        raise fail(f"got {_fmt(value)}")
    return value


def validate(chapter: str, scale: Any, params: Mapping[str, Any] | None = None,
             data_root: Path | None = None) -> dict[str, Any]:
    """Check ``scale`` and ``params`` for ``chapter``; return the full parameter dict.

    ``None`` values take the scale's default. Raises :class:`ParameterError` on the first problem.
    """
    params = dict(params or {})
    if chapter not in CHAPTERS:
        raise ParameterError(f"unknown chapter {chapter!r}; known chapters: {', '.join(sorted(CHAPTERS))}",
                             param="chapter")
    spec = CHAPTERS[chapter]
    if not isinstance(scale, str) or scale not in SCALES:
        raise ParameterError(
            f"chapter {chapter!r}: parameter 'scale' must be one of {', '.join(repr(s) for s in SCALES)}, "
            f"got {scale!r}.\n  Run e.g. `make book PARAMS=smoke`, or `papermill ... -p scale smoke`.",
            param="scale")
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise ParameterError(
            f"chapter {chapter!r}: unknown parameter {unknown[0]!r}; this chapter takes "
            f"{', '.join(sorted(spec.params)) or 'no parameters besides scale'}.", param=unknown[0])
    out: dict[str, Any] = {}
    for name, p in spec.params.items():
        value = params.get(name)
        if value is None:
            value = p.default_for(scale)
        out[name] = _check_value(chapter, name, p, value)
    for check in spec.checks:
        problem = check(out)
        if problem is not None:
            name, why = problem
            raise ParameterError(f"chapter {chapter!r}: parameter {name!r} {why}.", param=name)
    root = data_root if data_root is not None else data_dir()
    for req in spec.requires.get(scale, ()):
        if not req.optional and not (root / req.path).exists():
            what = f" ({req.what})" if req.what else ""
            raise ParameterError(
                f"chapter {chapter!r}: parameter 'scale' is {scale!r}, which reads {root / req.path}{what}, "
                f"but it is missing.\n  Produce it with `{req.how}`, or run the chapter at a scale that "
                f"trains instead: `make book PARAMS=smoke`.", param="scale")
    return out


@dataclass(frozen=True)
class BadCase:
    """One bad value for a chapter: run it at ``scale`` with ``overrides``; it must stop the chapter with a
    :class:`ParameterError` naming ``param``.  ``empty_data`` runs it against an empty ``data/`` folder
    (``$POSYM_DATA_DIR``); ``kind`` says what is wrong (for counts and test ids)."""

    kind: str
    scale: Any
    overrides: Mapping[str, Any]
    param: str
    empty_data: bool = False

    @property
    def id(self) -> str:
        extra = ",".join(f"{k}={v!r}" for k, v in self.overrides.items())
        return f"{self.kind}[{self.param}{'=' + extra if extra else ''}]"


def bad_cases(chapter: str) -> list[BadCase]:
    """A batch of bad values for every parameter of ``chapter``, derived from its :class:`ChapterSpec`:
    an unknown scale and an unknown parameter; per parameter a value of the wrong type, one below its
    minimum (and zero and a negative number where those are invalid), one above its maximum, one outside
    its choices; and, where the ``paper`` scale reads committed results, a missing results folder."""
    spec = CHAPTERS[chapter]
    cases = [BadCase("unknown scale", "gigantic", {}, "scale"),
             BadCase("wrong type", 3, {}, "scale"),
             BadCase("unknown parameter", "smoke", {"no_such_parameter": 1}, "no_such_parameter")]
    for name, p in spec.params.items():
        wrong = {int: "many", float: "fast", str: 7, bool: "yes"}[p.kind]
        cases.append(BadCase("wrong type", "smoke", {name: wrong}, name))
        if p.kind is int:
            cases.append(BadCase("wrong type", "smoke", {name: 2.5}, name))
        if p.kind in (int, float) and p.min is not None:
            below = {p.min - 1 if p.kind is int else p.min - 0.5}
            below |= {v for v in (0, -1) if v < p.min}
            cases += [BadCase("too small" if v > 0 else ("zero" if v == 0 else "negative"), "smoke",
                              {name: v}, name) for v in sorted(below, reverse=True)]
        if p.kind in (int, float) and p.max is not None:
            above = p.max + 1 if p.kind is int else p.max * 2 + 1
            cases.append(BadCase("too large", "smoke", {name: above}, name))
        if p.choices is not None and p.kind is str:
            cases.append(BadCase("unknown choice", "smoke", {name: "no-such-" + name}, name))
    if spec.requires.get("paper"):
        cases.append(BadCase("missing results folder", "paper", {}, "scale", empty_data=True))
    return cases


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
    missing = tuple(r for r in CHAPTERS[chapter].requires.get(scale, ()) if r.optional and not (root / r.path).exists())
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


def git_commit(root: Path | None = None) -> str | None:
    """Short commit hash of the checkout, if any."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root or repo_root(),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Chapter specifications that live in their own modules (see posym/chapters/__init__.py).
from . import chapters as _chapters  # noqa: E402,F401  (import for the side effect of registering)
