"""README.md opens with the install-and-run and the test commands, and CI runs exactly the latter."""

from __future__ import annotations

import re

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_starts_with_two_commands():
    commands = _readme_commands()
    assert commands[0].startswith("pip install -e .") and "papercli list" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert _readme_commands()[1] in ci


def test_guide_exists_and_is_linked():
    assert (REPO / "docs" / "guide.md").is_file()
    assert "docs/guide.md" in (REPO / "README.md").read_text(encoding="utf-8")
