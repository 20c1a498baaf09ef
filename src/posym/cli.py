"""The ``posym`` command line.

    posym train   --task number --scale paper --seed 0 --out runs/number-paper-s0
    posym analyze runs/number-paper-s0
    posym verify  data/
    posym reproduce --scale smoke --engine local       # train + analyse every run, chapters, book, claims
    posym export-hf runs/smoke/number-s0 --out number-hf
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _int_list(s: str, name: str = "--seed") -> list[int]:
    out = []
    try:
        for part in s.split(","):
            if "-" in part:
                a, b = part.split("-")
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise ValueError(f"{name} must be an integer, a list (0,2) or a range (0-4), got {s!r}") from None
    if not out:
        raise ValueError(f"{name} {s!r} is an empty range")
    return out


def cmd_train(a) -> int:
    from .train import TrainConfig, train

    overrides = {}
    for k in ("steps", "batch_size", "lr", "train_size", "checkpoint_every", "eval_size"):
        v = getattr(a, k)
        if v is not None:
            overrides[k] = v
    for seed in _int_list(a.seed):
        cfg = TrainConfig.preset(a.scale, task=a.task, seed=seed, device=a.device, **overrides)
        out = Path(a.out.format(task=a.task, scale=a.scale, seed=seed))
        run = train(cfg, out, progress=not a.quiet, threads=a.threads)
        if a.analyze:
            from .analyze import analyze_run
            analyze_run(run.path, n_prompts=a.prompts, device=a.device, progress=not a.quiet)
        print(f"{out}: done (config {cfg.hash()})")
    return 0


def cmd_analyze(a) -> int:
    from .analyze import analyze_run

    for run in a.runs:
        out = analyze_run(run, n_prompts=a.prompts, per_frequency=not a.no_freq, device=a.device,
                          progress=not a.quiet)
        s = out["scores"]
        print(f"{run}: {s['step'].nunique()} checkpoints x {s['layer'].nunique()} layers -> scores.parquet")
    return 0


def cmd_verify(a) -> int:
    from .io import verify_manifest

    root = Path(a.path)
    manifests = sorted(root.rglob("manifest.json")) if root.is_dir() else []
    if not manifests:
        print(f"no manifest.json under {root}", file=sys.stderr)
        return 1
    for m in manifests:
        man = verify_manifest(m.parent)
        print(f"ok  {m.parent}  ({len(man.get('files', {}))} files)")
    return 0


def cmd_reproduce(a) -> int:
    from .reproduce import main_reproduce

    return main_reproduce(a)


def cmd_export_hf(a) -> int:
    from .export import export_hf

    out = export_hf(a.run, out=a.out, step=a.step, task=a.task, n_positions=a.n_positions)
    print(f"{out}: GPTJForCausalLM (config.json, model.safetensors, tokenizer.json, README.md); "
          f"load with GPTJForCausalLM.from_pretrained({str(out)!r})")
    return 0


def cmd_import_hf(a) -> int:
    from .export import import_hf

    out = import_hf(a.folder, a.out)
    print(f"{out}: posym checkpoint (load with posym.train.load_checkpoint)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .tasks import TASK_NAMES
    from .train import SCALES

    p = argparse.ArgumentParser(prog="posym", description="Positional vs symbolic attention heads, reproduced.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("train", help="train a model on a task (resumes an interrupted run)")
    t.add_argument("--task", required=True, choices=TASK_NAMES)
    t.add_argument("--scale", default="smoke", choices=SCALES, help="preset (default: smoke)")
    t.add_argument("--seed", default="0", help="seed or list/range, e.g. 0 or 0-4 or 0,2")
    t.add_argument("--out", default="runs/{task}-{scale}-s{seed}", help="run folder (may use {task} {scale} {seed})")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--train-size", type=int)
    t.add_argument("--eval-size", type=int)
    t.add_argument("--checkpoint-every", type=int)
    t.add_argument("--analyze", action="store_true", help="run `posym analyze` after training")
    t.add_argument("--prompts", type=int, default=400, help="metric prompts for --analyze")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(func=cmd_train)

    an = sub.add_parser("analyze", help="positional/symbolic scores at every checkpoint of runs")
    an.add_argument("runs", nargs="+")
    an.add_argument("--prompts", type=int, default=400, help="hop-balanced held-out prompts (default 400)")
    an.add_argument("--no-freq", action="store_true", help="skip the per-frequency scores")
    an.add_argument("--device", default="cpu")
    an.add_argument("--quiet", action="store_true")
    an.set_defaults(func=cmd_analyze)

    v = sub.add_parser("verify", help="check every manifest.json under a folder (checksums)")
    v.add_argument("path")
    v.set_defaults(func=cmd_verify)

    from .reproduce import ENGINES

    r = sub.add_parser("reproduce", help="train, analyse and evaluate every run of a scale, then the chapters, "
                                         "the book and the headline claims (skips what is complete and valid)")
    r.add_argument("--scale", default="smoke", help=f"{' | '.join(SCALES)} (default: smoke)")
    r.add_argument("--tasks", default=",".join(TASK_NAMES), help="comma-separated (default: all tasks)")
    r.add_argument("--seeds", default=None, help="a count N (seeds 0..N-1), a range 0-4 (2-2: seed 2 only) or a list 0,2 "
                                                  "(default: 5 at paper scale, else 1)")
    r.add_argument("--engine", default="serial", help=f"{' | '.join(ENGINES)} (default: serial)")
    r.add_argument("--address", default=None, help="Ray cluster address for --engine ray (auto, ray://host:10001); "
                                                    "default: start a local Ray instance")
    r.add_argument("--jobs", type=int, default=None, help="--engine local: worker processes (default: cores/threads)")
    r.add_argument("--threads", type=int, default=1, help="torch threads per job (default 1; results depend on it)")
    r.add_argument("--device", default="cpu", help="cpu or cuda (cuda: num_gpus per Ray task, see --gpus-per-job)")
    r.add_argument("--gpus-per-job", type=float, default=None, help="Ray GPU share per job (default 1 with cuda)")
    r.add_argument("--out", default=None, help="run folders (default: runs/<scale>)")
    r.add_argument("--publish", default=None, help="package the results into this folder, e.g. data/paper")
    r.add_argument("--no-book", action="store_true", help="do not execute the chapters nor build the book")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_reproduce)

    e = sub.add_parser("export-hf", help="write a checkpoint as a Hugging Face GPTJForCausalLM folder")
    e.add_argument("run", help="run folder (final checkpoint or --step), results folder with final.pt, or a .pt file")
    e.add_argument("--out", default=None, help="output folder (default: RUN/hf)")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: the last)")
    e.add_argument("--task", default=None, choices=TASK_NAMES, help="only when RUN has no config.json")
    e.add_argument("--n-positions", type=int, default=8192, help="RoPE table length of the HF model (default 8192)")
    e.set_defaults(func=cmd_export_hf)

    im = sub.add_parser("import-hf", help="read a GPTJForCausalLM folder back into a posym checkpoint")
    im.add_argument("folder")
    im.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    im.set_defaults(func=cmd_import_hf)
    return p


def main(argv: list[str] | None = None) -> int:
    from .io import ResultError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, ResultError) as e:
        print(f"posym {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
