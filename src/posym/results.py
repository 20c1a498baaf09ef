"""Committed results in ``data/``: packaging runs with provenance, and loading them for the book.

Layout (see data/README.md)::

    data/paper/{task}-s{seed}/   one folder per run: config.json, eval.csv, train_log.csv, scores.parquet,
                                 freq_scores.parquet, test_accuracy.csv, length.parquet, geometry.parquet,
                                 flow.parquet, prompts.json, manifest.json [, final.pt for seed 0]
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from . import io as pio

RESULT_FILES = ("config.json", "eval.csv", "train_log.csv", "scores.parquet", "freq_scores.parquet",
                "test_accuracy.csv", "length.parquet", "geometry.parquet", "flow.parquet", "prompts.json")
TABLES = {"eval": "eval.csv", "train_log": "train_log.csv", "scores": "scores.parquet",
          "freq_scores": "freq_scores.parquet", "test_accuracy": "test_accuracy.csv", "length": "length.parquet",
          "geometry": "geometry.parquet", "flow": "flow.parquet"}

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


def repo_url(root: Path | None = None) -> str | None:
    """The repository URL, ``repository.url`` of the checkout's ``_config.yml`` (the one place it is written);
    ``None`` outside a checkout."""
    import re

    root = root if root is not None else repo_root()
    cfg = (root / "_config.yml") if root is not None else None
    if cfg is None or not cfg.is_file():
        return None
    m = re.search(r"^repository:\s*\n(?:[ \t]+.*\n)*?[ \t]+url:\s*(\S+)", cfg.read_text(), flags=re.M)
    return m.group(1).strip("\"'").rstrip("/") if m else None


def data_dir() -> Path:
    """Where committed results live: ``$POSYM_DATA_DIR``, else ``data/`` of :func:`repo_root`."""
    env = os.environ.get("POSYM_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    return (root / "data") if root is not None else (Path.cwd() / "data").resolve()


def package_run(run_dir: str | Path, dest: str | Path, final_checkpoint: bool = False, **extra_info) -> dict:
    """Copy a finished run's result files to ``dest`` and write a manifest there with the run's
    provenance (seed, config hash, git commit, versions, machine, wall time) and checksums."""
    from .train import list_checkpoints

    run_dir, dest = Path(run_dir), Path(dest)
    src_manifest = pio.read_json(run_dir / "manifest.json")
    if not src_manifest.get("complete"):
        raise pio.ResultError(f"{run_dir} is not a complete run (no complete manifest)")
    missing = [f for f in RESULT_FILES if not (run_dir / f).exists()]
    if missing:
        raise pio.ResultError(f"{run_dir} lacks {missing}: run `posym analyze` and the final analyses first")
    dest.mkdir(parents=True, exist_ok=True)
    for f in RESULT_FILES:
        pio.atomic_write_bytes(dest / f, (run_dir / f).read_bytes())
    if final_checkpoint:
        step, path = list_checkpoints(run_dir)[-1]
        pio.atomic_write_bytes(dest / "final.pt", path.read_bytes())
    info = {k: v for k, v in src_manifest.items() if k != "files"}
    info.update(extra_info)
    return pio.write_manifest(dest, info)


def run_dirs(root: str | Path, task: str | None = None) -> list[Path]:
    root = Path(root)
    if not root.exists():
        raise pio.ResultError(f"results folder {root} does not exist; produce it with scripts/paper_runs.py "
                              f"(see data/README.md)")
    dirs = sorted(p for p in root.iterdir() if (p / "config.json").exists())
    if task is not None:
        dirs = [d for d in dirs if pio.read_json(d / "config.json")["train"]["task"] == task]
    if not dirs:
        raise pio.ResultError(f"no runs under {root}" + (f" for task {task!r}" if task else ""))
    return dirs


def load_table(root: str | Path, table: str, task: str | None = None) -> pd.DataFrame:
    """One table of every run under ``root`` stacked, with ``task`` and ``seed`` columns first."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}: choose one of {', '.join(TABLES)}")
    frames = []
    for d in run_dirs(root, task):
        cfg = pio.read_json(d / "config.json")["train"]
        df = pio.read_table(d / TABLES[table])
        if "hop" in df.columns:
            df["hop"] = df["hop"].astype(str)
        df.insert(0, "seed", cfg["seed"])
        df.insert(0, "task", cfg["task"])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def copy_tree_results(src_root: str | Path, dest_root: str | Path, checkpoint_seeds=(0,), **extra_info) -> list[Path]:
    """Package every complete run under ``src_root`` into ``dest_root`` (used to refresh data/)."""
    out = []
    for d in sorted(Path(src_root).iterdir()):
        if not (d / "manifest.json").exists():
            continue
        cfg = pio.read_json(d / "config.json")["train"]
        dest = Path(dest_root) / d.name
        if dest.exists():
            shutil.rmtree(dest)
        package_run(d, dest, final_checkpoint=cfg["seed"] in checkpoint_seeds, **extra_info)
        out.append(dest)
    return out


def stack_run_tables(folders, tables: dict[str, str], keys=("task", "seed")) -> dict[str, pd.DataFrame]:
    """Stack the tables of several run folders: ``{name: file}`` read from each folder, with one leading column
    per training-config field in ``keys`` (read from the folder's ``config.json``); ``hop`` columns as strings."""
    out: dict[str, list] = {k: [] for k in tables}
    for f in folders:
        f = Path(f)
        cfg = pio.read_json(f / "config.json")["train"]
        for k, name in tables.items():
            df = pio.read_table(f / name)
            if "hop" in df.columns:
                df["hop"] = df["hop"].astype(str)
            for key in reversed(keys):
                df.insert(0, key, cfg[key])
            out[k].append(df)
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


def packaged_runs(root: Path, prefixes, tables, seeds: int, how: str) -> list[Path]:
    """The packaged run folders ``<prefix>-s<seed>`` under ``root`` that hold a manifest and every file of
    ``tables``: the first ``seeds`` (by seed) of each prefix, in the order of ``prefixes``. ResultError naming
    the command ``how`` that produces them when there is none."""
    out = []
    for prefix in prefixes:
        found = sorted((p for p in Path(root).glob(f"{prefix}-s*") if (p / "manifest.json").exists()
                        and all((p / f).exists() for f in tables)), key=lambda p: int(p.name.rsplit("-s", 1)[1]))
        out += found[:seeds]
    if not out:
        raise pio.ResultError(f"no packaged runs under {root}; run {how}")
    return out
