"""Tests for posym.tasks: the Number and Letter multi-hop data sets.

The solvers below are written independently of the library's ``Task.solve``
and are used to check every sample we look at.
"""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from posym.tasks import (
    MAX_HOPS, QUERY_POS, SEQ_LEN, SPLIT_SIZES, TARGET_WINDOW, PAPER_TASKS,
    Sample, TaskDataset, Vocab, balanced_eval_set, get_task, to_tensors,
)

NUMBER_EXAMPLE = "n h n v h y r s 6 3 2 7 7 8 4 7 2".split()   # paper Fig. 3A -> n, 4 hops
LETTER_EXAMPLE = "C2 B1 A3 FA EC DE HF GD IG".split()           # paper Fig. 1 -> C2, 4 hops
INTS = {str(k) for k in range(1, 17)}


# -----------------------------------------------------------------------------
# independent reference solvers

def ref_number(tokens):
    """Jump back by the integer found at each position; returns (answer, hops, chain)."""
    visited = [len(tokens) - 1]
    while tokens[visited[-1]] in INTS:
        nxt = visited[-1] - int(tokens[visited[-1]])
        assert nxt >= 0, "jump before the start"
        visited.append(nxt)
    return tokens[visited[-1]], len(visited) - 1, tuple(visited)


def ref_letter(tokens):
    """Follow right letter -> unique earlier token with that left letter.

    Also asserts the paper's uniqueness condition: each letter used for a jump
    is the left letter of exactly one token before the query.
    """
    firsts = [t[0] for t in tokens]
    visited = [len(tokens) - 1]
    while not tokens[visited[-1]][-1].isdigit():
        want = tokens[visited[-1]][1]
        where = [k for k, f in enumerate(firsts[:-1]) if f == want]
        assert len(where) == 1, f"letter {want} starts {len(where)} tokens"
        assert where[0] < visited[-1], "jump does not go backwards"
        visited.append(where[0])
    return tokens[visited[-1]], len(visited) - 1, tuple(visited)


REF = {"number": ref_number, "letter": ref_letter}


def check_sample(name: str, s: Sample, seq_len: int = SEQ_LEN) -> None:
    """The reference solver agrees with the sample, and the windows hold the right token types."""
    assert len(s.tokens) == seq_len
    assert REF[name](list(s.tokens)) == (s.answer, s.hops, s.chain)
    assert 1 <= s.hops <= MAX_HOPS and len(s.chain) == s.hops + 1
    assert s.chain[0] == seq_len - 1 and s.answer_pos == s.chain[-1]
    n_target = seq_len - 1 - 8
    assert s.answer_pos < n_target, "the answer must lie in the target window"
    task = get_task(name)
    if name == "number":
        assert all(t in task.letters for t in s.tokens[:n_target])
        assert all(t in INTS for t in s.tokens[n_target:])
        # an offset never points before the start of the sequence
        assert all(int(t) <= p for p, t in enumerate(s.tokens) if p >= n_target)
        assert s.answer in task.letters
    else:
        assert all(len(t) == 2 and t[0] in "abcdefgh" and t[1] in "12345678" for t in s.tokens[:n_target])
        assert all(len(t) == 2 and t[0] in "abcdefgh" and t[1] in "abcdefgh" for t in s.tokens[n_target:])
        assert s.answer in task.target_tokens


# -----------------------------------------------------------------------------
# shared fixtures

@pytest.fixture(scope="module")
def full_arrays():
    """Arrays of all three splits (480k samples) for each task, built once."""
    out = {}
    for name in PAPER_TASKS:
        out[name] = {split: TaskDataset(name, split).arrays() for split in SPLIT_SIZES}
    return out


# -----------------------------------------------------------------------------
# layout and vocabulary

def test_constants():
    assert PAPER_TASKS == ("number", "letter")
    assert SPLIT_SIZES == {"train": 432_000, "val": 2_400, "test": 45_600}
    assert sum(SPLIT_SIZES.values()) == 480_000
    assert (SEQ_LEN, TARGET_WINDOW, QUERY_POS, MAX_HOPS) == (17, 8, 16, 4)


