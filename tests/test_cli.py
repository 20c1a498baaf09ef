"""Tests for the ``posym`` command line, run as a user would (a fresh process per command), and its errors:
every bad value of every subcommand must give one line naming the option or the file, exit code 2, no
traceback, and write nothing."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import CHILD_ENV, REPO, folder_checksums, load_script, run_cli

SCORE_COLUMNS = ["step", "layer", "head", "pos", "sym", "pos_sd", "sym_sd", "entropy", "entropy_norm"]
TINY = ["--steps", "20", "--train-size", "640", "--eval-size", "100", "--checkpoint-every", "10"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A 20-step Number run (seconds), trained in-process."""
    from posym.train import TrainConfig, train

    out = tmp_path_factory.mktemp("cli") / "number-s0"
    train(TrainConfig.smoke(task="number", seed=0, steps=20, train_size=640, eval_size=100, checkpoint_every=10),
          out, progress=False)
    return out


@pytest.mark.parametrize("args, expect", [
    ((), ["train", "analyze", "verify", "reproduce", "export-hf", "import-hf"]),
    (("train",), ["--task", "--scale", "--seed", "--out", "--steps", "--checkpoint-every", "--threads"]),
    (("analyze",), ["RUN", "--prompts", "--no-freq"]),
    (("verify",), ["path"]),
])
def test_help_exits_zero(args, expect):
    p = run_cli(*args, "--help", timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("usage: posym")
    for word in expect:
        assert word in p.stdout


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


OWN_COMMANDS = ("train", "analyze", "verify", "reproduce", "export-hf", "import-hf")


def test_every_option_has_help_and_train_help_shows_its_defaults():
    from posym.cli import build_parser

    subs = _subparsers(build_parser())
    for name in OWN_COMMANDS:
        for action in subs[name]._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"posym {name} {action.option_strings[0]} has no help text"
    text = subs["train"].format_help()
    assert "(default: runs/{task}-{scale}-s{seed})" in " ".join(text.split())
    assert "--threads" in text and "torch's choice" in text
    assert "(default: None)" not in text


def test_building_the_parser_imports_neither_torch_nor_pandas():
    """What makes ``posym --help`` fast (its time is measured by benchmarks/bench_cli.py)."""
    code = ("import sys; from posym.cli import build_parser; p = build_parser(); p.format_help(); "
            "[s.format_help() for a in p._actions if hasattr(a, 'choices') and isinstance(a.choices, dict) "
            "for s in a.choices.values()]; "
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'transformers') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=CHILD_ENV, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]", p.stdout


def test_the_parser_offers_the_names_the_modules_define():
    from posym import book, cli, reproduce, tasks, train

    assert set(cli.TASK_NAMES) == set(tasks.task_names()) and cli.PAPER_TASKS == tasks.PAPER_TASKS and cli.SCALES == train.SCALES == book.SCALES and cli.ENGINES == reproduce.ENGINES


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


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, no traceback, nothing written
# ---------------------------------------------------------------------------------------------
_BAD_NUMBERS = {"positive_int": ["0", "-2", "1.5", "x"], "nonneg_int": ["-1", "x"],
                "positive_float": ["0", "-1", "nan", "x"], "nonneg_float": ["-1", "inf", "x"]}


def _derived_bad_cases() -> list[tuple[list[str], str]]:
    """From the parser itself: for every subcommand (those added later included) an unknown option, and for
    every option that takes a number or a choice, values out of its range or not among its choices."""
    from posym.cli import build_parser

    cases = [(["frobnicate"], "frobnicate")]
    for name, sp in _subparsers(build_parser()).items():
        required = []  # valid values for what the command requires, so that the bad value is what argparse reports
        for action in sp._actions:
            if action.required and action.option_strings:
                required += [action.option_strings[-1], str(next(iter(action.choices))) if action.choices else "x"]
            elif action.required:
                required.append("x")
        cases.append(([name, *required, "--no-such-option"], "--no-such-option"))
        for action in sp._actions:
            if not action.option_strings or action.dest == "help":
                continue
            opt = action.option_strings[-1]
            kind = getattr(action.type, "__name__", "")
            kind = {"a positive integer": "positive_int", "an integer >= 0": "nonneg_int",
                    "a positive number": "positive_float", "a number >= 0": "nonneg_float"}.get(kind, kind)
            rest = [a for i, a in enumerate(required) if not (a == opt or (i and required[i - 1] == opt))]
            for value in _BAD_NUMBERS.get(kind, []):
                cases.append(([name, *rest, opt, value], opt))
            if action.choices:
                cases.append(([name, *rest, opt, "banana-not-a-choice"], opt))
    return cases


