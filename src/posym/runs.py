"""The runs behind a chapter at each scale: trained here (smoke, teaching) or read from data/ (paper).

The only module that decides, from a scale, whether a chapter trains small models now (in a
temporary folder or the per-scale cache) or reads the committed paper-scale results.
"""
from __future__ import annotations

from typing import Sequence


def scale_overrides(scale: str, smoke: dict | None, overrides: dict) -> dict:
    """The preset overrides of a chapter's runs at ``scale``: ``overrides``, plus ``smoke`` at the smoke scale.

    A chapter's smoke runs are stand-ins that only have to exercise its code, so a chapter may train them for
    fewer steps than the smoke preset (``smoke={"steps": 50}``); the teaching runs keep the preset.  This is
    where that choice is made, so that no chapter module tests the scale for it.
    """
    return {**overrides, **(smoke or {})} if scale == "smoke" else dict(overrides)


def _train_and_analyze(root, scale: str, task: str, seed: int, n_prompts: int, threads: int | None,
                       final_only: bool, overrides: dict):
    """One run of :func:`train_runs` (a module-level function, so that worker processes can import it)."""
    from pathlib import Path

    from . import io as pio
    from .analyze import analyze_run
    from .train import TrainConfig, list_checkpoints, train

    cfg = TrainConfig.preset(scale, task=task, seed=int(seed), **overrides)
    run = train(cfg, Path(root) / f"{task}-s{seed}", progress=False, threads=threads)
    have = [s for s, _ in list_checkpoints(run.path)]
    want = have[-1:] if final_only else have
    done = False
    if (run.path / "scores.parquet").exists() and (run.path / "prompts.json").exists():
        meta = pio.read_json(run.path / "prompts.json")
        got = set(pio.read_table(run.path / "scores.parquet")["step"].unique())
        done = meta.get("n") == n_prompts and set(want) <= got
    if not done:
        analyze_run(run.path, n_prompts=n_prompts, per_frequency=False, progress=False,
                    steps=want if final_only else None)
    return run.path


def train_runs(root, scale: str, tasks: Sequence[str] = ("number", "letter"), seeds: Sequence[int] = (0,),
               n_prompts: int = 100, threads: int | None = 1, final_only: bool = False, jobs: int = 1,
               smoke: dict | None = None, **overrides) -> list:
    """Train and analyse one run per task and seed at ``scale`` (``TrainConfig.preset``) under ``root``.

    Each run goes to ``root/<task>-s<seed>`` (the layout of ``data/paper``, so :func:`posym.results.load_table`
    reads it) and gets the metric of :func:`posym.analyze.analyze_run` on ``n_prompts`` test prompts, at every
    checkpoint or, with ``final_only``, at the last one; no per-frequency scores.  ``threads`` sets torch's
    thread count (1 is fastest for these small models on a shared machine); ``overrides`` go to the preset, and
    so do those of ``smoke``, but only at the smoke scale (:func:`scale_overrides`).  ``jobs > 1`` trains that
    many runs at once in separate processes (one thread each; on a 2-core machine two one-thread processes finish
    sooner than one two-thread process); the results are the same.
    A finished run is not retrained (:func:`posym.train.train` returns it as it is), and its metric is not
    recomputed when ``scores.parquet`` already covers the wanted checkpoints with the same prompts, so a folder
    can be shared by several chapters (see :func:`run_cache`).  Returns the run folders.
    """
    from pathlib import Path

    root = Path(root)
    overrides = scale_overrides(scale, smoke, overrides)
    todo = [(task, int(seed)) for task in tasks for seed in seeds]
    if jobs <= 1 or len(todo) == 1:
        return [_train_and_analyze(root, scale, t, s, n_prompts, threads, final_only, overrides) for t, s in todo]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=mp.get_context("spawn")) as pool:
        futures = [pool.submit(_train_and_analyze, root, scale, t, s, n_prompts, 1, final_only, overrides)
                   for t, s in todo]
        return [f.result() for f in futures]


def run_cache(scale: str):
    """A folder for runs the chapters train at ``scale`` and may share: ``<repo>/_build/runs/<scale>`` (a
    temporary folder when the package is not in a checkout).  Nothing is written into ``data/``."""
    import tempfile
    from pathlib import Path

    from .results import repo_root

    root = repo_root()
    if root is None:
        return Path(tempfile.mkdtemp(prefix=f"posym-runs-{scale}-"))
    return root / "_build" / "runs" / scale


def train_models(scale: str, seed: int, root, tasks: Sequence[str] = ("number", "letter"), threads: int | None = 1,
                 smoke: dict | None = None, **overrides) -> dict:
    """Train one model per task at ``scale`` (``TrainConfig.preset``) into ``root/<task>-s<seed>``.

    ``overrides`` go to the preset, and so do those of ``smoke``, but only at the smoke scale
    (:func:`scale_overrides`).

    Small models train fastest on one thread (and do not fight other processes for cores); the previous
    torch thread count is restored afterwards.  Returns ``{task: run folder}``.
    """
    from pathlib import Path

    import torch

    from .train import TrainConfig, train

    overrides = scale_overrides(scale, smoke, overrides)
    before = torch.get_num_threads()
    out = {}
    try:
        for task in tasks:
            cfg = TrainConfig.preset(scale, task=task, seed=seed, **overrides)
            out[task] = Path(root) / f"{task}-s{seed}"
            train(cfg, out[task], progress=False, threads=threads)
    finally:
        torch.set_num_threads(before)
    return out


class ChapterRuns:
    """The runs a chapter shows at a scale, trained first where needed; ``root`` holds ``<task>-s<seed>``.

    * ``paper``: the committed runs, ``<data_dir>/paper`` (nothing is trained);
    * ``teaching``: the shared per-scale cache (:func:`run_cache`), trained there if missing, two runs at a time,
      so that chapters showing the same runs train them once;
    * ``smoke``: stand-ins trained from scratch on one thread in a temporary folder (``prefix``), with the
      chapter's ``smoke`` overrides (:func:`scale_overrides`); :meth:`cleanup` removes it, and so does the
      interpreter's exit at the latest.

    Every run gets the metric on ``n_prompts`` prompts, at every checkpoint or, with ``final_only``, at the last
    (:func:`train_runs`).  ``workdir`` is the temporary folder (``None`` when there is none).
    """

    def __init__(self, scale: str, tasks: Sequence[str], seeds: Sequence[int], n_prompts: int, data_dir=None,
                 prefix: str = "posym-runs-", smoke: dict | None = None, final_only: bool = False):
        import tempfile
        from pathlib import Path

        from .results import data_dir as default_data_dir

        self.scale, self.workdir, self._tmp = scale, None, None
        if scale == "paper":
            self.root = Path(data_dir or default_data_dir()) / "paper"
            return
        if scale == "teaching":
            self.root = run_cache("teaching")
            train_runs(self.root, scale, tasks, seeds, n_prompts=n_prompts, final_only=final_only, jobs=2)
            return
        self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
        self.workdir = Path(self._tmp.name)
        self.root = self.workdir / "runs"
        train_runs(self.root, scale, tasks, seeds, n_prompts=n_prompts, final_only=final_only, threads=1,
                   smoke=smoke)

    def cleanup(self) -> None:
        """Remove the temporary folder of stand-ins trained from scratch (nothing otherwise)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
