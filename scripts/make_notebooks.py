#!/usr/bin/env python
"""Write the launchable notebooks: notebooks/<chapter>.ipynb from book/<chapter>.md (jupytext).

    python scripts/make_notebooks.py            # (re)write notebooks/*.ipynb        (make notebooks)
    python scripts/make_notebooks.py --check    # exit 1 if any is missing or out of date

The book's Colab button opens notebooks/<chapter>.ipynb in the repository, so these files are committed.
Each is the chapter's MyST source converted by jupytext, unexecuted, with the repository URL of
_config.yml filled in where the setup cell clones the repository (``@REPO_URL@``). The output is
deterministic (cell ids from the chapter name and cell number, no jupytext metadata), so ``--check`` and
tests/test_launch.py compare the committed files with a fresh conversion.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat

from bookutil import ROOT, notebook_chapters
from build_book import fill_repo_url, repo_url

OUT = ROOT / "notebooks"


def convert(src: Path, url: str | None = None) -> dict:
    """The launchable notebook of one chapter source, as a JSON-ready dict."""
    nb = jupytext.read(src)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{src.stem}-{i}"
        if cell.cell_type == "code":
            cell["outputs"], cell["execution_count"] = [], None
    fill_repo_url(nb, url or repo_url())
    nbformat.validate(nb)
    return json.loads(nbformat.writes(nb))


def render(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def expected(out: Path = OUT) -> dict[Path, str]:
    url = repo_url()
    return {out / f"{src.stem}.ipynb": render(convert(src, url)) for src in notebook_chapters()}


def stale(out: Path = OUT) -> list[str]:
    """What --check reports: missing, out-of-date and orphaned notebooks (empty when in sync)."""
    want = expected(out)
    problems = []
    for path, text in want.items():
        if not path.is_file():
            problems.append(f"{path.relative_to(ROOT)} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path.relative_to(ROOT)} differs from book/{path.stem}.md")
    for path in sorted(out.glob("*.ipynb")) if out.is_dir() else []:
        if path not in want:
            problems.append(f"{path.relative_to(ROOT)} has no chapter in _toc.yml")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare only; exit 1 when a notebook is out of date")
    args = ap.parse_args(argv)
    if args.check:
        problems = stale()
        for p in problems:
            print(f"[notebooks] {p}", file=sys.stderr)
        if problems:
            print("[notebooks] run `make notebooks`", file=sys.stderr)
            return 1
        print(f"[notebooks] {len(expected())} notebooks in sync with book/")
        return 0
    want = expected()
    for path, text in want.items():
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_atomic(path, text)
            print(f"[notebooks] wrote {path.relative_to(ROOT)}")
    for path in sorted(OUT.glob("*.ipynb")):
        if path not in want:
            path.unlink()
            print(f"[notebooks] removed {path.relative_to(ROOT)} (no chapter)")
    print(f"[notebooks] {len(want)} notebooks in {OUT.relative_to(ROOT)}/ (repository {repo_url()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
