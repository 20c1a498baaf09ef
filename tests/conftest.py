"""Shared fixtures: one small trained run for the whole session, and tiny hand-built models."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from hypothesis import settings as _hyp_settings

from posym.model import GPTJ, ModelConfig

REPO = Path(__file__).resolve().parents[1]

# Property-based tests draw the same examples on every run (no example database, no random seed), so the
# suite's outcome and its counts (see ``ledger``) are the same on every machine.
_hyp_settings.register_profile("posym", derandomize=True, database=None, print_blob=True)
_hyp_settings.load_profile(os.environ.get("POSYM_HYPOTHESIS_PROFILE", "posym"))
# Hypothesis also draws literal constants found in the source of every local module loaded so far.  Which modules a
# pytest-xdist worker has loaded depends on the test files it ran before, so the examples (and the ledger's counts)
# would depend on the scheduling and change with any edit of the code's constants: only its built-in constants are
# drawn here (the pool of local ones stays empty).
try:
    from hypothesis.internal.conjecture import providers as _hyp_providers

    if hasattr(_hyp_providers, "_get_local_constants"):
        _hyp_providers._get_local_constants = lambda: _hyp_providers._local_constants
except ImportError:  # a Hypothesis without the local-constants pool
    pass


# -----------------------------------------------------------------------------
# The ledger: what the suite tried, counted as it runs (reported in README.md's "Testing" section by
# scripts/testing_report.py, from _build/test-ledger.json)

LEDGER_KINDS = {
    "bad_input": "bad inputs tried (each must be refused with one clear error)",
    "fault": "faults injected (killed processes, corrupt, truncated or tampered files)",
    "rerun": "reruns compared (the same computation twice, results compared bit for bit or to tolerance)",
}
LEDGER_FILE = REPO / "_build" / "test-ledger.json"


class Ledger:
    """Counts, per test, the bad inputs tried, faults injected and reruns compared."""

    def __init__(self):
        self.by_test: dict[str, Counter] = defaultdict(Counter)

    def view(self, nodeid: str) -> "LedgerView":
        return LedgerView(self, nodeid)

    def totals(self) -> Counter:
        out = Counter({k: 0 for k in LEDGER_KINDS})
        for c in self.by_test.values():
            out.update(c)
        return out


class LedgerView:
    def __init__(self, ledger: Ledger, nodeid: str):
        self._ledger, self._nodeid = ledger, nodeid

    def add(self, kind: str, n: int = 1) -> None:
        if kind not in LEDGER_KINDS:
            raise ValueError(f"unknown ledger kind {kind!r}; one of {sorted(LEDGER_KINDS)}")
        self._ledger.by_test[self._nodeid][kind] += n

    def bad_input(self, n: int = 1) -> None:
        self.add("bad_input", n)

    def fault(self, n: int = 1) -> None:
        self.add("fault", n)

    def rerun(self, n: int = 1) -> None:
        self.add("rerun", n)

    def raises(self, *args, kind: str = "bad_input", **kwargs):
        """``pytest.raises`` that counts one bad input (or ``kind``)."""
        self.add(kind)
        return pytest.raises(*args, **kwargs)


_LEDGER = Ledger()


@pytest.fixture
def ledger(request) -> LedgerView:
    return _LEDGER.view(request.node.nodeid)


_OUTCOMES: Counter = Counter()


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = "xfailed" if hasattr(report, "wasxfail") and report.outcome == "skipped" else report.outcome
        _OUTCOMES[outcome] += 1


def _merge_ledger(by_test: dict) -> None:
    for nodeid, counts in by_test.items():
        _LEDGER.by_test[nodeid].update(counts)


#: Long parametrised tests that pytest-xdist schedules case by case; every other test runs on the worker that runs
#: the rest of its file (``--dist loadfile``), so module fixtures are built once per file.  Without this, one
#: file's thirteen kernels would all wait for the same worker.
SPREAD_TESTS = frozenset({
    "test_book.py::test_every_bad_parameter_of_every_chapter_is_refused_in_its_first_cells",
})


def xdist_scope(nodeid: str) -> str:
    """The unit pytest-xdist hands to one worker: the test file, or the single case of a :data:`SPREAD_TESTS` test."""
    path, _, name = nodeid.partition("::")
    return nodeid if f"{Path(path).name}::{name.split('[', 1)[0]}" in SPREAD_TESTS else path


def pytest_collection_modifyitems(config, items):
    """The :data:`SPREAD_TESTS` first (a stable sort): xdist hands out work in collection order, and long cases
    left to the end would keep one worker busy while the other waits."""
    items.sort(key=lambda item: xdist_scope(item.nodeid) != item.nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (``make test``), except that :data:`SPREAD_TESTS` go case by case to whichever worker is
    free."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileOrCaseScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(nodeid)

    return FileOrCaseScheduling(config, log)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist (``pytest -n 2``), in the controller: a worker finished; merge the ledger it counted.  (The
    outcomes are counted here already: the workers' reports reach ``pytest_runtest_logreport`` of the controller.)"""
    _merge_ledger(getattr(node, "workeroutput", {}).get("posym_ledger", {}))


def pytest_sessionfinish(session, exitstatus):
    """Write the ledger when the whole suite ran (``pytest tests/`` without -k/-m or a narrower path).

    An xdist worker hands its ledger to the controller (``workeroutput``), which writes the merged one."""
    cfg = session.config
    if hasattr(cfg, "workerinput"):
        if hasattr(cfg, "workeroutput"):
            cfg.workeroutput["posym_ledger"] = {k: dict(v) for k, v in _LEDGER.by_test.items()}
        return
    args = [Path(a).resolve() for a in cfg.args]
    whole = args == [REPO / "tests"] and not cfg.getoption("keyword") and not cfg.getoption("markexpr")
    if not whole:
        return
    data = {"exitstatus": int(exitstatus), "tests": dict(sorted(_OUTCOMES.items())),
            "totals": dict(_LEDGER.totals()), "kinds": LEDGER_KINDS,
            "by_test": {k: dict(v) for k, v in sorted(_LEDGER.by_test.items())}}
    LEDGER_FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = LEDGER_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(LEDGER_FILE)

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


def load_script(name: str):
    """Import ``scripts/<name>.py`` as a module (the scripts are not a package; their folder is on the path
    only while the module loads, so it can import its sibling scripts)."""
    import importlib.util
    import sys

    scripts = REPO / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        spec = importlib.util.spec_from_file_location(name, scripts / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(scripts))
