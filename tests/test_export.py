"""posym export-hf / import-hf: a trained checkpoint as a Hugging Face GPTJForCausalLM folder, loaded offline."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

from posym import cli
from posym.export import export_hf, import_hf
from posym.tasks import balanced_eval_set, get_task, to_tensors
from posym.train import ckpt_path, load_checkpoint

PAPER_RUN = Path(__file__).resolve().parents[1] / "data" / "paper" / "number-s0"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 20-step smoke-model run (seconds), with checkpoints at 0, 1, 2, 5, 10, 20."""
    from posym.train import TrainConfig, train

    out = tmp_path_factory.mktemp("export") / "number-s0"
    train(TrainConfig.smoke(task="number", seed=0, steps=20, train_size=640, eval_size=100, checkpoint_every=10),
          out, progress=False)
    return out


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(self, address, *a, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access to {address} while loading an exported model")
        return real(self, address, *a, **k)

    real = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def load_hf(folder):
    from transformers import AutoTokenizer, GPTJForCausalLM

    return GPTJForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def compare(model, hf, tok, task: str, n: int = 24, extra: int = 0):
    """Max |logit difference| on held-out prompts tokenised by the exported tokenizer; HF's predictions."""
    t = get_task(task)
    samples = balanced_eval_set(t, n, seed=0, split="test")
    if extra:
        import numpy as np
        samples = [t.extend_target_window(s, extra, np.random.default_rng(0)) for s in samples]
    x, y, _ = to_tensors(samples, t.vocab)
    ids = tok([" ".join(s.tokens) for s in samples], return_tensors="pt").input_ids
    assert torch.equal(ids, x), "the exported tokenizer does not give posym's token ids"
    with torch.no_grad():
        ref = model(x)
        got = hf(ids).logits
    return (ref - got).abs().max().item(), ref.abs().max().item(), got[:, -1].argmax(-1), y, tok


@pytest.mark.skipif(not (PAPER_RUN / "final.pt").exists(), reason="data/paper/number-s0/final.pt not present")
def test_paper_checkpoint_exports_and_gives_the_same_logits(tmp_path, offline, ledger):
    out = export_hf(PAPER_RUN, tmp_path / "number-hf")
    for f in ("config.json", "model.safetensors", "tokenizer.json", "README.md", "posym.json"):
        assert (out / f).is_file(), f
    hf, tok = load_hf(out)
    assert type(hf).__name__ == "GPTJForCausalLM" and hf.config.n_layer == 12 and hf.config.rotary_dim == 128
    model, _ = load_checkpoint(PAPER_RUN / "final.pt")
    diff, scale, pred, y, tok = compare(model, hf, tok, "number")
    ledger.rerun()
    print(f"\npaper Number model: max |logit| {scale:.1f}, max abs diff ours vs exported {diff:.2e}")
    assert scale > 1.0 and diff < 1e-5 * max(1.0, scale)
    assert (pred == y).float().mean() >= 0.95  # the trained model answers, through transformers
    assert tok.decode(pred[:1]) == get_task("number").vocab.tokens[int(y[0])]
    # A long prompt (617 tokens) agrees to 1e-4: transformers computes the RoPE angles position x frequency
    # in float32, posym in float64 (posym.rope.rope_cos_sin), so the angles drift apart by ~1e-7 x position.
    diff_long, scale_long, pred_long, _, _ = compare(model, hf, tok, "number", n=8, extra=600)
    ledger.rerun()
    print(f"617-token prompts: max abs diff {diff_long:.2e} (max |logit| {scale_long:.1f})")
    assert diff_long < 1e-4 * max(1.0, scale_long), diff_long
    with torch.no_grad():
        x = to_tensors([get_task("number").extend_target_window(s, 600, __import__("numpy").random.default_rng(0))
                        for s in balanced_eval_set(get_task("number"), 8, seed=0, split="test")],
                       get_task("number").vocab)[0]
        assert torch.equal(model(x)[:, -1].argmax(-1), pred_long)


def test_run_folder_step_export_and_round_trip(tiny_run, tmp_path, offline, capsys, ledger):
    rc = cli.main(["export-hf", str(tiny_run), "--out", str(tmp_path / "hf"), "--step", "10"])
    assert rc == 0, capsys.readouterr().err
    assert "GPTJForCausalLM" in capsys.readouterr().out
    hf, tok = load_hf(tmp_path / "hf")
    model, obj = load_checkpoint(ckpt_path(tiny_run, 10))
    diff, scale, *_ = compare(model, hf, tok, "number")
    ledger.rerun()
    assert diff < 1e-5 * max(1.0, scale), diff
    # back into posym: same weights, and the run's config hash is kept
    rc = cli.main(["import-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "back.pt")])
    assert rc == 0
    back, obj_back = load_checkpoint(tmp_path / "back.pt", expect_hash=obj["config_hash"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_export_errors_are_clear(tiny_run, tmp_path, capsys, ledger):
    ledger.bad_input()
    assert cli.main(["export-hf", str(tmp_path / "nothing")]) == 2
    assert "neither a run folder nor a checkpoint file" in capsys.readouterr().err
    ledger.bad_input()
    assert cli.main(["export-hf", str(tiny_run), "--step", "7", "--out", str(tmp_path / "x")]) == 2
    assert "has no checkpoint for step 7" in capsys.readouterr().err