def test_number_vocab_layout():
    t = get_task("number")
    assert len(t.letters) == 120 and len(set(t.letters)) == 120
    assert t.letters[:3] == ("a", "b", "c") and t.letters[25] == "z"
    assert t.letters[26:29] == ("aa", "ab", "ac") and t.letters[-1] == "dp"
    assert list(t.letters[26:]) == sorted(t.letters[26:])
    assert t.numbers == tuple(str(k) for k in range(1, 17))
    v = t.vocab
    assert len(v) == 137 and v.tokens[0] == "<pad>"
    assert [v.stoi[str(k)] for k in range(1, 17)] == list(range(1, 17))
    assert v.stoi["a"] == 17 and v.stoi["dp"] == 136


def test_letter_vocab_layout():
    t = get_task("letter")
    assert t.letters == tuple("abcdefgh") and t.numbers == tuple("12345678")
    v = t.vocab
    assert len(v) == 129 and v.tokens[0] == "<pad>"
    assert v.stoi["a1"] == 1 and v.stoi["h8"] == 64 and v.stoi["aa"] == 65 and v.stoi["hh"] == 128
    assert t.is_target_token("c2") and not t.is_target_token("cc")
    assert t.is_instruction_token("cc") and not t.is_instruction_token("c2")


@pytest.mark.parametrize("name", PAPER_TASKS)
def test_encode_decode_roundtrip(name):
    task = get_task(name)
    ds = TaskDataset(name, "val", size=50)
    for s in ds:
        ids = task.vocab.encode(s.tokens)
        assert task.vocab.decode(ids) == list(s.tokens)
    assert task.vocab.decode(task.vocab.encode(task.vocab.tokens)) == list(task.vocab.tokens)


def test_vocab_errors(ledger):
    v = Vocab(["x", "y"])
    assert v.encode(["y", "x"]) == [2, 1]
    with ledger.raises(ValueError, match="'zz'"):
        v.encode(["x", "zz"])
    with ledger.raises(ValueError, match="7"):
        v.decode([7])
    with ledger.raises(ValueError, match="'17'"):
        get_task("number").vocab.encode(["17"])   # INT stops at 16
    with ledger.raises(ValueError, match="'a9'"):
        get_task("letter").vocab.encode(["a9"])   # numbers stop at 8


# -----------------------------------------------------------------------------
# the paper's worked examples

def test_paper_examples_reference_solver():
    assert ref_number(NUMBER_EXAMPLE) == ("n", 4, (16, 14, 10, 8, 2))
    assert ref_letter(LETTER_EXAMPLE) == ("C2", 4, (8, 7, 5, 4, 0))


def test_paper_examples_library_solver():
    assert get_task("number").solve(NUMBER_EXAMPLE) == ("n", 4, (16, 14, 10, 8, 2))
    assert get_task("letter").solve(LETTER_EXAMPLE) == ("C2", 4, (8, 7, 5, 4, 0))
    s = Sample(tuple(NUMBER_EXAMPLE), "n", 4, (16, 14, 10, 8, 2))
    assert s.answer_pos == 2
    assert s.text() == "n h n v h y r s 6 3 2 7 7 8 4 7 2 → n"


def test_letter_solver_rejects_ambiguity(ledger):
    with ledger.raises(ValueError):
        get_task("letter").solve(["a1", "a2", "ba"])   # two tokens start with 'a'
    with ledger.raises(ValueError):
        get_task("letter").solve(["a1", "b2", "hc"])   # no token starts with 'c'
    with ledger.raises(ValueError):
        get_task("number").solve(["a", "5"])           # jumps before the start


# -----------------------------------------------------------------------------
# every sample is correct

@pytest.mark.parametrize("split", list(SPLIT_SIZES))
@pytest.mark.parametrize("name", PAPER_TASKS)
def test_samples_solved_by_reference(name, split):
    ds = TaskDataset(name, split, size=min(2_400, SPLIT_SIZES[split]))
    hops = Counter()
    for s in ds:
        check_sample(name, s)
        hops[s.hops] += 1
    assert set(hops) == {1, 2, 3, 4}


