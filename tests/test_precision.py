"""Mixed precision (``--precision fp32|bf16|fp16``): the default leaves every config, hash and number as it was."""
from __future__ import annotations

import contextlib
import json

import pandas as pd
import pytest
import torch

from posym.train import PRECISIONS, TrainConfig, list_checkpoints, precision_context, train

from conftest import REPO, run_cli


def test_fp32_is_left_out_of_the_config_and_its_hash():
    cfg = TrainConfig.paper(task="number")
    assert "precision" not in cfg.to_dict() and cfg.precision == "fp32"
    assert TrainConfig.paper(task="number", precision="fp32").hash() == cfg.hash()
    assert TrainConfig.paper(task="number", precision="bf16").hash() != cfg.hash()
    assert TrainConfig.from_dict(TrainConfig.paper(precision="fp16").to_dict()).precision == "fp16"


def test_every_committed_run_keeps_its_config_and_hash():
    configs = [p for p in (REPO / "data").rglob("config.json") if "train" in json.loads(p.read_text())]
    assert configs
    for p in configs:
        d = json.loads(p.read_text())
        cfg = TrainConfig.from_dict(d["train"])
        assert cfg.hash() == d["config_hash"] and cfg.to_dict() == d["train"], p


def test_unknown_precision_is_refused(ledger):
    with ledger.raises(ValueError, match="precision"):
        TrainConfig.smoke(precision="fp8")
    with ledger.raises(ValueError, match="precision"):
        precision_context("half")
    p = run_cli("train", "--task", "number", "--precision", "fp64", "--out", "unused")
    ledger.bad_input()
    assert p.returncode == 2 and "--precision" in p.stderr


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_close_to_fp32(precision, tmp_path):
    """A few smoke steps: the run records its precision, and its loss follows the fp32 run's closely."""
    kw = dict(task="number", seed=0, steps=20, train_size=640, eval_size=100, checkpoint_every=10)
    ref = train(TrainConfig.smoke(**kw), tmp_path / "fp32", progress=False)
    run = train(TrainConfig.smoke(precision=precision, **kw), tmp_path / precision, progress=False)
    assert json.loads((run.path / "config.json").read_text())["train"]["precision"] == precision
    a, b = (pd.read_csv(r.path / "train_log.csv")["loss"] for r in (ref, run))
    assert (a - b).abs().max() < 0.05, (a.tolist(), b.tolist())
    w = torch.load(list_checkpoints(run.path)[-1][1], weights_only=True)["state_dict"]
    assert all(t.dtype == torch.float32 for t in w.values())  # weights stay float32
    assert set(PRECISIONS) == {"fp32", "bf16", "fp16"}


def _half_operands(op: str, gen: torch.Generator) -> tuple:
    """Random half operands of one matrix-product op (with a bias/input term where it has one)."""
    def r(*shape):
        return torch.randn(*shape, generator=gen).half()
    return {"mm": lambda: (r(96, 128), r(128, 80)),
            "addmm": lambda: (r(80), r(96, 128), r(128, 80)),
            "bmm": lambda: (r(4, 24, 64), r(4, 64, 24)),
            "baddbmm": lambda: (r(4, 24, 24), r(4, 24, 64), r(4, 64, 24))}[op]()


@pytest.mark.parametrize("op", ["mm", "addmm", "bmm", "baddbmm"])
def test_half_gemms_are_float32_products_rounded_once(op):
    """fp16 on the CPU: a half matrix product is float32 BLAS on the half operands, rounded once to half -- the
    value torch's own (slow) half kernel computes, up to one unit in the last place (and float32 accumulation error
    where terms cancel) from the order of additions."""
    from posym.train import HalfGemmsInFloat32

    f = getattr(torch, op)
    args = _half_operands(op, torch.Generator().manual_seed(0))
    native = f(*args)
    with HalfGemmsInFloat32():
        routed = f(*args)
    assert routed.dtype == torch.float16
    assert torch.equal(routed, f(*(a.float() for a in args)).half())
    big = torch.maximum(native.float().abs(), routed.float().abs()).clamp_min(2 ** -14)
    ulp = torch.finfo(torch.float16).eps * 2.0 ** torch.floor(torch.log2(big))
    summed = f(*(a.float().abs() for a in args))  # float32 accumulation errors scale with the summed magnitudes
    assert ((routed.float() - native.float()).abs() <= ulp + summed * 2.0 ** -16).all()
    assert (routed == native).float().mean() > 0.95


def test_fp16_routes_forward_and_backward_matmuls_on_the_cpu(monkeypatch):
    """Every matrix product of an fp16 training step, the backward pass's included, takes the float32 route;
    the gradients then differ from those of torch's own half kernels by less than fp32's gradients do."""
    from posym.model import GPTJ, ModelConfig
    from posym.train import HalfGemmsInFloat32, half_gemms

    seen = []
    route = HalfGemmsInFloat32.__torch_dispatch__

    def counting(self, func, types, args=(), kwargs=None):
        if func in self.OPS and args[-1].dtype == torch.float16:
            seen.append(func)
        return route(self, func, types, args, kwargs)

    monkeypatch.setattr(HalfGemmsInFloat32, "__torch_dispatch__", counting)
    torch.manual_seed(0)
    model = GPTJ(ModelConfig.smoke(vocab_size=40, attn_pdrop=0.0, resid_pdrop=0.0))
    x = torch.randint(0, 40, (32, 17))

    def grads(forward, backward) -> torch.Tensor:
        model.zero_grad()
        with forward:
            logits = model(x)[:, -1]
        n_forward = len(seen)
        with backward:  # a scaled loss, as the gradient scaler does, so that no half gradient underflows
            (logits.float().logsumexp(-1).mean() * 1024.0).backward()
        return torch.cat([p.grad.flatten() / 1024.0 for p in model.parameters()]), n_forward

    g_routed, n_forward = grads(precision_context("fp16"), half_gemms("fp16"))
    assert n_forward > 0 and len(seen) - n_forward >= n_forward  # each forward product has 1-2 backward ones
    seen.clear()
    g_native, _ = grads(torch.autocast("cpu", dtype=torch.float16), contextlib.nullcontext())
    g_fp32, _ = grads(contextlib.nullcontext(), contextlib.nullcontext())
    assert not seen  # torch's own kernels: nothing routed
    assert isinstance(half_gemms("fp16", "cuda"), contextlib.nullcontext)  # a GPU keeps its own half kernels
    err = lambda g: ((g - g_native).norm() / g_native.norm()).item()  # noqa: E731
    assert err(g_routed) < err(g_fp32), (err(g_routed), err(g_fp32))
