"""Hostile input for the two parsers, run in a child interpreter (see fuzz_targets.py): only
papercli's own errors may come out, and the interpreter must not crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

TARGETS = Path(__file__).resolve().parent / "fuzz_targets.py"


@pytest.mark.parametrize(
    ("target", "refused"), [("atom", "ArxivUnreadable"), ("registry", "RegistryError")]
)
def test_fuzz_in_a_child_interpreter(target, refused, papercli_home):
    env = {**os.environ, "PAPERCLI_HOME": str(papercli_home), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(TARGETS), target, "300"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    # a negative code is a signal: -11 was libyaml's composer overflowing the C stack
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr[-6000:]}"
    )
    outcomes = json.loads(proc.stdout.strip().splitlines()[-1])
    # the inputs reached both ends: some parse, some are refused with papercli's error
    assert outcomes.get(refused, 0) > 0 and outcomes.get("parsed", 0) > 0, outcomes
    assert sum(outcomes.values()) >= 300
