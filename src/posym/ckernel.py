"""Two small C kernels, compiled on first use: the per-frequency scores' inner loop and dropout masks.

* ``freq_kernel.c``: the metric's per-frequency scores are about 37 million swap cells per checkpoint of a paper
  run, a few float operations and two ``exp`` each.  In torch every operation is a pass over memory; fused in one C
  loop over the frequencies (vectorised by the compiler, with glibc's vector ``expf``) and shared among torch's own
  OpenMP threads they run five to six times faster (``benchmarks/bench_core.py``).  Both paths equal the float64
  reference to ~1e-6.
* ``rng_kernel.c``: the dropout masks of training, drawn from torch's own generator exactly as torch's CPU
  ``bernoulli_`` draws them (:mod:`posym.dropout`), at a fraction of its per-element cost.

Each kernel is built with the system's C compiler (``cc``, or ``$CC``) for this CPU (``-march=native``) into
``$POSYM_KERNEL_CACHE`` (default ``~/.cache/posym``), once per source, compiler and CPU; the build is atomic, so
concurrent processes are safe.  Without a compiler, or with ``POSYM_C_KERNEL=0``, :func:`kernel` and
:func:`rng_kernel` return None and their callers keep their torch paths.
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
RNG_SOURCE = Path(__file__).with_name("rng_kernel.c")
# -ffast-math for the compile step only: it lets the compiler vectorise expf (glibc's vector math); linked with it,
# the library would also switch the whole process to flush-to-zero floats when loaded.  -fopenmp: the rows are
# shared among OpenMP threads; torch has loaded libgomp.so.1 already, so they are torch's own threads (two thread
# pools would spin against each other)
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC"]
RNG_FLAGS = ["-O3", "-march=native", "-fPIC"]  # exact integer work: no fast-math, no threads

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


def _build(cc: str, source: Path, flags: list[str], link: list[str]) -> Path | None:
    """The shared library of ``source`` in the cache folder, built there if missing; None where the build fails."""
    src = source.read_bytes()
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    key = hashlib.sha256(b"\0".join([src, " ".join(flags + link).encode(), version.encode(),
                                     _cpu_id().encode()])).hexdigest()
    out = _cache_dir() / f"{source.stem}-{key[:16]}.so"
    if out.exists():
        return out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            obj, lib = Path(tmp) / f"{source.stem}.o", Path(tmp) / f"{source.stem}.so"
            for cmd in ([cc, *flags, "-c", str(source), "-o", str(obj)],
                        [cc, "-shared", *link, str(obj), "-o", str(lib), "-lm"]):
                if subprocess.run(cmd, capture_output=True, timeout=300).returncode != 0:
                    return None
            os.replace(lib, out)  # atomic: a concurrent build writes the same bytes
    except (OSError, subprocess.SubprocessError):
        return None
    return out


def _function(name: str, source: Path, flags: list[str], link: list[str], argtypes: list):
    """The C function ``name`` from ``source``, built and loaded once per process; None where it cannot be."""
    if os.environ.get("POSYM_C_KERNEL", "1") == "0":
        return None
    with _lock:
        if name not in _loaded:
            fn = None
            cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
            lib = _build(cc, source, flags, link) if cc else None
            if lib is not None:
                try:
                    fn = getattr(ctypes.CDLL(str(lib)), name)
                    fn.argtypes = argtypes
                    fn.restype = ctypes.c_int
                except (OSError, AttributeError):
                    fn = None
            _loaded[name] = fn
        return _loaded[name]


def kernel():
    """The compiled ``posym_freq_scores`` (ctypes), or None where it cannot be built or is switched off."""
    L, D, P = ctypes.c_long, ctypes.c_double, ctypes.c_void_p
    return _function("posym_freq_scores", SOURCE, FLAGS, ["-fopenmp"],
                     [L, ctypes.c_int, L, L, L, D, P, P, L, P, P, P, P, P])


def rng_kernel():
    """The compiled ``posym_dropout_mask`` (ctypes), or None where it cannot be built or is switched off."""
    return _function("posym_dropout_mask", RNG_SOURCE, RNG_FLAGS, [],
                     [ctypes.c_void_p, ctypes.c_long, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p])


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
