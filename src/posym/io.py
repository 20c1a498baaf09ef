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
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

_UMASK = os.umask(0)
os.umask(_UMASK)
FILE_MODE = 0o644 & ~_UMASK  # every result file gets this mode

#: Files written by this process: resolved path -> {"sha256", "bytes"} of the bytes written and read back.
#: :func:`write_manifest` records these checksums, never a hash of whatever is on disk at that moment.
_WRITTEN: dict[str, dict] = {}
LOCK_NAME = ".posym.lock"


class ResultError(RuntimeError):
    """A result file is missing, corrupt, or does not match what the caller expects."""


def atomic_write_bytes(path: str | Path, data: bytes) -> dict:
    """Write ``data`` to a temporary file, read it back, and rename it into place.

    Returns ``{"sha256", "bytes"}`` of what was read back (equal to ``data``, else :class:`ResultError`) and
    remembers it for :func:`write_manifest`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    want = hashlib.sha256(data).hexdigest()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        got = sha256_file(tmp)
        if got != want:
            raise ResultError(f"{path}: the bytes read back differ from the bytes written (disk or file system error)")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    entry = {"sha256": want, "bytes": len(data)}
    _WRITTEN[str(path.resolve())] = entry
    return dict(entry)


def written_entry(path: str | Path) -> dict | None:
    """The checksum this process recorded when it wrote ``path`` (None if it did not write it)."""
    e = _WRITTEN.get(str(Path(path).resolve()))
    return dict(e) if e is not None else None


def atomic_write_with(path: str | Path, writer: Callable[[io.BytesIO], Any]) -> dict:
    """Call ``writer(buffer)`` and atomically store what it wrote at ``path``."""
    buf = io.BytesIO()
    writer(buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> dict:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> dict:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (tuple, set)):
        return list(o)
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_torch_save(path: str | Path, obj: Any) -> dict:
    import torch

    return atomic_write_with(path, lambda b: torch.save(obj, b))


def atomic_write_table(path: str | Path, df) -> dict:
    """Write a pandas DataFrame as Parquet (``.parquet``) or CSV (``.csv``), atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        return atomic_write_with(path, lambda b: df.to_parquet(b, index=False))
    elif path.suffix == ".csv":
        return atomic_write_text(path, df.to_csv(index=False))
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
    import torch

    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "processor": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def provenance(device: str = "cpu") -> dict[str, Any]:
    return {"git_commit": git_commit(), "versions": package_versions(), "machine": machine_info(device),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_manifest(folder: str | Path, info: dict[str, Any], files: list[str] | None = None,
                   entries: dict[str, dict] | None = None, check: bool = True) -> dict:
    """Write ``manifest.json`` in ``folder`` with ``info`` plus the sha256 of ``files`` (relative paths;
    default: the keys of ``entries`` if given, else every regular file in the folder, recursively, except the
    manifest itself and hidden files).

    A checksum is recorded only for a file that was just written and read back: ``entries[f]`` (what the caller
    recorded when it wrote ``f``, e.g. a training run's ledger) or what this process recorded in
    :func:`atomic_write_bytes`. The file must still have that checksum, else :class:`ResultError` (it changed
    after it was written). Only a file that this process did not write and that ``entries`` does not cover is
    hashed as it is (scripts that assemble files written by other programs). ``check=False`` records the
    ``entries`` without comparing (a training run does, then repairs what differs).
    """
    folder = Path(folder)
    entries = dict(entries or {})
    if files is None:
        files = sorted(entries) if entries else sorted(
            str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and p.name != "manifest.json" and not p.name.startswith("."))
    recorded = {}
    for f in files:
        p = folder / f
        entry = entries.get(f) or written_entry(p)
        if not p.is_file() and (check or entry is None):
            raise ResultError(f"{p} is missing: cannot record it in {folder / 'manifest.json'}")
        if entry is None:
            recorded[f] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
            continue
        if check and (p.stat().st_size != entry["bytes"] or sha256_file(p) != entry["sha256"]):
            raise ResultError(f"{p} changed after it was written (its checksum differs from the one recorded "
                              f"when it was written); it is not recorded in {folder / 'manifest.json'}")
        recorded[f] = {"sha256": entry["sha256"], "bytes": entry["bytes"]}
    manifest = dict(info)
    manifest["files"] = recorded
    atomic_write_json(folder / "manifest.json", manifest)
    return manifest


#: Files a results folder may hold besides those its manifest lists (documentation, records of later steps).
ALLOWED_EXTRA = ("README.md",)


def folder_files(folder: Path) -> list[str]:
    """Regular files of ``folder`` (relative paths), hidden ones and sub-folders with their own manifest excluded."""
    out = []
    for root, dirs, names in os.walk(folder):
        r = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (r / d / "manifest.json").exists())
        for n in sorted(names):
            if not n.startswith(".") and (r / n).is_file():
                out.append((r / n).relative_to(folder).as_posix())
    return out


