"""posym reproduce: the plan, its engines (serial, local process pool, Ray), skip-if-complete, resume, errors.

Every plan here is the smoke scale shrunk by overrides (20 training steps, tiny analyses), so that the whole
file runs in a few minutes on 2 cores. The Ray test starts a local 2-CPU instance and shuts it down.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from posym import cli
from posym import io as pio
from posym import reproduce as rp
from posym.train import TrainConfig, list_checkpoints

from conftest import folder_checksums, sha256

OVERRIDES = dict(steps=20, train_size=640, eval_size=100, checkpoint_every=10, log_every=5)
ANALYSIS = dict(n_prompts=20, lengths=(17, 25), n_length=20, n_test=200)
# files whose bytes hold wall times, dates or hostnames; compared by content below
VOLATILE = {"manifest.json", "steps.json", "last.pt", "prompts.json", "length.parquet"}


def tiny_plan(out, tasks="number,letter", seeds=1, **kw):
    return rp.build_plan("smoke", tasks=tasks, seeds=seeds, out=out, overrides=OVERRIDES, analysis=ANALYSIS, **kw)


def assert_same_results(a: Path, b: Path):
    """Same files; bit-identical checkpoints and tables; same content where bytes carry times."""
    fa, fb = folder_checksums(a), folder_checksums(b)
    assert sorted(fa) == sorted(fb)
    ckpts = [f for f in fa if f.startswith("checkpoints/")]
    assert len(ckpts) >= 4
    for f in fa:
        if Path(f).name not in VOLATILE:
            assert fa[f] == fb[f], f"{f} differs between {a} and {b}"
    pa, pb = pio.read_json(a / "prompts.json"), pio.read_json(b / "prompts.json")
    pa.pop("seconds"), pb.pop("seconds")
    assert pa == pb
    for t in ("scores.parquet", "freq_scores.parquet", "geometry.parquet", "flow.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / t), pd.read_parquet(b / t))
    la, lb = (pd.read_parquet(d / "length.parquet").drop(columns="seconds") for d in (a, b))
    pd.testing.assert_frame_equal(la, lb)
    ma, mb = pio.read_json(a / "manifest.json"), pio.read_json(b / "manifest.json")
    assert ma["config_hash"] == mb["config_hash"] and ma["complete"] and mb["complete"]
    assert {k: v for k, v in ma["files"].items() if k != "last.pt"} == \
           {k: v for k, v in mb["files"].items() if k != "last.pt"}


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    plan = tiny_plan(out)
    res = rp.run_plan(plan, engine="serial", progress=False)
    assert res.ok, res.summary()
    assert res.ran == {"number-s0": list(rp.STEPS), "letter-s0": list(rp.STEPS)}
    return plan


def test_serial_plan_writes_every_result_and_records_steps(serial):
    for job in serial.jobs:
        d = Path(job.run_dir)
        for f in ("config.json", "eval.csv", "train_log.csv", "manifest.json", *rp.ANALYZE_OUTPUTS, *rp.FINAL_OUTPUTS):
            assert (d / f).is_file(), f
        steps = rp.read_steps(d)
        assert set(steps) == set(rp.STEPS)
        assert all(steps[s]["config_hash"] == job.config().hash() for s in rp.STEPS)
        assert rp.step_status(job) == {s: True for s in rp.STEPS}
        length = pd.read_parquet(d / "length.parquet")
        assert sorted(length["length"].unique().tolist()) == [17, 25]
        assert set(length.loc[length["hop"] == "all", "n"]) == {20}


def test_second_run_does_nothing_and_is_fast(serial):
    before = {j.name: folder_checksums(j.run_dir) for j in serial.jobs}
    t0 = time.perf_counter()
    res = rp.run_plan(serial, engine="serial", progress=False)
    dt = time.perf_counter() - t0
    assert res.ok and res.ran == {} and res.skipped == {j.name: list(rp.STEPS) for j in serial.jobs}
    assert dt < 10, f"checking a complete plan took {dt:.1f} s"
    assert {j.name: folder_checksums(j.run_dir) for j in serial.jobs} == before


def test_ray_engine_equals_serial(serial, tmp_path, monkeypatch, ledger):
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        res = rp.run_plan(tiny_plan(tmp_path), engine="ray", progress=False)
    finally:
        ray.shutdown()
    assert res.ok, res.summary()
    assert set(res.ran) == {"number-s0", "letter-s0"}
    for job in serial.jobs:
        ledger.rerun()
        assert_same_results(Path(job.run_dir), tmp_path / job.name)


def test_local_engine_equals_serial_and_resumes_an_interrupted_plan(serial, tmp_path, ledger):
    """A plan stopped mid-training resumes from last.pt, in the process pool, to the serial run's bits."""
    plan = tiny_plan(tmp_path, stop_after=10)
    res = rp.run_plan(plan, engine="serial", progress=False)
    ledger.fault()  # the plan is interrupted after step 10
    assert sorted(res.interrupted) == ["letter-s0", "number-s0"] and not res.ok
    for job in plan.jobs:
        d = Path(job.run_dir)
        assert (d / "last.pt").exists() and not (d / "manifest.json").exists()
        assert [s for s, _ in list_checkpoints(d)] == [0, 1, 2, 5, 10]
        assert rp.step_status(job) == {s: False for s in rp.STEPS}
    res = rp.run_plan(tiny_plan(tmp_path), engine="local", workers=2, progress=False)
    assert res.ok, res.summary()
    for job in serial.jobs:
        ledger.rerun()
        assert_same_results(Path(job.run_dir), tmp_path / job.name)


