"""Tests of posym.chapters.metric: toy heads, the exclusion bound, fast vs re-run, sweep summaries."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from posym import canonical as C
from posym.chapters import metric as mc
from posym.rope import apply_rope, rope_angles, rope_cos_sin

REPO = Path(__file__).resolve().parents[1]


def toy(seed=0, T=7, d=8):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(d), rng.standard_normal((T, d)), rope_angles(d).numpy()


# -----------------------------------------------------------------------------
# toy heads and the metric

def test_toy_logits_match_rope_rotations():
    q, keys, g = toy()
    T, d = keys.shape
    M = mc.toy_rope_logits(q, keys, g).numpy()
    ang = torch.as_tensor(g)
    cos, sin = rope_cos_sin(torch.arange(T), ang, dtype=torch.float64)
    qr = apply_rope(torch.as_tensor(q)[None], cos[-1:], sin[-1:])[0]
    for a in range(T):
        for b in range(T):
            kr = apply_rope(torch.as_tensor(keys[b])[None], cos[a:a + 1], sin[a:a + 1])[0]
            assert M[a, b] == pytest.approx(float(qr @ kr), abs=1e-10)


def test_knobs_give_positional_symbolic_and_constant_logits():
    q, keys, g = toy(1)
    pos_head = mc.toy_rope_logits(q, keys, g, spread=0.0).numpy()
    sym_head = mc.toy_rope_logits(q, keys, g, angle_scale=0.0).numpy()
    both = mc.toy_rope_logits(q, keys, g, spread=0.0, angle_scale=0.0).numpy()
    assert np.allclose(pos_head, pos_head[:, :1])  # independent of the content b
    assert np.allclose(sym_head, sym_head[:1, :])  # independent of the position a
    assert np.ptp(both) < 1e-12


def test_scores_of_pure_and_uniform_heads(ledger):
    T = 6
    sharp_pos = np.tile(np.array([0.0, 0, 9, 0, 0, 0])[:, None], (1, T))  # position 2 wins whatever it holds
    sharp_sym = np.tile(np.array([0.0, 9, 0, 0, 0, 0])[None, :], (T, 1))  # content 1 wins wherever it is
    sc = mc.scores_from_logits(np.stack([sharp_pos, sharp_sym, np.zeros((T, T))]))
    assert sc["pos"][0] == pytest.approx(1) and sc["sym"][0] < 0.01
    assert sc["sym"][1] == pytest.approx(1) and sc["pos"][1] < 0.01
    assert sc["pos"][2] == pytest.approx(1) and sc["sym"][2] == pytest.approx(1)
    assert sc["entropy_norm"][2] == pytest.approx(1)
    with ledger.raises(ValueError):
        mc.scores_from_logits(np.zeros((2, 2)))


def test_hand_example_of_the_exercise():
    # content A (at key 0) has logit log 4, everything else 0: D = (4, 1, 1, 1) / 7; the two top swaps
    # (0,1), (0,2) share alpha; s_sym = 1 and s_pos = 2*4*1 / (16 + 1) = 8/17
    M = np.zeros((4, 4))
    M[:, 0] = math.log(4)
    sc = mc.scores_from_logits(M)
    assert sc["sym"] == pytest.approx(1.0)
    assert sc["pos"] == pytest.approx(8 / 17)


# -----------------------------------------------------------------------------
# exclusion bound

@pytest.mark.parametrize("seed", range(4))
def test_exclusion_bound_closed_form_equals_bruteforce_and_holds(seed, ledger):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((6, 6)) * rng.uniform(0.1, 5)
    ex = mc.exclusion_terms(M)
    dpos2, dsym2 = mc.deviation_norms_bruteforce(M)
    ledger.rerun()
    assert ex["dpos2"] == pytest.approx(dpos2) and ex["dsym2"] == pytest.approx(dsym2)
    assert ex["logit_var"] <= ex["bound"] + 1e-12


def test_exclusion_bound_is_zero_only_for_constant_key_logits(ledger):
    ex = mc.exclusion_terms(np.full((5, 5), 3.0))
    assert ex["bound"] == 0 and ex["logit_var"] == 0
    q, keys, g = toy(2)
    path = mc.push_path(q, keys, g, sharpness=5.0, ts=[0.0, 0.5, 1.0], towards="both")
    assert (path["logit_var"] <= path["bound"] + 1e-12).all()
    end = path.iloc[-1]
    assert end["pos"] == pytest.approx(1) and end["sym"] == pytest.approx(1) and end["entropy_norm"] == pytest.approx(1)
    with ledger.raises(ValueError):
        mc.push_path(q, keys, g, 1.0, [0.0], towards="sideways")


def test_random_toy_heads_table(ledger):
    Ms, tab = mc.random_toy_heads(40, T=9, d=8, seed=3)
    assert Ms.shape == (40, 9, 9) and len(tab) == 40
    assert tab[["pos", "sym", "entropy_norm"]].apply(lambda c: c.between(-1e-9, 1 + 1e-9)).all().all()
    both0 = (tab["spread"] == 0) & (tab["angle_scale"] == 0)
    assert np.allclose(tab.loc[both0, ["pos", "sym", "entropy_norm"]], 1.0)
    _, again = mc.random_toy_heads(40, T=9, d=8, seed=3)
    ledger.rerun()
    pd.testing.assert_frame_equal(tab, again)


# -----------------------------------------------------------------------------
# fast vs re-run

def test_fast_equals_rerun_on_random_model(ledger):
    model = mc.random_model(vocab_size=20, n_layer=2, d_model=16, seed=0)
    x = torch.randint(0, 20, (3, 8), generator=torch.Generator().manual_seed(0))
    tab = mc.fast_vs_rerun(model, x)
    ledger.rerun()
    assert len(tab) == 2
    assert tab[["max_diff_pos", "max_diff_sym"]].to_numpy().max() < 1e-4
    assert (tab["pos_fast"] < 0.99).any() or (tab["sym_fast"] < 0.99).any()  # sharp heads, not the (1, 1) corner


# -----------------------------------------------------------------------------
# sweep helpers

def test_parse_specs_and_jobs(ledger):
    assert mc.parse_specs(" 2, 8 ,nope,4+31") == [2, 8, "nope", "4+31"]
    with ledger.raises(ValueError):
        mc.parse_specs("40")
    with ledger.raises(ValueError):
        mc.parse_specs(" , ")
    st = C.Settings(steps=5)
    jobs = mc.sweep_jobs([2, "nope"], [8, 31, "nope"], [0, 1], st)
    tasks = [j[0] for j in jobs]
    assert tasks.count("index") == 4 and tasks.count("retrieval") == 4
    # partial induction: 3 specs alone + only k=8 with the zero channel (31 and nope would repeat), 2 seeds
    assert tasks.count("partial_induction") == 8
    assert sum(j[3].zero_channel for j in jobs) == 2


def test_best_index_frequency(ledger):
    g = C.angles()
    for n in (8, 24, 48):
        k = mc.best_index_frequency(n)
        assert 2 * np.pi / g[k] >= n and (k == 0 or 2 * np.pi / g[k - 1] < n)
    assert mc.best_index_frequency(24) == 5
    with ledger.raises(ValueError):
        mc.best_index_frequency(10 ** 9)


def fake_sweep(curves: dict, seeds=(0,)) -> pd.DataFrame:
    """A sweep table from {(task, spec, zc): (per-position accuracies, s_pos, s_sym)}."""
    rows = []
    g = C.angles()
    for (task, spec, zc), (acc, sp, ss) in curves.items():
        hs = C.head_spec(spec, 32, zc)
        freq = -1 if hs.nope else min(k for k in hs.freqs if not (zc and k == 31))
        for s in seeds:
            for p, a in enumerate(acc):
                rows.append(dict(task=task, spec=hs.label, freq=freq, angle=0.0 if hs.nope else float(g[freq]),
                                 zero_channel=zc, seed=s, answer_pos=p, distance=len(acc) - p, n=10, accuracy=a,
                                 chance=0.25, acc_all=float(np.mean(acc)), s_pos=sp, s_sym=ss, entropy_norm=0.5,
                                 train_loss=0.1, train_s=1.0, steps=10))
    return pd.DataFrame(rows)


def paper_like():
    flat = lambda a: [a] * 12  # noqa: E731
    U = [1.0] * 3 + [0.3] * 6 + [1.0] * 3
    inv = [0.5] * 3 + [0.9] * 6 + [0.5] * 3
    return fake_sweep({
        ("index", 2, False): (flat(0.98), 1.0, 0.0),
        ("index", 8, False): (U, 1.0, 0.0),
        ("index", "nope", False): (flat(0.1), 1.0, 1.0),
        ("retrieval", 2, False): (flat(0.4), 0.9, 0.9),
        ("retrieval", 8, False): (inv, 0.1, 1.0),
        ("retrieval", "nope", False): (flat(1.0), 0.0, 1.0),
        ("partial_induction", 10, False): (flat(0.5), 0.2, 0.98),
        ("partial_induction", 10, True): (flat(0.97), 0.0, 1.0),
    })


def test_accuracy_table_order_and_seed_stats():
    df = fake_sweep({("index", "nope", False): ([0.2] * 4, 1, 1), ("index", 8, False): ([0.5] * 4, 1, 0),
                     ("index", 2, False): ([0.9] * 4, 1, 0)}, seeds=(0, 1))
    tab = mc.accuracy_table(df)
    assert list(tab["spec"]) == ["2", "8", "nope"]
    assert (tab["seeds"] == 2).all() and tab["acc"].tolist() == pytest.approx([0.9, 0.5, 0.2])


def test_paper_comparison_agrees_on_paper_like_results():
    tab = mc.paper_comparison(paper_like())
    assert len(tab) == 9
    assert tab["agree"].tolist() == [True] * 9, tab.to_string()


def test_paper_comparison_disagrees_where_it_should():
    df = paper_like()
    # two angles no better than one, retrieval flat at k=8, index solvers symbolic
    df.loc[(df["task"] == "partial_induction") & df["zero_channel"], ["accuracy", "acc_all"]] = 0.55
    df.loc[(df["task"] == "retrieval") & (df["spec"] == "8"), "accuracy"] = 0.7
    df.loc[(df["task"] == "index") & (df["spec"] == "2"), ["s_pos", "s_sym"]] = (0.0, 1.0)
    tab = mc.paper_comparison(df).set_index("claim")["agree"]
    assert not tab["Partial induction: a zero angle plus a moderate one solves it"]
    assert not tab["Partial induction: two angles beat one"]
    assert not tab["Retrieval accuracy vs answer position turns inverse-U-shaped as the frequency speeds up"]
    assert not tab["Heads that solve Index are positional"]
    assert tab["Partial induction: one angle is not enough"]


def test_paper_comparison_without_solvers_says_so():
    df = fake_sweep({("index", 2, False): ([0.3] * 6, 1, 0), ("index", "nope", False): ([0.1] * 6, 1, 1)})
    tab = mc.paper_comparison(df).set_index("claim")
    assert tab.loc["Heads that solve Index are positional", "agree"] is None
    assert not tab.loc["Index is solved by high frequencies (low k), not by slow ones or NoPE", "agree"]


def test_committed_sweep_comparison():
    """The committed CPU sweep: everything agrees except that the two-angle heads stop short of 'solved'."""
    path = REPO / "data" / "canonical" / "sweep.parquet"
    if not path.is_file():
        pytest.skip("data/canonical/sweep.parquet not present")
    tab = mc.paper_comparison(pd.read_parquet(path)).set_index("claim")["agree"]
    assert not tab["Partial induction: a zero angle plus a moderate one solves it"]
    assert tab.drop("Partial induction: a zero angle plus a moderate one solves it").all()


def test_select_sweep(ledger):
    df = paper_like()
    sel = mc.select_sweep(df, [2, "nope"], [10], seeds=[0], steps=10)
    assert set(zip(sel["task"], sel["spec"])) == {("index", "2"), ("index", "nope"), ("retrieval", "2"),
                                                  ("retrieval", "nope"), ("partial_induction", "10"),
                                                  ("partial_induction", "10+31")}
    with ledger.raises(ValueError, match="lacks index 4"):
        mc.select_sweep(df, [4], [], seeds=[0])
    with ledger.raises(ValueError, match="steps"):
        mc.select_sweep(df, [2], [], seeds=[0], steps=600)
    with ledger.raises(ValueError, match="seed"):
        mc.select_sweep(df, [2], [], seeds=[0, 1])


def test_decode_prompt(ledger):
    b = C.generate("retrieval", 2, seed=0)
    text, ans = mc.decode_prompt("retrieval", b.x[0], b.y[0])
    words = text.split()
    assert len(words) == 17 and words[-1].endswith("?")
    hit = [w for w in words[:-1] if w[0] == words[-1][0]]
    assert hit == [words[int(b.answer_pos[0])]] and hit[0][1:] == ans
    b = C.generate("index", 1, seed=0)
    text, ans = mc.decode_prompt("index", b.x[0], b.y[0])
    words = text.split()
    q = int(words[-1][2:])
    assert words[len(words) - 1 - q] == ans
    b = C.generate("partial_induction", 1, seed=0)
    text, ans = mc.decode_prompt("partial_induction", b.x[0], b.y[0])
    words = text.split()
    last = max(i for i, w in enumerate(words[:-1]) if w[0] == words[-1][0])
    assert words[last][1:] == ans
    with ledger.raises(ValueError):
        mc.decode_prompt("index", [0], 0, n_symbols=60)


def test_difference_notes():
    assert mc.difference_notes(paper_like()) == []
    path = REPO / "data" / "canonical" / "sweep.parquet"
    if path.is_file():
        notes = mc.difference_notes(pd.read_parquet(path))
        text = " ".join(notes)
        assert "Partial induction is not solved" in text and "Aliasing at k=4" in text
        assert "fastest frequency is not the best" in text


def test_curve_picks():
    df = paper_like()
    assert mc.curve_picks(df, "index") == ["2", "8", "nope"]
    assert mc.curve_picks(df, "index", k=1) == ["2"]
    assert mc.curve_picks(df, "partial_induction", zero_channel=True) == ["10+31"]
    assert mc.curve_picks(df, "retrieval", zero_channel=True) == []


# -----------------------------------------------------------------------------------------------
# the page's tables and figures

def test_page_tables_and_figures():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from posym.display import Table

    assert mc.small_scale_warning("paper") is None and "smoke" in mc.small_scale_warning("smoke").data
    paths = mc.push_paths(0, n_steps=3)
    assert set(paths["towards"]) == {"positional", "symbolic", "both"} and len(paths) == 9
    ends = mc.push_ends_table(paths)
    assert isinstance(ends, Table) and len(ends.frame) == 6
    sweep = paper_like()
    acc = mc.accuracy_table(sweep)
    shown = mc.accuracy_display(acc)
    assert shown.fold and len(shown.frame) == len(acc) and "nan" not in repr(shown).lower()
    assert isinstance(mc.shape_table(sweep), Table) and mc.shape_table(sweep).fold
    assert "agree" in mc.comparison_table(sweep).frame.columns
    assert "best swept Index head here: k = 2" in mc.best_swept_index_head(acc)
    settings, g = mc.sweep_settings(type("cfg", (), {"steps": 10, "eval_size": 64, "score_size": 8})())
    assert settings.steps == 10 and len(g) == 32
    ladder = mc.ladder_table(g, [2, "nope"], [10])
    assert list(ladder.frame["spec"]) == ["2", "nope", "10"]
    for fig in (mc.plot_push_paths(paths), mc.plot_accuracy_by_frequency(acc), mc.plot_position_curves(sweep, acc),
                mc.plot_scores_by_frequency(acc)):
        assert fig.get_size_inches()[0] <= 7.5 and len(fig.axes) == 3
        plt.close(fig)
    text = mc.example_prompts(0, n=1)
    assert text.count("->") == 3