def verify_folder(folder: str | Path) -> tuple[dict, list[str]]:
    """Every problem of a results folder: listed files missing or changed, outputs recorded in ``steps.json``
    missing or changed, and files neither lists (``README.md`` and hidden files excepted). Returns
    ``(manifest, problems)``; an unreadable manifest is a problem too."""
    folder = Path(folder)
    try:
        manifest = read_json(folder / "manifest.json")
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
            raise ResultError(f"{folder / 'manifest.json'} is not a posym manifest")
    except ResultError as e:
        return {}, [str(e)]
    bad = []
    known = {"manifest.json", *ALLOWED_EXTRA}

    def check(f, sha):
        p = folder / f
        known.add(f)
        if not p.is_file():
            bad.append(f"{f}: missing")
        elif sha256_file(p) != sha:
            bad.append(f"{f}: checksum mismatch (file changed or corrupt)")

    for f, meta in manifest.get("files", {}).items():
        check(f, meta.get("sha256") if isinstance(meta, dict) else None)
    steps = folder / "steps.json"
    if steps.exists():
        known.add("steps.json")
        try:
            records = json.loads(steps.read_text())
            for step, rec in sorted(records.items()):
                for f, sha in sorted(rec.get("outputs", {}).items()):
                    if f not in manifest.get("files", {}):
                        check(f, sha)
        except (json.JSONDecodeError, AttributeError, TypeError):
            bad.append("steps.json: not valid JSON (corrupt)")
    extra = [f for f in folder_files(folder) if f not in known]
    if extra:
        more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
        bad.append(f"files not in the manifest: {', '.join(extra[:5])}{more}")
    return manifest, bad


def verify_manifest(folder: str | Path, extras: bool = False) -> dict:
    """Check every file listed in ``folder/manifest.json`` exists with the recorded checksum (and, with
    ``extras``, everything :func:`verify_folder` checks); :class:`ResultError` naming every problem."""
    folder = Path(folder)
    if extras:
        manifest, bad = verify_folder(folder)
    else:
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


_HELD: dict[str, list] = {}  # resolved folder -> [fd, depth]
_HELD_GUARD = threading.Lock()


@contextmanager
def folder_lock(folder: str | Path):
    """Hold an exclusive lock on ``folder`` (``.posym.lock`` in it, removed on release) while writing there;
    re-entrant in one process. Another process that holds it makes this raise :class:`ResultError` at once (no
    waiting). The operating system releases the lock when its holder dies, even by SIGKILL."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    with _HELD_GUARD:
        if key in _HELD:
            _HELD[key][1] += 1
            fresh = False
        else:
            fresh = True
    lock = folder / LOCK_NAME
    if fresh:
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ResultError(f"{folder} is being written by another posym process; wait for it to finish or "
                                  f"stop it, then run this again") from None
            try:  # the holder before us may have removed the file it locked: lock the one that is there now
                same = os.stat(lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        with _HELD_GUARD:
            _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        with _HELD_GUARD:
            _HELD[key][1] -= 1
            if _HELD[key][1] == 0:
                fd = _HELD.pop(key)[0]
                try:
                    os.unlink(lock)  # while still holding it; nothing is left behind
                except OSError:
                    pass
                os.close(fd)  # closing the descriptor releases the lock
