#!/usr/bin/env python
"""Time and peak memory of the length-generalisation evaluation on CPU: fast path vs hooked (manual) path.

    python benchmarks/bench_length.py                      # 500 prompts (fast) at 1,000 and 5,000 tokens
    python benchmarks/bench_length.py --quick              # fewer prompts; times are also scaled to 500 prompts
    python benchmarks/bench_length.py --lengths 1000 --n-fast 100 --n-hooked 12
    python benchmarks/bench_length.py --remedies --lengths 5000 --n-fast 4   # cost of each RoPE remedy vs untreated

Two ways to compute the accuracy of a model on prompts lengthened by prepended target-window tokens:

* **fast** -- as in :func:`posym.longprompts.accuracy_at_length`: batched (about 60,000 tokens per forward pass),
  fused q/k/v projections and ``scaled_dot_product_attention`` (no T x T matrix is materialised), and only the
  last query's row in the final block;
* **hooked** -- the same batches through the model's hookable path (``fast=False``, what runs whenever a hook
  is attached, e.g. by ``run_with_cache``): every layer forms the full (B, H, T, T) score and attention matrices.

Each setting runs in a fresh subprocess, because peak resident memory (``ru_maxrss``) only ever grows within a
process, and ``tracemalloc`` does not see torch's allocations.  We report the process's peak RSS and its
increase over the RSS right before the evaluation (model loaded, prompts built): that increase is the memory
the evaluation itself needs.  The model is the committed paper-scale Number model (seed 0) when it exists, else
an untrained model of the paper's configuration (same cost).  The machine's load average is printed with
every setting: on a shared machine, times are only comparable within one run of this script.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "data" / "paper" / "number-s0" / "final.pt"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def worker(args) -> dict:
    import torch

    from posym import longprompts as LG
    from posym.model import GPTJ, ModelConfig
    from posym.tasks import get_task, to_tensors

    if args.threads:
        torch.set_num_threads(args.threads)
    task = get_task(args.task)
    if Path(args.model).exists():
        from posym.train import load_checkpoint
        model = load_checkpoint(args.model)[0]
        source = str(Path(args.model).relative_to(ROOT)) if Path(args.model).is_relative_to(ROOT) else args.model
    else:
        torch.manual_seed(0)
        model = GPTJ(ModelConfig.paper(len(task.vocab))).eval()
        source = "untrained ModelConfig.paper()"
    model.eval()
    samples = LG.extended_prompts(args.task, 0, args.length, args.n)
    x, y, _ = to_tensors(samples, task.vocab)
    bs = args.batch or LG.auto_batch(args.length, "cpu")
    base = rss_mb()
    t0 = time.perf_counter()
    fast = args.path == "fast"
    with torch.no_grad():  # the loop of longprompts.accuracy_at_length, with the prompts built beforehand
        preds = [model(x[i:i + bs], last_only=True, fast=fast)[:, -1].argmax(-1) for i in range(0, len(x), bs)]
    acc = float((torch.cat(preds) == y).float().mean())
    seconds = time.perf_counter() - t0
    return {"path": args.path, "length": args.length, "n": args.n, "batch": min(bs, args.n), "seconds": seconds,
            "s_per_prompt": seconds / args.n, "rss_before_mb": base, "peak_rss_mb": rss_mb(),
            "eval_mb": rss_mb() - base, "accuracy": acc, "threads": torch.get_num_threads(),
            "load": os.getloadavg()[0], "model": source}


def remedy_rounds(args) -> list[dict]:
    """Seconds per prompt of the fast evaluation under each RoPE remedy (``posym.chapters.remedies``) and untreated,
    on the same prompts, in alternating rounds in one process (so every remedy sees the same load); the ratio to
    the untreated model is taken per round and the best round's time reported.  CPU time (``process_time``) is
    reported too: on a loaded machine it is the comparable number (wall time depends on the other processes)."""
    import torch

    from posym import io as pio
    from posym import longprompts as LG
    from posym.chapters import remedies as R
    from posym.tasks import get_task, to_tensors
    from posym.train import load_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_checkpoint(args.model)[0].eval()
    fs = Path(args.model).parent / "freq_scores.parquet"
    freqs = R.used_frequencies(pio.read_table(fs)) if fs.exists() else [[0]] * model.cfg.n_layer
    rows = []
    for L in args.lengths:
        x, y, _ = to_tensors(LG.extended_prompts(args.task, 0, L, args.n_fast), get_task(args.task).vocab)
        bs = args.batch or LG.auto_batch(L, "cpu")
        times: dict[str, list[float]] = {r: [] for r in R.INFERENCE_REMEDIES}
        cpu: dict[str, list[float]] = {r: [] for r in R.INFERENCE_REMEDIES}
        for _ in range(args.rounds):
            for remedy in R.INFERENCE_REMEDIES:
                model.set_rope_scaling(R.remedy_scaling(remedy, L, freqs))
                t0, c0 = time.perf_counter(), time.process_time()
                with torch.no_grad():
                    for i in range(0, len(x), bs):
                        model(x[i:i + bs], last_only=True, fast=True)
                times[remedy].append((time.perf_counter() - t0) / len(x))
                cpu[remedy].append((time.process_time() - c0) / len(x))
        model.set_rope_scaling(None)
        for remedy, ts in times.items():
            ratios = [t / u for t, u in zip(ts, times["none"])]
            cs = cpu[remedy]
            rows.append({"length": L, "remedy": remedy, "n": len(x), "rounds": args.rounds,
                         "cpu_s_per_prompt": min(cs), "cpu_ratio_to_untreated": min(cs) / min(cpu["none"]),
                         "s_per_prompt": min(ts), "ratio_to_untreated": min(ratios) if remedy != "none" else 1.0,
                         "ratio_median": sorted(ratios)[len(ratios) // 2], "threads": torch.get_num_threads(),
                         "load": os.getloadavg()[0]})
            print(f"L={L:5d} {remedy:5s}: CPU {min(cs):.3f} s/prompt (x{rows[-1]['cpu_ratio_to_untreated']:.3f} of "
                  f"untreated); wall {min(ts):.3f} s/prompt, x{rows[-1]['ratio_to_untreated']:.3f} of untreated "
                  f"(best round; median x{rows[-1]['ratio_median']:.3f}), load {rows[-1]['load']:.1f}", flush=True)
    return rows


def run_setting(path: str, length: int, n: int, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--path", path, "--length", str(length), "--n", str(n),
           "--task", args.task, "--model", str(args.model)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"worker failed ({path}, {length}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--n-fast", type=int, default=500, help="prompts for the fast path (a multiple of 4)")
    ap.add_argument("--n-hooked", type=int, nargs="+", default=None,
                    help="prompts for the hooked path, one per length or one for all (a multiple of 4; default: "
                         "one full batch, as many prompts as the fast path puts in one forward pass)")
    ap.add_argument("--quick", action="store_true", help="two batches on the fast path instead of 500 prompts")
    ap.add_argument("--task", default="number")
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--batch", type=int, default=None, help="prompts per forward pass (default: longprompts.auto_batch)")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    ap.add_argument("--remedies", action="store_true",
                    help="time each RoPE remedy against the untreated model (fast path, --n-fast prompts)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of --remedies")
    # worker mode (one setting in a fresh process)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--path", choices=("fast", "hooked"), help=argparse.SUPPRESS)
    ap.add_argument("--length", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.remedies:
        rows = remedy_rounds(args)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
        return 0
    from posym.longprompts import auto_batch

    batch = {L: args.batch or auto_batch(L, "cpu") for L in args.lengths}
    n_fast = {L: (2 * batch[L] if args.quick else args.n_fast) for L in args.lengths}
    n_hooked = args.n_hooked or [batch[L] for L in args.lengths]
    if len(n_hooked) not in (1, len(args.lengths)):
        ap.error("--n-hooked takes one value or one per length")
    if len(n_hooked) == 1:
        n_hooked = n_hooked * len(args.lengths)

    rows = []
    for L, nh in zip(args.lengths, n_hooked):
        for path, n in (("fast", n_fast[L]), ("hooked", nh)):
            r = run_setting(path, L, n, args)
            rows.append(r)
            print(f"{path:6s} L={L:5d} n={n:4d} batch={r['batch']:3d}: {r['seconds']:8.1f} s "
                  f"({r['s_per_prompt']:.3f} s/prompt), peak RSS {r['peak_rss_mb']:7.0f} MB "
                  f"(+{r['eval_mb']:.0f} MB for the evaluation), load {r['load']:.1f}", flush=True)
    print(f"\nmodel: {rows[0]['model']}; torch threads: {rows[0]['threads']}; task: {args.task}")
    print(f"{'length':>6} | {'fast: s / 500 prompts':>21} | {'hooked: s / 500 prompts':>23} | {'time ratio':>10} | "
          f"{'fast MB / prompt in batch':>25} | {'hooked MB / prompt in batch':>27} | {'memory ratio':>12}")
    for L in args.lengths:
        f = next(r for r in rows if r["length"] == L and r["path"] == "fast")
        h = next(r for r in rows if r["length"] == L and r["path"] == "hooked")
        f500, h500 = 500 * f["s_per_prompt"], 500 * h["s_per_prompt"]
        fm, hm = f["eval_mb"] / f["batch"], h["eval_mb"] / h["batch"]
        print(f"{L:>6} | {f500:>20.0f}{' ' if f['n'] == 500 else '*'} | {h500:>22.0f}{' ' if h['n'] == 500 else '*'} | "
              f"{h500 / f500:>10.1f} | {fm:>25.1f} | {hm:>27.1f} | {hm / max(fm, 1e-9):>12.1f}")
    print("* scaled to 500 prompts from the prompts measured (time is linear in the number of batches).\n"
          "Memory: increase of the process's peak RSS during the evaluation, divided by the prompts in one forward "
          "pass (it is set by one batch, not by the number of prompts).")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