@pytest.mark.parametrize("name", PAPER_TASKS)
def test_sample_honours_request(name, ledger):
    task = get_task(name)
    rng = np.random.default_rng(5)
    for tp in range(TARGET_WINDOW):
        for h in range(1, MAX_HOPS + 1):
            ans = task.answer_tokens[int(rng.integers(len(task.answer_tokens)))]
            s = task.sample(rng, tp, ans, h)
            assert (s.answer, s.hops, s.answer_pos) == (ans, h, tp)
            assert s.tokens[tp] == ans
            check_sample(name, s)
    with ledger.raises(ValueError, match="8"):
        task.sample(rng, 8, task.answer_tokens[0], 1)
    with ledger.raises(ValueError, match="5"):
        task.sample(rng, 0, task.answer_tokens[0], 5)
    with ledger.raises(ValueError, match="'zz9'"):
        task.sample(rng, 0, "zz9", 1)


def test_letter_distractors_avoid_chain_letters():
    """Only chain tokens use chain letters (left or right), as in the authors' generator."""
    for s in TaskDataset("letter", "train", size=1_000):
        chain_letters = {s.tokens[p][0] for p in s.chain[1:]}
        for p, t in enumerate(s.tokens):
            if p in s.chain[1:]:
                continue
            if p == QUERY_POS:
                assert t[0] not in chain_letters
            else:
                assert not set(t) & chain_letters, (p, t, s.text())


@pytest.mark.parametrize("name", PAPER_TASKS)
def test_arrays_match_items_and_batches(name, ledger):
    ds = TaskDataset(name, "test")
    task = ds.task
    idx = list(range(0, len(ds), 997)) + [len(ds) - 1]
    unmemo = ds.batch(idx)      # built row by row
    a = ds.arrays()
    ledger.rerun()  # arrays vs items
    for i in idx:
        s = ds[i]
        assert a["x"][i].tolist() == task.vocab.encode(s.tokens)
        assert a["y"][i] == task.vocab.stoi[s.answer]
        assert (a["hops"][i], a["answer_pos"][i]) == (s.hops, s.answer_pos)
        assert tuple(c for c in a["chain"][i] if c >= 0) == s.chain
    assert a["x"].shape == (len(ds), SEQ_LEN) and a["x"].dtype == np.int64
    for k in ("y", "hops", "answer_pos"):
        assert a[k].shape == (len(ds),) and a[k].dtype == np.int64
    memo = ds.batch(idx)        # from the memoised arrays
    ref = to_tensors([ds[i] for i in idx], task.vocab)
    ledger.rerun(2)  # row-by-row and memoised batches vs to_tensors
    for u, m, r in zip(unmemo, memo, ref):
        assert u.dtype == torch.long and torch.equal(u, r) and torch.equal(m, r)
    assert ref[0].shape == (len(idx), SEQ_LEN)


@pytest.mark.parametrize("name", PAPER_TASKS)
def test_smaller_size_is_prefix(name, ledger):
    small, full = TaskDataset(name, "val", size=37), TaskDataset(name, "val")
    assert len(small) == 37 and len(full) == 2_400
    ledger.rerun()
    assert [small[i] for i in range(37)] == [full[i] for i in range(37)]
    assert small[-1] == full[36]
    with ledger.raises(IndexError):
        small[37]
    ledger.rerun()
    np.testing.assert_array_equal(small.arrays()["x"], full.arrays()["x"][:37])


# -----------------------------------------------------------------------------
# balance

def _all_rows(arrs):
    return {k: np.concatenate([arrs[s][k] for s in SPLIT_SIZES]) for k in ("y", "hops", "answer_pos")}


def test_number_balance_exact_over_480k(full_arrays):
    a = _all_rows(full_arrays["number"])
    assert len(a["y"]) == 480_000
    combo = (a["answer_pos"] * 200 + a["y"]) * 10 + a["hops"]
    counts = np.unique(combo, return_counts=True)[1]
    assert len(counts) == 8 * 120 * 4 and set(counts.tolist()) == {125}


def test_letter_balance_over_480k(full_arrays):
    a = _all_rows(full_arrays["letter"])
    combo = (a["answer_pos"] * 200 + a["y"]) * 10 + a["hops"]
    counts = np.unique(combo, return_counts=True)[1]
    assert len(counts) == 2_048
    assert set(counts.tolist()) <= {234, 235}
    assert (counts == 235).sum() == 480_000 - 2_048 * 234   # the 768 random extra tuples


