"""The training engine on a tiny real model (an MLP on scikit-learn's digits): resume equality,
Ctrl-C, kill -9, the NaN guard, checkpoints, DDP through torchrun, and the dispatch commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, RESULT_KEYS, run_script, wait_for

from papercli.cli import app
from papercli.reproduce.checkpoint import load as load_checkpoint
from papercli.reproduce.dispatch import build_command
from papercli.reproduce.options import RunOptions

TINY = REPO / "tests" / "tiny_recipe.py"


def run_tiny(out: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = run_script(TINY, out, *args, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def evals(out: Path) -> list[tuple[int, float]]:
    return [
        (r["step"], r["accuracy"])
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    ]


def weights(out: Path, rank: int = 0) -> list[float]:
    return json.loads((out / f"rank{rank}.json").read_text())["weights"]


def test_run_writes_the_run_directory(tmp_path):
    out = tmp_path / "run"
    run_tiny(out)
    result = json.loads((out / "result.json").read_text())
    assert set(result) >= RESULT_KEYS
    assert result["params"] == 64 * 32 + 32 + 32 * 10 + 10
    assert result["checks"][0]["metric"] == "accuracy" and result["checks"][0]["passed"] is True
    assert result["verdict"] == "reproduced"
    assert [s for s, _ in evals(out)] == [10, 20, 30, 40]
    assert (out / "config.yaml").exists() and (out / "curves.png").stat().st_size > 1000
    state = load_checkpoint(out / "checkpoint.safetensors")
    assert state["step"] == 40 and set(state) >= {"model", "optimizers", "schedulers", "rng"}
    assert state["recipe"] == "tiny" and result["trainable_params"] == result["params"]


def test_same_seed_same_result_and_other_seed_differs(tmp_path):
    run_tiny(tmp_path / "a")
    run_tiny(tmp_path / "b")
    run_tiny(tmp_path / "c", "--seed", "1")
    assert weights(tmp_path / "a") == weights(tmp_path / "b")
    assert weights(tmp_path / "a") != weights(tmp_path / "c")


def test_ctrl_c_checkpoints_and_resume_matches_uninterrupted(tmp_path):
    whole = tmp_path / "whole"
    run_tiny(whole)
    parted = tmp_path / "parted"
    proc = subprocess.Popen(
        [sys.executable, str(TINY), "--out", str(parted), "--set", "sleep=0.05"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    wait_for(lambda: (parted / "metrics.jsonl").exists())  # at least one eval (step 10) done
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err
    stopped_at = load_checkpoint(parted / "checkpoint.safetensors")["step"]
    assert 10 <= stopped_at < 40
    run_tiny(parted, "--resume")
    assert evals(parted) == evals(whole)
    assert weights(parted) == weights(whole)


def test_kill_9_leaves_a_loadable_checkpoint(tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(TINY),
            "--out",
            str(out),
            "--set",
            "eval_every=1",
            "--set",
            "sleep=0.03",
            "--steps",
            "400",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    wait_for(
        lambda: (
            (out / "metrics.jsonl").exists()
            and len((out / "metrics.jsonl").read_text().splitlines()) >= 5
        )
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = load_checkpoint(out / "checkpoint.safetensors")  # a complete file, never a torn one
    logged = len((out / "metrics.jsonl").read_text().splitlines())
    # each step appends its metrics line, then replaces the checkpoint: the kill may fall in between
    assert state["step"] in (logged, logged - 1) and state["step"] >= 4
    run_tiny(out, "--resume", "--set", "eval_every=100")  # eval_every may change on resume
    assert json.loads((out / "result.json").read_text())["steps"] == 400


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    out = tmp_path / "nan"
    proc = run_tiny(out, "--set", "nan_at=25", check=False)
    assert proc.returncode == 3
    assert "loss became nan at step 26" in proc.stderr and "last good checkpoint" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("papercli: error:")]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0]
    assert "Traceback" not in proc.stderr
    assert load_checkpoint(out / "checkpoint.safetensors")["step"] == 20
    result = json.loads((out / "result.json").read_text())
    assert result["verdict"] == "not reproduced" and "nan" in result["error"]


def test_bad_settings_are_one_line_errors(tmp_path):
    proc = run_tiny(tmp_path / "x", "--set", "nope=1", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith(
        "papercli: error: --set nope: unknown setting"
    )
    proc = run_tiny(tmp_path / "x", "--set", "lr=fast", check=False)
    assert proc.returncode == 2 and "expected a number, got 'fast'" in proc.stderr
    proc = run_tiny(tmp_path / "x", "--scale", "huge", check=False)
    assert proc.returncode == 2 and "unknown scale 'huge'" in proc.stderr
    proc = run_tiny(tmp_path / "y", "--resume", check=False)
    assert proc.returncode == 2 and "no resumable run" in proc.stderr
    assert not (tmp_path / "y").exists()  # a failed resume writes nothing


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_gpu_refused_without_cuda(papercli_home):
    proc = subprocess.run(
        [sys.executable, "-m", "papercli", "reproduce", "unet", "--gpu", "--steps", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ},
        check=False,
    )
    assert proc.returncode == 2
    assert "--gpu needs a CUDA device" in proc.stderr and "run without --gpu" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_ddp_two_processes_gloo_disjoint_shards_identical_weights(tmp_path):
    # a top-1 mixture of 16 experts: most experts get no sample in a step on a rank, as in MoE
    # layers, so this also checks that such a recipe trains under DDP (find_unused_parameters)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(TINY),
        "--out",
        str(out),
        "--batch-size",
        "32",
        "--set",
        "experts=16",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
    assert proc.returncode == 0, (
        (out / "result.json").read_text() if (out / "result.json").exists() else proc.stderr[:4000]
    )
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0["seen"]) == len(r1["seen"]) == 40 * 16
    # --batch-size is the global batch: per step the two ranks' 16 samples are disjoint halves
    for step in range(40):
        a = set(r0["seen"][step * 16 : (step + 1) * 16])
        b = set(r1["seen"][step * 16 : (step + 1) * 16])
        assert not a & b
    assert r0["weights"] == r1["weights"]  # DDP kept the replicas identical
    assert json.loads((out / "result.json").read_text())["world_size"] == 2


def test_build_command_uses_torchrun_for_several_processes(tmp_path):
    single = build_command("papercli.recipes.unet", "unet", RunOptions.make({}), tmp_path)
    assert single[1:5] == ["-m", "papercli.recipes.unet", "--paper", "unet"]
    multi = build_command(
        "papercli.recipes.unet",
        "unet",
        RunOptions.make(
            {
                "gpus": 8,
                "nnodes": 2,
                "node_rank": 1,
                "master_addr": "10.0.0.1",
                "master_port": 1234,
                "sets": ["lr=0.1"],
            }
        ),
        tmp_path,
    )
    assert multi[1:3] == ["-m", "torch.distributed.run"]
    joined = " ".join(multi)
    assert (
        "--nproc_per_node 8 --nnodes 2 --node_rank 1 --master_addr 10.0.0.1 --master_port 1234"
        in joined
    )
    assert "-m papercli.recipes.unet" in joined and "--gpu" in multi and "--set lr=0.1" in joined
    assert "--gpus" not in multi[multi.index("-m", 3) :]  # launch options stay with torchrun
    cpu = build_command("papercli.recipes.unet", "unet", RunOptions.make({"procs": 2}), tmp_path)
    assert "--standalone" in cpu and "--gpu" not in cpu


def test_reproduce_dry_run_json(runner):
    result = runner.invoke(app, ["reproduce", "unet", "--dry-run", "--json", "--set", "lr=0.02"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["params"] == 481_762 and plan["device"] == "cpu" and plan["config"]["lr"] == 0.02
    assert plan["command"][1:3] == ["-m", "papercli.recipes.unet"]
    assert plan["data"].startswith("nuclei:") and "BBBC038" in plan["data"]
    paper = json.loads(
        runner.invoke(app, ["reproduce", "unet", "--dry-run", "--json", "--scale", "paper"]).stdout
    )
    assert paper["params"] == 31_030_658 and paper["config"]["tile"] == 572


def test_reproduce_unknown_or_recipe_less_paper(runner):
    assert runner.invoke(app, ["reproduce", "unett"]).exit_code == 2
    result = runner.invoke(app, ["reproduce", "gpt-3"])  # a paper that will keep having none
    assert result.exit_code == 2 and "'gpt-3' has no recipe yet" in result.stderr


def test_recipes_and_doctor(runner):
    listing = runner.invoke(app, ["recipes", "--json"])
    assert listing.exit_code == 0, listing.output
    rows = {(r["paper"], r["scale"]): r for r in json.loads(listing.stdout)}
    # setups are generated from the recipes' configs: sizes and steps come from one place
    assert rows["unet", "paper"]["setup"] == "unet-paper (31.03M); 20,000 steps of 1"
    assert rows["vit", "paper"]["setup"].endswith("93,750 steps of 4096, 16 accumulation steps")
    assert rows["resnet", "mini"]["dataset"] == "fashion-mnist"
    doctor = runner.invoke(app, ["doctor"])
    assert "torch" in doctor.stdout and "unet (mini)" in doctor.stdout
