"""The chapter ``book/remedies.md``: can RoPE scaling rescue positional heads?

Its parameters (:data:`SPEC`), its science and its figures.

* **Remedies at inference** (:data:`INFERENCE_REMEDIES`), applied to a trained model without retraining through
  :meth:`posym.model.GPTJ.set_rope_scaling` (formulas in :mod:`posym.rope`): position interpolation, NTK-aware base
  scaling, YaRN, a plain change of base, and position interpolation of only the frequencies each layer uses.
  Each remedy is set per prompt length with the extension ratio ``s = max(1, L / 17)``.
* **Remedies in training** (:data:`TRAIN_REMEDIES`) at the teaching scale (Number task): randomised positions,
  a larger base, partial rotary, NoPE in the last layers.

:func:`inference_sweep` and :func:`training_sweep` compute the tables that ``scripts/remedy_sweep.py`` commits to
``data/remedies/``; :func:`load_results` reads them (paper scale) or computes small stand-ins (smoke and teaching
scales: :func:`smoke_results`).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from posym import longprompts as LG
from posym.metrics import classify, layer_scores, scores_table
from posym.rope import length_factor, scaled_angles
from posym.tasks import get_task, to_tensors

TASKS = ("number", "letter")
TRAIN_LENGTH = 17

#: remedies at inference: name -> (label, scaling for the extension ratio s); "freq" needs each layer's frequencies
INFERENCE_REMEDIES = ("none", "pi", "ntk", "yarn", "base", "freq")
LABELS = {"none": "untreated", "pi": "position interpolation", "ntk": "NTK-aware base", "yarn": "YaRN",
          "base": "base 10^6", "freq": "interpolate used frequencies",
          "subsample": "randomised positions", "big_base": "base 5x10^5", "partial": "partial rotary (16 of 64)",
          "nope": "NoPE in layers 4-6"}
NEW_BASE = 1.0e6  # the plain change of base (100 x the paper's)
FREQ_THRESHOLD = 0.5  # a frequency is "used" by a layer when its mean max logit is at least this share of the top one

#: remedies in training, Number task, teaching scale: name -> model overrides added to TrainConfig.teaching
TRAIN_REMEDIES = {
    "none": {},
    "subsample": {"position_sampling": {"kind": "subsample", "max_position": 256}},
    "big_base": {"rope_base": 500000.0},
    "partial": {"rotary_dim": 16},
    "nope": {"nope_layers": "last3"},  # the last three layers (4-6 of the teaching Number model)
}
TRAIN_LENGTHS = (17, 25, 50, 100, 200, 300, 500, 1000)


# ---------------------------------------------------------------------------------------------
# Remedies at inference
# ---------------------------------------------------------------------------------------------

def used_frequencies(freq_scores: pd.DataFrame, threshold: float = FREQ_THRESHOLD, head: int = 0) -> list[list[int]]:
    """Per layer, the 0-based frequencies the head uses: those whose mean max logit (final step of a
    ``freq_scores`` table, as in the geometry chapter's Table 1) is at least ``threshold`` times the layer's largest."""
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    t = freq_scores
    if "step" in t.columns:
        t = t[t["step"] == t["step"].max()]
    t = t[t["head"] == head] if "head" in t.columns else t
    out = []
    for layer in sorted(t["layer"].unique()):
        g = t[t["layer"] == layer]
        m = g["maxlogit"].to_numpy()
        out.append(sorted(int(f) for f in g["freq"].to_numpy()[m >= threshold * m.max()]) if m.max() > 0 else [])
    return out


def remedy_scaling(remedy: str, length: int, freqs: list[list[int]] | None = None,
                   train_length: int = TRAIN_LENGTH) -> dict | None:
    """The model option (:meth:`posym.model.GPTJ.set_rope_scaling`) of ``remedy`` for prompts of ``length`` tokens."""
    if remedy not in INFERENCE_REMEDIES:
        raise ValueError(f"unknown remedy {remedy!r}: choose one of {', '.join(INFERENCE_REMEDIES)}")
    s = length_factor(length, train_length)
    if remedy == "none":
        return None
    if remedy == "base":
        return {"method": "base", "new_base": NEW_BASE}
    if remedy == "yarn":
        return {"method": "yarn", "factor": s, "train_length": train_length}
    if remedy == "freq":
        if freqs is None:
            raise ValueError("remedy 'freq' needs the frequencies each layer uses (freqs)")
        return {"method": "freq", "factor": s, "freqs": freqs}
    return {"method": remedy, "factor": s}


def _scores_long(model, x: torch.Tensor) -> pd.DataFrame:
    """Per-layer s_pos, s_sym of the last query on prompts x (N, T), one layer at a time (each layer's own
    remedied angles; memory O(N T^2) per layer)."""
    resid: list[torch.Tensor] = []
    with torch.no_grad():
        model(x, last_only=True, fast=True, resid_out=resid)
    return scores_table([layer_scores(model, l, r) for l, r in enumerate(resid)], x.shape[1])


def inference_sweep(models: dict, lengths, n: int, remedies=INFERENCE_REMEDIES, freqs: dict | None = None,
                    score_lengths=(), n_scores: int = 16, seed: int = 0, log=None,
                    on_length=None) -> dict[str, pd.DataFrame]:
    """Accuracy vs length of each model under each remedy (``accuracy``: task, remedy, length, hop, accuracy, n,
    seconds), and per-layer s_pos/s_sym at ``score_lengths`` (``scores``: task, remedy, length, layer, pos, sym,
    entropy...).  The prompts are :func:`posym.longprompts.extended_prompts` of ``seed`` (the same for every remedy).
    Lengths are the outer loop (shortest first); ``on_length(result)`` is called after each model x remedy with the tables so far."""
    acc, sco = [], []
    for L in sorted(int(v) for v in lengths):
        for task, model in models.items():
            model.eval()
            for remedy in remedies:
                model.set_rope_scaling(remedy_scaling(remedy, L, (freqs or {}).get(task)))
                t0 = time.time()
                df = LG.accuracy_at_length(model, task, seed, L, n=n)
                acc.append(df.assign(task=task, remedy=remedy, seconds=time.time() - t0))
                if L in score_lengths:
                    samples = LG.extended_prompts(task, seed, L, n_scores)
                    x, _, _ = to_tensors(samples, get_task(task).vocab)
                    sco.append(_scores_long(model, x).assign(task=task, remedy=remedy, length=L))
                if log is not None:
                    log(f"{task} {remedy} L={L} acc={df['accuracy'].iloc[0]:.3f} {time.time() - t0:.1f}s")
                out = {"accuracy": pd.concat(acc, ignore_index=True),
                       "scores": pd.concat(sco, ignore_index=True) if sco else pd.DataFrame()}
                if on_length is not None:
                    on_length(out)
            model.set_rope_scaling(None)
    return out


def predicted_margins(model, task: str, remedy: str, lengths, key_layers, n: int = 64, seed: int = 0,
                      freqs: list[list[int]] | None = None) -> pd.DataFrame:
    """The key heads' margins at each length predicted from 17-token prompts under the remedy set for that length
    (:func:`posym.longprompts.static_margins` with the remedied rotation): one row per length and prompt, with
    ``kept`` (every relied-on key head keeps a positive margin, :func:`posym.longprompts.static_summary`)."""
    frames = []
    for L in lengths:
        model.set_rope_scaling(remedy_scaling(remedy, L, freqs))
        st = LG.static_margins(model, task, seed, key_layers, [TRAIN_LENGTH, int(L)] if L > TRAIN_LENGTH
                               else [TRAIN_LENGTH], n=n)
        s = LG.static_summary(st, key_layers)
        frames.append(s[s["length"] == int(L)].assign(remedy=remedy, task=task))
    model.set_rope_scaling(None)
    return pd.concat(frames, ignore_index=True)


def construction_margins(lengths, remedies=INFERENCE_REMEDIES, index_theta: float | None = None,
                         retrieval_theta: float | None = None) -> pd.DataFrame:
    """Theorem 3.2's worst-case margin (:func:`posym.theory.measured_discrepancy`, ``reduce="min"``) of the Index
    and Retrieval constructions at each length, with the construction's angle replaced by the remedied one.

    The constructions use one RoPE frequency; we place it where the paper's model has it (index ``k`` of the
    128-dim, base-10^4 rotation closest to the construction's angle) and read the remedied angle of that index.
    The ``freq`` remedy interpolates the construction's one frequency (the one it uses), i.e. it acts as ``pi``.
    """
    from posym import theory

    rows = []
    g = scaled_angles(128, 10000.0, None)[0].numpy()
    for kind, theta in (("index", index_theta or theory.INDEX_THETA),
                        ("retrieval", retrieval_theta or theory.RETRIEVAL_THETA)):
        k = int(np.argmin(np.abs(np.log(g) - math.log(theta))))
        for remedy in remedies:
            for L in lengths:
                sc = remedy_scaling(remedy, L, [[k]])
                ang, _ = scaled_angles(128, 10000.0, sc)
                th = float(ang[k]) * theta / float(g[k])  # the construction's own angle, scaled like index k's
                rows.append({"kind": kind, "remedy": remedy, "length": int(L), "theta": th,
                             "margin": float(theory.measured_discrepancy(kind, int(L), th))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Remedies in training (teaching scale)
# ---------------------------------------------------------------------------------------------

def train_config(remedy: str, seed: int, task: str = "number", scale: str = "teaching", **kw):
    """``TrainConfig.preset(scale, task, seed)`` with the model overrides of ``remedy`` (:data:`TRAIN_REMEDIES`)."""
    from posym.train import TrainConfig

    if remedy not in TRAIN_REMEDIES:
        raise ValueError(f"unknown training remedy {remedy!r}: choose one of {', '.join(TRAIN_REMEDIES)}")
    base = TrainConfig.preset(scale, task, seed, **kw)
    extra = dict(TRAIN_REMEDIES[remedy])
    if extra.get("nope_layers") == "last3":
        n = base.model_config().n_layer
        extra["nope_layers"] = list(range(max(0, n - 3), n))
    if "rotary_dim" in extra:
        extra["rotary_dim"] = min(extra["rotary_dim"], base.model_config().d_head // 2)
    return TrainConfig.from_dict({**base.to_dict(), "model_overrides": {**base.model_overrides, **extra}})


def evaluate_trained(model, task: str, seed: int, lengths=TRAIN_LENGTHS, n: int = 64, n_scores: int = 200,
                     gamma: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Length curve (plain positions ``0..L-1``) and final per-layer scores and classes at 17 tokens."""
    curve = LG.length_curve(model, task, seed, lengths, n=n)
    samples = LG.extended_prompts(task, seed, TRAIN_LENGTH, n_scores)
    x, _, _ = to_tensors(samples, get_task(task).vocab)
    sc = _scores_long(model, x)
    sc["cls"] = [classify(p, s, gamma) for p, s in zip(sc["pos"], sc["sym"])]
    return curve, sc


def training_sweep(remedies, seeds, runs_root, task: str = "number", lengths=TRAIN_LENGTHS, n: int = 64,
                   threads: int = 1, budget_s: float | None = None, log=None, scale: str = "teaching",
                   n_scores: int = 200, **train_kw) -> dict[str, pd.DataFrame]:
    """Train ``TrainConfig.teaching`` with each remedy and seed (seed-major order) into ``runs_root`` and evaluate the
    final model.  A run already evaluated (``runs_root/<remedy>-s<seed>/remedy_eval.json``) is read back.  No new
    run starts once ``budget_s`` seconds have passed.  Returns ``length`` and ``scores`` tables."""
    from posym.analyze import final_model
    from posym.train import train

    t_start = time.time()
    curves, scores, runs = [], [], []
    for seed in seeds:
        for remedy in remedies:
            out = Path(runs_root) / f"{remedy}-s{seed}"
            done = out / "remedy_eval.json"
            if not done.exists():
                if budget_s is not None and time.time() - t_start > budget_s:
                    if log:
                        log(f"budget spent: {remedy} seed {seed} not trained")
                    continue
                cfg = train_config(remedy, seed, task, scale, **train_kw)
                t0 = time.time()
                c0 = time.process_time()
                train(cfg, out, progress=False, threads=threads)
                model = final_model(out)
                curve, sc = evaluate_trained(model, task, seed, lengths, n, n_scores)
                rec = {"remedy": remedy, "seed": seed, "config_hash": cfg.hash(), "wall_s": time.time() - t0,
                       "cpu_s": time.process_time() - c0, "curve": curve.to_dict("records"),
                       "scores": sc.to_dict("records")}
                from posym import io as pio
                pio.atomic_write_text(done, json.dumps(rec))
                if log:
                    log(f"trained {remedy} seed {seed}: {rec['wall_s']:.0f}s wall, {rec['cpu_s']:.0f}s cpu, "
                        f"acc@17 {curve['accuracy'].iloc[0]:.3f}")
            rec = json.loads(done.read_text())
            curves.append(pd.DataFrame(rec["curve"]).assign(remedy=remedy, seed=seed))
            scores.append(pd.DataFrame(rec["scores"]).assign(remedy=remedy, seed=seed))
            runs.append({k: rec[k] for k in ("remedy", "seed", "config_hash", "wall_s", "cpu_s")})
    return {"length": pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
            "scores": pd.concat(scores, ignore_index=True) if scores else pd.DataFrame(),
            "runs": pd.DataFrame(runs)}


# ---------------------------------------------------------------------------------------------
# The page: what each scale loads
# ---------------------------------------------------------------------------------------------

FILES = {"accuracy": "inference_accuracy.csv", "scores": "inference_scores.csv", "predicted": "predicted.csv",
         "constructions": "constructions.csv", "training_length": "training_length.csv",
         "training_scores": "training_scores.csv", "training_runs": "training_runs.csv"}
SMOKE_LENGTHS = (17, 34, 68)
#: training of every smoke-scale stand-in (inference models and training remedies): a few steps, one final checkpoint
SMOKE_TRAIN = {"steps": 20, "checkpoint_every": 20, "eval_size": 100}


TRAINING_COLUMNS = {"training_length": ["remedy", "seed", "length", "hop", "accuracy", "n"],
                    "training_scores": ["remedy", "seed", "layer", "head", "pos", "sym", "entropy"],
                    "training_runs": ["remedy", "seed", "config_hash", "wall_s", "cpu_s"]}


def _read(folder: Path, key: str) -> pd.DataFrame:
    """A committed table; the training tables may be missing (an empty table: the page says so)."""
    path = folder / FILES[key]
    if key in TRAINING_COLUMNS and not path.exists():
        return pd.DataFrame(columns=TRAINING_COLUMNS[key])
    return pd.read_csv(path)


def _paper_models(data: Path):
    from posym import io as pio
    from posym.train import load_checkpoint

    models = {t: load_checkpoint(data / "paper" / f"{t}-s0" / "final.pt")[0] for t in TASKS}
    freqs = {t: used_frequencies(pio.read_table(data / "paper" / f"{t}-s0" / "freq_scores.parquet")) for t in TASKS}
    return models, freqs


def _small_models(seed: int, root: Path, runs: dict | None = None, **train_kw) -> tuple[dict, dict]:
    """Smoke-scale models of both tasks, trained here (seconds; ``train_kw`` override the smoke preset), and the
    frequencies their layers use.  ``runs``: ``{task: folder of a finished run}`` used instead of training one."""
    from posym.analyze import final_model
    from posym.metrics import frequency_table, model_scores
    from posym.train import TrainConfig, train

    models, freqs = {}, {}
    for t in TASKS:
        out = (runs or {}).get(t)
        if out is None:
            out = root / f"{t}-s{seed}"
            train(TrainConfig.smoke(t, seed, **train_kw), out, progress=False, threads=1)
        models[t] = final_model(out).eval()
        x, _, _ = to_tensors(LG.extended_prompts(t, seed, TRAIN_LENGTH, 32), get_task(t).vocab)
        freqs[t] = used_frequencies(frequency_table(model_scores(models[t], x, per_frequency=True)))
    return models, freqs


def compute_inference(models: dict, freqs: dict, lengths, n: int, score_length: int, n_scores: int = 8,
                      n_static: int = 32, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The inference part of the sweep, in memory (the page's small scales; the script commits the same tables)."""
    out = inference_sweep(models, lengths, n, freqs=freqs, score_lengths=(score_length,), n_scores=n_scores,
                          seed=seed)
    preds = []
    for t, m in models.items():
        key = LG.key_layers(LG.margin_analysis(m, t, seed, [TRAIN_LENGTH], n=n_static), min_rate=0.9)
        for remedy in INFERENCE_REMEDIES:
            preds.append(predicted_margins(m, t, remedy, lengths, key, n=n_static, seed=seed, freqs=freqs[t])
                         .assign(key_layers=" ".join(map(str, key))))
    out["predicted"] = pd.concat(preds, ignore_index=True)
    out["constructions"] = construction_margins(lengths)
    return out


def load_results(cfg) -> dict:
    """Everything the page shows, by scale.

    * ``paper``: the committed sweep (``data/remedies/``): inference remedies on the committed seed-0 paper models
      up to 5,000 tokens, and the teaching-scale training remedies (three seeds);
    * ``teaching``: the inference sweep recomputed here on the committed paper models, with fewer prompts and
      lengths up to ``max_length``; the training remedies from ``data/remedies/``;
    * ``smoke``: tiny stand-ins computed here: smoke-scale models of both tasks and a tiny inference sweep, and the
      training remedies on the smoke model (one seed, a few steps).
    """
    import tempfile

    scale, data = cfg.scale, Path(cfg.data_dir)
    folder = data / "remedies"
    res: dict = {"scale": scale}
    if scale == "paper":
        for k in FILES:
            res[k] = _read(folder, k)
        res["source"] = "committed sweep (data/remedies), seed-0 paper models"
    else:
        lengths = sorted({L for L in (17, 25, 50, 100, 200, 300, 500, 1000, 2000, 5000) if L <= cfg.max_length}
                         | {cfg.max_length}) if scale == "teaching" else list(SMOKE_LENGTHS)
        tmp = Path(tempfile.mkdtemp(prefix="posym-remedies-"))
        if scale == "teaching":
            models, freqs = _paper_models(data)
        else:  # the training remedies first: their untreated run is also the Number model of the inference part
            tr = training_sweep(list(TRAIN_REMEDIES), [cfg.seed], tmp / "train", lengths=SMOKE_LENGTHS, n=8,
                                scale="smoke", n_scores=16, **SMOKE_TRAIN)
            models, freqs = _small_models(cfg.seed, tmp, runs={"number": tmp / "train" / f"none-s{cfg.seed}"},
                                          **SMOKE_TRAIN)
        torch.set_num_threads(1)
        res.update(compute_inference(models, freqs, lengths, cfg.n_prompts, score_length=min(lengths[-1], 100),
                                     n_scores=4, n_static=16, seed=0))
        if scale == "teaching":
            for k in ("training_length", "training_scores", "training_runs"):
                res[k] = _read(folder, k)
            res["source"] = "recomputed here on the seed-0 paper models; training remedies from data/remedies"
        else:
            res.update(training_length=tr["length"], training_scores=tr["scores"], training_runs=tr["runs"])
            res["source"] = "smoke-scale stand-ins trained here"
    res["accuracy"] = res["accuracy"].astype({"hop": str})
    res["training_length"] = res["training_length"].astype({"hop": str})
    res["training_missing"] = res["training_length"].empty
    return res


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------

def _curve(acc: pd.DataFrame, task: str, remedy: str) -> pd.DataFrame:
    g = acc[(acc["task"] == task) & (acc["remedy"] == remedy) & (acc["hop"] == "all")]
    return g.sort_values("length")


def break_table(res: dict, thresholds=(0.9, 0.5)) -> pd.DataFrame:
    """Per task and remedy: measured break lengths (accuracy first below each threshold, interpolated in log-length;
    NaN: never within the lengths tried), the break predicted from 17-token prompts under the remedied rotation,
    and the accuracy at the longest length.  Only the lengths every curve reached are used, so that the remedies are
    compared on the same lengths (``longest tried`` says how far each curve goes)."""
    rows = []
    acc, pred = res["accuracy"], res["predicted"]
    a = acc[acc["hop"] == "all"]
    common = min(int(g["length"].max()) for _, g in a.groupby(["task", "remedy"])) if len(a) else 0
    for task in TASKS:
        for remedy in INFERENCE_REMEDIES:
            full = _curve(acc, task, remedy)
            if full.empty:
                continue
            g = full[full["length"] <= common]
            p = pred[(pred["task"] == task) & (pred["remedy"] == remedy) & (pred["length"] <= common)]
            p = p.sort_values("length")
            row = {"task": task, "remedy": LABELS[remedy]}
            for thr in thresholds:
                b = LG.break_length(g["length"], g["accuracy"], thr)
                row[f"break {thr:g}"] = np.nan if b is None else round(b)
                q = LG.break_length(p["length"], p["kept_static"], thr) if len(p) else None
                row[f"predicted {thr:g}"] = np.nan if q is None else round(q)
            at = g[g["length"] == common]["accuracy"]  # the longest length every curve reached
            row[f"accuracy at {common:,}"] = float(at.iloc[0]) if len(at) else np.nan
            row["longest tried"] = int(full["length"].max())
            rows.append(row)
    return pd.DataFrame(rows)


def class_table(scores: pd.DataFrame, gamma: float = 0.1, uniform: float = 0.9) -> pd.DataFrame:
    """Per-layer class letter (P positional, S symbolic, M mixed, U near-uniform attention: normalised entropy
    above ``uniform``) of each task x remedy x length of a scores table."""
    s = scores.copy()
    letter = {"positional": "P", "symbolic": "S", "mixed": "M"}
    s["cls"] = [("U" if e > uniform else letter[classify(p, y, gamma)])
                for p, y, e in zip(s["pos"], s["sym"], s["entropy_norm"])]
    return s


def training_summary(res: dict, thresholds=(0.9, 0.5), gamma: float = 0.1) -> pd.DataFrame:
    """Per training remedy: accuracy at 17 tokens, break lengths (mean over seeds; runs that never break count as
    not breaking), and the per-layer classes of each seed's final model at 17 tokens."""
    from posym.metrics import classify as _cls

    L, S = res["training_length"], res["training_scores"]
    if L.empty:
        return pd.DataFrame({"remedy": [LABELS[r] for r in TRAIN_REMEDIES], "status": "not run"})
    rows = []
    for remedy in [r for r in TRAIN_REMEDIES if r in set(L["remedy"])]:
        g = L[(L["remedy"] == remedy) & (L["hop"] == "all")]
        row = {"remedy": LABELS[remedy], "seeds": int(g["seed"].nunique()),
               "accuracy at 17": float(g[g["length"] == g["length"].min()]["accuracy"].mean())}
        for thr in thresholds:
            bs = [LG.break_length(h["length"], h["accuracy"], thr) for _, h in g.groupby("seed")]
            fin = [b for b in bs if b is not None]
            row[f"break {thr:g}"] = round(float(np.mean(fin))) if fin else np.nan
            row[f"never below {thr:g}"] = len(bs) - len(fin)
        longest = int(g["length"].max())
        row[f"accuracy at {longest:,}"] = float(g[g["length"] == longest]["accuracy"].mean())
        sc = S[S["remedy"] == remedy].sort_values(["seed", "layer"])
        letter = {"positional": "P", "symbolic": "S", "mixed": "M"}
        row["classes (per seed)"] = " / ".join(
            "".join(letter[_cls(p, y, gamma)] for p, y in zip(h["pos"], h["sym"])) for _, h in sc.groupby("seed"))
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt_len(v) -> str:
    return "never (within the lengths tried)" if v is None or not np.isfinite(v) else f"{v:,.0f} tokens"


def answers(res: dict) -> dict[str, str]:
    """The sentences that answer the chapter's questions, computed from the results (glued into the page)."""
    bt = break_table(res)
    out = {}
    acc_col = [c for c in bt.columns if c.startswith("accuracy at")]
    for task in TASKS:
        b = bt[bt["task"] == task].set_index("remedy")
        if b.empty:
            continue
        base = b.loc[LABELS["none"], "break 0.5"]
        lines = []
        for remedy in INFERENCE_REMEDIES[1:]:
            v = b.loc[LABELS[remedy], "break 0.5"]
            if np.isfinite(base) and np.isfinite(v):
                ratio = v / base
                verdict = "later" if ratio > 1.25 else ("earlier" if ratio < 0.8 else "about the same")
                lines.append(f"{LABELS[remedy]} {_fmt_len(v)} ({verdict}, {ratio:.2g}x)")
            else:
                lines.append(f"{LABELS[remedy]} {_fmt_len(v)}")
        out[f"{task}_base"] = _fmt_len(base)
        out[f"{task}_list"] = "; ".join(lines)
        a = b[acc_col[0]] if acc_col else pd.Series(dtype=float)
        if len(a):
            Lmax = acc_col[0].replace("accuracy at ", "")
            out[f"{task}_longest"] = (f"At {Lmax} tokens the accuracy is {a[LABELS['none']]:.2f} untreated and "
                                      + ", ".join(f"{a[LABELS[r]]:.2f} with {LABELS[r]}" for r in INFERENCE_REMEDIES[1:])
                                      + f" ({int(res['accuracy']['n'].max())} prompts per length).")
        if not np.isfinite(base):
            out[f"{task}_best"] = ("the untreated model stays above one half at every length the remedies share, so "
                                   "there is no break to move. " + out.get(f"{task}_longest", "").rstrip("."))
        else:
            best = b["break 0.5"].fillna(np.inf).idxmax()
            out[f"{task}_best"] = (f"the latest break is {best}'s ({_fmt_len(b.loc[best, 'break 0.5'])}, untreated "
                                   f"{_fmt_len(base)})")
    nb = bt[bt["task"] == "number"].set_index("remedy")
    if not nb.empty:
        base = nb.loc[LABELS["none"], "break 0.5"]
        better = [r for r in nb.index if r != LABELS["none"] and np.isfinite(base)
                  and (not np.isfinite(nb.loc[r, "break 0.5"]) or nb.loc[r, "break 0.5"] > 1.25 * base)]
        far = [r for r in better if not np.isfinite(nb.loc[r, "break 0.5"]) or nb.loc[r, "break 0.5"] > 4 * base]
        if not better:
            out["number_verdict"] = ("**No remedy at inference moves the Number model's break by more than a "
                                     "quarter: a negative result.**")
        elif not far:
            a = nb[acc_col[0]] if acc_col else None
            tail = ""
            if a is not None:
                beat = [r for r in a.index if r != LABELS["none"] and a[r] > a[LABELS["none"]]]
                tail = (f" At {acc_col[0].replace('accuracy at ', '')} tokens "
                        + ("no remedy is more accurate than the untreated model." if not beat else
                           f"{', '.join(beat)} {'is' if len(beat) == 1 else 'are'} more accurate than the untreated "
                           f"model."))
            out["number_verdict"] = (f"**{', '.join(better)} move{'s' * (len(better) == 1)} the Number model's break "
                                     f"later, but by less than a factor of four: no remedy rescues the positional "
                                     f"model.**" + tail)
        else:
            out["number_verdict"] = f"**{', '.join(far)} move{'s' * (len(far) == 1)} the Number break by more than 4x.**"
    d = bt.dropna(subset=["break 0.5", "predicted 0.5"])
    if len(d):
        r = np.log(d["predicted 0.5"] / d["break 0.5"])
        out["pred_within2"] = f"{int((np.abs(r) <= np.log(2)).sum())} of {len(d)}"
        out["pred_late"] = f"{int((r > 0).sum())} of {len(d)}"
    else:
        out["pred_within2"], out["pred_late"] = "none", "none"
    out["pred_pairs"] = str(len(bt))
    longest = bt["longest tried"] if "longest tried" in bt else pd.Series(dtype=int)
    if len(longest) and longest.nunique() > 1:
        extra = bt[longest > longest.min()]
        out["coverage_text"] = (f"The break lengths compare the remedies on the lengths they all reached (up to "
                                f"{int(longest.min()):,} tokens). Longer prompts were evaluated only for "
                                + ", ".join(f"{r['task']} {r['remedy']} (to {int(r['longest tried']):,})"
                                            for _, r in extra.iterrows())
                                + ": the CPU time of the shared machine did not allow the other remedies at the "
                                  "longest lengths.")
    else:
        out["coverage_text"] = "Every remedy was evaluated at the same lengths."
    out["classes_text"] = _classes_text(res)
    out["theory_text"] = _theory_text(res)
    out["training_text"] = _training_text(res)
    out["summary_text"] = _summary_text(res, out)
    return out


def _counts(cls) -> str:
    c = pd.Series(list(cls)).value_counts()
    return ", ".join(f"{int(c[k])} {name}" for k, name in (("P", "positional"), ("S", "symbolic"), ("M", "mixed"),
                                                          ("U", "near-uniform")) if k in c)


def _classes_text(res: dict) -> str:
    s = class_table(res["scores"])
    if s.empty:
        return "No scores were computed at this scale."
    L = int(s["length"].max())
    s = s[s["length"] == L]
    parts = []
    for task in TASKS:
        g = s[s["task"] == task]
        if g.empty:
            continue
        items = [f"{LABELS[r]} {_counts(g[g['remedy'] == r].sort_values('layer')['cls'])}"
                 for r in INFERENCE_REMEDIES if r in set(g["remedy"])]
        npos = [int((g[g["remedy"] == r]["cls"] == "P").sum()) for r in INFERENCE_REMEDIES if r in set(g["remedy"])]
        nuni = int((g["cls"] == "U").sum())
        parts.append(f"**{task.capitalize()} model at {L:,} tokens** (layers by class): " + "; ".join(items) + ". "
                     + (f"Positional layers: {min(npos)} to {max(npos)} under the remedies; " if max(npos) else
                        "No positional layer under any remedy; ")
                     + f"near-uniform heads: {nuni} in all.")
    return " ".join(parts)


def _theory_text(res: dict) -> str:
    con = res["constructions"]
    if con.empty:
        return ""
    L = int(con["length"].max())
    m = con[con["length"] == L].set_index(["kind", "remedy"])["margin"]
    m0 = con[con["length"] == con["length"].min()].set_index(["kind", "remedy"])["margin"]

    def ratio(kind, r):
        return m[(kind, r)] / m0[(kind, "none")]
    idx = ", ".join(f"{LABELS[r]} {ratio('index', r):.1e}" for r in INFERENCE_REMEDIES)
    ret = ", ".join(f"{LABELS[r]} {ratio('retrieval', r):.2f}" for r in INFERENCE_REMEDIES)
    return (f"For the constructions the theorem's verdict is clear. At {L:,} tokens, as a multiple of the untreated "
            f"head's worst-case margin at 17 tokens (negative: some input is answered wrongly), the Index head has: "
            f"{idx}; the Retrieval head: {ret}. The Index bound "
            f"1 − cos(2π/n) holds for every angle, so no rescaling of a positional head's angle can "
            f"keep its margin; interpolation keeps a symbolic head's (its angles times the distance stay as in "
            f"training).")


def _training_text(res: dict) -> str:
    t = training_summary(res)
    if res["training_length"].empty:
        return ("**Not run for this copy of the chapter.** The remedies in training need one teaching-scale "
                "Number model per remedy and seed (about 4 minutes of one CPU core each; `python "
                "scripts/remedy_sweep.py training` trains every remedy with seeds 0-2 and writes "
                "`data/remedies/training_*.csv`). They were started for the committed results, but the shared "
                "machine they ran on gave them too little CPU time to finish; the chapter shows them once those "
                "tables are committed.")
    base = t[t["remedy"] == LABELS["none"]]
    b0 = float(base["break 0.5"].iloc[0]) if len(base) else np.nan
    parts = []
    for _, row in t.iterrows():
        if row["remedy"] == LABELS["none"]:
            continue
        b = row["break 0.5"]
        seeds = f"{row['seeds']} seed{'s' * (row['seeds'] > 1)}"
        if row["accuracy at 17"] < 0.5:  # not learned at the training length: there is no break to move
            parts.append(f"{row['remedy']}: the task is not learned (accuracy {row['accuracy at 17']:.2f} at 17 "
                         f"tokens, the training length), {seeds}")
            continue
        cmp = ("" if not (np.isfinite(b) and np.isfinite(b0)) else
               " (later than untreated)" if b > 1.25 * b0 else " (earlier than untreated)" if b < 0.8 * b0
               else " (about the same as untreated)")
        parts.append(f"{row['remedy']}: accuracy {row['accuracy at 17']:.2f} at 17 tokens, below one half at "
                     f"{_fmt_len(b)}{cmp}, {seeds}")
    return (f"Untreated, the teaching-scale Number models fall below one half at {_fmt_len(b0)} (mean over "
            f"{int(base['seeds'].iloc[0]) if len(base) else 0} seeds). With a remedy built in: " + "; ".join(parts) + ".")


def _summary_text(res: dict, a: dict) -> str:
    return "\n".join([
        f"* **Does a remedy move the break?** Number task: {a.get('number_best', '')}; "
        f"Letter task: {a.get('letter_best', '')}.",
        f"* **Do positional heads stay positional?** See the class figure: {a.get('classes_text', '')}",
        f"* **Does the discrepancy predict the break?** The 17-token prediction under the remedied rotation is "
        f"within a factor of two of the measured break for {a.get('pred_within2', 'none')} task x remedy pairs "
        f"that break, and later than measured for {a.get('pred_late', 'none')}: the remedies also change what the "
        f"layers below the key heads compute, which a prediction from the key heads' own rotation cannot see. The "
        f"constructions' worst-case margins give the qualitative answer: no rescaling keeps a positional head's "
        f"margin, while interpolation keeps a symbolic head's.",
        f"* **Does anything help the Number task?** {a.get('number_verdict', '')}",
    ])


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

REMEDY_STYLE = {"none": ("black", "-", "o"), "pi": ("#0072B2", "--", "s"), "ntk": ("#009E73", "-.", "^"),
                "yarn": ("#D55E00", "-", "D"), "base": ("#CC79A7", ":", "v"), "freq": ("#E69F00", "--", "P"),
                "subsample": ("#0072B2", "--", "s"), "big_base": ("#CC79A7", ":", "v"),
                "partial": ("#009E73", "-.", "^"), "nope": ("#E69F00", "--", "P")}


def plot_accuracy(res: dict):
    """Accuracy against length per task, one line per inference remedy (95 % Wilson band over the prompts)."""
    import matplotlib.pyplot as plt

    from posym.stats import wilson
    acc = res["accuracy"]
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.0), sharey=True)
    for ax, task in zip(axes, TASKS):
        for remedy in INFERENCE_REMEDIES:
            g = _curve(acc, task, remedy)
            if g.empty:
                continue
            c, ls, mk = REMEDY_STYLE[remedy]
            lo, hi = wilson(np.round(g["accuracy"] * g["n"]), g["n"])
            ax.fill_between(g["length"], lo, hi, color=c, alpha=0.08, lw=0)
            ax.plot(g["length"], g["accuracy"], color=c, ls=ls, marker=mk, ms=4, lw=2.2 if remedy == "none" else 1.4,
                    label=LABELS[remedy])
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set(xscale="log", xlabel="prompt length (tokens)", title=f"{task.capitalize()} task")
    axes[0].set_ylabel("accuracy")
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].legend(fontsize=8, loc="lower left")
    return fig


