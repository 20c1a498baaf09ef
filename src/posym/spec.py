"""Chapter specifications: each chapter's parameters, their defaults per scale, and the results it needs.

A chapter module (``posym/chapters/<name>.py``) registers one :class:`ChapterSpec` with
:func:`register` when it is imported. :func:`validate` checks a scale and a set of parameter values
against it and raises one :class:`ParameterError` naming the parameter and what to run;
:func:`bad_cases` derives, from a spec alone, the bad values every chapter must refuse (the tests run
them all). This module imports no chapter: :mod:`posym.book` loads the chapter it is asked for.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .results import data_dir

from .scales import SCALE_HELP, SCALES  # noqa: F401  (re-exported)


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
            return f"{kind} in [{fmt(self.min)}, {fmt(self.max)}]"
        if self.min is not None:
            return f"{kind} >= {fmt(self.min)}"
        if self.max is not None:
            return f"{kind} <= {fmt(self.max)}"
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


#: How the committed paper-scale runs (``data/paper``) are produced; chapters that read them name it.
PAPER_RUNS_HOW = "python scripts/paper_runs.py --scale paper --seeds 0-4 --device cuda  (see data/README.md)"


def multiple_of(k: int, names: tuple[str, ...], why: str) -> Callable[[dict], tuple[str, str] | None]:
    """A :attr:`ChapterSpec.checks` entry: the first of ``names`` whose value is not a multiple of ``k``, with
    ``why`` it must be (e.g. "hop-balanced prompts")."""
    def check(params: dict):
        for name in names:
            if params.get(name) is not None and params[name] % k:
                return name, f"must be a multiple of {k} ({why}), got {params[name]}"
        return None
    return check


def register(spec: ChapterSpec) -> ChapterSpec:
    """Add (or replace) a chapter specification."""
    CHAPTERS[spec.name] = spec
    return spec


def fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        x = int(x)
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) >= 10_000:
        return f"{x:_}"
    return repr(x) if isinstance(x, str) else str(x)


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
        raise fail(f"got {fmt(value)}")
    if p.max is not None and value > p.max:
        raise fail(f"got {fmt(value)}")
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
