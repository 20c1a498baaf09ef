#!/usr/bin/env python
"""Positional and symbolic scores of every head of a local GGUF model on binding prompts -> data/llm/.

    python scripts/llm_scores.py                     # SmolLM2, the committed paper-scale run
    python scripts/llm_scores.py --prompts 16 --freq-prompts 8 --out /tmp/scores   # a quick look

The scores are computed by ``posym.scores`` (the library of ``posym scores``).  Writes ``<model>_scores.parquet``
(one row per layer and head: pos, sym, their sd over prompts, entropy, entropy_norm, kv_head, rope_base) on
``--prompts`` binding prompts (posym.llm.binding_prompts), and
``<model>_freq_scores.parquet`` (one row per layer, head and RoPE frequency: pos, sym, maxlogit, angle,
period) on the first ``--freq-prompts`` of them; records the run in ``<out>/manifest.json``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from llm_common import ROOT, update_manifest

from posym import adapters, io, llm, scores  # noqa: E402
from posym.metrics import TAU  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", choices=sorted(llm.MODELS))
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--freq-prompts", type=int, default=64)
    p.add_argument("--pairs", type=int, default=5, help="name-colour pairs per prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", type=int, default=1, help="leading positions left out of the swaps (the sink)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "data" / "llm")
    p.add_argument("--no-manifest", action="store_true", help="write the tables only (e.g. for a comparison)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    lm = llm.load(a.model)
    prompts = llm.binding_prompts(lm.tokenizer, a.prompts, n_pairs=a.pairs, seed=a.seed)
    ids = llm.encode_equal(lm.tokenizer, [q.text for q in prompts])
    acc = llm.next_token_accuracy(lm, ids, [q.answer for q in prompts])
    print(f"[scores] {len(ids)} prompts of {ids.shape[1]} tokens; next-token accuracy {acc:.3f}", flush=True)
    ad = adapters.Adapter(lm.model)
    sc = scores.score_ids(ad, ids, skip=a.skip, batch_size=32)
    table = scores.scores_table(sc, n_kv_heads=lm.n_kv_heads, model=a.model)
    table["rope_base"] = [llm.rope_parameters(lm, l).base for l in table["layer"]]
    table = table[["model", "layer", "head", "pos", "sym", "pos_sd", "sym_sd", "entropy", "entropy_norm", "kv_head",
                   "rope_base"]]
    a.out.mkdir(parents=True, exist_ok=True)
    io.atomic_write_table(a.out / f"{a.model}_scores.parquet", table)
    print(f"[scores] scores done ({time.time() - t0:.0f} s); {llm.correlation(table)}", flush=True)
    fsc = scores.score_ids(ad, ids[:a.freq_prompts], skip=a.skip, per_frequency=True, batch_size=16)
    ftable = scores.frequency_table(fsc, model=a.model)
    io.atomic_write_table(a.out / f"{a.model}_freq_scores.parquet", ftable)
    if a.no_manifest:
        return 0
    update_manifest(a.out, f"scores-{a.model}", {
        "command": "python scripts/llm_scores.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "model": lm.source.title, "package": lm.source.requirement, "weights": lm.source.quantization,
        "prompts": a.prompts, "freq_prompts": a.freq_prompts, "pairs": a.pairs, "seed": a.seed, "skip": a.skip,
        "tokens_per_prompt": int(ids.shape[1]), "tau": TAU, "next_token_accuracy": acc,
        "example_prompt": prompts[0].text, "wall_time_s": round(time.time() - t0, 1), "torch_threads": a.threads})
    print(f"[scores] done in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
