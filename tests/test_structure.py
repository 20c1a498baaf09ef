"""Where code lives: the import rules between the pipeline, the chapter modules and the pages.

* pipeline modules (everything in ``posym`` but ``chapters/`` and the commands that drive both, ``book``,
  ``reproduce`` and ``cli``) never import a chapter module or a command module;
* a chapter module (``posym/chapters/<name>.py``) imports pipeline modules only, never another chapter
  module and never a command module;
* no import cycle, counting imports inside functions and ``importlib.import_module("...")`` calls;
* a page (``book/<name>.md``) imports ``posym.book``, its own chapter module and pipeline modules only; its
  code cells hold at most 60 non-blank lines, define no function and never test the scale.

The imports are read from the source with :mod:`ast`, so a rule cannot be hidden behind a lazy import.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "posym"
BOOK = REPO / "book"
COMMANDS = {"posym.book", "posym.reproduce", "posym.cli"}
MAX_PAGE_LINES = 60


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _resolve(current: str, is_package: bool, level: int, name: str | None) -> str:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every posym module ``path`` imports: ``import``/``from`` statements anywhere in the file, and
    ``importlib.import_module`` calls with a literal (or the literal prefix of an f-string: ``"posym.chapters.*"``)."""
    me = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()

    def add(target: str, names=()):
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
        found.update(subs)  # "from posym import dynamics" imports the module posym.dynamics
        if target in known and len(subs) < max(len(names), 1):  # and the package itself for other names
            found.add(target)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("posym"):
                    add(a.name)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(me, is_package, node.level, node.module) if node.level else (node.module or "")
            if target.startswith("posym"):
                add(target, [a.name for a in node.names])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value)
                if prefix.startswith("posym"):
                    found.add(prefix.rstrip(".") + ".*")
    found.discard(me)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(p, known) for m, p in mods.items()}


def is_chapter(m: str) -> bool:
    return m.startswith("posym.chapters.") and m != "posym.chapters.*"


def is_pipeline(m: str) -> bool:
    return not is_chapter(m) and m not in COMMANDS and m != "posym.chapters"


def test_the_import_parser_sees_lazy_and_importlib_imports(tmp_path):
    pkg = tmp_path / "posym"
    (pkg / "chapters").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "chapters" / "__init__.py").write_text("")
    (pkg / "chapters" / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "chapters" / "b.py").write_text("import importlib\nimportlib.import_module('posym.metrics')\n")
    (pkg / "metrics.py").write_text("from .chapters import a\n")
    (pkg / "book.py").write_text("import importlib\ndef g(n):\n    return importlib.import_module(f'posym.chapters.{n}')\n")
    known = {"posym", "posym.chapters", "posym.chapters.a", "posym.chapters.b", "posym.metrics", "posym.book"}
    global SRC
    old, SRC = SRC, pkg
    try:
        assert imports_of(pkg / "chapters" / "a.py", known) == {"posym.chapters.b"}
        assert imports_of(pkg / "chapters" / "b.py", known) == {"posym.metrics"}
        assert imports_of(pkg / "metrics.py", known) == {"posym.chapters.a"}
        assert imports_of(pkg / "book.py", known) == {"posym.chapters.*"}
    finally:
        SRC = old


def test_pipeline_modules_never_import_a_chapter_or_a_command():
    bad = {m: sorted(d for d in deps if is_chapter(d) or d in COMMANDS or d == "posym.chapters.*")
           for m, deps in graph().items() if is_pipeline(m)}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"pipeline modules importing chapters or commands: {bad}"


def test_chapter_modules_import_pipeline_modules_only():
    bad = {m: sorted(d for d in deps if not is_pipeline(d)) for m, deps in graph().items() if is_chapter(m)}
    bad = {m: d for m, d in bad.items() if d}
    assert not bad, f"chapter modules importing other chapters or commands: {bad}"


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(g.get(m, ())):
            if d.endswith(".*") or d not in g:
                continue
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


def test_no_import_cycle():
    g = graph()
    # a package's __init__ re-exporting its own modules is not a cycle of the code
    for m in list(g):
        g[m] = {d for d in g[m] if not (d.startswith(m + ".") and m + ".__init__" not in g and SRC.joinpath(
            *m.split(".")[1:], "__init__.py").exists())}
        g[m] = {d for d in g[m] if not (m.startswith(d + ".") and (SRC.joinpath(*d.split(".")[1:], "__init__.py")).exists())}
    cycle = find_cycle(g)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# --- pages --------------------------------------------------------------------------------------

def pages() -> list[Path]:
    return sorted(p for p in BOOK.glob("*.md") if "```{code-cell}" in p.read_text())


def code_cells(text: str) -> list[str]:
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", text, flags=re.S)
    out = []
    for c in cells:
        lines = c.split("\n")
        if lines and lines[0].strip() == "---":  # a YAML options block
            end = lines.index("---", 1)
            lines = lines[end + 1:]
        out.append("\n".join(l for l in lines if not l.startswith(":")))
    return out


def page_imports(text: str) -> set[str]:
    mods: set[str] = set()
    for cell in code_cells(text):
        src = "\n".join(l for l in cell.split("\n") if not l.lstrip().startswith(("!", "%")))
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Import):
                mods |= {a.name for a in node.names if a.name.startswith("posym")}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("posym"):
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    mods.add(full if full in modules() else node.module)
    return mods


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.stem)
def test_a_page_imports_only_its_chapter_and_the_pipeline(page):
    own = f"posym.chapters.{page.stem}"
    bad = sorted(m for m in page_imports(page.read_text())
                 if m != own and (is_chapter(m) or m in ("posym.reproduce", "posym.cli")))
    assert not bad, f"{page.name} imports {bad}; a page calls posym.book, its chapter module and the pipeline"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.stem)
def test_a_page_shows_results_not_plumbing(page):
    cells = code_cells(page.read_text())
    lines = [l for c in cells for l in c.split("\n") if l.strip()]
    defs = [l.strip() for l in lines if re.match(r"\s*(async\s+)?def\s|\s*class\s", l)]
    scale_tests = [l.strip() for l in lines if re.search(r"\b(if|elif|while)\b[^#]*\bscale\b", l)
                   or re.search(r"\bscale\s*(==|!=|\bin\b)", l) and not l.lstrip().startswith("scale =")]
    problems = []
    if len(lines) > MAX_PAGE_LINES:
        problems.append(f"{len(lines)} non-blank code lines (at most {MAX_PAGE_LINES})")
    if defs:
        problems.append(f"defines {defs[:3]}")
    if scale_tests:
        problems.append(f"tests the scale: {scale_tests[:3]}")
    assert not problems, f"{page.name}: " + "; ".join(problems) + " -- move the code into its chapter module"