@pytest.mark.parametrize("name", PAPER_TASKS)
def test_train_slice_balance(name, full_arrays):
    """The first 48k training samples are balanced up to sampling noise (~5 sigma bounds)."""
    a = {k: v[:48_000] for k, v in full_arrays[name]["train"].items()}
    hops = np.bincount(a["hops"], minlength=5)[1:]
    assert np.all(np.abs(hops - 12_000) < 500), hops
    pos = np.bincount(a["answer_pos"], minlength=8)
    assert np.all(np.abs(pos - 6_000) < 400), pos
    n_ans = len(get_task(name).answer_tokens)
    ans = np.unique(a["y"], return_counts=True)[1]
    assert len(ans) == n_ans
    mean = 48_000 / n_ans
    assert np.all(np.abs(ans - mean) < 5 * np.sqrt(mean) + 5), (ans.min(), ans.max())


# -----------------------------------------------------------------------------
# determinism and splits

def _digest(name: str, split: str, n: int = 200) -> str:
    ds = TaskDataset(name, split, seed=0)
    text = "\n".join(f"{ds[i].text()} | {ds[i].hops}" for i in range(n))
    return hashlib.sha256(text.encode()).hexdigest()


PINNED = {
    ("number", "train"): "d004e99edbf5439343fff4418e97f4d73674380a9528ae4791a6190c13c33515",
    ("number", "val"): "1e0bac1a36afb816feb2d5d7f02e92e4ed74d6bd0affa0d140c9351ec409c8de",
    ("number", "test"): "19305317a08e2dd2849b9250b17429ba2bf5b0e389c76ef6017b4014be8bd3c9",
    ("letter", "train"): "3d773fb25b19eacb49b98f48cf4b5c132ebef546b740cd659309333eade8c818",
    ("letter", "val"): "743b1123cd1646b5e963f97fe2cc531641a6a6fbf47cf60543993bd82f67d5b3",
    ("letter", "test"): "cd9cf50162547aae4912f118ef6b27a2d30f727c2f0a4b2c5622c34c72fed158",
}


@pytest.mark.parametrize("name,split", list(PINNED))
def test_pinned_digest(name, split, ledger):
    """Catches accidental changes to the generator (update only on purpose)."""
    ledger.rerun()
    assert _digest(name, split) == PINNED[(name, split)]


@pytest.mark.parametrize("name", PAPER_TASKS)
def test_determinism_and_seeds(name, ledger):
    a, b = TaskDataset(name, "train", seed=3), TaskDataset(name, "train", seed=3)
    c = TaskDataset(name, "train", seed=4)
    idx = list(range(30)) + [123_456, 431_999]
    ledger.rerun()
    assert [a[i] for i in idx] == [b[i] for i in idx]
    ledger.rerun()
    assert a[17] == a[17]
    differ = sum(a[i] != c[i] for i in idx)
    assert differ >= len(idx) - 1
    # each split has its own samples
    val, test = TaskDataset(name, "val", seed=3), TaskDataset(name, "test", seed=3)
    assert sum(a[i] != val[i] for i in range(30)) >= 29
    assert sum(val[i] != test[i] for i in range(30)) >= 29


def test_splits_cover_disjoint_index_ranges():
    from posym.tasks import SPLIT_OFFSETS
    ranges = sorted((SPLIT_OFFSETS[s], SPLIT_OFFSETS[s] + SPLIT_SIZES[s]) for s in SPLIT_SIZES)
    assert ranges[0][0] == 0 and ranges[-1][1] == 480_000
    assert all(r0[1] == r1[0] for r0, r1 in zip(ranges, ranges[1:]))
    for s, n in SPLIT_SIZES.items():
        assert len(TaskDataset("number", s)) == n


# -----------------------------------------------------------------------------
# errors

def test_bad_arguments(ledger):
    with ledger.raises(ValueError, match="unknown task 'foo': choose one of number, letter"):
        get_task("foo")
    with ledger.raises(ValueError, match="'foo'"):
        TaskDataset("foo")
    with ledger.raises(ValueError, match="'dev'"):
        TaskDataset("number", "dev")
    with ledger.raises(ValueError, match="size.*0"):
        TaskDataset("number", "val", size=0)
    with ledger.raises(ValueError, match="2401"):
        TaskDataset("number", "val", size=2_401)
    with ledger.raises(ValueError, match="-1"):
        TaskDataset("letter", "val", seed=-1)
    with ledger.raises(ValueError, match="1.5"):
        TaskDataset("letter", "val", seed=1.5)
    with ledger.raises(IndexError):
        TaskDataset("letter", "val")[2_400]


