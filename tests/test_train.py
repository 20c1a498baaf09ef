"""Tests for posym.train: determinism, resume after a real SIGKILL, bad input, schedules, manifests."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from posym import io as pio
from posym.cli import main as cli_main
from posym.model import GPTJ
from posym.train import (
    TrainConfig, checkpoint_steps, ckpt_path, list_checkpoints, load_checkpoint, lr_lambda, make_optimizer, train,
)

from conftest import CHILD_ENV, POSYM, REPO, THREADS, folder_checksums, run_cli, sha256


def tensor_digest(path) -> dict[str, str]:
    """sha256 of every tensor of a checkpoint's state dict (content, not file bytes)."""
    sd = torch.load(path, weights_only=True)["state_dict"]
    return {k: sha256_bytes(v.contiguous().numpy().tobytes()) for k, v in sd.items()}


def sha256_bytes(b: bytes) -> str:
    import hashlib
    return hashlib.sha256(b).hexdigest()


def assert_same_weights(a, b):
    sa, sb = torch.load(a, weights_only=True)["state_dict"], torch.load(b, weights_only=True)["state_dict"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"tensor {k} differs between {a} and {b}"


# -----------------------------------------------------------------------------
# determinism

def test_same_seed_gives_bit_identical_runs_and_another_seed_differs(smoke_run, tmp_path, ledger):
    again = train(TrainConfig.smoke(task="number", seed=0), tmp_path / "again", progress=False).path
    other = train(TrainConfig.smoke(task="number", seed=1), tmp_path / "seed1", progress=False).path
    ck_a, ck_b, ck_o = list_checkpoints(smoke_run), list_checkpoints(again), list_checkpoints(other)
    assert [s for s, _ in ck_a] == [s for s, _ in ck_b] == [0, 1, 2, 5, 10, 20, 50, 100, 150, 200]
    # every checkpoint file, eval.csv and train_log.csv are byte-identical
    ledger.rerun()
    for (_, pa), (_, pb) in zip(ck_a, ck_b):
        assert sha256(pa) == sha256(pb), pa.name
    for f in ("eval.csv", "train_log.csv", "config.json"):
        assert sha256(smoke_run / f) == sha256(again / f), f
    assert tensor_digest(ck_a[-1][1]) == tensor_digest(ck_b[-1][1])
    # seed 1: other data order, other init, other dropout -> other weights and other logs
    assert tensor_digest(ck_a[-1][1]) != tensor_digest(ck_o[-1][1])
    assert tensor_digest(ck_a[0][1])["wte.weight"] != tensor_digest(ck_o[0][1])["wte.weight"]  # other init
    assert sha256(smoke_run / "train_log.csv") != sha256(other / "train_log.csv")
    # the manifests agree on everything but time and the resume state
    ma, mb = pio.read_json(smoke_run / "manifest.json"), pio.read_json(again / "manifest.json")
    for f, meta in ma["files"].items():
        if f != "last.pt":
            assert mb["files"][f]["sha256"] == meta["sha256"], f


def test_interrupted_in_process_run_resumes_identically(tmp_path, ledger):
    """Stop after an early checkpoint (step 5, between log lines) and resume: same files as one go."""
    cfg = TrainConfig.smoke(steps=30, eval_size=40)
    one = train(cfg, tmp_path / "one", progress=False).path
    two = tmp_path / "two"
    train(cfg, two, progress=False, stop_after=5)
    ledger.fault()  # interrupted after step 5
    assert not (two / "manifest.json").exists()
    assert torch.load(two / "last.pt", weights_only=False)["step"] == 5
    train(cfg, two, progress=False)
    ledger.rerun()
    for f in ("eval.csv", "train_log.csv"):
        assert sha256(one / f) == sha256(two / f), f
    for (_, a), (_, b) in zip(list_checkpoints(one), list_checkpoints(two)):
        assert sha256(a) == sha256(b), a.name


# -----------------------------------------------------------------------------
# resume after a real SIGKILL

@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_final_weights(tmp_path, ledger):
    args = ["train", "--task", "letter", "--scale", "smoke", "--steps", "400", "--checkpoint-every", "50",
            "--eval-size", "200", "--threads", str(THREADS), "--quiet"]
    ref_dir, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    env = CHILD_ENV
    ref = subprocess.Popen([*POSYM, *args, "--out", str(ref_dir)], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    victim = subprocess.Popen([*POSYM, *args, "--out", str(run_dir)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        target = ckpt_path(run_dir, 100)
        deadline = time.time() + 600
        while not target.exists():
            assert victim.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "no checkpoint at step 100 within 10 minutes"
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)
        ledger.fault()
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
    # really interrupted mid-way: no manifest, no final checkpoint, a resume state before the end
    assert not (run_dir / "manifest.json").exists()
    assert not ckpt_path(run_dir, 400).exists()
    state = torch.load(run_dir / "last.pt", weights_only=False)
    assert 50 <= state["step"] < 400
    resumed_from = state["step"]
    before = {p.name: (p.stat().st_mtime_ns, sha256(p)) for _, p in list_checkpoints(run_dir)}

    done = run_cli(*args, "--out", run_dir, timeout=900)
    assert done.returncode == 0, done.stderr
    out, err = ref.communicate(timeout=900)
    assert ref.returncode == 0, err.decode()

    # it resumed from last.pt: checkpoints up to that step were not rewritten
    for name, (mtime, digest) in before.items():
        if int(name[5:12]) <= resumed_from:
            p = run_dir / "checkpoints" / name
            assert p.stat().st_mtime_ns == mtime and sha256(p) == digest, name
    # ... and ends exactly where the uninterrupted run ends
    ledger.rerun()
    assert_same_weights(ckpt_path(ref_dir, 400), ckpt_path(run_dir, 400))
    assert [s for s, _ in list_checkpoints(ref_dir)] == [s for s, _ in list_checkpoints(run_dir)]
    for (_, a), (_, b) in zip(list_checkpoints(ref_dir), list_checkpoints(run_dir)):
        assert sha256(a) == sha256(b), a.name
    for f in ("eval.csv", "train_log.csv"):
        assert sha256(ref_dir / f) == sha256(run_dir / f), f
    assert pio.read_json(run_dir / "manifest.json")["complete"] is True
    ledger.rerun()  # the manifest's checksums recomputed
    assert cli_main(["verify", str(run_dir)]) == 0


# -----------------------------------------------------------------------------
# bad input

@pytest.mark.parametrize("make, field", [
    (lambda: TrainConfig(task="numbers"), "task"),
    (lambda: TrainConfig(model="huge"), "preset"),
    (lambda: TrainConfig.preset("huge"), "scale"),
    (lambda: TrainConfig(steps=0), "steps"),
    (lambda: TrainConfig(steps=-5), "steps"),
    (lambda: TrainConfig(batch_size=0), "batch_size"),
    (lambda: TrainConfig(checkpoint_every=0), "checkpoint_every"),
    (lambda: TrainConfig(train_size=432_001), "train_size"),
    (lambda: TrainConfig(train_size=0), "train_size"),
    (lambda: TrainConfig(eval_size=2401), "eval_size"),
    (lambda: TrainConfig(seed=-1), "seed"),
    (lambda: TrainConfig(lr=0.0), "lr"),
    (lambda: TrainConfig(warmup_steps=-1), "warmup_steps"),
    (lambda: TrainConfig(model_overrides={"n_layer": 0}), "n_layer"),
    (lambda: TrainConfig.from_dict({"task": "number", "stepz": 3}), "stepz"),
])
def test_bad_training_parameters_raise_value_error_naming_them(make, field, ledger):
    with ledger.raises(ValueError, match=field):
        make()


def test_corrupt_checkpoints_are_refused_naming_the_file(smoke_run, tmp_path, ledger):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    (run / "manifest.json").unlink()  # without a manifest, torch.load itself must notice
    p = ckpt_path(run, 50)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])  # truncated
    with ledger.raises(pio.ResultError, match=r"step_0000050\.pt.*corrupt", kind="fault"):
        load_checkpoint(p)
    p.write_bytes(b"not a checkpoint at all" * 100)  # garbage
    with ledger.raises(pio.ResultError, match=r"step_0000050\.pt", kind="fault"):
        load_checkpoint(p)
    q = run / "other.pt"
    torch.save({"weights": torch.zeros(3)}, q)  # a valid torch file, but not ours
    with ledger.raises(pio.ResultError, match=r"other\.pt.*not a posym checkpoint", kind="fault"):
        load_checkpoint(q)
    with ledger.raises(pio.ResultError, match="does not exist"):
        load_checkpoint(run / "checkpoints" / "step_9999999.pt")
    # analyze stops at the corrupt file and names it
    from posym.analyze import analyze_run
    with pytest.raises(pio.ResultError, match=r"step_0000050\.pt"):
        analyze_run(run, n_prompts=8, per_frequency=False, progress=False)


def test_flipped_byte_in_a_checkpoint_is_caught_by_the_manifest(smoke_run, tmp_path, ledger):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    p = ckpt_path(run, 100)
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0x01  # inside a tensor: torch.load alone would accept it
    p.write_bytes(bytes(b))
    with ledger.raises(pio.ResultError, match=r"step_0000100\.pt does not match its checksum", kind="fault"):
        load_checkpoint(p)


def test_checkpoint_from_another_config_is_refused(smoke_run, ledger):
    _, path = list_checkpoints(smoke_run)[-1]
    model, obj = load_checkpoint(path, expect_hash=TrainConfig.smoke(seed=0).hash())
    assert isinstance(model, GPTJ) and obj["step"] == 200
    other = TrainConfig.smoke(seed=3).hash()
    with ledger.raises(pio.ResultError, match=rf"step_0000200\.pt.*{other}", kind="fault"):
        load_checkpoint(path, expect_hash=other)


def test_corrupt_resume_state_is_refused(smoke_run, tmp_path, ledger):
    """With no readable earlier state, the error says what to run (not 'delete last.pt', which restarts from 0)."""
    cfg = TrainConfig.smoke(steps=30, eval_size=40)
    run = tmp_path / "run"
    train(cfg, run, progress=False, stop_after=10)
    (run / "last.pt").write_bytes(b"\x00" * 100)
    (run / "last.prev.pt").write_bytes(b"\x00" * 100)
    with ledger.raises(pio.ResultError, match=r"last\.pt and last\.prev\.pt .* is corrupt .* step 0: delete",
                       kind="fault"):
        train(cfg, run, progress=False)


def test_reusing_a_run_folder_with_another_config_changes_nothing(smoke_run, tmp_path, ledger):
    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    before = folder_checksums(run)
    with ledger.raises(pio.ResultError, match="already holds a run with config", kind="fault"):
        train(TrainConfig.smoke(task="number", seed=1), run, progress=False)
    with ledger.raises(pio.ResultError, match="already holds a run", kind="fault"):
        train(TrainConfig.smoke(task="number", seed=0, steps=300), run, progress=False)
    assert folder_checksums(run) == before
    # the same config again: the run is complete, nothing is redone or rewritten
    train(TrainConfig.smoke(task="number", seed=0), run, progress=False)
    assert folder_checksums(run) == before


def test_analyze_without_checkpoints_is_a_clear_error(tmp_path, ledger):
    from posym.analyze import analyze_run
    from posym.train import Run

    with ledger.raises(pio.ResultError, match="config.json"):
        analyze_run(tmp_path / "nothing here", progress=False)
    Run.create(tmp_path / "empty", TrainConfig.smoke())
    with ledger.raises(pio.ResultError, match="has no checkpoints"):
        analyze_run(tmp_path / "empty", progress=False)
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["config.json"]


# -----------------------------------------------------------------------------
# schedules and optimiser

def test_checkpoint_schedule_log_spaced_early_then_regular_then_last():
    paper = checkpoint_steps(6750, 50)
    assert paper[:8] == [0, 1, 2, 5, 10, 20, 50, 100]
    assert paper[-2:] == [6700, 6750]
    assert set(range(0, 6751, 50)) <= set(paper)
    assert len(paper) == 141 and paper == sorted(set(paper))
    assert checkpoint_steps(200, 50) == [0, 1, 2, 5, 10, 20, 50, 100, 150, 200]
    assert checkpoint_steps(230, 50)[-3:] == [150, 200, 230]  # the last step even off the grid
    assert checkpoint_steps(1000, 500) == [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert checkpoint_steps(7, 50) == [0, 1, 2, 5, 7]
    assert checkpoint_steps(1, 50) == [0, 1]


def test_lr_schedule_matches_transformers_linear_schedule_with_warmup(ledger):
    from transformers import get_linear_schedule_with_warmup

    for warmup, total in [(750, 6750), (20, 200), (0, 50)]:
        p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
        o1, o2 = torch.optim.AdamW([p1], lr=1e-4), torch.optim.AdamW([p2], lr=1e-4)
        ours = torch.optim.lr_scheduler.LambdaLR(o1, lr_lambda(warmup, total))
        hf = get_linear_schedule_with_warmup(o2, warmup, total)
        a, b = [], []
        for _ in range(total + 1):
            a.append(ours.get_last_lr()[0])
            b.append(hf.get_last_lr()[0])
            o1.step(), o2.step(), ours.step(), hf.step()
        ledger.rerun()
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-15, (warmup, total)
        assert a[-1] == 0.0 and max(a) == pytest.approx(1e-4)


def test_logged_learning_rate_follows_the_schedule(smoke_run, ledger):
    cfg = TrainConfig.smoke()
    log = pd.read_csv(smoke_run / "train_log.csv")
    f = lr_lambda(cfg.warmup_steps, cfg.steps)
    assert list(log["step"]) == list(range(10, 201, 10))
    ledger.rerun()  # the logged learning rates recomputed from the schedule
    for step, lr in zip(log["step"], log["lr"]):
        assert lr == pytest.approx(cfg.lr * f(step), rel=1e-12, abs=1e-15)
    assert log["loss"].notna().all()


def test_no_weight_decay_on_biases_and_layernorm_same_split_as_hf_trainer(ledger):
    from transformers import Trainer

    model = GPTJ(TrainConfig.paper().model_config())
    cfg = TrainConfig.paper()
    opt = make_optimizer(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    (g_decay, g_none) = opt.param_groups
    assert g_decay["weight_decay"] == 1e-4 and g_none["weight_decay"] == 0.0
    decay = {names[id(p)] for p in g_decay["params"]}
    no_decay = {names[id(p)] for p in g_none["params"]}
    assert decay.isdisjoint(no_decay) and decay | no_decay == set(names.values())
    assert all(n.endswith("bias") or ".ln_" in n or n.startswith("ln_") for n in no_decay)
    assert "wte.weight" in decay and "blocks.0.attn.q_proj.weight" in decay and "blocks.3.ln_1.weight" in no_decay
    hf_decay = set(Trainer.get_decay_parameter_names(None, model))  # the rule the authors' Trainer applied
    ledger.rerun()
    assert decay == hf_decay
    assert (opt.defaults["betas"], opt.defaults["lr"], opt.defaults["eps"]) == ((0.95, 0.999), 1e-4, 1e-8)


def test_paper_recipe():
    cfg = TrainConfig.paper()
    assert (cfg.steps, cfg.batch_size, cfg.lr, cfg.betas, cfg.weight_decay, cfg.warmup_steps, cfg.grad_clip) == \
        (6750, 64, 1e-4, (0.95, 0.999), 1e-4, 750, 1.0)
    assert cfg.train_size is None and cfg.steps * cfg.batch_size == 432_000  # one epoch


# -----------------------------------------------------------------------------
# manifest and verify

def test_complete_run_has_a_manifest_and_verify_catches_a_flipped_byte(smoke_run, tmp_path, capsys, ledger):
    man = pio.read_json(smoke_run / "manifest.json")
    assert man["complete"] is True
    assert man["config_hash"] == TrainConfig.smoke(seed=0).hash() == pio.read_json(smoke_run / "config.json")["config_hash"]
    assert man["seed"] == 0 and man["task"] == "number" and man["steps"] == 200
    assert len(man["git_commit"]) >= 40 or man["git_commit"] == "unknown"
    assert {"python", "torch", "numpy", "pandas", "posym"} <= set(man["versions"])
    assert man["versions"]["torch"] == torch.__version__
    listed = set(man["files"])
    assert {"config.json", "eval.csv", "train_log.csv", "last.pt"} <= listed
    assert {f"checkpoints/{p.name}" for _, p in list_checkpoints(smoke_run)} <= listed
    ledger.rerun()  # the manifest's checksums recomputed
    for f, meta in man["files"].items():
        assert meta["sha256"] == sha256(smoke_run / f) and meta["bytes"] == (smoke_run / f).stat().st_size
    # no temp files left behind by the atomic writes
    assert not [p for p in smoke_run.rglob(".*")]

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    ledger.rerun()  # posym verify recomputes them
    assert cli_main(["verify", str(tmp_path)]) == 0
    assert "ok" in capsys.readouterr().out
    p = run / "eval.csv"
    b = bytearray(p.read_bytes())
    b[5] ^= 0x20
    p.write_bytes(bytes(b))
    ledger.fault()
    assert cli_main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "eval.csv" in err and "checksum mismatch" in err and len(err.strip().splitlines()) == 1
    p.unlink()
    ledger.fault()
    assert cli_main(["verify", str(run)]) == 2
    assert "eval.csv: missing" in capsys.readouterr().err


def test_scale_overrides_apply_the_smoke_overrides_only_at_smoke():
    from posym.runs import scale_overrides

    assert scale_overrides("smoke", {"steps": 50}, {"lr": 0.1}) == {"lr": 0.1, "steps": 50}
    assert scale_overrides("teaching", {"steps": 50}, {"lr": 0.1}) == {"lr": 0.1}
    assert scale_overrides("paper", None, {}) == {}