def plot_classes(res: dict):
    """Per-layer class (P/S/M/U) of each task's heads under each remedy at the longest scored length."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    s = class_table(res["scores"])
    L = int(s["length"].max())
    s = s[s["length"] == L]
    code = {"P": 0, "S": 1, "M": 2, "U": 3}
    cmap = ListedColormap(["#56B4E9", "#E69F00", "#DDDDDD", "#999999"])
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 3.2))
    for ax, task in zip(axes, TASKS):
        g = s[s["task"] == task]
        rem = [r for r in INFERENCE_REMEDIES if r in set(g["remedy"])]
        nl = int(g["layer"].max()) + 1 if len(g) else 1
        M = np.full((len(rem), nl), np.nan)
        for i, r in enumerate(rem):
            for _, row in g[g["remedy"] == r].iterrows():
                M[i, int(row["layer"])] = code[row["cls"]]
                ax.text(int(row["layer"]), i, row["cls"], ha="center", va="center", fontsize=8)
        ax.imshow(M, cmap=cmap, vmin=-0.5, vmax=3.5, aspect="auto")
        ax.grid(False)
        ax.set(yticks=range(len(rem)), yticklabels=[LABELS[r] for r in rem], xticks=range(nl),
               xlabel="layer", title=f"{task.capitalize()} task, {L:,} tokens")
    return fig


def plot_prediction(res: dict):
    """Left: measured against predicted break (accuracy / kept fraction below 0.5) per task and remedy.  Middle and
    right: Theorem 3.2's worst-case margin of the Index and Retrieval constructions under each remedy."""
    import matplotlib.pyplot as plt

    bt = break_table(res)
    fig, axes = plt.subplots(1, 3, figsize=(14.0, 4.0))
    ax = axes[0]
    Lmax = float(res["accuracy"]["length"].max())
    for _, row in bt.iterrows():
        key = next(k for k, v in LABELS.items() if v == row["remedy"])
        c, _, mk = REMEDY_STYLE[key]
        x = row["predicted 0.5"] if np.isfinite(row["predicted 0.5"]) else 1.5 * Lmax
        y = row["break 0.5"] if np.isfinite(row["break 0.5"]) else 1.5 * Lmax
        ax.scatter([x], [y], color=c, marker=mk, s=50, facecolors="none" if row["task"] == "letter" else c,
                   label=f"{row['task']}, {row['remedy']}")
    lim = (10, 2 * Lmax)
    ax.plot(lim, lim, color="grey", lw=0.8)
    ax.axhline(1.5 * Lmax, color="grey", lw=0.5, ls=":")
    ax.axvline(1.5 * Lmax, color="grey", lw=0.5, ls=":")
    ax.set(xscale="log", yscale="log", xlim=lim, ylim=lim, xlabel="predicted break (tokens)",
           ylabel="measured break (tokens)", title="Break below 0.5: predicted vs measured")
    ax.legend(fontsize=6, ncol=2, loc="upper left")
    con = res["constructions"]
    for ax, kind in zip(axes[1:], ("index", "retrieval")):
        for remedy in INFERENCE_REMEDIES:
            g = con[(con["kind"] == kind) & (con["remedy"] == remedy)].sort_values("length")
            c, ls, mk = REMEDY_STYLE[remedy]
            y = g["margin"].clip(lower=1e-12) if kind == "index" else g["margin"]
            ax.plot(g["length"], y, color=c, ls=ls, marker=mk, ms=3, label=LABELS[remedy])
        ax.set(xscale="log", yscale="log" if kind == "index" else "linear", xlabel="length n",
               ylabel="worst-case margin" + (" (log)" if kind == "index" else ""),
               title=f"{kind.capitalize()} construction (Thm 3.2)")
        if kind == "retrieval":
            ax.axhline(0, color="grey", lw=0.8)
    axes[2].legend(fontsize=7)
    return fig


