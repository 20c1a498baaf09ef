#!/usr/bin/env python
"""Write the student notebooks: the chapters as plain Jupyter notebooks, without solutions.

    python scripts/make_exercises.py            # -> _build/exercises/<chapter>.ipynb   (make exercises)
    python scripts/make_exercises.py --reference --out DIR   # the same with the solutions as answers (tests)

For every notebook chapter of the book:

* the markdown is turned from MyST into what Jupyter renders: an exercise admonition becomes a heading
  ("### Exercise 1: ...") followed by its text, other admonitions become quotes, dropdowns become
  ``<details>``, ``{math}`` roles and ``{math}`` blocks become ``$...$`` and ``$$...$$``, glue placeholders
  (``{glue:md}``, ``{glue:text}``, ``{glue}``) get the values the executed chapter glued
  (_build/executed/<scale>/<chapter>.ipynb, ``--scale``, default smoke), and references and citations
  become plain text;
* the cells tagged ``solution`` are removed; where the first one stood, an answer cell (``answer = None``
  with the expected form) follows, and, for an exercise with a registered check (``posym.exercises``), a
  check cell: ``exercises.check("<chapter>-<n>", answer)``;
* the repository URL of _config.yml is filled in (``@REPO_URL@``).

Exercises are labelled ``<chapter>-<n>`` from their title ("Exercise 2: ..." -> 2; "Exercise: ..." -> 1).
With ``--reference`` the answer cell holds the solution's code instead (which ends by assigning
``answer``). ``check_notebook`` puts both, one after the other, into the notebook that the last nbval run
of ``make test`` executes (scripts/nbval_copies.py ``--students``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat

from bookutil import ROOT, notebook_chapters
from build_book import fill_repo_url, repo_url

sys.path.insert(0, str(ROOT / "src"))
from posym import exercises as EX  # noqa: E402

SOLUTION_TAG = "solution"
OPEN_RX = re.compile(r"^(\s*)(`{3,}|~{3,}|:{3,})\{([\w:.-]+)\}[ \t]*(.*)$")
PLAIN_FENCE_RX = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
OPTION_RX = re.compile(r"^\s*:[\w-]+:.*$")
ROLE_RX = re.compile(r"\{([\w:.-]+)\}`([^`]*)`")
TARGET_RX = re.compile(r"^\s*\([\w:.-]+\)=\s*$")
EXERCISE_RX = re.compile(r"^Exercise(?:\s+(\d+))?\s*(?::\s*(.*))?$")


# -----------------------------------------------------------------------------
# Glue values of an executed chapter

def glued_values(executed: Path) -> dict[str, dict[str, str]]:
    """{name: {mime type: value}} of every value the executed notebook glued."""
    out: dict[str, dict[str, str]] = {}
    if not executed.is_file():
        return out
    nb = json.loads(executed.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []):
            meta = (o.get("metadata") or {}).get("scrapbook")
            if not meta or "name" not in meta:
                continue
            prefix = meta.get("mime_prefix", "")
            data = {}
            for mime, v in (o.get("data") or {}).items():
                data[mime[len(prefix):] if mime.startswith(prefix) else mime] = "".join(v) if isinstance(v, list) else v
            out[meta["name"]] = data
    return out


# -----------------------------------------------------------------------------
# MyST -> Jupyter markdown

class Converter:
    def __init__(self, glue: dict[str, dict[str, str]], chapter: str):
        self.glue = glue
        self.chapter = chapter
        self.missing_glue: set[str] = set()

    # --- inline --------------------------------------------------------------------------------
    def glue_value(self, role: str, content: str) -> str:
        name, _, fmt = content.partition(":")
        data = self.glue.get(name.strip())
        if data is None:
            self.missing_glue.add(name.strip())
            return f"`{name.strip()}`"
        if role == "glue:md" and "text/markdown" in data:
            return data["text/markdown"].strip()
        text = data.get("text/plain", data.get("text/markdown", "")).strip()
        if fmt:
            try:
                return format(float(text), fmt)
            except ValueError:
                pass
        return text.strip("'\"") if text[:1] in "'\"" and text[-1:] == text[:1] else text

    def role(self, m: re.Match) -> str:
        role, content = m.group(1), m.group(2)
        if role == "math":
            return f"${content}$"
        if role in ("glue", "glue:text", "glue:md", "glue:any"):
            return self.glue_value(role, content)
        if role in ("cite", "cite:p", "cite:ps", "cite:alp"):
            return "[" + ", ".join(k.strip() for k in content.split(",")) + "]"
        if role.startswith("cite"):
            return ", ".join(k.strip() for k in content.split(","))
        if role == "eq":
            return f"({content})"
        m2 = re.match(r"^(.*?)\s*<([^>]+)>$", content, re.S)
        if m2:  # {ref}`text <target>`
            return m2.group(1).replace("{number}", "").replace("{name}", m2.group(2)).strip() or m2.group(2)
        return content

    def inline(self, line: str) -> str:
        if TARGET_RX.match(line):
            return None
        return ROLE_RX.sub(self.role, line)

    # --- blocks --------------------------------------------------------------------------------
    def convert(self, text: str) -> str:
        return "\n".join(self.block(text.split("\n"))).strip("\n")

    def text(self, lines: list[str]) -> list[str]:
        """Ordinary markdown lines: targets dropped, roles converted (a role may span lines)."""
        kept = [ln for ln in lines if not TARGET_RX.match(ln)]
        return ROLE_RX.sub(self.role, "\n".join(kept)).split("\n") if kept else []

    def block(self, lines: list[str]) -> list[str]:
        out, i, para = [], 0, []
        while i < len(lines):
            line = lines[i]
            m = OPEN_RX.match(line)
            plain = None if m else PLAIN_FENCE_RX.match(line)
            if m or plain:
                out += self.text(para)
                para = []
                fence = (m or plain).group(2)
                j, depth = i + 1, 0
                while j < len(lines):
                    s = lines[j].strip()
                    if s and set(s) == {fence[0]} and len(s) >= len(fence):
                        if depth == 0:
                            break
                        depth -= 1
                    elif s.startswith(fence) and len(s) > len(fence) and s[len(fence)] != fence[0]:
                        depth += 1
                    j += 1
                body = lines[i + 1:j]
                if m:
                    out += self.directive(m.group(3), m.group(4).strip(), body)
                else:
                    out += [line] + body + [lines[j] if j < len(lines) else fence]
                i = j + 1
                continue
            para.append(line)
            i += 1
        return out + self.text(para)

    @staticmethod
    def options(body: list[str]) -> tuple[dict[str, str], list[str]]:
        opts, k = {}, 0
        if body and body[0].strip() == "---":  # a YAML options block
            end = next((n for n in range(1, len(body)) if body[n].strip() == "---"), 0)
            for ln in body[1:end]:
                key, _, v = ln.partition(":")
                opts[key.strip()] = v.strip()
            k = end + 1
        while k < len(body) and OPTION_RX.match(body[k]):
            key, _, v = body[k].strip()[1:].partition(":")
            opts[key.strip()] = v.strip()
            k += 1
        return opts, body[k:]

    def directive(self, name: str, arg: str, body: list[str]) -> list[str]:
        opts, content = self.options(body)
        inner = self.block(content)
        title = self.inline(arg) or ""
        if name == "admonition":
            ex = EXERCISE_RX.match(arg)
            if ex:
                return ["", f"### {title}", ""] + inner + [""]
            return self.quote(title, inner)
        if name in ("note", "tip", "hint", "important", "warning", "caution", "attention", "danger", "error", "seealso"):
            return self.quote(name.capitalize() + (f": {title}" if title else ""), inner)
        if name in ("dropdown", "toggle"):
            return ["", f"<details><summary>{title or 'Details'}</summary>", ""] + inner + ["", "</details>", ""]
        if name == "math":
            return ["", "$$"] + content + ["$$", ""]
        if name in ("figure", "image"):
            return ["", f"![{' '.join(inner).strip() or opts.get('alt', '')}]({arg})", ""]
        if name.startswith("prf:"):
            kind = name.split(":", 1)[1].capitalize()
            return ["", f"**{kind}**" + (f" ({title})" if title else "") + "."] + inner + [""]
        if name in ("bibliography", "tableofcontents", "glue:figure", "glue"):
            return []
        if name in ("code-block", "code", "sourcecode"):
            return ["", f"```{arg}"] + content + ["```", ""]
        return inner

    @staticmethod
    def quote(title: str, inner: list[str]) -> list[str]:
        lines = [f"**{title}**", ""] + inner if title else inner
        return [""] + [f"> {ln}" if ln.strip() else ">" for ln in lines] + [""]


# -----------------------------------------------------------------------------
# Exercises

def exercise_label(chapter: str, title: str) -> str | None:
    m = EXERCISE_RX.match(title.strip())
    if not m:
        return None
    return f"{chapter}-{int(m.group(1) or 1)}"


def exercise_labels(chapter: str, markdown: str) -> list[str]:
    """Labels of the exercise admonitions in a markdown cell, in order."""
    out = []
    for line in markdown.split("\n"):
        m = OPEN_RX.match(line)
        if m and m.group(3) == "admonition":
            label = exercise_label(chapter, m.group(4))
            if label:
                out.append(label)
    return out


def code(source: str, tags: list[str] | None = None):
    c = nbformat.v4.new_code_cell(source)
    if tags:
        c.metadata["tags"] = tags
    return c


def answer_cell(label: str):
    form = EX.expects(label) or "your answer"
    return code(f"# {label}: your answer here ({form})\nanswer = None", ["answer"])


def check_cell(label: str):
    ns = ", globals()" if EX.needs_namespace(label) else ""
    return code(f'from posym import exercises\nexercises.check("{label}", answer{ns})', ["check"])


def student_notebook(src: Path, glue: dict, reference: bool = False, url: str | None = None, executed=None):
    """(notebook, report) for one chapter; ``reference`` puts the solutions' code in the answer cells.

    ``executed``: the chapter as papermill executed it (a notebook), to convert instead of ``src``: its code
    cells keep their outputs, and the cell papermill injected (the parameters) is kept."""
    nb = jupytext.read(src) if executed is None else executed
    chapter = src.stem
    conv = Converter(glue, chapter)
    cells, pending, seen = [], [], []
    removed = 0

    def flush_solution(solution_code: list[str]):
        label = pending.pop(0)
        if reference:
            cells.append(code(f"# {label}: the reference answer\n" + "\n\n".join(solution_code), ["answer"]))
        else:
            cells.append(answer_cell(label))
        if label in EX.EXERCISES:
            cells.append(check_cell(label))

    i = 0
    while i < len(nb.cells):
        cell = nb.cells[i]
        tags = cell.metadata.get("tags", [])
        if SOLUTION_TAG in tags:
            # the run of solution cells (code and markdown) that follows an exercise
            sol_code = []
            while i < len(nb.cells) and SOLUTION_TAG in nb.cells[i].metadata.get("tags", []):
                if nb.cells[i].cell_type == "code":
                    sol_code.append(nb.cells[i].source)
                removed += 1
                i += 1
            if pending:
                flush_solution(sol_code)
            continue
        if cell.cell_type == "markdown":
            labels = exercise_labels(chapter, cell.source)
            # an exercise still waiting for its solution when the next one starts: answer cell without solution
            while pending and labels:
                flush_solution([])
            pending.extend(labels)
            seen.extend(labels)
            new = nbformat.v4.new_markdown_cell(conv.convert(cell.source))
            if new.source.strip():
                cells.append(new)
        else:
            c = code(cell.source, [t for t in tags if t != "hide-cell"])
            if executed is not None:
                c.outputs, c.execution_count = cell.get("outputs", []), cell.get("execution_count")
            cells.append(c)
        i += 1
    while pending:
        flush_solution([])
    out = nbformat.v4.new_notebook()
    out.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    out.metadata["language_info"] = {"name": "python"}
    for k, c in enumerate(cells):
        c["id"] = f"{chapter}-{k}"
    out.cells = cells
    fill_repo_url(out, url or repo_url())
    nbformat.validate(out)
    return out, {"exercises": seen, "checked": [l for l in seen if l in EX.EXERCISES], "removed": removed,
                 "missing_glue": sorted(conv.missing_glue)}


def check_notebook(src: Path, executed: Path):
    """The student notebook of ``src`` as a run of nbval checks it: (notebook, report).

    Built from the executed chapter (``executed``, a .ipynb), so every chapter cell carries the output nbval
    compares its re-execution with. After each exercise with a check come the blank answer and its check,
    then the reference answer (the solution's code) and its check; the two check cells carry the lines a
    blank and a right answer print (:func:`posym.exercises.expected_lines`), and the answer cells are not
    compared (``nbval-ignore-output``: the solution cells' outputs are compared where the chapter runs them).
    """
    glue = glued_values(executed)
    run = nbformat.read(executed, as_version=4)
    blank, rep = student_notebook(src, glue, executed=run)
    ref, _ = student_notebook(src, glue, reference=True, executed=run)
    ref_answers = {c.source.split(":", 1)[0][2:]: c.source for c in ref.cells
                   if c.cell_type == "code" and "answer" in c.metadata.get("tags", [])}

    def printed(c, line: str, ok: bool):
        c.execution_count = 1  # nbval compares the outputs of cells that ran
        c.outputs = [nbformat.v4.new_output("stream", name="stdout", text=line + "\n"),
                     nbformat.v4.new_output("execute_result", {"text/plain": repr(ok)}, execution_count=1)]
        return c

    cells = []
    for c in blank.cells:
        tags = c.metadata.get("tags", []) if c.cell_type == "code" else []
        if "answer" in tags:
            c.metadata["tags"] = [*tags, "nbval-ignore-output"]
        cells.append(c)
        if "check" in tags:
            label = re.search(r'check\("([^"]+)"', c.source).group(1)
            no_answer, right = EX.expected_lines(label)
            printed(c, no_answer, False)
            cells += [code(ref_answers[label], ["answer", "nbval-ignore-output"]),
                      printed(code(c.source, ["check"]), right, True)]
    for k, c in enumerate(cells):
        c["id"] = f"{src.stem}-{k}"
    blank.cells = cells
    blank.metadata = run.metadata
    nbformat.validate(blank)
    return blank, rep


def write_atomic(path: Path, nb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "_build" / "exercises")
    ap.add_argument("--scale", default="smoke", help="executed chapters whose glued values fill the text")
    ap.add_argument("--executed", type=Path, help="folder of executed chapters (default _build/executed/<scale>)")
    ap.add_argument("--reference", action="store_true", help="answer cells hold the solutions (for tests)")
    ap.add_argument("--chapters", nargs="*", help="only these chapters")
    args = ap.parse_args(argv)
    executed = args.executed or ROOT / "_build" / "executed" / args.scale
    url = repo_url()
    problems = []
    for src in notebook_chapters():
        if args.chapters and src.stem not in args.chapters:
            continue
        nb, rep = student_notebook(src, glued_values(executed / f"{src.stem}.ipynb"), args.reference, url)
        if rep["missing_glue"]:
            problems.append(f"{src.stem}: no glued value for {', '.join(rep['missing_glue'])} in "
                            f"{executed / (src.stem + '.ipynb')} (run `make chapters PARAMS={args.scale}`)")
        dst = args.out / f"{src.stem}.ipynb"
        write_atomic(dst, nb)
        shown = dst.relative_to(ROOT) if dst.is_relative_to(ROOT) else dst
        print(f"[exercises] {shown}: {len(rep['exercises'])} exercise(s), {len(rep['checked'])} with a check, "
              f"{rep['removed']} solution cell(s) removed")
    if problems:
        for p in problems:
            print(f"[exercises] warning: {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
