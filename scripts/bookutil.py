"""Small helpers shared by the book scripts (toc parsing, paths)."""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # use this checkout's posym even without an install

from posym import book  # noqa: E402


def toc_files(root: Path = ROOT) -> list[str]:
    """Every `file:` entry of _toc.yml (root first), in order, without extension."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [str(Path(f).with_suffix("")) if f.endswith((".md", ".ipynb")) else f for f in out]


def notebook_chapters(root: Path = ROOT) -> list[Path]:
    """The MyST notebook sources listed in the toc, in toc order."""
    chapters = []
    for f in toc_files(root):
        src = root / f"{f}.md"
        if src.is_file() and book.is_notebook_source(src):
            chapters.append(src)
    return chapters


def die(msg: str, code: int = 1) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)
