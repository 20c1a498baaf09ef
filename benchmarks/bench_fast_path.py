"""The training step's fast path (fused projections, SDPA) against the hooked path of the same model, timed in
alternating rounds in ONE process, so that a change of load during the run slows both alike.

    .venv/bin/python benchmarks/bench_fast_path.py --threads 2

An earlier run of bench_core.py, which then timed its variants one after another, printed the fast path at 0.56x
the hooked one with 2 threads on a loaded machine; this script checks such a result.  Writes
``benchmarks/results/fast-path-DATE-Nt.json`` (machine, load average, thread count, every round).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--steps", type=int, default=3, help="steps per variant and round")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from posym.model import GPTJ, ModelConfig
    from posym.tasks import TaskDataset, get_task
    from posym.train import TrainConfig, make_optimizer

    cfg = TrainConfig.paper()
    d = TaskDataset("number", "train", seed=0, size=64 * 4).arrays()
    xs, ys = torch.from_numpy(d["x"].copy()).view(4, 64, 17), torch.from_numpy(d["y"].copy()).view(4, 64)
    torch.manual_seed(0)
    model = GPTJ(ModelConfig.paper(len(get_task("number").vocab))).train()
    opt = make_optimizer(model, cfg)

    def step(fast: bool, i: int):
        loss = F.cross_entropy(model(xs[i % 4], last_only=True, fast=fast)[:, -1], ys[i % 4])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()

    load_before = os.getloadavg()
    times = {"fast": [], "hooked": []}
    for r in range(1 + a.rounds):  # round 0: warm-up
        for name in times:
            t0 = time.perf_counter()
            for i in range(a.steps):
                step(name == "fast", i)
            if r:
                times[name].append((time.perf_counter() - t0) / a.steps)
    f, h = statistics.median(times["fast"]), statistics.median(times["hooked"])
    res = {"machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                       "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
           "ms_per_step": {"fast": f * 1e3, "hooked": h * 1e3}, "speedup_fast_vs_hooked": h / f,
           "round_ratios": [b / a_ for a_, b in zip(times["fast"], times["hooked"])], "rounds_s": times}
    print(f"{a.threads} threads, load {load_before[0]:.2f}: fast {f * 1e3:.0f} ms/step, hooked {h * 1e3:.0f} ms/step "
          f"-> fast path {h / f:.2f}x (round ratios {min(res['round_ratios']):.2f}-{max(res['round_ratios']):.2f})")
    out = a.out or str(HERE / "results" / f"fast-path-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}-{a.threads}t.json")
    Path(out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"results -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
