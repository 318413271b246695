"""README.md opens with the install-and-run and the test commands, and CI runs exactly the latter."""

from __future__ import annotations

import re

from conftest import REPO


def _readme_commands() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_starts_with_two_commands():
    install_and_reproduce, run_tests = _readme_commands()[:2]
    assert install_and_reproduce.startswith("pip install -e '.[train]'")
    assert install_and_reproduce.endswith("&& papercli reproduce unet")
    assert run_tests.startswith("pip install -e '.[test]'") and "pytest" in run_tests
    for command in (install_and_reproduce, run_tests):
        assert "--no-deps" not in command and "stardist" not in command


def test_readme_torch_pin_satisfies_the_projects_floor():
    """The version README pins is one the `train` extra accepts (else pip cannot resolve it)."""
    import tomllib

    from packaging.requirements import Requirement

    extra = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]["train"]
    torch = next(Requirement(r) for r in extra if Requirement(r).name == "torch")
    assert not any(s.operator in ("==", "===") for s in torch.specifier)  # a floor, not a pin
    for command in _readme_commands()[:2]:
        pinned = re.search(r"'torch==([0-9.]+)'", command).group(1)
        assert torch.specifier.contains(pinned), (pinned, str(torch.specifier))


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert _readme_commands()[1] in ci


def test_guide_exists_and_is_linked():
    assert (REPO / "docs" / "guide.md").is_file()
    assert "docs/guide.md" in (REPO / "README.md").read_text(encoding="utf-8")
