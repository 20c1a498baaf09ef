"""The per-frequency scores' inner loop as a small C kernel (``freq_kernel.c``), compiled on first use.

The metric's per-frequency scores are about 37 million swap cells per checkpoint of a paper run, a few float
operations and two ``exp`` each.  In torch every operation is a pass over memory; fused in one C loop over the
frequencies (vectorised by the compiler, with glibc's vector ``expf``) and shared among torch's own OpenMP threads
they run five to six times faster (``benchmarks/bench_core.py``).

The kernel is built with the system's C compiler (``cc``, or ``$CC``) for this CPU (``-march=native``) into
``$POSYM_KERNEL_CACHE`` (default ``~/.cache/posym``), once per source, compiler and CPU; the build is atomic, so
concurrent processes are safe.  Without a compiler, or with ``POSYM_C_KERNEL=0``, :func:`kernel` returns None and
:func:`posym.metrics.frequency_scores` keeps its torch path.  Both paths equal the float64 reference to ~1e-6.
"""
from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("freq_kernel.c")
# -ffast-math for the compile step only: it lets the compiler vectorise expf (glibc's vector math); linked with it,
# the library would also switch the whole process to flush-to-zero floats when loaded.  -fopenmp: the rows are
# shared among OpenMP threads; torch has loaded libgomp.so.1 already, so they are torch's own threads (two thread
# pools would spin against each other)
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]

_lock = threading.Lock()
_loaded: dict = {}


def _cpu_id() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(l for l in lines if l.startswith(("model name", "flags")))[:20000]
    except OSError:
        return platform.processor()


def _cache_dir() -> Path:
    env = os.environ.get("POSYM_KERNEL_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "posym"


def _build(cc: str) -> Path | None:
    src = SOURCE.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256(b"\0".join([src, " ".join(FLAGS).encode(), version.encode(), _cpu_id().encode()])).hexdigest()
    out = _cache_dir() / f"freq_kernel-{key[:16]}.so"
    if out.exists():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            obj, lib = Path(tmp) / "freq_kernel.o", Path(tmp) / "freq_kernel.so"
            for cmd in ([cc, *FLAGS, "-c", str(SOURCE), "-o", str(obj)],
                        [cc, "-shared", "-fopenmp", str(obj), "-o", str(lib), "-lm"]):
                if subprocess.run(cmd, capture_output=True, timeout=300).returncode != 0:
                    return None
            os.replace(lib, out)  # atomic: a concurrent build writes the same bytes
    except (OSError, subprocess.SubprocessError):
        return None
    return out


def kernel():
    """The compiled ``posym_freq_scores`` (ctypes), or None where it cannot be built or is switched off."""
    if os.environ.get("POSYM_C_KERNEL", "1") == "0":
        return None
    with _lock:
        if "fn" not in _loaded:
            fn = None
            cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
            lib = _build(cc) if cc else None
            if lib is not None:
                try:
                    fn = ctypes.CDLL(str(lib)).posym_freq_scores
                    L, D, P = ctypes.c_long, ctypes.c_double, ctypes.c_void_p
                    fn.argtypes = [L, ctypes.c_int, L, L, L, D, P, P, L, P, P, P, P, P]
                    fn.restype = ctypes.c_int
                except OSError:
                    fn = None
            _loaded["fn"] = fn
        return _loaded["fn"]


def _content(cr: torch.Tensor, ci: torch.Tensor, R: int, T: int, F: int):
    """Pointers to (cr, ci) as the kernel reads them, the element step (1 or 2) and the tensors to keep alive:
    the real and imaginary parts of one contiguous complex tensor are read in place, anything else is copied."""
    interleaved = (2 * T * F, 2 * F, 2)  # the strides of .real / .imag of a contiguous complex (R, T, F) tensor
    if (cr.dtype == ci.dtype == torch.float64 and cr.device.type == "cpu" and ci.data_ptr() == cr.data_ptr() + 8
            and cr.reshape(R, T, F).stride() == ci.reshape(R, T, F).stride() == interleaved):
        return cr.data_ptr(), ci.data_ptr(), 2, (cr, ci)
    a = cr.reshape(R, T, F).to(torch.float64).contiguous()
    b = ci.reshape(R, T, F).to(torch.float64).contiguous()
    return a.data_ptr(), b.data_ptr(), 1, (a, b)


def frequency_scores(fn, cr, ci, cos, sin, n_pos: int, tau: float):
    """:func:`posym.metrics.frequency_scores` by the C kernel ``fn``, on torch's threads."""
    *lead, T, F = cr.shape
    R = math.prod(lead)
    p_cr, p_ci, step, keep = _content(cr, ci, R, T, F)
    c = cos.to(torch.float64).contiguous()
    s = sin.to(torch.float64).contiguous()
    out = torch.empty(3, R, F, dtype=torch.float32)
    code = fn(R, max(1, min(torch.get_num_threads(), R)), T, F, n_pos, tau, p_cr, p_ci, step, c.data_ptr(),
              s.data_ptr(), out[0].data_ptr(), out[1].data_ptr(), out[2].data_ptr())
    del keep
    if code:
        raise MemoryError("the per-frequency C kernel could not allocate its work arrays")
    return tuple(o.reshape(*lead, F) for o in out)