# -----------------------------------------------------------------------------
# fixed evaluation sets

@pytest.mark.parametrize("name", PAPER_TASKS)
def test_balanced_eval_set(name, ledger):
    ev = balanced_eval_set(name, 400, seed=0)
    assert len(ev) == 400
    assert Counter(s.hops for s in ev) == {1: 100, 2: 100, 3: 100, 4: 100}
    ledger.rerun()
    assert ev == balanced_eval_set(name, 400, seed=0)
    val = {s.tokens for s in TaskDataset(name, "val")}
    assert all(s.tokens in val for s in ev)
    for s in ev:
        check_sample(name, s)
    test_set = balanced_eval_set(name, 40, split="test")
    assert Counter(s.hops for s in test_set) == {1: 10, 2: 10, 3: 10, 4: 10}
    with ledger.raises(ValueError, match="402"):
        balanced_eval_set(name, 402)
    with ledger.raises(ValueError, match="0"):
        balanced_eval_set(name, 0)
    with ledger.raises(ValueError, match="2400"):
        balanced_eval_set(name, 2_400)  # val has only ~600 of each hop count


# -----------------------------------------------------------------------------
# length generalisation

@pytest.mark.parametrize("extra", [0, 1, 100, 1000])
@pytest.mark.parametrize("name", PAPER_TASKS)
def test_extend_target_window(name, extra, ledger):
    task = get_task(name)
    rng = np.random.default_rng(extra)
    for s in TaskDataset(name, "test", size=40):
        e = task.extend_target_window(s, extra, rng)
        assert len(e.tokens) == SEQ_LEN + extra
        assert e.tokens[extra:] == s.tokens                      # old prompt kept, new tokens in front
        assert e.tokens[-9:] == s.tokens[-9:]                     # instructions + query unchanged
        assert e.chain == tuple(p + extra for p in s.chain)
        assert REF[name](list(e.tokens)) == (s.answer, s.hops, e.chain)   # ref_letter also checks uniqueness
        extra_ok = task.letters if name == "number" else task.target_tokens
        assert all(t in extra_ok for t in e.tokens[:extra])
        assert len(task.vocab.encode(e.tokens)) == SEQ_LEN + extra
    with ledger.raises(ValueError, match="-1"):
        task.extend_target_window(s, -1, rng)


def test_extend_uses_fresh_tokens():
    """Extra tokens are random, not a copy of one token."""
    task = get_task("number")
    s = TaskDataset("number", "val")[0]
    e = task.extend_target_window(s, 500, np.random.default_rng(0))
    assert len(set(e.tokens[:500])) > 100


# -----------------------------------------------------------------------------
# property tests

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(PAPER_TASKS), split=st.sampled_from(list(SPLIT_SIZES)),
       seed=st.integers(0, 2**32 - 1), frac=st.floats(0, 1, exclude_max=True))
def test_property_random_samples_valid(name, split, seed, frac, ledger):
    ds = TaskDataset(name, split, seed=seed)
    i = int(frac * len(ds))
    s = ds[i]
    check_sample(name, s)
    ledger.rerun()
    assert ds[i] == s


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(PAPER_TASKS), idx=st.integers(0, 431_999),
       extra=st.integers(0, 300), rseed=st.integers(0, 2**32 - 1))
def test_property_extension_valid(name, idx, extra, rseed):
    task = get_task(name)
    s = TaskDataset(name, "train")[idx]
    e = task.extend_target_window(s, extra, np.random.default_rng(rseed))
    assert REF[name](list(e.tokens)) == (s.answer, s.hops, e.chain)


@pytest.mark.parametrize("split", ["val", "test"])
def test_hop_counts_from_the_codes_equal_the_built_samples_for_every_task(split):
    from posym.tasks import task_names

    for name in task_names():
        fast = TaskDataset(name, split=split, seed=3).hop_counts()
        built = TaskDataset(name, split=split, seed=3).arrays()["hops"]
        assert fast.shape == built.shape and np.array_equal(fast, built), name
