"""Faults injected for real: a killed or interrupted ``posym reproduce``, two writers on one run folder, truncated
and flipped checkpoints in unfinished and finished runs, a read-only output folder; and what a model, a task
and an exported tokenizer must refuse."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import CHILD_ENV, POSYM, REPO, run_cli, sha256
from posym import io as pio
from posym.train import TrainConfig, ckpt_path, list_checkpoints, load_checkpoint, train

TINY = dict(steps=20, train_size=640, eval_size=100, checkpoint_every=10)
TINY_ARGS = ["--steps", "20", "--train-size", "640", "--eval-size", "100", "--checkpoint-every", "10"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted tiny Number run: what every repaired run must equal, byte for byte."""
    out = tmp_path_factory.mktemp("reference") / "number-s0"
    train(TrainConfig.smoke(task="number", seed=0, **TINY), out, progress=False)
    return out


def _flip(path: Path, at: int = -200) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0xFF
    path.write_bytes(bytes(b))


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------
def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except (OSError, IndexError):
        return False


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    t = time.monotonic()
    while time.monotonic() - t < seconds:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _default_sigint() -> None:
    """In the child before exec: Ctrl-C as in a terminal.  A pytest-xdist worker ignores SIGINT, an ignored signal
    stays ignored across exec, and Python then installs no KeyboardInterrupt handler at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_reproduce(out: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*POSYM, "reproduce", "--scale", "smoke", "--no-book", "--quiet", "--out", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CHILD_ENV, cwd=REPO,
                            start_new_session=True, preexec_fn=_default_sigint)


def _wait_training(p: subprocess.Popen, folders: list[Path], seconds: float = 300) -> None:
    t = time.monotonic()
    while not all((f / "eval.csv").exists() for f in folders):
        if p.poll() is not None:
            raise AssertionError(f"reproduce ended early ({p.returncode}): {p.stderr.read()}")
        if time.monotonic() - t > seconds:
            raise AssertionError("training did not start")
        time.sleep(0.2)


def _need_proc():
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the worker processes")


def test_killing_a_parallel_reproduce_leaves_no_process_and_no_second_writer(tmp_path, ledger):
    _need_proc()
    out = tmp_path / "runs"
    p = _start_reproduce(out, "--engine", "local", "--jobs", "2")
    try:
        _wait_training(p, [out / "number-s0", out / "letter-s0"])
        workers = _descendants(p.pid)
        assert len(workers) >= 2, workers  # two workers (and the resource tracker)
        # a second reproduce on the same folders while the first one writes: refused, one line per job
        q = run_cli("reproduce", "--scale", "smoke", "--tasks", "number", "--no-book", "--quiet", "--out", out,
                    timeout=300)
        ledger.fault()
        assert q.returncode == 2 and "Traceback" not in q.stderr
        assert "FAILED number-s0: " in q.stdout and "being written by another posym process" in q.stdout
        assert len(q.stderr.strip().splitlines()) == 1
        # the real thing: SIGKILL of the parent; its workers must go at once, not train on
        ledger.fault()
        os.kill(p.pid, signal.SIGKILL)
        p.wait(30)
        left = _wait_gone(workers, 10.0)
        assert not left, f"processes left behind after the parent was killed: {left}"
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
    for d in ("number-s0", "letter-s0"):  # nobody holds the folders any more
        with pio.folder_lock(out / d):
            pass


def _interrupt_reproduce(out: Path):
    """Start a plan, wait until it trains, press Ctrl-C; returns (process, stderr, workers, time of the Ctrl-C)."""
    p = _start_reproduce(out, "--engine", "local", "--jobs", "1", "--tasks", "number")
    try:
        _wait_training(p, [out / "number-s0"])
        workers = _descendants(p.pid)
        t_int = time.time()
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
    return p, err, workers, t_int


def test_ctrl_c_during_reproduce_is_one_line_and_stops_the_workers(tmp_path, ledger):
    _need_proc()
    ledger.fault()
    p, err, workers, t_int = _interrupt_reproduce(tmp_path / "runs")
    if p.returncode == 0:
        # On a starved machine the whole plan can finish between the first checkpoint and the Ctrl-C. That is no
        # interruption: it is told apart from an ignored Ctrl-C by the plan's last write coming before the signal.
        last_write = max(f.stat().st_mtime for f in (tmp_path / "runs").rglob("*") if f.is_file())
        assert last_write < t_int, f"Ctrl-C during the plan was ignored (last write {last_write - t_int:+.2f} s)"
        p, err, workers, t_int = _interrupt_reproduce(tmp_path / "runs-again")
    assert p.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "interrupted" in err, err
    assert not _wait_gone(workers, 10.0)


def test_a_second_writer_is_refused_and_a_killed_one_releases_the_folder(tmp_path, ledger):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from posym import io\n"
                               f"with io.folder_lock({str(run)!r}):\n    print('held', flush=True)\n"
                               "    time.sleep(600)"], stdout=subprocess.PIPE, text=True, env=CHILD_ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = TrainConfig.smoke(task="number", seed=0, **TINY)
        with ledger.raises(pio.ResultError, match="being written by another posym process", kind="fault"):
            train(cfg, run, progress=False)
        assert not (run / "config.json").exists()
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
        with pio.folder_lock(run):  # the operating system released the dead holder's lock
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# ---------------------------------------------------------------------------------------------
# Checksums are recorded when a file is written, damaged files are rebuilt
# ---------------------------------------------------------------------------------------------
def test_damaged_checkpoints_are_rebuilt_never_given_a_checksum(reference, tmp_path, ledger):
    cfg = TrainConfig.smoke(task="number", seed=0, **TINY)
    run = tmp_path / "number-s0"
    train(cfg, run, progress=False, stop_after=10)
    assert not (run / "manifest.json").exists()
    ledger.fault()
    _truncate(ckpt_path(run, 5))  # damaged while the run is unfinished
    p = run_cli("train", "--task", "number", "--scale", "smoke", *TINY_ARGS, "--out", run, "--quiet", timeout=600)
    assert p.returncode == 0, p.stderr
    files = pio.read_json(run / "manifest.json")["files"]
    ref = pio.read_json(reference / "manifest.json")["files"]
    for rel in (f for f in ref if f.startswith("checkpoints/")):
        assert files[rel]["sha256"] == ref[rel]["sha256"] == sha256(run / rel), rel
    assert pio.verify_folder(run)[1] == []
    load_checkpoint(ckpt_path(run, 5), expect_hash=cfg.hash())

    # the run is finished: damage a checkpoint, a table and the resume state, then train again
    ledger.fault(3)
    _flip(ckpt_path(run, 10))
    _truncate(run / "eval.csv")
    (run / "last.pt").unlink()
    assert len(pio.verify_folder(run)[1]) == 3
    p = run_cli("train", "--task", "number", "--scale", "smoke", *TINY_ARGS, "--out", run, "--quiet", timeout=600)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr and "checkpoints/step_0000010.pt" in p.stderr  # says what it rebuilt
    assert pio.verify_folder(run)[1] == []
    assert sha256(ckpt_path(run, 10)) == sha256(ckpt_path(reference, 10))
    assert sha256(run / "eval.csv") == sha256(reference / "eval.csv")
    assert not (run / ".repair").exists() and not (run / "last.prev.pt").exists()


def test_reproduce_rebuilds_a_damaged_checkpoint_and_names_a_stray_one(tmp_path, ledger):
    from posym import reproduce as rp

    plan = rp.build_plan("smoke", tasks="number", seeds=1, out=tmp_path, overrides={**TINY, "log_every": 5},
                         analysis=dict(n_prompts=20, lengths=(17, 25), n_length=20, n_test=200))
    assert rp.run_plan(plan, progress=False).ok
    run = Path(plan.jobs[0].run_dir)
    good = sha256(ckpt_path(run, 20))
    ledger.fault()
    _truncate(ckpt_path(run, 20))
    res = rp.run_plan(plan, progress=False)
    assert res.ok, res.summary()
    assert res.ran["number-s0"] == ["train"] and set(res.skipped["number-s0"]) == {"analyze", "final"}
    assert sha256(ckpt_path(run, 20)) == good and pio.verify_folder(run)[1] == []
    # a checkpoint the manifest does not list: one line naming it, no traceback
    ledger.fault()
    shutil.copy(ckpt_path(run, 20), run / "checkpoints" / "step_0000030.pt")
    res = rp.run_plan(plan, progress=False)
    msg = res.failed["number-s0"]
    assert "\n" not in msg and "Traceback" not in msg and "step_0000030.pt is not part of this run" in msg


def test_a_corrupt_resume_state_falls_back_to_the_previous_one(reference, tmp_path, ledger):
    cfg = TrainConfig.smoke(task="number", seed=0, **TINY)
    run = tmp_path / "run"
    train(cfg, run, progress=False, stop_after=10)
    assert (run / "last.prev.pt").exists()
    ledger.fault()
    _flip(run / "last.pt", at=-5000)  # a flipped byte inside the tensors: torch.load alone would accept it
    train(cfg, run, progress=False)  # resumes from last.prev.pt (step 5), not from step 0
    for s, p in list_checkpoints(reference):
        assert sha256(ckpt_path(run, s)) == sha256(p), s
    assert pio.verify_folder(run)[1] == []

    run2 = tmp_path / "run2"
    train(cfg, run2, progress=False, stop_after=10)
    ledger.fault(2)
    _truncate(run2 / "last.pt")
    _truncate(run2 / "last.prev.pt")
    with pytest.raises(pio.ResultError, match=r"start again from step 0: delete .*run2 and run the same command"):
        train(cfg, run2, progress=False)


def _read_only_folder(tmp_path: Path):
    """A folder that nobody, root included, can write: a read-only bind mount in a private mount namespace
    (root), or mode 0555 (anyone else). Returns (folder, command prefix)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        return ro, []
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("running as root without unshare: no honest read-only folder here")
    script = f"mount --bind {ro} {ro} && mount -o remount,ro,bind {ro} {ro} && exec \"$@\""
    return ro, ["unshare", "-rm", "sh", "-c", script, "sh"]


