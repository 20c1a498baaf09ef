"""Shared by scripts/llm_probe.py and scripts/llm_scores.py: one manifest for the folder data/llm/.

Both scripts write into the same folder, so each one records its run under ``runs[<name>]`` of the folder's
``manifest.json`` and the checksums of every file in the folder are recomputed (``posym.io.write_manifest``).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from posym import io  # noqa: E402


def update_manifest(folder: Path, run_name: str, info: dict) -> dict:
    folder = Path(folder)
    old = {}
    if (folder / "manifest.json").exists():
        old = io.read_json(folder / "manifest.json")
    old.pop("files", None)
    runs = dict(old.get("runs", {}))
    runs[run_name] = {**info, "provenance": io.provenance()}
    merged = {"what": "SmolLM2 (and other GGUF models) measured by posym.llm; see data/README.md",
              "runs": runs}
    return io.write_manifest(folder, merged)


def parse_ints(text: str) -> list[int]:
    """'0-4' -> [0, 1, 2, 3, 4]; '12,16,24' -> [12, 16, 24]."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out
