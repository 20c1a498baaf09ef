"""Shared fixtures: one small trained run for the whole session, and tiny hand-built models."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from posym.model import GPTJ, ModelConfig

REPO = Path(__file__).resolve().parents[1]

# One intra-op thread per process.  On a shared 2-core machine, 2-thread torch processes competing with other
# work spin-wait in OpenMP barriers: a smoke training run took 300 s with 2 threads against 33 s with 1 under
# load (6 s either way on a quiet machine).  Results are bit-identical for a fixed thread count only, so the
# subprocesses we start use the same setting.  Override with POSYM_TEST_THREADS.
THREADS = int(os.environ.get("POSYM_TEST_THREADS", "1"))
torch.set_num_threads(THREADS)
CHILD_ENV = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
_ENTRY = Path(sys.executable).parent / "posym"  # the console script pip installed next to this python
POSYM = [str(_ENTRY)] if _ENTRY.exists() else [sys.executable, "-m", "posym.cli"]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def folder_checksums(folder) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder`` (including hidden temp files)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(*args, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``posym ARGS`` in a fresh interpreter (the real entry point, as a user would)."""
    p = subprocess.run([*POSYM, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=CHILD_ENV,
                       cwd=REPO)
    if check and p.returncode != 0:
        raise AssertionError(f"posym {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def attn_only_model(d_model: int = 8, vocab_size: int = 16, n_head: int = 1, rotary_dim: int | None = None,
                    freq_mask=None) -> GPTJ:
    """A one-layer, attention-only model without dropout (weights to be set by the test)."""
    cfg = ModelConfig(vocab_size=vocab_size, n_layer=1, n_head=n_head, d_model=d_model, attn_only=True,
                      rotary_dim=rotary_dim, freq_mask=freq_mask, attn_pdrop=0.0, resid_pdrop=0.0)
    return GPTJ(cfg).eval()


def randomize_(model: GPTJ, seed: int = 0, std: float = 0.1, qk_scale: float = 1.0) -> GPTJ:
    """Random weights everywhere, LayerNorm gains around 1 and non-zero biases; q/k scaled by ``qk_scale``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() == 1 else std))
            if "ln" in name and name.endswith("weight"):
                p.add_(1.0)
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(qk_scale)
    return model


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """A complete ``smoke`` training run (Number task, seed 0), trained in-process once per session."""
    from posym.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "number-smoke-s0"
    train(TrainConfig.smoke(task="number", seed=0), out, progress=False)
    return out
