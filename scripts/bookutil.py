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


def longest_first(names: list[str], scale: str) -> list[str]:
    """Chapter ``names`` ordered by their recorded runtime at ``scale`` (``book/runtimes.csv``), longest first
    (unrecorded ones first of all, in their given order), so that parallel workers finish close together."""
    seconds = {r["chapter"]: float(r["seconds"]) for r in book.read_runtimes() if r["scale"] == scale}
    return sorted(names, key=lambda n: -seconds.get(n, float("inf")))


def die(msg: str, code: int = 1) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise SystemExit(code)


def parse_seeds(s: str) -> list[int]:
    """Seeds from the command line of a sweep script: a list of seeds and ranges, e.g. ``0-2`` or ``0,3,5-7``."""
    out: list[int] = []
    for part in s.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out
