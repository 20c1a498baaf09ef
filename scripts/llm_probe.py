#!/usr/bin/env python
"""Paper 2's 1-hop LLM probe (Tables 2-3, Fig. 5C/D) on a local GGUF model -> data/llm/probe.csv.

    python scripts/llm_probe.py                               # SmolLM2, the committed paper-scale run
    python scripts/llm_probe.py --lengths 12,24 --prompts 5 --seeds 0 --out /tmp/probe   # a quick look

For every seed, task (number, letter) and window length, ``--prompts`` fresh prompts (posym.llm.probe_items)
are answered greedily (posym.llm.probe). One row per prompt: model, seed, task, length, item, answer_pos,
answer, pred, correct. Finished cells are kept in ``<out>/.probe-<model>.partial.csv``, so an interrupted run
resumes where it stopped. At the end the table is written to ``<out>/probe.csv`` (rows of other models kept)
and ``<out>/manifest.json`` records the run. One torch thread is the fastest on a busy 2-core machine.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from llm_common import ROOT, parse_ints, update_manifest

from posym import io, llm  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", choices=sorted(llm.MODELS))
    p.add_argument("--lengths", default=",".join(map(str, llm.PROBE_LENGTHS)))
    p.add_argument("--prompts", type=int, default=20, help="prompts per (seed, task, length)")
    p.add_argument("--seeds", default="0-4", help="fresh prompt sets, like the paper's 5 runs")
    p.add_argument("--tasks", default="number,letter")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "data" / "llm")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    lengths, seeds, tasks = parse_ints(a.lengths), parse_ints(a.seeds), a.tasks.split(",")
    a.out.mkdir(parents=True, exist_ok=True)
    partial = a.out / f".probe-{a.model}.partial.csv"
    done = pd.read_csv(partial) if partial.exists() else pd.DataFrame()
    t0 = time.time()
    lm = llm.load(a.model)
    print(f"[probe] {lm.source.title} loaded in {time.time() - t0:.0f} s", flush=True)
    frames = [done] if len(done) else []
    have = set(map(tuple, done[["seed", "task", "length"]].drop_duplicates().to_numpy())) if len(done) else set()
    # short prompts first, so a partial run already covers every length of the first seeds
    for seed in seeds:
        for length in lengths:
            for task in tasks:
                if (seed, task, length) in have:
                    continue
                t = time.time()
                df = llm.probe(lm, task, llm.probe_items(task, length, a.prompts, seed), batch_size=a.batch_size)
                df.insert(0, "seed", seed)
                df.insert(0, "model", a.model)
                frames.append(df)
                io.atomic_write_table(partial, pd.concat(frames, ignore_index=True))
                print(f"[probe] seed {seed} {task:6s} length {length:3d}: accuracy {df['correct'].mean():.3f} "
                      f"({time.time() - t:.0f} s)", flush=True)
    res = pd.concat(frames, ignore_index=True)
    res = res[res["seed"].isin(seeds) & res["length"].isin(lengths) & res["task"].isin(tasks)]
    out_csv = a.out / "probe.csv"
    if out_csv.exists():
        old = pd.read_csv(out_csv)
        res = pd.concat([old[old["model"] != a.model], res], ignore_index=True)
    io.atomic_write_table(out_csv, res)
    update_manifest(a.out, f"probe-{a.model}", {
        "command": "python scripts/llm_probe.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "model": lm.source.title, "package": lm.source.requirement, "weights": lm.source.quantization,
        "lengths": lengths, "prompts_per_cell": a.prompts, "seeds": seeds, "tasks": tasks,
        "decoding": "greedy; correct iff greedy decoding yields exactly the answer's tokens",
        "wall_time_s": round(time.time() - t0, 1), "torch_threads": a.threads})
    partial.unlink(missing_ok=True)
    print(llm.probe_summary(res[res["model"] == a.model]).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
