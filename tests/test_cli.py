"""Tests for the ``posym`` command line, run as a user would (a fresh process per command)."""
from __future__ import annotations

import pandas as pd
import pytest

from conftest import folder_checksums, run_cli

SCORE_COLUMNS = ["step", "layer", "head", "pos", "sym", "pos_sd", "sym_sd", "entropy", "entropy_norm"]


@pytest.mark.parametrize("args, expect", [
    ((), ["train", "analyze", "verify"]),
    (("train",), ["--task", "--scale", "--seed", "--out", "--steps", "--checkpoint-every", "--threads"]),
    (("analyze",), ["runs", "--prompts", "--no-freq"]),
    (("verify",), ["path"]),
])
def test_help_exits_zero(args, expect):
    p = run_cli(*args, "--help", timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: posym")
    for word in expect:
        assert word in p.stdout


@pytest.mark.slow
def test_smoke_train_then_analyze_writes_tables_and_scores_change(tmp_path, ledger):
    out = tmp_path / "letter-smoke"
    p = run_cli("train", "--task", "letter", "--scale", "smoke", "--seed", "0", "--out", out, "--quiet", timeout=900)
    assert p.returncode == 0, p.stderr
    assert "done (config" in p.stdout
    assert (out / "manifest.json").exists() and (out / "checkpoints").is_dir()
    p = run_cli("analyze", out, "--prompts", "40", "--quiet", timeout=900)
    assert p.returncode == 0, p.stderr
    assert "10 checkpoints x 4 layers" in p.stdout

    s = pd.read_parquet(out / "scores.parquet")
    assert list(s.columns) == SCORE_COLUMNS
    assert sorted(s["step"].unique()) == [0, 1, 2, 5, 10, 20, 50, 100, 150, 200]
    assert len(s) == 10 * 4 and s[["pos", "sym"]].notna().all().all()
    assert s["pos"].between(0, 1 + 1e-6).all() and s["sym"].between(0, 1 + 1e-6).all()
    assert s["entropy_norm"].between(0, 1 + 1e-6).all()
    first = s[s["step"] == 0].set_index("layer")
    last = s[s["step"] == 200].set_index("layer")
    change = ((last["pos"] - first["pos"]).abs() + (last["sym"] - first["sym"]).abs()).max()
    print(f"\nlargest score change step 0 -> 200: {change:.3f}")
    assert change > 0.05
    # at initialisation attention is nearly uniform: the exclusion-principle corner (both scores ~1)
    assert (first["pos"] > 0.95).all() and (first["sym"] > 0.95).all() and (first["entropy_norm"] > 0.99).all()

    f = pd.read_parquet(out / "freq_scores.parquet")
    assert list(f.columns) == ["step", "layer", "head", "freq", "pos", "sym", "maxlogit", "maxlogit_sd"]
    assert len(f) == 10 * 4 * 16 and sorted(f["freq"].unique()) == list(range(16))  # smoke: d_head 32
    assert (out / "prompts.json").exists()

    # the tables are deterministic: analyzing again gives the same numbers
    before = pd.read_parquet(out / "scores.parquet")
    p = run_cli("analyze", out, "--prompts", "40", "--quiet", "--no-freq", timeout=900)
    assert p.returncode == 0, p.stderr
    ledger.rerun()
    pd.testing.assert_frame_equal(before, pd.read_parquet(out / "scores.parquet"))
    # training the same run again is a no-op (it is complete)
    sums = folder_checksums(out / "checkpoints")
    p = run_cli("train", "--task", "letter", "--scale", "smoke", "--seed", "0", "--out", out, "--quiet", timeout=300)
    assert p.returncode == 0 and folder_checksums(out / "checkpoints") == sums


BAD = [
    (["train", "--task", "nope"], "--task"),
    (["train"], "--task"),
    (["train", "--task", "number", "--scale", "huge"], "--scale"),
    (["train", "--task", "number", "--steps", "0"], "steps"),
    (["train", "--task", "number", "--steps", "-3"], "steps"),
    (["train", "--task", "number", "--steps", "many"], "--steps"),
    (["train", "--task", "number", "--train-size", "999999999"], "train_size"),
    (["train", "--task", "number", "--batch-size", "0"], "batch_size"),
    (["train", "--task", "number", "--seed", "abc"], "--seed"),
    (["train", "--task", "number", "--seed", "3-1"], "--seed"),
    (["train", "--task", "number", "--eval-size", "5000"], "eval_size"),
    (["analyze", "{tmp}/does-not-exist"], "config.json"),
    (["frobnicate"], "frobnicate"),
]


def _argv(argv, tmp_path):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "out")]
    return argv


def _check_error(rc, stderr, needle, tmp_path):
    assert rc == 2, (rc, stderr)
    assert "Traceback" not in stderr
    errors = [l for l in stderr.splitlines() if "error:" in l]
    assert len(errors) == 1, stderr
    assert errors[0].startswith("posym") and needle in errors[0], errors[0]
    assert not (tmp_path / "out").exists()  # nothing was written


@pytest.mark.parametrize("argv, needle", BAD)
def test_bad_cli_input_exits_2_with_one_clear_error_line(argv, needle, tmp_path, capsys, ledger):
    from posym.cli import main

    ledger.bad_input()
    try:
        rc = main(_argv(argv, tmp_path))
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    _check_error(rc, capsys.readouterr().err, needle, tmp_path)


@pytest.mark.parametrize("argv, needle", [BAD[0], BAD[3], BAD[11]])  # argparse, ValueError, ResultError
def test_bad_cli_input_in_a_real_process(argv, needle, tmp_path, ledger):
    ledger.bad_input()
    p = run_cli(*_argv(argv, tmp_path), timeout=120)
    _check_error(p.returncode, p.stderr, needle, tmp_path)
