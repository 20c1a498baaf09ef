"""Tests for the list-sorting tasks (posym/tasks/sorting.py, sorting_long.py): every prompt checked by an
independent solver; the chapter's head-mode measures on hand-made inputs.

The reference solver scans the list once for the smallest number above the query (no sorting).
"""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest

from posym.tasks import TaskDataset, get_task


def ref_sort(tokens):
    toks = list(tokens)
    assert toks[-2] == "|"
    q = int(toks[-1])
    best, where = None, None
    for p, t in enumerate(toks[:-2]):
        v = int(t)
        if v > q and (best is None or v < best):
            best, where = v, p
    assert best is not None
    return str(best), 1, (len(toks) - 1, where)


def test_registered():
    t = get_task("sorting")
    assert t.task_id == 3 and t.seq_len == 11 and t.max_hops == 1 and t.n_positions == 9
    assert t.answer_tokens == tuple(str(k) for k in range(1, 48))
    assert t.teaching_model["n_layer"] == 1 and t.teaching_model["attn_only"]


def test_registered_long():
    t, base = get_task("sorting_long"), get_task("sorting")
    assert t.task_id == 7 and t.seq_len == 20 and t.max_hops == 1 and t.n_positions == 18 and t.n_combos == 846
    assert t.vocab.tokens == base.vocab.tokens and t.answer_tokens == base.answer_tokens
    assert t.teaching_model == {**base.teaching_model, "attn_pdrop": 0.0, "resid_pdrop": 0.0}
    assert t.teaching_train["steps"] == 3000
    assert t.n_draws == 48 + 17


def test_variant_layout_follows_its_sizes():
    """A sorting variant states only its list length and number range; the prompt layout is derived."""
    from posym.tasks.sorting import SortingTask

    class Short(SortingTask):
        n_numbers, list_len = 20, 5

    t = Short()
    assert (t.seq_len, t.n_positions, t.n_draws) == (7, 5, 24) and len(t.answer_tokens) == 19
    assert (SortingTask.seq_len, SortingTask.n_positions, SortingTask.n_draws) == (11, 9, 56)


@pytest.mark.parametrize("name,list_len", [("sorting", 9), ("sorting_long", 18)])
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_samples_solved_by_reference(name, list_len, split):
    task = get_task(name)
    for s in TaskDataset(name, split, seed=2, size=1000):
        values = [int(t) for t in s.tokens[:-2]]
        assert len(s.tokens) == list_len + 2 and len(set(values)) == list_len and int(s.tokens[-1]) in values
        assert all(0 <= v < 48 for v in values)
        assert ref_sort(s.tokens) == (s.answer, s.hops, s.chain) == task.solve(s.tokens)


def test_arrays_equal_samples_and_are_deterministic():
    ds = TaskDataset("sorting", "val", seed=5)
    a = ds.arrays()
    task = get_task("sorting")
    for i in range(0, 2400, 97):
        assert task.vocab.decode(a["x"][i]) == list(ds[i].tokens)
        assert task.vocab.tokens[a["y"][i]] == ds[i].answer
    again = TaskDataset("sorting", "val", seed=5).arrays()["x"]
    assert hashlib.sha256(again.tobytes()).hexdigest() == hashlib.sha256(a["x"].tobytes()).hexdigest()


def test_balance():
    task = get_task("sorting")
    a = TaskDataset("sorting", "train", seed=0, size=84_600).arrays()
    combos = Counter(zip(a["answer_pos"].tolist(), a["y"].tolist()))
    assert len(combos) == task.n_combos == 423
    assert min(combos.values()) > 120 and max(combos.values()) < 290  # 200 expected each
    # the answer's position is where the balance put it; the query's copy is anywhere else
    pos_q = np.argmax(a["x"][:, :9] == a["x"][:, -1:], axis=1)
    assert (pos_q != a["answer_pos"]).all()
    assert set(np.bincount(pos_q, minlength=9).nonzero()[0]) == set(range(9))
    # ranks of the answer in the sorted list: all of 1..8 occur
    ranks = (a["x"][:, :9] < a["y"][:, None]).sum(1)
    assert set(np.unique(ranks)) == set(range(1, 9))


def test_balance_long():
    a = TaskDataset("sorting_long", "train", seed=0, size=84_600).arrays()
    combos = Counter(zip(a["answer_pos"].tolist(), a["y"].tolist()))
    assert len(combos) == 846 and min(combos.values()) > 50 and max(combos.values()) < 160  # 100 expected each
    pos_q = np.argmax(a["x"][:, :18] == a["x"][:, -1:], axis=1)
    assert (pos_q != a["answer_pos"]).all() and set(np.unique(pos_q)) == set(range(18))
    ranks = (a["x"][:, :18] < a["y"][:, None]).sum(1)
    assert set(np.unique(ranks)) == set(range(1, 18))
    # twice as dense: mean gap between the query and the answer about 2.5 (lists of 9: about 4.8)
    q = a["x"][:, -1] - get_task("sorting_long").vocab.stoi["0"]
    gap = (a["y"] - get_task("sorting_long").vocab.stoi["0"]) - q
    assert gap.min() >= 1 and 2.0 < gap.mean() < 3.2


def test_lists_of_9_unchanged():
    """The long variant shares the generator: the 9-number task's prompts are fixed by their checksum."""
    a = TaskDataset("sorting", "val", seed=3, size=2000).arrays()
    assert hashlib.sha256(a["x"].tobytes() + a["y"].tobytes()).hexdigest()[:16] == "caca450fd7bdf0ff"


