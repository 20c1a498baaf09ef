"""Atomic, self-describing files: every result is written to a temp file and renamed into place,
and run folders carry a manifest with config hash, provenance and checksums."""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

_UMASK = os.umask(0)
os.umask(_UMASK)


class ResultError(RuntimeError):
    """A result file is missing, corrupt, or does not match what the caller expects."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_with(path: str | Path, writer: Callable[[io.BytesIO], Any]) -> None:
    """Call ``writer(buffer)`` and atomically store what it wrote at ``path``."""
    buf = io.BytesIO()
    writer(buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (tuple, set)):
        return list(o)
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    atomic_write_with(path, lambda b: torch.save(obj, b))


def atomic_write_table(path: str | Path, df) -> None:
    """Write a pandas DataFrame as Parquet (``.parquet``) or CSV (``.csv``), atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        atomic_write_with(path, lambda b: df.to_parquet(b, index=False))
    elif path.suffix == ".csv":
        atomic_write_text(path, df.to_csv(index=False))
    else:
        raise ValueError(f"unsupported table format {path.suffix!r} (use .parquet or .csv)")


def read_table(path: str | Path):
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise ResultError(f"missing result table {path}")
    try:
        return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - re-raised with the file named
        raise ResultError(f"cannot read result table {path}: {e}") from e


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ResultError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultError(f"{path} is not valid JSON ({e}); the file is corrupt") from e


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able config (key order does not matter)."""
    s = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(s.encode()).hexdigest()[:16]


def git_commit(cwd: str | Path | None = None) -> str:
    cwd = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() if out.returncode == 0 else "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for name in ("posym", "torch", "numpy", "pandas", "transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def machine_info(device: str = "cpu") -> dict[str, Any]:
    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "processor": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance(device: str = "cpu") -> dict[str, Any]:
    return {"git_commit": git_commit(), "versions": package_versions(), "machine": machine_info(device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_manifest(folder: str | Path, info: dict[str, Any], files: list[str] | None = None) -> dict:
    """Write ``manifest.json`` in ``folder`` with ``info`` plus sha256 of ``files`` (relative paths;
    default: every regular file in the folder, recursively, except the manifest itself)."""
    folder = Path(folder)
    if files is None:
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                       if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."))
    manifest = dict(info)
    manifest["files"] = {f: {"sha256": sha256_file(folder / f), "bytes": (folder / f).stat().st_size} for f in files}
    atomic_write_json(folder / "manifest.json", manifest)
    return manifest


def verify_manifest(folder: str | Path) -> dict:
    """Check every file listed in ``folder/manifest.json`` exists with the recorded checksum."""
    folder = Path(folder)
    manifest = read_json(folder / "manifest.json")
    bad = []
    for f, meta in manifest.get("files", {}).items():
        p = folder / f
        if not p.exists():
            bad.append(f"{f}: missing")
        elif sha256_file(p) != meta["sha256"]:
            bad.append(f"{f}: checksum mismatch (file changed or corrupt)")
    if bad:
        raise ResultError(f"{folder} failed verification: " + "; ".join(bad))
    return manifest