def plot_training(res: dict):
    """Number task, teaching scale: accuracy against length per training remedy (mean over seeds, band: min-max)."""
    import matplotlib.pyplot as plt

    L = res["training_length"]
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    if L.empty:
        ax.text(0.5, 0.5, "no training remedies committed\n(scripts/remedy_sweep.py training)", ha="center",
                va="center", transform=ax.transAxes)
        ax.set(xticks=[], yticks=[], title="Number task, trained with each remedy")
        return fig
    for remedy in [r for r in TRAIN_REMEDIES if r in set(L["remedy"])]:
        g = L[(L["remedy"] == remedy) & (L["hop"] == "all")].groupby("length")["accuracy"]
        m, lo, hi = g.mean(), g.min(), g.max()
        c, ls, mk = ("black", "-", "o") if remedy == "none" else REMEDY_STYLE[remedy]
        ax.fill_between(m.index, lo, hi, color=c, alpha=0.12, lw=0)
        n = int(L[L["remedy"] == remedy]["seed"].nunique())
        ax.plot(m.index, m.values, color=c, ls=ls, marker=mk, ms=4, label=f"{LABELS[remedy]} ({n} seed{'s' * (n > 1)})")
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set(xscale="log", xlabel="prompt length (tokens)", ylabel="accuracy", ylim=(-0.02, 1.02),
           title="Number task, trained with each remedy")
    ax.legend(fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------

def _register():
    from posym.spec import PAPER_RUNS_HOW, ChapterSpec, Param, Required, multiple_of, register

    how_inf = "python scripts/remedy_sweep.py inference"
    how_tr = "python scripts/remedy_sweep.py training"

    models = tuple(Required(f"paper/{t}-s0/{f}", PAPER_RUNS_HOW, what) for t in TASKS
                   for f, what in (("final.pt", "the final checkpoint of seed 0"),
                                   ("freq_scores.parquet", "per-frequency scores (the frequencies a layer uses)")))
    training = tuple(Required(f"remedies/{FILES[k]}", how_tr, "training remedies at the teaching scale",
                              optional=True) for k in ("training_length", "training_scores", "training_runs"))
    inference = tuple(Required(f"remedies/{FILES[k]}", how_inf, "inference remedies on the paper models")
                      for k in ("accuracy", "scores", "predicted", "constructions"))
    register(ChapterSpec(
        name="remedies",
        params={
            "seed": Param(int, 0, "training seed of the smoke-scale stand-in models", min=0, max=2**31 - 1),
            "n_prompts": Param(int, {"smoke": 8, "teaching": 8, "paper": 16},
                               "hop-balanced prompts per length (a multiple of 4; the paper scale reads the committed "
                               "16-prompt sweep)", min=4, max=2000),
            "max_length": Param(int, {"smoke": 68, "teaching": 200, "paper": 5000},
                                "longest prompt (tokens; smoke uses 17, 34 and 68)", min=25, max=5000),
        },
        checks=(multiple_of(4, ("n_prompts",), "hop-balanced prompts"),),
        requires={"teaching": models + training, "paper": models + inference + training},
    ))


_register()
