"""Mixed precision benchmark: training step time of fp32 / bf16 / fp16 autocast (posym) against HF GPT-J, timed
alternately in ONE process, and the final training loss of each precision after the same number of steps.

    .venv/bin/python benchmarks/bench_precision.py                 # 1 thread (the per-seed setting of reproduce)
    .venv/bin/python benchmarks/bench_precision.py --threads 2

Step times: the paper config (batch 64 x 17, final-token loss, AdamW + clip); every variant has its own model and
optimizer from the same initial weights, and one round runs one step of every variant in turn, so a change of load
during the run slows every variant alike.  The medians over the rounds are compared.  Loss: ``posym.train.train``
on the ``smoke`` preset for ``--loss-steps`` steps (default 500) with each precision; the last logged training loss
(mean of the last 10 steps) and the final validation accuracy against fp32.

``posym_fp16`` is fp16 as ``posym train`` runs it on the CPU (half matrix products through float32 BLAS, rounded to
half: :func:`posym.train.half_gemms`); ``torch_fp16_kernels`` is the same autocast with torch's own CPU half kernels.

Writes ``benchmarks/results/precision-DATE-Nt.json`` with the machine, load average and thread count.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def cpu_flags() -> dict:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
    return {"cpu": model, "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags, "avx2": "avx2" in flags}


def bench_steps(rounds: int, warmup: int) -> dict:
    from posym.hf import to_hf
    from posym.model import GPTJ, ModelConfig
    from posym.tasks import TaskDataset, get_task
    import contextlib

    from posym.train import TrainConfig, _backward, half_gemms, make_optimizer, precision_context

    cfg = TrainConfig.paper(task="number")
    V = len(get_task("number").vocab)
    B, T, n_batches = cfg.batch_size, 17, 8
    data = TaskDataset("number", "train", seed=0, size=B * n_batches).arrays()
    xs = torch.from_numpy(data["x"].copy()).view(n_batches, B, T)
    ys = torch.from_numpy(data["y"].copy()).view(n_batches, B)
    torch.manual_seed(0)
    base = GPTJ(ModelConfig.paper(V)).train()

    def make(precision: str, hf: bool = False, torch_half_kernels: bool = False):
        """One training step of a fresh copy; ``torch_half_kernels``: fp16 with torch's own CPU half kernels
        instead of the float32 route of :func:`posym.train.half_gemms` (what ``posym train`` runs)."""
        model = to_hf(base, n_positions=128).train() if hf else copy.deepcopy(base).train()
        opt = make_optimizer(model, cfg)
        scaler = torch.amp.GradScaler("cpu") if precision == "fp16" else None
        fwd = (lambda x: model(x).logits[:, -1]) if hf else (lambda x: model(x, last_only=True)[:, -1])
        it = [0]

        def step():
            i = it[0] % n_batches
            it[0] += 1
            forward = torch.autocast("cpu", dtype=torch.float16) if torch_half_kernels \
                else precision_context(precision, "cpu")
            with forward:
                logits = fwd(xs[i])
            loss = F.cross_entropy(logits.float(), ys[i])
            opt.zero_grad(set_to_none=True)
            with contextlib.nullcontext() if torch_half_kernels else half_gemms(precision, "cpu"):
                _backward(loss, model, opt, scaler, cfg.grad_clip)
        return step

    variants = {"posym_fp32": make("fp32"), "posym_bf16": make("bf16"), "posym_fp16": make("fp16"),
                "torch_fp16_kernels": make("fp16", torch_half_kernels=True),
                "hf_fp32": make("fp32", hf=True), "hf_bf16": make("bf16", hf=True)}
    times = {k: [] for k in variants}
    for r in range(warmup + rounds):
        for k, step in variants.items():
            t0 = time.perf_counter()
            step()
            if r >= warmup:
                times[k].append(time.perf_counter() - t0)
    res = {k: {"ms_median": statistics.median(v) * 1e3, "ms_min": min(v) * 1e3, "ms_max": max(v) * 1e3}
           for k, v in times.items()}
    f32 = res["posym_fp32"]["ms_median"]
    res["speedup_vs_posym_fp32"] = {k: f32 / v["ms_median"] for k, v in res.items()
                                    if k.startswith("posym") or k.startswith("torch")}
    res["speedup_vs_hf_fp32"] = {k: res["hf_fp32"]["ms_median"] / res[k]["ms_median"]
                                 for k in ("posym_fp32", "posym_bf16", "posym_fp16", "hf_bf16")}
    res["rounds"], res["config"] = rounds, "paper model, batch 64 x 17, final-token loss, AdamW + clip"
    return res


def bench_loss(steps: int, threads: int) -> dict:
    import pandas as pd

    from posym.train import TrainConfig, train

    out = {"preset": "smoke", "task": "number", "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16", "fp16"):
            cfg = TrainConfig.smoke(task="number", seed=0, steps=steps, precision=precision)
            t0 = time.perf_counter()
            run = train(cfg, Path(tmp) / precision, progress=False, threads=threads)
            wall = time.perf_counter() - t0
            log = pd.read_csv(run.path / "train_log.csv")
            ev = pd.read_csv(run.path / "eval.csv")
            acc = ev[(ev["step"] == steps) & (ev["hop"].astype(str) == "all")]["accuracy"].iloc[0]
            out[precision] = {"final_loss": float(log["loss"].iloc[-1]), "final_val_accuracy": float(acc),
                              "wall_s": wall}
    for p in ("bf16", "fp16"):
        out[p]["loss_minus_fp32"] = out[p]["final_loss"] - out["fp32"]["final_loss"]
        out[p]["accuracy_minus_fp32"] = out[p]["final_val_accuracy"] - out["fp32"]["final_val_accuracy"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--rounds", type=int, default=20, help="timed rounds (one step of every variant each)")
    ap.add_argument("--loss-steps", type=int, default=500, help="training steps of the loss comparison (smoke preset)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["steps", "loss"])
    ap.add_argument("--out", default=None, help="results file (default: benchmarks/results/precision-DATE-Nt.json)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = a.out or str(HERE / "results" / f"precision-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}-{a.threads}t.json")
    load_before = os.getloadavg()
    res = {"machine": {**cpu_flags(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                       "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                       "python": platform.python_version(), "loadavg_before": load_before}}
    m = res["machine"]
    print(f"posym precision benchmark: {m.get('cpu')}, {os.cpu_count()} CPUs (avx512_bf16: {m.get('avx512_bf16')}, "
          f"torch kernels: {m['cpu_capability']}), torch {torch.__version__}, {a.threads} threads; "
          f"load average before: {load_before[0]:.2f}")
    t0 = time.time()
    if "steps" not in a.skip:
        st = res["steps"] = bench_steps(a.rounds, warmup=3)
        print(f"\ntraining step ({st['config']}), median of {st['rounds']} alternating rounds:")
        for k in ("posym_fp32", "posym_bf16", "posym_fp16", "torch_fp16_kernels", "hf_fp32", "hf_bf16"):
            v = st[k]
            extra = (f"  {st['speedup_vs_posym_fp32'][k]:.2f}x vs posym fp32" if k in st["speedup_vs_posym_fp32"] else "")
            extra += f"  {st['speedup_vs_hf_fp32'][k]:.2f}x vs HF fp32" if k in st["speedup_vs_hf_fp32"] else ""
            print(f"  {k:18s} {v['ms_median']:8.1f} ms/step [{v['ms_min']:.1f}-{v['ms_max']:.1f}]{extra}")
    if "loss" not in a.skip:
        lo = res["loss"] = bench_loss(a.loss_steps, a.threads)
        print(f"\nfinal training loss after {lo['steps']} steps ({lo['preset']} preset, {lo['task']}, seed 0):")
        for p in ("fp32", "bf16", "fp16"):
            v = lo[p]
            diff = (f"  loss {v['loss_minus_fp32']:+.4f}, accuracy {v['accuracy_minus_fp32']:+.4f} vs fp32"
                    if p != "fp32" else "")
            print(f"  {p}: loss {v['final_loss']:.4f}, validation accuracy {v['final_val_accuracy']:.4f} "
                  f"({v['wall_s']:.1f} s){diff}")
    load_after = os.getloadavg()
    res["machine"]["loadavg_after"] = load_after
    res["machine"]["busy"] = max(load_before[0], load_after[0]) > 1.5
    res["wall_seconds"] = time.time() - t0
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}"
          + ("  WARNING: the machine was busy; times are inflated, ratios (alternating) still compare"
             if res["machine"]["busy"] else "  (quiet)"))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"results -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
