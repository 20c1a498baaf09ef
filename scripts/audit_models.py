"""Add trained seeds to the model-side audit (``data/audit``) without recomputing the generator statistics.

Only seed 0's final checkpoints are committed (``data/paper/{task}-s0/final.pt``, trained on a GPU). Other
seeds are retrained on the CPU with the paper configuration -- deterministic there, so anyone can get the same
weights again -- and passed here as run folders:

    posym train --task letter --scale paper --seed 1 --threads 1 --checkpoint-every 6750 --out runs/cpu/letter-s1
    python scripts/audit_models.py runs/cpu/letter-s1 [more run folders ...]

The script gathers seed 0 and the given runs' final checkpoints in a temporary model root, records where each
model came from (GPU run or CPU retraining, sha256, the command that trains it) in ``data/audit/manifest.json``
under ``models_note``, and runs ``python -m posym.audit --models-only`` over them (``--variant-n`` and
``--verify`` as in the committed audit).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from posym import audit as A  # noqa: E402
from posym import io as pio  # noqa: E402
from posym.train import Run, TrainConfig, list_checkpoints, load_checkpoint  # noqa: E402


def final_checkpoint(run_dir: Path) -> tuple[TrainConfig, Path]:
    run = Run(run_dir)
    cfg = run.config
    man = run_dir / "manifest.json"
    if not man.exists() or not pio.read_json(man).get("complete"):
        raise SystemExit(f"error: {run_dir} is not a complete run (no complete manifest.json)")
    pio.verify_manifest(run_dir)
    if cfg.hash() != TrainConfig.paper(task=cfg.task, seed=cfg.seed, checkpoint_every=cfg.checkpoint_every,
                                       device=cfg.device).hash():
        raise SystemExit(f"error: {run_dir} was not trained with the paper configuration")
    steps = dict(list_checkpoints(run_dir))
    if cfg.steps not in steps:
        raise SystemExit(f"error: {run_dir} has no checkpoint at its last step {cfg.steps}")
    load_checkpoint(steps[cfg.steps], expect_hash=cfg.hash())  # refuses a corrupt or foreign file
    return cfg, steps[cfg.steps]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="complete paper-configuration run folders (CPU)")
    ap.add_argument("--out", type=Path, default=A.AUDIT_DIR)
    ap.add_argument("--paper", type=Path, default=REPO / "data" / "paper")
    args = ap.parse_args(argv)

    old = pio.read_json(args.out / "manifest.json")
    note: dict[str, dict[str, dict]] = {t: {} for t in A.PAPER_TASKS}
    with tempfile.TemporaryDirectory(prefix="posym-audit-models-") as tmp:
        root = Path(tmp)
        for task in A.PAPER_TASKS:
            src = args.paper / f"{task}-s0" / "final.pt"
            load_checkpoint(src)  # checks it against data/paper's manifest
            (root / f"{task}-s0").mkdir()
            shutil.copyfile(src, root / f"{task}-s0" / "final.pt")
            note[task]["0"] = {"where": "gpu-paper-run", "file": f"data/paper/{task}-s0/final.pt",
                               "sha256": pio.sha256_file(src)}
        for run_dir in args.runs:
            cfg, ckpt = final_checkpoint(run_dir)
            dest = root / f"{cfg.task}-s{cfg.seed}"
            if dest.exists():
                raise SystemExit(f"error: two models for {cfg.task} seed {cfg.seed}")
            dest.mkdir()
            shutil.copyfile(ckpt, dest / "final.pt")
            info = pio.read_json(run_dir / "manifest.json")
            note[cfg.task][str(cfg.seed)] = {
                "where": "cpu-here", "sha256": pio.sha256_file(ckpt), "config_hash": cfg.hash(),
                "command": f"posym train --task {cfg.task} --scale paper --seed {cfg.seed} --threads 1 "
                           f"--checkpoint-every {cfg.checkpoint_every}",
                "wall_time_s": info.get("wall_time_s"), "versions": info.get("versions"),
                "machine": info.get("machine"), "git_commit": info.get("git_commit")}
        note_file = root / "models_note.json"
        note_file.write_text(json.dumps(note, indent=1))
        A.main(["--out", str(args.out), "--model-root", str(root), "--models-only",
                "--variant-n", str(old["variant_n"]), "--verify", str(old["verified_variant_prompts_per_variant"]),
                "--shortcut-splits", ",".join(old["shortcut_use_splits"]), "--models-note", str(note_file)])
    print(f"{args.out}: model tables for", {t: sorted(int(s) for s in v) for t, v in note.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