def test_solver_rejects_bad_prompts(ledger):
    t = get_task("sorting")
    with ledger.raises(ValueError, match="largest"):
        t.solve("3 1 2 | 3".split())
    with ledger.raises(ValueError, match="not in the list"):
        t.solve("3 1 2 | 0".split())
    with ledger.raises(ValueError, match="repeated"):
        t.solve("3 3 2 | 2".split())
    with ledger.raises(ValueError, match="not a sorting prompt"):
        t.solve("3 1 2 4".split())
    assert t.solve("5 1 9 | 1".split()) == ("5", 1, (4, 0))
    with ledger.raises(ValueError, match="'\\|'"):
        t.check_ids(np.ones((2, 11), dtype=np.int64))


# -----------------------------------------------------------------------------
# the chapter's science (posym.chapters.sorting) on hand-made inputs

def _modes(contribs, step=10):
    """Per-value rows of a two-head head-mode table: ``contribs[v]`` = (head 0's, head 1's contribution)."""
    import pandas as pd

    rows = []
    for v, (c0, c1) in enumerate(contribs):
        rows += [{"seed": 0, "step": step, "head": 0, "kind": "value", "value": v, "contrib_answer": c0},
                 {"seed": 0, "step": step, "head": 1, "kind": "value", "value": v, "contrib_answer": c1}]
    return pd.DataFrame(rows)


def test_count_runs():
    from posym.chapters import sorting as ch

    assert ch.count_runs([]) == 0 and ch.count_runs([1]) == 1 and ch.count_runs("000111") == 2
    assert ch.count_runs([0, 1, 0, 1]) == 4 and ch.count_runs("0011100") == 3


def test_splitting_index_per_value():
    from posym.chapters import sorting as ch

    # two ranges, one per head (negative contributions count as none): the source study's picture
    two = ch.splitting(_modes([(2.0, 0.0)] * 24 + [(-1.0, 1.5)] * 23)).iloc[0]
    assert two["split_index"] == pytest.approx(1.0) and two["splits"] and two["ranges"]
    assert two["runs"] == 2 and two["exclusive"] == 1.0 and two["leaders"] == "0" * 24 + "1" * 23
    # the same division, as interleaved bands of 4 values: divides the numbers, but no ranges
    bands = ch.splitting(_modes([(3.0, 0.0) if (v // 4) % 2 == 0 else (0.0, 3.0) for v in range(47)])).iloc[0]
    assert bands["split_index"] == pytest.approx(1.0) and bands["splits"] and not bands["ranges"]
    assert bands["runs"] == 12
    # partial shares: 0.9 on 20 values, 0.6 on 20 values -> index 0.75; half the values exclusive (>= 0.8)
    mixed = ch.splitting(_modes([(9.0, 1.0)] * 20 + [(2.0, 3.0)] * 20)).iloc[0]
    assert mixed["split_index"] == pytest.approx(0.75) and not mixed["splits"]
    assert mixed["exclusive"] == pytest.approx(0.5) and mixed["runs"] == 2 and mixed["ranges"]
    # shared work, and one head doing everything (head 1 leads no value), and a value no head helps (left out)
    shared = ch.splitting(_modes([(1.0, 1.0)] * 47)).iloc[0]
    assert shared["split_index"] == pytest.approx(0.5) and not shared["splits"]
    one_head = ch.splitting(_modes([(1.0, 0.0)] * 46 + [(-1.0, -1.0)])).iloc[0]
    assert one_head["split_index"] == pytest.approx(1.0) and not one_head["splits"] and one_head["runs"] == 1
    assert len(one_head["leaders"]) == 46
    # contributions too small to share (under MIN_CONTRIB in total, as at initialisation): no index
    tiny = ch.splitting(_modes([(0.01, 0.0)] * 20 + [(0.0, 0.02)] * 20)).iloc[0]
    assert np.isnan(tiny["split_index"]) and not tiny["splits"] and tiny["runs"] == 0


def test_splitting_groups_steps():
    import pandas as pd

    from posym.chapters import sorting as ch

    m = pd.concat([_modes([(1.0, 1.0)] * 10, step=0), _modes([(1.0, 0.0)] * 5 + [(0.0, 1.0)] * 5, step=100)])
    sp = ch.splitting(m).set_index("step")
    assert sp.loc[0, "split_index"] == pytest.approx(0.5) and sp.loc[100, "split_index"] == pytest.approx(1.0)
    assert list(sp["runs"]) == [1, 2]


def test_head_modes_shapes_and_ablation():
    import torch

    from posym.chapters import sorting as ch
    from posym.model import GPTJ, ModelConfig

    torch.manual_seed(0)
    t = get_task(ch.TASK)
    model = GPTJ(ModelConfig(vocab_size=len(t.vocab), n_layer=1, n_head=2, d_model=16, attn_only=True)).eval()
    a = TaskDataset(ch.TASK, "val", size=120).arrays()
    x, y = torch.from_numpy(a["x"].copy()), torch.from_numpy(a["y"].copy())
    m = ch.head_modes(model, x, y)
    values = np.unique(a["x"][:, -1] - t.vocab.stoi["0"])
    per_value = m[m["kind"] == "value"]
    assert len(m[m["kind"] == "all"]) == 2 and len(per_value) == 2 * len(values)
    assert sorted(per_value[per_value["head"] == 0]["value"]) == values.tolist()
    assert per_value[per_value["head"] == 0]["n"].sum() == 120
    # the two heads' contributions add up to the full logit minus the direct path (up to the final LayerNorm)
    with torch.no_grad():
        full = model(x)[:, -1]
        with model.hooks([("blocks.0.attn.hook_z", lambda z, _n: torch.zeros_like(z))]):
            direct = model(x)[:, -1]
    rows = torch.arange(len(x))
    total = (full - direct)[rows, y].mean().item()
    assert m[m["kind"] == "all"]["contrib_answer"].sum() == pytest.approx(total, rel=0.2)
