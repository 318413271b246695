"""`papercli reproduce` off the happy path, through the real CLI in a subprocess: resume restores
the run it resumes, signals reach the training processes and leave no orphan, one run per
directory, and every bad input is one line and a non-zero exit with nothing on disk damaged.

The recipe is the tiny digits MLP of tests/tiny_recipe.py, registered in the test's user registry
as papers `tiny-a` (claim: accuracy >= 0.5), `tiny-b` (an unreachable bar) and `tiny-wide`
(another size), with `recipe: tests.tiny_recipe` — the way a user points papercli at a recipe of
their own."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, wait_for, write_paper

ENTRY = """\
id: {id}
title: "Tiny digits {id}"
authors: [Ada Lovelace]
year: 2021
date: "2021-01"
field: vision
aliases: [{alias}]
arxiv: "{arxiv}"
summary: A test paper.
key_points: [first point]
claims:
  - {{name: accuracy, metric: top-1, value: 90.5, unit: "%", setting: toy, source: Table 1}}
reproduce:
  recipe: {recipe}
  checks:
    - {{metric: accuracy, op: ">=", value: {bar}, why: "learns digits"}}
"""


@pytest.fixture
def tiny_papers(user_registry: Path) -> Path:
    for i, (pid, bar) in enumerate((("tiny-a", 0.5), ("tiny-b", 1.01), ("tiny-wide", 0.5))):
        text = ENTRY.format(
            id=pid, alias=f"TA{i}", arxiv=f"2101.0100{i}", bar=bar, recipe="tests.tiny_recipe"
        )
        write_paper(user_registry, pid, text=text)
    text = ENTRY.format(
        id="tiny-gan", alias="TG", arxiv="2101.01009", bar=0, recipe="tests.gan_recipe"
    )
    write_paper(user_registry, "tiny-gan", text=text.replace("accuracy, op", "d_real_score, op"))
    return user_registry


def papercli(
    *args: str, env: dict | None = None, timeout: float = 180
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "papercli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "papercli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def evals_done(out: Path, n: int = 1):
    return lambda: (
        (out / "metrics.jsonl").exists()
        and len((out / "metrics.jsonl").read_text().splitlines()) >= n
    )


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line mentions `text` (the run directory): what must not survive."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if text in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("papercli: error:")]
    assert len(errors) == 1, proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def metric_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def finished(tiny_papers, tmp_path_factory) -> Path:
    """A completed, reproduced tiny-a run (copied fresh for each test that damages it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = papercli("reproduce", "tiny-a", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


# ----------------------------------------------------------------------------- 1. --epochs
def test_epochs_and_dry_run_epochs_work_in_every_recipe(tiny_papers, tmp_path):
    out = tmp_path / "ep"
    proc = papercli("reproduce", "tiny-a", "--epochs", "0.5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert result(out)["steps"] == 22  # 0.5 × (1438 // 32)
    for paper in ("resnet", "vit"):
        plan = papercli("reproduce", paper, "--epochs", "2", "--dry-run", "--json")
        assert plan.returncode == 0, plan.stderr
        assert json.loads(plan.stdout)["config"]["steps"] == 2 * (60_000 // 128)
    plan = papercli("reproduce", "unet", "--epochs", "1", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr  # an epoch of tiles needs the image: it is loaded
    assert json.loads(plan.stdout)["config"]["steps"] > 1
    real = tmp_path / "resnet"
    proc = papercli(
        "reproduce", "resnet", "--epochs", "0.1", "--out", str(real),
        "--set", "dataset=digits", "--set", "arms=resnet20", "--set", "width=4",
        "--set", "batch_size=50", "--set", "eval_every=100",
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    assert result(real)["steps"] == 3  # ceil(0.1 * 1500 // 50)


# ----------------------------------------------------------------------------- 2. resume restores
def test_resume_restores_the_run_and_refuses_conflicting_options(tiny_papers, tmp_path):
    out = tmp_path / "run"
    proc = start(
        "reproduce",
        "tiny-a",
        "--steps",
        "30",
        "--set",
        "sleep=0.05",
        "--set",
        "lr=0.04",
        "--out",
        str(out),
    )
    wait_for(evals_done(out))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"--resume --out {out}" in err
    config = (out / "config.yaml").read_text()

    conflict = papercli(
        "reproduce", "tiny-a", "--resume", "--out", str(out), "--set", "lr=0.1", "--steps", "99"
    )
    line = one_line_error(conflict, 2, "--set lr", "steps", "log_every")
    assert "seed" not in line
    assert (out / "config.yaml").read_text() == config  # nothing rewritten

    # no options: the recorded ones (30 steps, lr 0.04, sleep) come back; log_every may change
    proc = papercli("reproduce", "tiny-a", "--resume", "--out", str(out), "--set", "log_every=1")
    assert proc.returncode == 0, proc.stderr
    assert result(out)["steps"] == 30
    assert (out / "config.yaml").read_text() == config
    whole = tmp_path / "whole"
    assert (
        papercli(
            "reproduce", "tiny-a", "--steps", "30", "--set", "lr=0.04", "--out", str(whole)
        ).returncode
        == 0
    )
    assert [r["accuracy"] for r in metric_rows(out)] == [r["accuracy"] for r in metric_rows(whole)]


# ----------------------------------------------------------------------------- 3. lost result
def test_resume_of_a_finished_run_without_result_reevaluates_to_the_same_verdict(finished):
    before = result(finished)
    (finished / "result.json").unlink()
    proc = papercli("reproduce", "tiny-a", "--resume", "--out", str(finished))
    assert proc.returncode == 0, proc.stderr
    after = result(finished)
    assert after["verdict"] == before["verdict"] == "reproduced"
    assert after["metrics"] == before["metrics"] and after["steps"] == before["steps"]
    assert "REPRODUCED" in proc.stdout


# ----------------------------------------------------------------------------- 4. signals
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_to_papercli_reaches_training_and_leaves_no_orphan(tiny_papers, tmp_path, sig, code):
    out = tmp_path / f"sig{code}"
    proc = start("reproduce", "tiny-a", "--steps", "100", "--set", "sleep=0.05", "--out", str(out))
    wait_for(evals_done(out))
    assert processes_mentioning(str(out))  # the training process is running
    proc.send_signal(sig)  # to papercli's own PID, not its process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "interrupted at step" in err and "Traceback" not in err
    assert processes_mentioning(str(out)) == []
    assert (
        papercli("reproduce", "tiny-a", "--resume", "--out", str(out), "--steps", "100").returncode
        == 0
    )


def test_sigterm_under_torchrun_stops_every_worker(tiny_papers, tmp_path):
    out = tmp_path / "ddp"
    proc = start(
        "reproduce", "tiny-a", "--procs", "2", "--steps", "400", "--set", "sleep=0.05",
        "--set", "eval_every=5", "--out", str(out),
    )  # fmt: skip
    wait_for(evals_done(out), timeout=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert processes_mentioning(str(out)) == []
    assert (out / "checkpoint.safetensors").exists()


# ----------------------------------------------------------------------------- 5. run lock
def test_second_run_into_the_same_directory_is_refused_naming_the_holder(tiny_papers, tmp_path):
    out = tmp_path / "busy"
    first = start("reproduce", "tiny-a", "--steps", "100", "--set", "sleep=0.05", "--out", str(out))
    try:
        wait_for(evals_done(out))
        config = (out / "config.yaml").read_text()
        second = papercli("reproduce", "tiny-b", "--out", str(out))
        one_line_error(second, 1, f"PID {first.pid}", "in use")
        assert (out / "config.yaml").read_text() == config
        assert all(r["step"] % 10 == 0 for r in metric_rows(out))  # one writer only
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


def test_a_stale_lock_of_a_dead_process_is_recovered(tiny_papers, tmp_path):
    out = tmp_path / "stale"
    out.mkdir()
    (out / ".lock").write_text("999999\n")  # left by a run that was killed
    assert papercli("reproduce", "tiny-a", "--out", str(out)).returncode == 0


# ----------------------------------------------------------------------------- 6. bad input
def test_a_fresh_run_into_an_old_directory_keeps_nothing_of_the_old_run(finished):
    proc = papercli("reproduce", "tiny-a", "--out", str(finished), "--set", "nan_at=3")
    assert proc.returncode == 3, proc.stderr
    assert "no checkpoint was written" in proc.stderr  # not the earlier run's checkpoint
    assert not (finished / "checkpoint.safetensors").exists()


def test_out_pointing_at_a_file(tiny_papers, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    one_line_error(papercli("reproduce", "tiny-a", "--out", str(target)), 2, "is a file")
    assert target.read_text() == "keep me"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A mount point for a tmpfs of a given size and mode (needs root; else the test skips)."""
    mounts = []

    def make(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root)")
        mounts.append(point)
        return point

    yield make
    for point in mounts:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_read_only_directory(tiny_papers, tmp_path, small_tmpfs):
    if os.geteuid() == 0:
        readonly = small_tmpfs("ro", "ro,size=1m")  # root ignores permission bits, not ro mounts
    else:
        readonly = tmp_path / "ro"
        readonly.mkdir(mode=0o555)
    one_line_error(
        papercli("reproduce", "tiny-a", "--out", str(readonly / "run")),
        1,
        "cannot create run directory",
    )


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(
    tiny_papers, tmp_path, small_tmpfs
):
    """ENOSPC from a real full file system: a 64 KiB tmpfs holds the run's small files and one
    checkpoint (~40 KiB with momentum), not a second one beside it."""
    disk = small_tmpfs("disk", "size=64k")
    out = disk / "run"
    proc = papercli("reproduce", "tiny-a", "--out", str(out), "--set", "hidden=64")
    line = one_line_error(proc, 1, "could not write checkpoint", "No space left on device")
    assert "the previous checkpoint" in line and "is intact" in line
    from papercli.reproduce.checkpoint import load

    assert load(out / "checkpoint.safetensors")["step"] == 10  # the first one, whole
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def corrupt_and_resume(run: Path, data: bytes) -> subprocess.CompletedProcess:
    (run / "checkpoint.safetensors").write_bytes(data)
    proc = papercli("reproduce", "tiny-a", "--resume", "--out", str(run))
    assert (run / "checkpoint.safetensors").read_bytes() == data  # left as it was
    return proc


def test_damaged_checkpoints_are_refused_in_one_line(finished):
    good = (finished / "checkpoint.safetensors").read_bytes()
    for damaged in (b"", good[: len(good) // 2], os.urandom(4096), good[:8] + os.urandom(64)):
        proc = corrupt_and_resume(finished, damaged)
        one_line_error(proc, 1, "checkpoint")
        assert "REPRODUCED" not in proc.stdout  # 7: no stale table from the earlier run


def test_a_malicious_pickle_is_never_unpickled(finished, tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    proc = corrupt_and_resume(finished, pickle.dumps({"model": Payload()}))
    one_line_error(proc, 1, "not a readable papercli checkpoint")
    assert "weights_only" not in proc.stderr and not marker.exists()


def test_foreign_checkpoints_another_size_or_recipe(finished, tiny_papers, tmp_path):
    wide = tmp_path / "wide"
    assert papercli("reproduce", "tiny-wide", "--out", str(wide)).returncode == 0
    one_line_error(
        corrupt_and_resume(finished, (wide / "checkpoint.safetensors").read_bytes()),
        1, "does not fit this model", "differ in shape",
    )  # fmt: skip
    gan = tmp_path / "gan"
    assert papercli("reproduce", "tiny-gan", "--out", str(gan)).returncode in (0, 1)
    one_line_error(
        corrupt_and_resume(finished, (gan / "checkpoint.safetensors").read_bytes()),
        1, "written by recipe 'tests.gan_recipe'",
    )  # fmt: skip


def test_a_torn_last_metrics_line_is_tolerated_on_resume(tiny_papers, tmp_path):
    out = tmp_path / "torn"
    proc = start("reproduce", "tiny-a", "--set", "sleep=0.05", "--out", str(out))
    wait_for(evals_done(out))
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 20, "train_lo')  # killed mid-write
    proc = papercli("reproduce", "tiny-a", "--resume", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert [r["step"] for r in metric_rows(out)] == [10, 20, 30, 40]
    assert result(out)["verdict"] == "reproduced"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--set", "batch_size=0"), "batch_size must be >= 1, got 0"),
        (("--set", "eval_every=0"), "eval_every must be >= 1"),
        (("--set", "steps=0"), "steps must be >= 1"),
        (("--set", "holdout=2"), "holdout must be > 0 and < 1, got 2.0"),
        (("--set", "ema_decay=1.5"), "ema_decay must be >= 0 and < 1"),
        (("--set", "batch_size=30", "--procs", "4"), "cannot be split into 4 process(es)"),
        (("--batch-size", "4096", "--steps", "1"), "larger than the 1438 training samples"),
        (("--epochs", "nan"), "--epochs must be a finite number"),
        (("--epochs", "0"), "--epochs must be more than 0"),
    ],
)
def test_bad_settings_fail_when_the_config_is_built(tiny_papers, tmp_path, args, needle):
    one_line_error(papercli("reproduce", "tiny-a", "--out", str(tmp_path / "x"), *args), 2, needle)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_bad_steps_option(tiny_papers, steps):
    proc = papercli("reproduce", "tiny-a", "--steps", steps)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--steps" in proc.stderr


def test_light_install_says_what_to_install(tiny_papers, tmp_path):
    """Without torch and numpy (blocked by an import hook, as on `pip install papercli`)."""
    hook = tmp_path / "hide"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'numpy'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Hide())\n"
    )
    env = {"PYTHONPATH": str(hook)}
    for args in (("reproduce", "unet"), ("recipes", "--json"), ("reproduce", "unet", "--dry-run")):
        one_line_error(papercli(*args, env=env), 2, "pip install 'papercli[train]'", "PyTorch")
    assert papercli("list", env=env).returncode == 0  # the registry side needs neither


# ----------------------------------------------------------------------------- 7. failed resume
def test_resume_of_nothing_writes_nothing(tiny_papers, tmp_path):
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    for out in (missing, empty):
        one_line_error(
            papercli("reproduce", "tiny-a", "--resume", "--out", str(out)), 2, "no resumable run"
        )
    assert not missing.exists() and list(empty.iterdir()) == []
