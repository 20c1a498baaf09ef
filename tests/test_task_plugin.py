"""A task defined outside posym (here) plugs in with one registration: train -> analyze and the learning-dynamics
chapter's smoke path run unchanged."""
from __future__ import annotations

import numpy as np
import pytest

from posym.tasks import Task, TaskDataset, Vocab, get_task, register_task, task_names, unregister_task
from posym.tasks.base import _u_to_int

LETTERS = tuple("abcdefgh")


class ToyPointerTask(Task):
    """Four letters, then a digit k in 0..3: the answer is the letter at position k (one hop)."""

    name = "toy_pointer"
    task_id = 901
    label = "Toy pointer"
    seq_len = 5
    n_positions = 4
    max_hops = 1
    n_draws = 4

    def __init__(self):
        self.answer_tokens = LETTERS
        self.vocab = Vocab(LETTERS + ("0", "1", "2", "3"))

    def _build(self, tp, ans, hops, u):
        n = len(tp)
        x = np.zeros((n, 5), dtype=np.int64)
        x[:, :4] = 1 + _u_to_int(u, len(LETTERS))
        x[np.arange(n), tp] = 1 + ans
        x[:, 4] = self.vocab.stoi["0"] + tp
        return x, np.stack([np.full(n, 4), tp], axis=1)

    def solve(self, tokens):
        k = int(tokens[-1])
        return tokens[k], 1, (len(tokens) - 1, k)


@pytest.fixture
def toy():
    register_task(ToyPointerTask)
    yield get_task("toy_pointer")
    unregister_task("toy_pointer")


def test_toy_task_train_analyze(toy, tmp_path):
    from posym.analyze import analyze_run
    from posym.train import TrainConfig, train

    assert "toy_pointer" in task_names()
    for s in TaskDataset("toy_pointer", "val", size=50):
        assert toy.solve(s.tokens) == (s.answer, s.hops, s.chain)
    cfg = TrainConfig.smoke("toy_pointer", steps=20, batch_size=16, train_size=320, eval_size=40, eval_batch_size=40,
                            checkpoint_every=10, model_overrides={"n_layer": 1, "d_model": 16, "d_mlp": 32})
    run = train(cfg, tmp_path / "run", progress=False, threads=1)
    out = analyze_run(run.path, n_prompts=20, per_frequency=False, progress=False)
    sc = out["scores"]
    assert set(sc["step"]) == {0, 1, 2, 5, 10, 20}
    assert sc["pos"].between(0, 1).all() and sc["sym"].between(0, 1).all()


def test_toy_task_through_a_chapter(toy):
    """The learning-dynamics chapter's smoke path (train, analyse, tables, figures) on the registered toy task."""
    import matplotlib.pyplot as plt

    from posym import book
    from posym.chapters import dynamics

    cfg = book.setup("dynamics", "smoke", n_seeds=1, n_prompts=20)
    runs = dynamics.Runs(cfg, tasks=("toy_pointer",))
    try:
        assert runs.summary()["task"].tolist() == ["toy_pointer"]
        crit, hops = runs.hop_tables()
        assert list(hops.index) == [("toy_pointer", "1"), ("toy_pointer", "all")]
        assert crit["task"].tolist() == ["toy_pointer"]
        final = runs.final_scores()
        assert len(final) == runs.n_layer and final.columns.tolist() == [("toy_pointer", "pos"), ("toy_pointer", "sym")]
        assert runs.purity_matrix(0.1).shape[0] == 1
        for fig in (runs.plot_accuracy(), runs.plot_scores(), runs.plot_purity()):
            assert fig.axes
            plt.close(fig)
        root = runs.root
        assert (root / "toy_pointer-s0" / "scores.parquet").exists()
    finally:
        runs.cleanup()
    assert not root.exists()
