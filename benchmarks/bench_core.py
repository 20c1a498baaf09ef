"""Core benchmark: training step (ours vs HF GPT-J), achieved GFLOP/s vs measured matmul peak, and the
positional/symbolic metric (fast vs re-run).  Everything is measured in ONE run on this machine and every
ratio is against a baseline measured in the same run.

    .venv/bin/python benchmarks/bench_core.py --checkpoints 8  # ~5 min on 2 quiet cores
    .venv/bin/python benchmarks/bench_core.py --threads 1      # another thread count
    .venv/bin/python benchmarks/bench_core.py                  # the trajectory over all 141 checkpoints of a
                                                               # paper run, 2 alternating rounds of its three
                                                               # variants: ~15 min more
    .venv/bin/python benchmarks/bench_core.py --quick --checkpoints 141 --skip matmul train precision metric
                                                               # the 141 checkpoints once per variant: ~5 min

Writes ``benchmarks/results/core-DATE-Nt.json`` (machine, load average before/after, thread count, every number).
Time it on a quiet machine: the script records the load average before and after and warns when the
machine was busy (2-thread torch processes slow down many-fold when competing for 2 cores).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
AIMS = {"train_speedup_vs_hf": 1.3, "metric_speedup_vs_rerun": 300.0, "metric_max_diff": 1e-5,
        "trajectory_seconds": 60.0}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timeit(fn, repeats: int, number: int = 1, warmup: int = 2) -> dict:
    """Median (and min/max) wall seconds per call of ``fn`` over ``repeats`` timings of ``number`` calls."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(number):
            fn()
        wall.append((time.perf_counter() - t0) / number)
        cpu.append((time.process_time() - c0) / number)
    return {"median_s": statistics.median(wall), "min_s": min(wall), "max_s": max(wall),
            "cpu_median_s": statistics.median(cpu), "repeats": repeats, "number": number}


# ---------------------------------------------------------------------------------------------
def bench_matmul_peak(quick: bool) -> dict:
    out = {}
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        t = timeit(lambda: a @ b, repeats=5 if quick else 9, number=3 if n == 2048 else 10)
        out[f"n{n}"] = {"gflops": 2 * n ** 3 / t["median_s"] / 1e9, "gflops_best": 2 * n ** 3 / t["min_s"] / 1e9}
    out["peak_gflops"] = max(v["gflops"] for v in out.values())
    return out