def test_changed_output_or_parameters_redo_only_what_they_invalidate(serial, tmp_path, ledger):
    src = Path(serial.jobs[0].run_dir)
    shutil.copytree(src, tmp_path / src.name)
    plan = tiny_plan(tmp_path, tasks="number")
    # a damaged final table: only the final step runs again, and restores the same bytes
    good = pd.read_parquet(tmp_path / src.name / "length.parquet").drop(columns="seconds")
    (tmp_path / src.name / "length.parquet").write_bytes(b"not parquet")
    ledger.fault()
    res = rp.run_plan(plan, progress=False)
    assert res.ran == {"number-s0": ["final"]}
    again = pd.read_parquet(tmp_path / src.name / "length.parquet").drop(columns="seconds")
    ledger.rerun()
    pd.testing.assert_frame_equal(again, good)
    # other analysis parameters: the analysis and final steps run again, training is kept
    plan2 = rp.build_plan("smoke", tasks="number", seeds=1, out=tmp_path, overrides=OVERRIDES,
                          analysis={**ANALYSIS, "n_prompts": 24})
    res = rp.run_plan(plan2, progress=False)
    assert res.ran == {"number-s0": ["analyze", "final"]}
    assert pio.read_json(tmp_path / src.name / "prompts.json")["n"] == 24


def test_results_of_an_older_driver_are_adopted_without_recomputing(serial, tmp_path):
    src = Path(serial.jobs[0].run_dir)
    shutil.copytree(src, tmp_path / src.name)
    (tmp_path / src.name / rp.STEPS_FILE).unlink()
    before = sha256(tmp_path / src.name / "scores.parquet")
    res = rp.run_plan(tiny_plan(tmp_path, tasks="number"), progress=False)
    assert res.ran == {} and res.skipped == {"number-s0": list(rp.STEPS)}
    assert sha256(tmp_path / src.name / "scores.parquet") == before
    assert set(rp.read_steps(tmp_path / src.name)) == set(rp.STEPS)


def test_a_folder_of_another_config_is_refused_before_anything_runs(serial, tmp_path, ledger):
    src = Path(serial.jobs[0].run_dir)
    shutil.copytree(src, tmp_path / src.name)
    plan = rp.build_plan("smoke", tasks="number", seeds=1, out=tmp_path,
                         overrides={**OVERRIDES, "steps": 30}, analysis=ANALYSIS)
    with ledger.raises(rp.PlanError, match="holds a run with config .*Delete that folder, or pass another --out",
                       kind="fault"):
        rp.run_plan(plan, progress=False)


def test_publish_and_claims(serial, tmp_path, ledger):
    dests = rp.publish(serial, tmp_path / "paper")
    assert [d.name for d in dests] == ["number-s0", "letter-s0"]
    assert (tmp_path / "paper" / "number-s0" / "final.pt").exists()
    for d in dests:
        ledger.rerun()  # the published files' checksums recomputed
        pio.verify_manifest(d)
    stamp = {d.name: (d / "manifest.json").stat().st_mtime_ns for d in dests}
    rp.publish(serial, tmp_path / "paper")  # unchanged results: nothing rewritten
    assert {d.name: (d / "manifest.json").stat().st_mtime_ns for d in dests} == stamp
    claims = rp.headline_claims(serial.out)
    assert list(claims.columns) == ["from", "task", "claim", "paper", "ours", "agree", "detail"]
    ours = claims[claims["from"] == "reproduce"]
    labels = {rp.CLAIM_LABELS[k] for k in ("test_accuracy", "length_below_half")}
    assert labels <= set(ours["claim"]) and set(ours["task"]) == {"number", "letter"}
    # best step and purity: the dynamics chapter's table when that module exists, else ours
    covered = set(claims["claim"])
    assert any("best validation accuracy" in c for c in covered) and any("pure positional" in c for c in covered)
    assert claims["agree"].map(type).eq(bool).all()
    text = rp.format_claims(claims)
    assert "paper" in text and "agree" in text