def test_a_read_only_output_folder_is_one_line(tmp_path, ledger):
    ro, prefix = _read_only_folder(tmp_path)
    for args in (["train", "--task", "number", *TINY_ARGS, "--out", str(ro / "run")],
                 ["reproduce", "--tasks", "number", "--no-book", "--quiet", "--out", str(ro / "runs")],
                 ["export-hf", str(REPO / "data" / "paper" / "number-s0"), "--out", str(ro / "hf")]):
        ledger.fault()
        p = subprocess.run([*prefix, *POSYM, *args], capture_output=True, text=True, env=CHILD_ENV, cwd=REPO,
                           timeout=300)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and "Traceback" not in p.stderr and len(lines) == 1, p.stderr
        assert str(ro) in lines[0] and re.search("Read-only file system|Permission denied", lines[0]), lines[0]
    ro.chmod(0o755)
    assert list(ro.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Prompts of the wrong task
# ---------------------------------------------------------------------------------------------
def test_a_model_refuses_prompts_of_another_task(ledger):
    from posym.tasks import balanced_eval_set, get_task, to_tensors

    number, letter = get_task("number"), get_task("letter")
    m = load_checkpoint(REPO / "data" / "paper" / "letter-s0" / "final.pt")[0]
    assert m.task == "letter"
    x = to_tensors(balanced_eval_set(number, 200, seed=0, split="test"), number.vocab)[0]
    in_range = x[(x < len(letter.vocab)).all(1)]
    assert len(in_range) > 50  # ids a Letter model's embedding accepts
    refused = 0
    for row in in_range:
        ledger.bad_input()
        with pytest.raises(ValueError, match="not a letter-task prompt"):
            m(row[None])
        refused += 1
    assert refused == len(in_range)
    ok = to_tensors(balanced_eval_set(letter, 8, seed=0, split="test"), letter.vocab)[0]
    assert m(ok).shape == (8, 17, len(letter.vocab))
    with torch.no_grad():  # the check needs no task-specific code in the caller
        with pytest.raises(ValueError, match="position 16"):
            m(torch.cat([ok[:, :16], ok[:, :1]], 1))  # a target token as the query


@pytest.mark.parametrize("tokens, match", [
    ("a b c d e f g h 1 1 1 1 1 1 1 1 banana", "query"),
    ("a b c d e f g h 1 1 1 1 1 1 1 1 99", "query"),
    ("a b c d e f g h 1 1 1 1 1 1 1 ? 1", "not a letter"),
    ("a b c d e f g h 1 1 1 1 1 1 1 1 17", "query"),
])
def test_number_solve_refuses_an_unknown_query(tokens, match, ledger):
    from posym.tasks import get_task

    ledger.bad_input()
    with pytest.raises(ValueError, match=match):
        get_task("number").solve(tokens.split())


# ---------------------------------------------------------------------------------------------
# The exported Hugging Face folder
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(reference, tmp_path_factory):
    from posym.export import export_hf

    return export_hf(reference, tmp_path_factory.mktemp("hf") / "number-hf")


def test_the_exported_tokenizer_refuses_unknown_words_and_files_share_one_mode(exported, ledger):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(exported)
    assert tok.unk_token is None or tok.unk_token not in tok.get_vocab()
    prompt = "dj do dn bq bn ao ae s 4 5 8 6 9 4 10 2 1"
    assert len(tok(prompt).input_ids) == 17
    for typo in ("dj do dn bq bn ao ae s 4 5 8 6 9 4 10 2 17", "dj do zz", "bq4", "DJ"):
        ledger.bad_input()
        with pytest.raises(Exception, match="Missing \\[UNK\\] token"):
            tok(typo)
    modes = {f.name: f.stat().st_mode & 0o777 for f in exported.iterdir()}
    assert set(modes.values()) == {pio.FILE_MODE}, modes
    assert pio.verify_folder(exported)[1] == []


def test_the_exported_readme_runs_and_prints_the_answer_it_states(exported):
    text = (exported / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    stated = re.search(r"# prints (\S+)", code).group(1)
    env = dict(CHILD_ENV, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=exported.parent, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == stated


@pytest.mark.skipif(not (REPO / "data" / "paper" / "number-s0" / "final.pt").exists(), reason="no paper model")
def test_the_readme_hugging_face_snippet_prints_its_real_answer(tmp_path):
    from posym.export import export_hf

    export_hf(REPO / "data" / "paper" / "number-s0", tmp_path / "number-hf")
    readme = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(from transformers import AutoTokenizer.*?)```", readme, re.S).group(1)
    prompt = re.search(r'tok\("([^"]+)"', code).group(1)
    stated = re.search(r"# prints (\S+)", code).group(1)
    assert "<" not in prompt and len(prompt.split()) == 17
    env = dict(CHILD_ENV, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == stated
    from posym.tasks import get_task
    assert get_task("number").solve(prompt.split())[0] == stated  # and it is the right answer


def test_a_nope_model_is_refused_with_one_line(tmp_path, capsys, ledger):
    from posym.cli import main
    from posym.model import GPTJ, ModelConfig
    from posym.tasks import get_task

    mc = ModelConfig.preset("smoke", len(get_task("number").vocab), rotary_dim=0)
    model = GPTJ(mc)
    pio.atomic_torch_save(tmp_path / "nope.pt", {"step": 0, "config_hash": None, "model_config": mc.to_dict(),
                                                 "state_dict": model.state_dict()})
    ledger.bad_input()
    assert main(["export-hf", str(tmp_path / "nope.pt"), "--task", "number", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "rotary_dim 0" in err and "nope.pt" in err
    assert not (tmp_path / "hf").exists()


def test_the_reproduce_command_repairs_a_damaged_checkpoint_and_prints_the_claims(tmp_path, monkeypatch, capsys,
                                                                                   ledger):
    """The real command (smoke presets shrunk to a 20-step run): a truncated checkpoint of a finished run is
    rebuilt, the claims are printed and the exit code is 0; a file it did not write gives one line and exit 2."""
    from posym import cli
    from posym import reproduce as rp

    orig = TrainConfig.smoke.__func__
    monkeypatch.setattr(TrainConfig, "smoke", classmethod(lambda cls, task="number", seed=0, **kw:
                                                          orig(cls, task=task, seed=seed, **{**TINY, **kw})))
    monkeypatch.setitem(rp.ANALYSIS, "smoke", rp.AnalysisConfig(n_prompts=20, lengths=(17, 25), n_length=20,
                                                                n_test=200))
    argv = ["reproduce", "--tasks", "number", "--out", str(tmp_path), "--no-book", "--quiet"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    ledger.fault()
    _truncate(ckpt_path(tmp_path / "number-s0", 10))
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "Headline claims" in out and "1 step(s) run, 0 job(s) failed" in out
    assert pio.verify_folder(tmp_path / "number-s0")[1] == []
    ledger.fault()
    (tmp_path / "number-s0" / "notes.txt").write_text("mine\n")
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1
    assert "FAILED number-s0: " in out and "notes.txt" in out and "move files that posym did not write" in out