BAD = _derived_bad_cases() + [
    (["train"], "--task"),
    (["train", "--task", "number", "--train-size", "999999999"], "--train-size"),
    (["train", "--task", "number", "--eval-size", "5000"], "--eval-size"),
    (["train", "--task", "number", "--seed", "abc"], "--seed"),
    (["train", "--task", "number", "--seed", "3-1"], "--seed"),
    (["train", "--task", "number", "--seed", "-1"], "--seed"),
    (["train", "--task", "number", "--device", "banana"], "--device"),
    (["train", "--task", "number", "--device", "cuda:99"], "--device"),
    (["train", "--task", "number", "--out", "{tmp}/out/{nope}"], "--out"),
    (["train", "--task", "number", "--out", "{file}"], "--out"),
    (["train", "--task", "number", "--seed", "0-1", "--out", "{tmp}/out"], "{seed}"),
    (["analyze", "{tmp}/does-not-exist"], "does-not-exist"),
    (["analyze", "{tmp}"], "config.json"),
    (["analyze", "{file}"], "is a file"),
    (["analyze", "{tmp}", "--device", "banana"], "--device"),
    (["verify", "{tmp}/does-not-exist"], "does-not-exist"),
    (["verify", "{file}"], "is a file"),
    (["verify", "{tmp}"], "no manifest.json"),
    (["reproduce", "--seeds", "x", "--out", "{tmp}/out"], "--seeds"),
    (["reproduce", "--seeds", "3-1", "--out", "{tmp}/out"], "--seeds"),
    (["reproduce", "--seeds", "0", "--out", "{tmp}/out"], "--seeds"),
    (["reproduce", "--tasks", "nope", "--out", "{tmp}/out"], "nope"),
    (["reproduce", "--tasks", ",", "--out", "{tmp}/out"], "--tasks"),
    (["reproduce", "--device", "banana", "--out", "{tmp}/out"], "--device"),
    (["reproduce", "--device", "cuda:99", "--out", "{tmp}/out"], "--device"),
    (["reproduce", "--address", "auto", "--out", "{tmp}/out"], "--address"),
    (["reproduce", "--out", "{file}"], "--out"),
    (["export-hf", "{tmp}/nothing"], "nothing"),
    (["export-hf", "{file}", "--task", "number", "--out", "{tmp}/out"], "f.txt"),
    (["import-hf", "{tmp}/nothing", "--out", "{tmp}/out/m.pt"], "nothing"),
    (["import-hf", "{tmp}", "--out", "{tmp}/out/m.pt"], "not a Hugging Face model folder"),
    (["import-hf", "{file}", "--out", "{tmp}/out/m.pt"], "f.txt"),
]


def _argv(argv, tmp_path):
    (tmp_path / "f.txt").write_text("not a folder\n")
    argv = [a.replace("{tmp}", str(tmp_path)).replace("{file}", str(tmp_path / "f.txt")) for a in argv]
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    return argv


def _check_error(rc, stderr, needle, tmp_path, before=None):
    assert rc == 2, (rc, stderr)
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("posym") and "error:" in lines[0] and needle in lines[0], lines[0]
    assert not (tmp_path / "out").exists()  # nothing was written
    if before is not None:
        assert folder_checksums(tmp_path) == before