def test_claims_of_the_committed_paper_results():
    """On data/paper the table shows the agreements and disagreements documented there."""
    root = Path(__file__).resolve().parents[1] / "data" / "paper"
    if not root.exists():
        pytest.skip("data/paper not present")
    c = rp.headline_claims(root)
    own = c[c["from"] == "reproduce"].set_index(["claim", "task"])
    assert own.loc[(rp.CLAIM_LABELS["test_accuracy"], "number"), "agree"]
    assert own.loc[(rp.CLAIM_LABELS["test_accuracy"], "letter"), "agree"]
    assert own.loc[(rp.CLAIM_LABELS["length_below_half"], "number"), "agree"]
    assert not own.loc[(rp.CLAIM_LABELS["length_below_half"], "letter"), "agree"]  # 1,500 tokens, not ~5,000
    # without the chapter modules, reproduce's own rows cover best step and purity
    rows = pd.DataFrame(rp._claim_rows(root, ["number", "letter"], None)).set_index(["claim", "task"])
    assert rows.loc[(rp.CLAIM_LABELS["pure_positional"], "letter"), "ours"] == 0
    assert rows.loc[(rp.CLAIM_LABELS["best_step"], "number"), "agree"]


def test_cli_reproduce_on_a_complete_plan_prints_the_claims(serial, monkeypatch, capsys):
    """The real command on the serial runs (smoke presets shrunk to the test's): nothing to do, claims printed."""
    orig = TrainConfig.smoke.__func__
    monkeypatch.setattr(TrainConfig, "smoke", classmethod(lambda cls, task="number", seed=0, **kw:
                                                          orig(cls, task=task, seed=seed, **{**OVERRIDES, **kw})))
    monkeypatch.setitem(rp.ANALYSIS, "smoke", rp.AnalysisConfig(**{**rp.asdict(rp.ANALYSIS["smoke"]), **ANALYSIS}))
    rc = cli.main(["reproduce", "--out", str(serial.out), "--no-book", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "0 step(s) run" in out and "Headline claims" in out and "pure positional" in out
    assert (serial.out / "claims.csv").exists()


@pytest.mark.parametrize("args, message", [
    (["--engine", "dask"], "argument --engine: invalid choice: 'dask'"),
    (["--scale", "huge"], "argument --scale: invalid choice: 'huge'"),
    (["--tasks", "number,word"], "unknown task 'word'"),
    (["--seeds", "0"], "number of seeds must be at least 1"),
    (["--seeds", "-3"], "number of seeds must be at least 1"),
    (["--seeds", "4-2"], "is empty"),
    (["--seeds", "a"], "--seeds must be a count"),
    (["--threads", "0"], "--threads: must be a positive integer"),
    (["--address", "auto"], "--address is only for --engine ray"),
])
def test_bad_input_is_a_clear_error(args, message, capsys, tmp_path, ledger):
    ledger.bad_input()
    try:
        rc = cli.main(["reproduce", "--out", str(tmp_path), "--no-book", "--quiet", *args])
    except SystemExit as e:  # found by the parser itself
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.startswith("posym reproduce: error:")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_plan_api_validates_too(ledger):
    with ledger.raises(rp.PlanError, match="unknown engine"):
        rp.run_plan(tiny_plan("/nonexistent/never"), engine="mpi")
    with ledger.raises(rp.PlanError, match="at least 1"):
        rp.build_plan("smoke", seeds=0)
    with ledger.raises(rp.PlanError, match="unknown analysis parameters"):
        rp.build_plan("smoke", analysis={"n_prompt": 3})
    with ledger.raises(rp.PlanError, match="--jobs must be a positive integer"):
        rp.run_plan(tiny_plan("/nonexistent/never"), engine="local", workers=0)
    assert rp.parse_seeds("0-2,7") == [0, 1, 2, 7] and rp.parse_seeds(None, "paper") == [0, 1, 2, 3, 4]


def test_chapter_requirements_are_listed_before_the_chapters_run(tmp_path):
    """A paper-scale plan that lacks results the chapters read is stopped with the list (not mid-chapter)."""
    from posym import book

    needs = [r for spec in book.all_specs().values() for r in spec.requires.get("paper", ()) if not r.optional]
    missing = rp.missing_requirements("paper", tmp_path)
    assert len(missing) == len(needs)
    assert all(str(tmp_path) in m for m in missing)
    # smoke chapters train what they need; the only results they read (the audit appendix's seed-0
    # checkpoints) are committed, so the repository's own data folder satisfies them
    smoke_needs = [r for spec in book.all_specs().values() for r in spec.requires.get("smoke", ()) if not r.optional]
    assert len(rp.missing_requirements("smoke", tmp_path)) == len(smoke_needs)
    assert rp.missing_requirements("smoke") == []
