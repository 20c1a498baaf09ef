"""Length-generalisation remedies: the sweeps behind the chapter ``book/remedies.md``.

    python scripts/remedy_sweep.py inference            # RoPE remedies on the committed seed-0 paper models
    python scripts/remedy_sweep.py training             # teaching-scale Number models trained with each remedy
    python scripts/remedy_sweep.py manifest             # (re)write data/remedies/manifest.json only
    python scripts/remedy_sweep.py inference --smoke --out /tmp/rem   # seconds: two lengths, 8 prompts

``inference`` loads ``data/paper/{number,letter}-s0/final.pt`` (only seed 0's checkpoints are committed) and, for
every remedy of ``posym.chapters.remedies.INFERENCE_REMEDIES`` and every length, evaluates the accuracy on the
same hop-balanced lengthened prompts (``posym.longprompts.extended_prompts``, seed 0); at a few lengths it also
computes the per-layer s_pos/s_sym of the last query, and for every length the key heads' margins predicted from
17-token prompts under the remedied rotation and Theorem 3.2's worst-case margin of the constructions.  Writes
OUT/inference_accuracy.csv, inference_scores.csv, predicted.csv, constructions.csv, frequencies.json.

``training`` trains ``TrainConfig.teaching("number", seed)`` with each remedy of ``TRAIN_REMEDIES`` (seed-major
order, one torch thread, runs in ``runs/remedies/``; a finished run is read back) and writes
OUT/training_length.csv, training_scores.csv, training_runs.csv.

Every command ends by writing OUT/manifest.json (configuration, git commit, versions, machine, checksums of every
file), which ``posym verify`` checks.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bookutil import parse_seeds  # noqa: E402
from posym import io as pio  # noqa: E402
from posym.chapters import remedies as R  # noqa: E402

INFER_LENGTHS = (17, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000)
SCORE_LENGTHS = (100, 1000)  # the committed sweep has 100 only (CPU time)
PRED_LENGTHS = INFER_LENGTHS


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)



def write(out: Path, name: str, df: pd.DataFrame) -> None:
    pio.atomic_write_text(out / name, df.to_csv(index=False))


def run_inference(a) -> dict:
    from posym.train import load_checkpoint

    paper = ROOT / "data" / "paper"
    models = {t: load_checkpoint(paper / f"{t}-s0" / "final.pt")[0] for t in a.tasks}
    freqs = {t: R.used_frequencies(pio.read_table(paper / f"{t}-s0" / "freq_scores.parquet")) for t in a.tasks}
    pio.atomic_write_json(a.out / "frequencies.json", {"threshold": R.FREQ_THRESHOLD, "freqs": freqs})
    lengths = (17, 100) if a.smoke else tuple(a.lengths or INFER_LENGTHS)
    score_lengths = (100,) if a.smoke else tuple(SCORE_LENGTHS if a.score_lengths is None else a.score_lengths)
    n = 8 if a.smoke else a.n
    key = {}
    preds = []
    for t, m in models.items():  # key heads: as the length chapter picks them, from 17-token prompts
        base = LG_margin(m, t, n=a.n_static if not a.smoke else 16)
        key[t] = base
    for t, m in models.items():
        if a.skip_predicted:
            break
        for remedy in R.INFERENCE_REMEDIES:
            preds.append(R.predicted_margins(m, t, remedy, (17, 100) if a.smoke else PRED_LENGTHS, key[t],
                                             n=16 if a.smoke else a.n_static, freqs=freqs[t]))
            log(f"predicted margins {t} {remedy}")
    if not a.skip_predicted:
        write(a.out, "predicted.csv", pd.concat(preds, ignore_index=True).assign(
            key_layers=lambda d: d["task"].map({t: " ".join(map(str, v)) for t, v in key.items()})))
        write(a.out, "constructions.csv", R.construction_margins((17, 100) if a.smoke else PRED_LENGTHS))

    def save(res):
        write(a.out, "inference_accuracy.csv", res["accuracy"])
        write(a.out, "inference_scores.csv", res["scores"])

    R.inference_sweep(models, lengths, n, remedies=tuple(a.infer_remedies or R.INFERENCE_REMEDIES), freqs=freqs,
                      score_lengths=score_lengths,
                      n_scores=4 if a.smoke else a.n_scores, log=log, on_length=save)
    return {"lengths": list(lengths), "score_lengths": list(score_lengths), "n_prompts": n,
            "n_scores": 4 if a.smoke else a.n_scores, "n_static": 16 if a.smoke else a.n_static,
            "prompt_seed": 0, "models": [f"data/paper/{t}-s0/final.pt" for t in a.tasks],
            "model_sha256": {t: pio.sha256_file(paper / f"{t}-s0" / "final.pt") for t in a.tasks},
            "remedies": list(R.INFERENCE_REMEDIES), "new_base": R.NEW_BASE, "key_layers": key,
            "train_length": R.TRAIN_LENGTH}


def LG_margin(model, task, n):
    from posym import longprompts as LG

    return LG.key_layers(LG.margin_analysis(model, task, 0, [R.TRAIN_LENGTH], n=n), min_rate=0.9)


def run_training(a) -> dict:
    res = R.training_sweep(a.remedies, a.seeds, a.runs, lengths=R.TRAIN_LENGTHS, n=a.n_train,
                           budget_s=a.budget_min * 60 if a.budget_min else None, log=log)
    write(a.out, "training_length.csv", res["length"])
    write(a.out, "training_scores.csv", res["scores"])
    write(a.out, "training_runs.csv", res["runs"])
    return {"task": "number", "scale": "teaching", "remedies": {r: R.TRAIN_REMEDIES[r] for r in a.remedies},
            "seeds": a.seeds, "lengths": list(R.TRAIN_LENGTHS), "n_prompts": a.n_train, "score_prompts": 200,
            "gamma": 0.1, "threads": 1}


def run_merge(a) -> dict:
    """Stack the inference tables of several partial sweeps (``--parts``: folders, e.g. one per task or per range
    of lengths, made with the same settings) into OUT; a (task, remedy, length) found twice keeps the first."""
    info = {}
    for name, keys in (("inference_accuracy.csv", ["task", "remedy", "length", "hop"]),
                       ("inference_scores.csv", ["task", "remedy", "length", "layer", "head"])):
        frames = [pd.read_csv(d / name) for d in a.parts if (d / name).exists() and (d / name).stat().st_size > 1]
        df = pd.concat(frames, ignore_index=True).drop_duplicates(subset=keys, keep="first")
        write(a.out, name, df.sort_values(keys, kind="stable").reset_index(drop=True))
    paper = ROOT / "data" / "paper"
    acc = pd.read_csv(a.out / "inference_accuracy.csv")
    sco = pd.read_csv(a.out / "inference_scores.csv")
    pred = pd.read_csv(a.out / "predicted.csv") if (a.out / "predicted.csv").exists() else None
    info["settings"] = {  # what every part ran with (the options of this command are the parts' options)
        "lengths": sorted(int(L) for L in acc["length"].unique()),
        "score_lengths": sorted(int(L) for L in sco["length"].unique()) if len(sco) else [],
        "n_prompts": int(acc["n"].max()) if len(acc) else None, "n_scores": a.n_scores, "n_static": a.n_static,
        "prompt_seed": 0, "models": [f"data/paper/{t}-s0/final.pt" for t in R.TASKS],
        "model_sha256": {t: pio.sha256_file(paper / f"{t}-s0" / "final.pt") for t in R.TASKS},
        "remedies": list(R.INFERENCE_REMEDIES), "new_base": R.NEW_BASE, "train_length": R.TRAIN_LENGTH,
        "freq_threshold": R.FREQ_THRESHOLD, "threads": 1, "nice": 19,
        "key_layers": (pred.groupby("task")["key_layers"].first().to_dict() if pred is not None else None),
        "complete": {f"{t}/{r}": sorted(int(L) for L in acc[(acc.task == t) & (acc.remedy == r)]["length"].unique())
                     for t in R.TASKS for r in R.INFERENCE_REMEDIES},
    }
    info["merged_from"] = {}
    for d in a.parts:  # the settings each part ran with (its own manifest)
        m = d / "manifest.json"
        parts = json.loads(m.read_text()).get("parts", {}) if m.exists() else {}
        info["merged_from"][str(d)] = parts.get("inference") or parts.get("inference-merge")  # a merge of merges
    return info


def write_manifest(out: Path, part: str | None, info: dict | None, wall: float) -> None:
    path = out / "manifest.json"
    old = pio.read_json(path) if path.exists() else {}
    parts = dict(old.get("parts", {}))
    if part is not None:
        parts[part] = {**(info or {}), "wall_time_s": round(wall, 1), "command": " ".join(sys.argv)}
    files = sorted(p.name for p in out.iterdir() if p.is_file() and p.name != "manifest.json"
                   and not p.name.startswith("."))
    pio.write_manifest(out, {"what": "length-generalisation remedies (book/remedies.md)", "parts": parts,
                             **pio.provenance("cpu")}, files=files)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("inference", "training", "merge", "manifest"))
    p.add_argument("--out", type=Path, default=ROOT / "data" / "remedies")
    p.add_argument("--tasks", nargs="+", default=list(R.TASKS), choices=R.TASKS)
    p.add_argument("--n", type=int, default=24, help="prompts per length (inference; a multiple of 4)")
    p.add_argument("--n-scores", type=int, default=8, help="prompts per length for s_pos/s_sym (inference)")
    p.add_argument("--n-static", type=int, default=64, help="17-token prompts for the predicted margins")
    p.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2], help="training seeds, e.g. 0-2")
    p.add_argument("--remedies", nargs="+", default=list(R.TRAIN_REMEDIES), choices=list(R.TRAIN_REMEDIES))
    p.add_argument("--n-train", type=int, default=64, help="prompts per length for the trained models' curves")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "remedies")
    p.add_argument("--budget-min", type=float, default=None, help="start no new training run after this")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="inference lengths (default: all)")
    p.add_argument("--skip-predicted", action="store_true", help="inference: accuracy and scores only")
    p.add_argument("--score-lengths", type=int, nargs="*", default=None,
                   help="inference: lengths with per-layer scores (default: 100 1000; none: accuracy only)")
    p.add_argument("--infer-remedies", nargs="+", default=None, choices=list(R.INFERENCE_REMEDIES),
                   help="inference: only these remedies, in this order (default: all)")
    p.add_argument("--parts", type=Path, nargs="+", default=[], help="merge: the partial sweeps' folders")
    p.add_argument("--smoke", action="store_true", help="two lengths, a few prompts (inference)")
    a = p.parse_args(argv)
    for name in ("n", "n_scores", "n_static", "n_train"):
        if getattr(a, name) <= 0 or getattr(a, name) % 4:
            p.error(f"--{name.replace('_', '-')} must be a positive multiple of 4, got {getattr(a, name)}")
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    info = None
    if a.part == "inference":
        info = run_inference(a)
    elif a.part == "training":
        info = run_training(a)
    elif a.part == "merge":
        info = run_merge(a)
    write_manifest(a.out, {"manifest": None, "merge": "inference-merge"}.get(a.part, a.part), info,
                   time.time() - t0)
    log(f"done: {a.part} in {time.time() - t0:.0f}s -> {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