# ---------------------------------------------------------------------------------------------
def bench_training(quick: bool) -> dict:
    from posym import dropout
    from posym.hf import to_hf
    from posym.model import GPTJ, ModelConfig
    from posym.tasks import TaskDataset, get_task
    from posym.train import TrainConfig, make_optimizer

    cfg = TrainConfig.paper(task="number")
    V = len(get_task("number").vocab)
    B, T = cfg.batch_size, 17
    n_batches = 8
    data = TaskDataset("number", "train", seed=0, size=B * n_batches).arrays()
    xs = torch.from_numpy(data["x"].copy()).view(n_batches, B, T)
    ys = torch.from_numpy(data["y"].copy()).view(n_batches, B)

    torch.manual_seed(0)
    ours = GPTJ(ModelConfig.paper(V)).train()
    hf = to_hf(ours, n_positions=128).train()  # the same initial weights

    def make_step(model, forward, fused=False, torch_masks=False):
        opt = make_optimizer(model, cfg)  # same AdamW, same decay groups, for every variant
        if fused:  # informational: torch's fused CPU AdamW (not what posym trains with: not bit-identical)
            opt = torch.optim.AdamW([{"params": g["params"], "weight_decay": g["weight_decay"]} for g in opt.param_groups],
                                    lr=cfg.lr, betas=cfg.betas, eps=1e-8, fused=True)
        it = [0]

        def step():
            i = it[0] % n_batches
            it[0] += 1
            with dropout.torch_masks() if torch_masks else contextlib.nullcontext():
                logits = forward(model, xs[i])  # (B, V): the final position only
                loss = F.cross_entropy(logits, ys[i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
        return step

    variants = {
        "ours_fast": (ours, lambda m, x: m(x, last_only=True)[:, -1]),
        "ours_hooked": (ours, lambda m, x: m(x, last_only=True, fast=False)[:, -1]),
        # HF computes every position's logits; the loss reads the last one (= labels -100 elsewhere)
        "hf_gptj": (hf, lambda m, x: m(x).logits[:, -1]),
    }
    P_mm = ours.cfg.n_layer * (4 * ours.cfg.d_model ** 2 + 2 * ours.cfg.d_model * ours.cfg.d_mlp) + ours.cfg.d_model * V
    D, L = ours.cfg.d_model, ours.cfg.n_layer
    attn_flops = 3 * L * B * 4 * T * T * D  # QK^T and AV, forward + backward (x3)
    model_flops = 6 * P_mm * B * T + attn_flops  # the full computation, as HF does it
    # what ours executes: the final block needs only the last query row and the last position's MLP,
    # and the LM head only the last position
    Dm = ours.cfg.d_mlp
    skipped = 6 * B * (T - 1) * (D * D + 2 * D * Dm + D * V) + 3 * B * 4 * (T * T - T) * D
    res = {"batch": B, "seq": T, "params_in_matmuls": P_mm, "flops_per_step_model": model_flops,
           "flops_per_step_ours_executed": model_flops - skipped,
           "flop_count_note": "6 x (matmul parameters incl. LM head) x batch x seq + 12 x L x B x T^2 x d "
                              "(attention QK^T, AV; fwd+bwd). GFLOP/s below use the full-model count for every "
                              "variant (so they compare time per step); ours executes fewer (skips the last "
                              "block's other 16 query rows and MLP rows and 16 of 17 LM-head rows)."}
    reps, number = (5, 5) if quick else (7, 10)
    variants["ours_fast_fused_adamw"] = (ours, variants["ours_fast"][1])
    # the same fast path with torch's own bernoulli_ dropout masks (posym.dropout draws the same ones in C)
    variants["ours_fast_torch_masks"] = (ours, variants["ours_fast"][1])
    steps = {name: make_step(model, fwd, fused=name.endswith("fused_adamw"), torch_masks=name.endswith("torch_masks"))
             for name, (model, fwd) in variants.items()}
    # alternating rounds: every round times `number` steps of each variant in turn, so a change of load during the
    # run (other work on the machine) slows every variant alike instead of faking a speed-up or a slow-down
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    for r in range(1 + reps):
        for name, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(number if r else 3):  # round 0: warm-up
                step()
            if r:
                wall[name].append((time.perf_counter() - t0) / number)
                cpu[name].append((time.process_time() - c0) / number)
    for name in steps:
        med = statistics.median(wall[name])
        res[name] = {"ms_per_step": med * 1e3, "ms_min": min(wall[name]) * 1e3, "ms_max": max(wall[name]) * 1e3,
                     "cpu_ms_per_step": statistics.median(cpu[name]) * 1e3, "gflops_model": model_flops / med / 1e9}
    res["ours_fast"]["gflops_executed"] = res["flops_per_step_ours_executed"] / (res["ours_fast"]["ms_per_step"] / 1e3) / 1e9
    res["speedup_fast_vs_hf"] = res["hf_gptj"]["ms_per_step"] / res["ours_fast"]["ms_per_step"]
    res["speedup_hooked_vs_hf"] = res["hf_gptj"]["ms_per_step"] / res["ours_hooked"]["ms_per_step"]
    res["speedup_fast_vs_hooked"] = res["ours_hooked"]["ms_per_step"] / res["ours_fast"]["ms_per_step"]
    res["speedup_kernel_masks_vs_torch_masks"] = (res["ours_fast_torch_masks"]["ms_per_step"]
                                                  / res["ours_fast"]["ms_per_step"])
    res["speedup_fast_torch_masks_vs_hf"] = res["hf_gptj"]["ms_per_step"] / res["ours_fast_torch_masks"]["ms_per_step"]
    return res


# ---------------------------------------------------------------------------------------------
def metric_model():
    """A trained paper-scale checkpoint if the repository has one (sharp, realistic heads), else random."""
    from posym.model import GPTJ, ModelConfig
    from posym.tasks import get_task
    from posym.train import load_checkpoint

    for run in ("number-s0", "letter-s0"):
        p = REPO / "data" / "paper" / run / "final.pt"
        if p.exists():
            model, _ = load_checkpoint(p)
            return model.eval(), run.split("-")[0], str(p.relative_to(REPO))
    torch.manual_seed(0)
    model = GPTJ(ModelConfig.paper(len(get_task("number").vocab))).eval()
    with torch.no_grad():
        for b in model.blocks:
            b.attn.q_proj.weight.mul_(5.0)
    return model, "number", "random paper model (q scaled x5)"


def bench_metric(quick: bool) -> dict:
    from posym.analyze import metric_prompts
    from posym.metrics import (TAU, _fast_scores, content_position_logits, frequency_table, layer_scores,
                               model_scores, rerun_rows, residual_inputs, rows_from_matrix, scores_table, swap_pairs)
    from posym.train import TrainConfig, checkpoint_steps, load_checkpoint

    model, task, source = metric_model()
    _, x100, _, _ = metric_prompts(task, 0, 100)
    res = {"model": source, "prompts": 100, "layers": model.cfg.n_layer, "swaps_per_prompt": 120}

    t_fast = timeit(lambda: model_scores(model, x100), repeats=5 if quick else 9)
    t_freq = timeit(lambda: model_scores(model, x100, per_frequency=True), repeats=3 if quick else 5)
    t_rerun = timeit(lambda: model_scores(model, x100, method="rerun"), repeats=1 if quick else 3, warmup=0)
    t_fwd = timeit(lambda: residual_inputs(model, x100), repeats=5 if quick else 9)
    # the per-layer part alone (both methods need the same forward pass for the hidden states), timed on its own
    # from the same hidden states: a ratio of two measured times, never of differences of noisy times
    resids100 = residual_inputs(model, x100)
    layers = list(range(model.cfg.n_layer))
    t_fast_layers = timeit(lambda: _fast_scores(model, layers, resids100, TAU, False), repeats=5 if quick else 9)
    t_rerun_layers = timeit(lambda: [layer_scores(model, l, r, method="rerun") for l, r in zip(layers, resids100)],
                            repeats=1 if quick else 3, warmup=0)
    res["seconds_per_checkpoint"] = {"fast": t_fast["median_s"], "fast_with_per_frequency": t_freq["median_s"],
                                     "rerun": t_rerun["median_s"], "shared_forward_pass": t_fwd["median_s"],
                                     "fast_per_layer_part": t_fast_layers["median_s"],
                                     "rerun_per_layer_part": t_rerun_layers["median_s"]}
    res["speedup_fast_vs_rerun"] = t_rerun["median_s"] / t_fast["median_s"]
    res["speedup_fast_with_freq_vs_rerun"] = t_rerun["median_s"] / t_freq["median_s"]
    res["speedup_excluding_forward"] = t_rerun_layers["median_s"] / t_fast_layers["median_s"]

    fast, ref = model_scores(model, x100), model_scores(model, x100, method="rerun")
    res["max_abs_diff_scores"] = max(max((a.pos - b.pos).abs().max().item(), (a.sym - b.sym).abs().max().item())
                                     for a, b in zip(fast, ref))
    res["max_abs_diff_scores_prompt_mean"] = max(
        max((a.pos.mean(0) - b.pos.mean(0)).abs().max().item(), (a.sym.mean(0) - b.sym.mean(0)).abs().max().item())
        for a, b in zip(fast, ref))
    resids = residual_inputs(model, x100)
    pairs = swap_pairs(16)
    S = torch.arange(len(pairs))
    row_diff = 0.0
    for l in range(model.cfg.n_layer):
        D_ref, Dp_ref = rerun_rows(model, l, resids[l], pairs)
        D, Di, Dj = rows_from_matrix(content_position_logits(model, l, resids[l]), pairs)
        row_diff = max(row_diff, (D_ref.double() - D).abs().max().item(),
                       (Dp_ref[..., S, pairs[:, 0]].double() - Di).abs().max().item(),
                       (Dp_ref[..., S, pairs[:, 1]].double() - Dj).abs().max().item())
    res["max_abs_diff_attention_rows"] = row_diff
    # float64 reference: the same model in double precision, both methods (shows the fast method is exact)
    m64 = model.double()
    f64, r64 = model_scores(m64, x100[:25]), model_scores(m64, x100[:25], method="rerun")
    res["max_abs_diff_scores_float64"] = max(max((a.pos - b.pos).abs().max().item(), (a.sym - b.sym).abs().max().item())
                                             for a, b in zip(f64, r64))
    model.float()

    return res


def synthetic_run(folder: Path, n_checkpoints: int) -> Path:
    """A paper run folder whose first ``n_checkpoints`` checkpoints of the real schedule (0, 1, 2, 5, ..., 6750) are
    all the committed final checkpoint of ``data/paper/number-s0`` (symbolic links): the repository holds no run
    with every checkpoint.  The weights are the same at every step; the work per checkpoint is the real one."""
    from posym.train import TrainConfig, checkpoint_steps

    src = REPO / "data" / "paper" / "number-s0"
    cfg = TrainConfig.paper()
    steps = checkpoint_steps(cfg.steps, cfg.checkpoint_every)[:n_checkpoints]
    (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text((src / "config.json").read_text())
    for st in steps:
        link = folder / "checkpoints" / f"step_{st:07d}.pt"
        if not link.exists():
            link.symlink_to((src / "final.pt").resolve())
    return folder


def bench_trajectory(quick: bool, n_checkpoints: int, prompts: int = 400) -> dict:
    """`posym analyze` (with per-frequency scores) on a synthetic paper run, three ways in the same run: ``new`` (as
    it stands: the per-frequency C kernel where it can be built), ``torch`` (the same with the per-frequency
    scores by torch operations, ``engine="torch"``) and ``reference`` (a model built per checkpoint and the float64
    per-frequency kernel, :func:`frequency_scores_reference`: the method before the vectorised one).  They are
    timed in alternating rounds (A B C C B A) and their tables compared."""
    import functools
    import tempfile

    import posym.metrics as M
    from posym import ckernel
    from posym.analyze import analyze_run
    from posym.train import TrainConfig, checkpoint_steps

    n_full = len(checkpoint_steps(TrainConfig.paper().steps, TrainConfig.paper().checkpoint_every))
    if not (REPO / "data" / "paper" / "number-s0" / "final.pt").exists():
        return {"skipped": "data/paper/number-s0/final.pt is missing"}
    vectorised = M.frequency_scores
    out: dict = {"checkpoints_timed": n_checkpoints, "checkpoints_paper_run": n_full, "prompts": prompts,
                 "run": "synthetic: the committed data/paper/number-s0/final.pt at every step of the real schedule",
                 "c_kernel": ckernel.kernel() is not None}
    with tempfile.TemporaryDirectory() as tmp:
        run = synthetic_run(Path(tmp) / "number-s0", n_checkpoints)

        def new():
            t = {}
            t0 = time.perf_counter()
            tabs = analyze_run(run, n_prompts=prompts, per_frequency=True, progress=False, timings=t)
            return time.perf_counter() - t0, t, tabs

        def torch_kernel():
            M.frequency_scores = functools.partial(vectorised, engine="torch")
            try:
                return new()
            finally:
                M.frequency_scores = vectorised

        def reference():
            # what `posym analyze` did before: a new model per checkpoint, the float64 per-frequency kernel
            from posym import analyze as A
            from posym.train import load_checkpoint as load

            M.frequency_scores = M.frequency_scores_reference
            A.load_checkpoint = lambda path, expect_hash=None, map_location="cpu", into=None: load(
                path, expect_hash=expect_hash, map_location=map_location)
            try:
                return new()
            finally:
                M.frequency_scores, A.load_checkpoint = vectorised, load

        warm = synthetic_run(Path(tmp) / "warm-up", 1)
        analyze_run(warm, n_prompts=prompts, per_frequency=True, progress=False)  # first-call costs, not timed
        variants = {"new": new, "torch": torch_kernel, "reference": reference}
        order = ["reference", "torch", "new"] if quick else ["reference", "torch", "new", "new", "torch", "reference"]
        times = {k: [] for k in variants}
        splits = {k: {} for k in variants}
        tables = {}
        for key in order:
            wall, t, tables[key] = variants[key]()
            times[key].append(wall)
            for k, v in t.items():
                if k != "checkpoints":
                    splits[key][k] = splits[key].get(k, 0.0) + v / n_checkpoints
        out["seconds_per_round"] = times
    rounds = {k: len(v) for k, v in times.items()}
    out["max_abs_diff_tables"] = {}
    for other in ("torch", "reference"):
        tn, tr = tables["new"], tables[other]
        diff = {name: max(float((tn[name][c] - tr[name][c]).abs().max()) for c in ("pos", "sym"))
                for name in ("scores", "freq_scores")}
        diff["freq_maxlogit"] = float((tn["freq_scores"]["maxlogit"] - tr["freq_scores"]["maxlogit"]).abs().max())
        out["max_abs_diff_tables"][f"new_vs_{other}"] = diff
    per = {k: statistics.mean(v) / n_checkpoints for k, v in times.items()}
    out["seconds_per_checkpoint"] = per
    out["split_per_checkpoint"] = {k: {p: v / rounds[k] for p, v in spl.items()} for k, spl in splits.items()}
    out["speedup_vs_reference"] = per["reference"] / per["new"]  # mean of the rounds
    out["speedup_vs_reference_best_round"] = min(times["reference"]) / min(times["new"])
    out["speedup_vs_torch_kernel"] = per["torch"] / per["new"]
    out["estimated_seconds_paper_run"] = {k: v * n_full for k, v in per.items()}
    return out


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (for a smoke check, not for numbers)")
    ap.add_argument("--out", default=None, help="results file (default: benchmarks/results/core-DATE-Nt.json)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["matmul", "train", "precision", "metric", "trajectory"])
    ap.add_argument("--checkpoints", type=int, default=141,
                    help="checkpoints of the synthetic paper run timed by the trajectory benchmark (default: all 141)")
    a = ap.parse_args(argv)
    if a.out is None:
        a.out = str(HERE / "results" / f"core-{time.strftime('%Y-%m-%d-%H%M', time.gmtime())}-{a.threads}t.json")
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    t0 = time.time()
    res = {"machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                       "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                       "loadavg_before": load_before},
           "aims": AIMS, "quick": a.quick}
    print(f"posym core benchmark: {res['machine']['cpu']}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average before: {load_before[0]:.2f}")
    if "matmul" not in a.skip:
        res["matmul_peak"] = bench_matmul_peak(a.quick)
        print(f"fp32 matmul peak: {res['matmul_peak']['peak_gflops']:.1f} GFLOP/s "
              f"(1024: {res['matmul_peak']['n1024']['gflops']:.1f}, 2048: {res['matmul_peak']['n2048']['gflops']:.1f})")
    if "train" not in a.skip:
        tr = res["train"] = bench_training(a.quick)
        peak = res.get("matmul_peak", {}).get("peak_gflops", float("nan"))
        print(f"\ntraining step, paper config, fp32, batch {tr['batch']} x seq {tr['seq']}, final-token loss, "
              f"AdamW + clip (median of repeats):")
        for k in ("ours_fast", "ours_fast_torch_masks", "ours_hooked", "hf_gptj", "ours_fast_fused_adamw"):
            v = tr[k]
            print(f"  {k:21s} {v['ms_per_step']:7.1f} ms/step  [{v['ms_min']:.1f}-{v['ms_max']:.1f}]  "
                  f"{v['gflops_model']:6.1f} GFLOP/s (model count) = {v['gflops_model'] / peak:.0%} of peak")
        print(f"  ours executes {tr['flops_per_step_ours_executed'] / 1e9:.2f} of {tr['flops_per_step_model'] / 1e9:.2f} "
              f"GFLOP/step -> {tr['ours_fast']['gflops_executed']:.1f} GFLOP/s executed")
        print(f"  speed-up ours (fast) vs HF: {tr['speedup_fast_vs_hf']:.2f}x   (hooked path vs HF: "
              f"{tr['speedup_hooked_vs_hf']:.2f}x; fast vs hooked {tr['speedup_fast_vs_hooked']:.2f}x)")
        print(f"  dropout masks from the C kernel vs torch's bernoulli_ (same bits): "
              f"{tr['speedup_kernel_masks_vs_torch_masks']:.2f}x (torch's masks vs HF: "
              f"{tr['speedup_fast_torch_masks_vs_hf']:.2f}x)")
    if "metric" not in a.skip:
        me = res["metric"] = bench_metric(a.quick)
        s = me["seconds_per_checkpoint"]
        print(f"\nmetric per checkpoint, {me['prompts']} prompts x {me['layers']} layers x 120 swaps ({me['model']}):")
        print(f"  re-run (reference)      {s['rerun']:8.3f} s")
        print(f"  fast                    {s['fast']:8.3f} s   -> {me['speedup_fast_vs_rerun']:.0f}x faster "
              f"(per-layer part alone: {me['speedup_excluding_forward']:.0f}x)")
        print(f"  fast + per-frequency    {s['fast_with_per_frequency']:8.3f} s   -> "
              f"{me['speedup_fast_with_freq_vs_rerun']:.0f}x faster")
        print(f"  shared forward pass     {s['shared_forward_pass']:8.3f} s (hidden states; needed by both)")
        print(f"  max |fast - rerun|: scores {me['max_abs_diff_scores']:.1e} (per prompt), "
              f"{me['max_abs_diff_scores_prompt_mean']:.1e} (prompt means); attention rows "
              f"{me['max_abs_diff_attention_rows']:.1e}; scores in float64 {me['max_abs_diff_scores_float64']:.1e}")
    if "trajectory" not in a.skip:
        tj = res["trajectory"] = bench_trajectory(a.quick, a.checkpoints)
        if "skipped" in tj:
            print(f"\ntrajectory: skipped ({tj['skipped']})")
        else:
            sp = tj["seconds_per_checkpoint"]
            print(f"\nmetric trajectory, `posym analyze` with per-frequency scores, {tj['prompts']} prompts, "
                  f"{tj['checkpoints_timed']} checkpoints timed ({tj['run']}); per-frequency C kernel "
                  f"{'built' if tj['c_kernel'] else 'NOT available (new = torch)'}:")
            for name in ("new", "torch", "reference"):
                parts = ", ".join(f"{k} {v:.3f}" for k, v in tj["split_per_checkpoint"][name].items())
                print(f"  {name:9s} {sp[name]:6.3f} s/checkpoint ({parts}) -> {tj['estimated_seconds_paper_run'][name]:5.0f} s "
                      f"for the {tj['checkpoints_paper_run']} checkpoints of a paper run")
            print(f"  speed-up {tj['speedup_vs_reference']:.2f}x the reference (best rounds: "
                  f"{tj['speedup_vs_reference_best_round']:.2f}x), {tj['speedup_vs_torch_kernel']:.2f}x the torch kernel")
            for other, d in tj["max_abs_diff_tables"].items():
                print(f"  tables max |{other.replace('_vs_', ' - ')}|: scores {d['scores']:.1e}, "
                      f"per-frequency {d['freq_scores']:.1e}, max logit {d['freq_maxlogit']:.1e}")
    load_after = os.getloadavg()
    res["machine"]["loadavg_after"] = load_after
    res["wall_seconds"] = time.time() - t0
    aims = {}
    if "train" in res:
        aims["train >= 1.3x faster than HF"] = res["train"]["speedup_fast_vs_hf"] >= AIMS["train_speedup_vs_hf"]
    if "metric" in res:
        aims["fast metric >= 300x faster than re-run"] = res["metric"]["speedup_fast_vs_rerun"] >= AIMS["metric_speedup_vs_rerun"]
        aims["fast metric equal to re-run to 1e-5 (scores)"] = res["metric"]["max_abs_diff_scores"] <= AIMS["metric_max_diff"]
    if "trajectory" in res and "skipped" not in res["trajectory"]:
        tj = res["trajectory"]
        aims["trajectory (per-frequency too) <= 60 s"] = tj["estimated_seconds_paper_run"]["new"] <= AIMS["trajectory_seconds"]
        aims["trajectory tables equal to the reference to 1e-6"] = max(
            max(d.values()) for d in tj["max_abs_diff_tables"].values()) <= 1e-6
    res["aims_met"] = aims
    print("\naims:")
    for k, v in aims.items():
        print(f"  [{'met' if v else 'NOT met'}] {k}")
    busy = max(load_before[0], load_after[0]) > 1.5
    res["machine"]["busy"] = busy
    print(f"\nload average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}"
          + ("  WARNING: the machine was busy; timings are inflated and noisy" if busy else "  (quiet)"))
    print(f"total {res['wall_seconds']:.0f} s; results -> {a.out}")
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