@pytest.mark.parametrize("argv, needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_cli_input_exits_2_with_one_clear_error_line(argv, needle, tmp_path, capsys, ledger):
    from posym.cli import main

    if "cuda:99" in argv:
        import torch
        if torch.cuda.device_count() > 99:
            pytest.skip("a machine with 100 GPUs")
    argv = _argv(argv, tmp_path)
    before = folder_checksums(tmp_path)
    ledger.bad_input()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    _check_error(rc, capsys.readouterr().err, needle, tmp_path, before)


def test_cuda_on_a_cpu_build_of_torch_is_one_line(tmp_path, capsys, ledger):
    import torch

    from posym.cli import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: --device cuda is valid here")
    for argv in (["train", "--task", "number", "--device", "cuda", "--out", str(tmp_path / "out")],
                 ["analyze", str(tmp_path), "--device", "cuda"],
                 ["reproduce", "--device", "cuda", "--out", str(tmp_path / "out")]):
        ledger.bad_input()
        _check_error(main(argv), capsys.readouterr().err, "--device cuda", tmp_path)


@pytest.mark.parametrize("argv, needle", [
    (["train", "--task", "nope"], "--task"),
    (["train", "--task", "number", "--steps", "0"], "--steps"),
    (["train", "--task", "number", "--threads", "-2"], "--threads"),
    (["train", "--task", "number", "--device", "banana"], "--device"),
    (["analyze", "{tmp}/does-not-exist"], "does-not-exist"),
    (["import-hf", "{tmp}", "--out", "{tmp}/out/m.pt"], "not a Hugging Face model folder"),
])
def test_bad_cli_input_in_a_real_process(argv, needle, tmp_path, ledger):
    ledger.bad_input()
    p = run_cli(*_argv(argv, tmp_path), timeout=120)
    _check_error(p.returncode, p.stderr, needle, tmp_path)


def test_reproduce_out_pointing_at_a_run_folder_is_refused(tiny_run, capsys, ledger):
    from posym.cli import main

    before = folder_checksums(tiny_run)
    ledger.bad_input()
    rc = main(["reproduce", "--out", str(tiny_run), "--no-book", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--out" in err and "run or results folder" in err and len(err.strip().splitlines()) == 1
    assert folder_checksums(tiny_run) == before  # nothing nested inside it


def test_analyze_of_a_checkpoint_file_names_the_file(tiny_run, capsys, ledger):
    from posym.cli import main

    ledger.bad_input()
    ckpt = tiny_run / "checkpoints" / "step_0000020.pt"
    assert main(["analyze", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "step_0000020.pt is a file" in err and "step_0000020.pt/config.json" not in err


# ---------------------------------------------------------------------------------------------
# posym verify: every folder, extra files
# ---------------------------------------------------------------------------------------------
def test_verify_reports_every_bad_folder_and_extra_files(tmp_path, capsys, ledger):
    from posym import io as pio
    from posym.cli import main

    for name in ("a", "b", "c", "d"):
        pio.atomic_write_text(tmp_path / name / "table.csv", f"x\n{name}\n")
        pio.write_manifest(tmp_path / name, {"what": name})
    (tmp_path / "d" / "README.md").write_text("notes\n")  # documentation is allowed
    ledger.fault(3)
    (tmp_path / "a" / "table.csv").write_text("x\nA\n")       # edited
    (tmp_path / "b" / "stray.parquet").write_bytes(b"PAR1")   # not in the manifest
    (tmp_path / "c" / "table.csv").unlink()                   # deleted
    assert main(["verify", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert f"BAD {tmp_path / 'a'}: table.csv: checksum mismatch" in out
    assert f"BAD {tmp_path / 'b'}: files not in the manifest: stray.parquet" in out
    assert f"BAD {tmp_path / 'c'}: table.csv: missing" in out
    assert f"ok  {tmp_path / 'd'}" in out
    assert len(err.strip().splitlines()) == 1 and "3 of 4 folder(s) failed verification" in err
    assert "table.csv: missing" in err and "stray.parquet" in err  # the one line names the files


def test_verify_accepts_the_committed_results(capsys):
    from posym.cli import main

    assert main(["verify", str(REPO / "data")]) == 0, capsys.readouterr()
    assert "BAD" not in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# The working checkout
# ---------------------------------------------------------------------------------------------
def test_the_book_uses_the_checkout_of_the_working_directory(tmp_path, monkeypatch):
    from posym import book, reproduce

    clone = tmp_path / "clone"
    (clone / "src" / "posym").mkdir(parents=True)
    (clone / "pyproject.toml").write_text('[project]\nname = "posym"\n')
    (clone / "_toc.yml").write_text("root: intro\n")
    (clone / "book").mkdir()
    monkeypatch.delenv("POSYM_DATA_DIR", raising=False)
    monkeypatch.chdir(clone / "book")
    assert book.repo_root() == clone.resolve()
    assert book.data_dir() == clone.resolve() / "data"
    assert reproduce._repo_root() == clone.resolve()
    monkeypatch.chdir(tmp_path)  # outside any checkout: the one the package came from
    assert book.repo_root() == REPO


def test_run_chapters_refuses_p_scale(tmp_path, ledger):
    ledger.bad_input()
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "run_chapters.py"), "--params", "smoke", "-p", "scale",
                        "huge", "data", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       env=CHILD_ENV, cwd=REPO, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and "-p scale 'huge'" in p.stderr and "--params" in p.stderr
    assert "executing" not in p.stdout and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,says", [(["--jobs", "0"], "--jobs must be at least 1"),
                                       (["--jobs", "2", "--record"], "do not combine it with --jobs")])
def test_run_chapters_refuses_bad_jobs(tmp_path, ledger, args, says):
    ledger.bad_input()
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "run_chapters.py"), "--params", "smoke", *args, "data",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, env=CHILD_ENV, cwd=REPO,
                       timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr and says in p.stderr
    assert "executing" not in p.stdout and not (tmp_path / "out").exists()


def test_run_chapters_side_by_side_keeps_what_succeeded_and_reports_what_failed(tmp_path):
    """Two chapters at a time: one runs to the end and is written; the other is refused at its setup cell
    (a parameter it does not take) and leaves nothing; the exit status says a chapter failed."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(REPO / "scripts" / "run_chapters.py"), "--params", "smoke", "--jobs", "2",
                        "-p", "n_samples", "200", "data", "teaching", "--out", str(out)], capture_output=True,
                       text=True, env=CHILD_ENV, cwd=REPO, timeout=900)
    assert p.returncode == 1, p.stderr[-2000:]
    assert "[chapters] teaching: FAILED" in p.stderr and "ParameterError" in p.stderr
    assert "[chapters] data: done in" in p.stdout
    assert sorted(f.name for f in out.iterdir()) == ["data.ipynb"]


def test_run_chapters_gives_each_kernel_its_share_of_the_cores(monkeypatch):
    rc = load_script("run_chapters")
    monkeypatch.setattr(rc.os, "cpu_count", lambda: 8)
    assert rc.share_cores(2, env := {}) == "4" and env == {"OMP_NUM_THREADS": "4"}
    assert rc.share_cores(16, env := {}) == "1"
    assert rc.share_cores(2, env := {"OMP_NUM_THREADS": "3"}) == "3"  # the user's setting wins


def test_run_chapters_orders_the_longest_first(monkeypatch):
    rc = load_script("bookutil")
    monkeypatch.setattr(rc.book, "read_runtimes", lambda: [
        {"chapter": "a", "scale": "smoke", "seconds": "10"}, {"chapter": "b", "scale": "smoke", "seconds": "90"},
        {"chapter": "c", "scale": "paper", "seconds": "500"}])
    assert rc.longest_first(["a", "b", "c"], "smoke") == ["c", "b", "a"]  # c has no smoke time: first
    assert rc.longest_first(["a", "b"], "paper") == ["a", "b"]


def test_a_chapter_run_prints_none_of_the_kernels_routine_noise(tmp_path, capfd):
    from posym import book

    src = tmp_path / "tiny.md"
    src.write_text('---\njupytext:\n  text_representation:\n    extension: .md\n    format_name: myst\nkernelspec:\n'
                   '  display_name: Python 3\n  language: python\n  name: python3\n---\n\n```{code-cell} ipython3\n:tags: [parameters]\n\nscale = "smoke"'
                   '\n```\n\n```{code-cell} ipython3\nimport sys\nprint("stdout", scale)\n'
                   'print("a real message from the chapter", file=sys.stderr)\n```\n')
    capfd.readouterr()
    book.execute_chapter(src, tmp_path / "out" / "tiny.ipynb", "smoke", timeout=120)
    err = capfd.readouterr().err
    assert (tmp_path / "out" / "tiny.ipynb").exists()
    assert "without encryption" not in err and "KeyboardInterrupt" not in err, err
    nb = json.loads((tmp_path / "out" / "tiny.ipynb").read_text())
    assert any("a real message" in "".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
