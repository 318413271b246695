"""The light commands through Typer's runner, and the installed console script as a real process."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, serve_folder, write_paper

from papercli.cli import app

ANSI = re.compile(r"\x1b\[")
BOX = re.compile(r"[─│┏┃┡╇└┘┌┐╭╮╰╯━]")


def test_version(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"papercli \d+\.\d+\.\d+\n", result.stdout)


def test_list_filters_and_json(runner):
    out = runner.invoke(app, ["list", "--json"])
    assert out.exit_code == 0
    papers = json.loads(out.stdout)
    assert len(papers) >= 53
    assert {"id", "title", "year", "field", "arxiv", "tags"} <= set(papers[0])
    vision = json.loads(runner.invoke(app, ["list", "--field", "vision", "--json"]).stdout)
    assert vision and all(p["field"] == "vision" for p in vision)
    assert "vit" in {p["id"] for p in vision}
    since = json.loads(runner.invoke(app, ["list", "--since", "2023", "--json"]).stdout)
    assert since and all(p["year"] >= 2023 for p in since)
    year = json.loads(runner.invoke(app, ["list", "--year", "2015", "--json"]).stdout)
    assert {"unet", "resnet", "yolo"} <= {p["id"] for p in year}
    tagged = json.loads(runner.invoke(app, ["list", "--tag", "diffusion", "--json"]).stdout)
    assert {"ddpm", "latent-diffusion"} <= {p["id"] for p in tagged}
    by_title = json.loads(runner.invoke(app, ["list", "--sort", "title", "--json"]).stdout)
    titles = [p["title"].lower() for p in by_title]
    assert titles == sorted(titles)
    by_year = [p["year"] for p in papers]
    assert by_year == sorted(by_year)


def test_list_plain_output_has_no_colour_or_boxes(runner):
    result = runner.invoke(app, ["list", "--field", "general"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].split() == ["ID", "YEAR", "FIELD", "ARXIV", "TITLE"]
    assert "flash-attention-2" in result.stdout
    assert not ANSI.search(result.stdout) and not BOX.search(result.stdout)


def test_list_rejects_bad_options(runner):
    assert runner.invoke(app, ["list", "--field", "biology"]).exit_code == 2
    result = runner.invoke(app, ["list", "--year", "2020", "--since", "2019"])
    assert result.exit_code == 2
    assert "exclude each other" in result.stderr


def test_summary_shows_summary_points_and_claims(runner):
    result = runner.invoke(app, ["summary", "ViT"])
    assert result.exit_code == 0
    out = result.stdout
    assert "An Image is Worth 16x16 Words" in out
    assert "Key points" in out
    assert "88.55 %" in out and "Table 2" in out


def test_show_json_has_every_field(runner):
    result = runner.invoke(app, ["show", "1505.04597v1", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["id"] == "unet"
    for key in (
        "title",
        "authors",
        "year",
        "date",
        "field",
        "tags",
        "aliases",
        "arxiv",
        "urls",
        "summary",
        "key_points",
        "claims",
        "local",
    ):
        assert key in data
    assert data["claims"][0]["source"] == "Table 1"


def test_show_plain(runner):
    result = runner.invoke(app, ["show", "resnet"])
    assert result.exit_code == 0
    assert "Deep Residual Learning" in result.stdout and "1512.03385" in result.stdout


def test_unknown_paper_exits_2_with_suggestion(runner):
    result = runner.invoke(app, ["summary", "vitt"])
    assert result.exit_code == 2
    assert result.stderr == "papercli: error: unknown paper 'vitt' — did you mean: vit?\n"
    assert "Traceback" not in result.output


def test_search_ranks_best_match_first(runner):
    result = runner.invoke(app, ["search", "flash", "attention", "--json"])
    ids = [r["id"] for r in json.loads(result.stdout)]
    assert ids[:2] == ["flash-attention", "flash-attention-2"]
    assert (
        json.loads(runner.invoke(app, ["search", "segment", "anything", "--json"]).stdout)[0]["id"]
        == "sam"
    )
    assert json.loads(runner.invoke(app, ["search", "diffusion", "--json"]).stdout)[0]["id"] in (
        "ddpm",
        "latent-diffusion",
    )
    none = runner.invoke(app, ["search", "zzzqqq"])
    assert none.exit_code == 1 and "no paper matches" in none.stderr


def test_bib_entries(runner, user_registry):
    write_paper(user_registry, "special-chars")
    result = runner.invoke(app, ["bib", "vit", "special-chars"])
    assert result.exit_code == 0
    out = result.stdout
    assert out.count("@inproceedings{dosovitskiy2021image,") == 1  # ViT: ICLR 2021
    assert out.count("@misc{lovelace2021test,") == 1  # no venue: an arXiv preprint
    assert (
        "eprint = {2010.11929}" in out
        and "archivePrefix = {arXiv}" in out
        and "primaryClass = {cs.CV}" in out
    )
    assert r"A Test Paper \& Its \{Braces\}" in out
    for entry in out.strip().split("\n\n"):
        assert entry.count("{") == entry.count("}") + entry.count(r"\}") - entry.count(r"\{")


def test_bib_all_has_unique_keys(runner):
    result = runner.invoke(app, ["bib", "--all"])
    keys = re.findall(r"^@\w+\{([^,]+),", result.stdout, flags=re.M)
    assert len(keys) >= 53 and len(keys) == len(set(keys))
    assert runner.invoke(app, ["bib"]).exit_code == 2


def test_validate_reports_every_problem(runner, tmp_path):
    write_paper(tmp_path, "good")
    bad = write_paper(tmp_path, "bad", alias="x2", arxiv="2101.00002")
    bad.write_text(
        bad.read_text()
        .replace("field: vision", "field: biology")
        .replace("year: 2021", "year: soon")
    )
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: broken\ntitle: [\n")
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3  # both problems of bad.yaml, not only its first
    assert any("bad.yaml:4: year: must be an integer" in line for line in lines)
    assert any("bad.yaml:6: field: 'biology' is not one of" in line for line in lines)
    assert any("broken.yaml:" in line and "malformed YAML" in line for line in lines)
    assert "3 problem(s) in 3 file(s)" in result.stderr


def test_validate_ok_and_single_file(runner, tmp_path):
    assert runner.invoke(app, ["validate"]).exit_code == 0
    good = write_paper(tmp_path, "good")
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0 and "ok: 1 file(s) valid" in result.stdout
    assert runner.invoke(app, ["validate", str(tmp_path / "missing")]).exit_code == 2


def test_bad_user_file_is_skipped_with_a_warning_and_untouched(runner, user_registry):
    bad = user_registry / "mine.yaml"
    bad.write_text("id: mine\ntitle: 'oops\n")
    before = bad.read_bytes()
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0  # the rest of the registry is still served
    assert result.stderr.startswith(f"papercli: warning: skipped {bad}:")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "vit" in result.stdout
    assert "Traceback" not in result.output
    assert bad.read_bytes() == before


def _console_script() -> list[str]:
    exe = shutil.which("papercli")
    if exe is None:
        pytest.skip("the papercli console script is not installed")
    return [exe]


def test_console_script_subprocess(papercli_home):
    env = {**os.environ, "PAPERCLI_HOME": str(papercli_home)}
    proc = subprocess.run(
        [*_console_script(), "list", "--json"], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) >= 53
    proc = subprocess.run(
        [*_console_script(), "show", "nope-paper"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("papercli: error: unknown paper 'nope-paper'")
    proc = subprocess.run(
        [sys.executable, "-m", "papercli", "list", "--field", "language"],
        capture_output=True,
        text=True,
        env={**env, "NO_COLOR": "1"},
        check=False,
    )
    assert proc.returncode == 0 and "bert" in proc.stdout
    assert not ANSI.search(proc.stdout) and not BOX.search(proc.stdout)


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["summary", "vit"],
        ["show", "unet"],
        ["search", "attention"],
        ["bib", "vit"],
        ["validate"],
    ],
)
def test_light_commands_never_import_torch_or_numpy(argv, papercli_home):
    code = (
        "import sys\n"
        "from papercli.cli import app\n"
        f"sys.argv = ['papercli', *{argv!r}]\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'requests', 'feedparser') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY=' + ','.join(heavy) + '\\n')\n"
    )
    env = {**os.environ, "PAPERCLI_HOME": str(papercli_home)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=False
    )
    assert "HEAVY=\n" in proc.stderr, proc.stderr


def test_reproduce_without_fashion_mnist_prints_the_command_that_gets_it(tmp_path, papercli_home):
    empty = tmp_path / "fmnist"
    env = {**os.environ, "PAPERCLI_HOME": str(papercli_home), "PAPERCLI_FASHION_MNIST": str(empty)}
    proc = subprocess.run(
        [sys.executable, "-m", "papercli", "reproduce", "vit", "--steps", "1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    line = proc.stderr.splitlines()[-1]
    assert line.startswith(f"papercli: error: Fashion-MNIST not found in {empty}; "), proc.stderr
    command = line.split("get it with: ", 1)[1].split("  (", 1)[0]
    assert shlex.split(command) == [sys.executable, "-m", "papercli.data.fashion_mnist"]

    # The printed command, verbatim, fetches from the mirror into $PAPERCLI_FASHION_MNIST. No
    # copy of the official archives is reachable offline, so the mirror serves other bytes: the
    # command must reach it and refuse them by MD5, keeping nothing.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "train-images-idx3-ubyte.gz").write_bytes(b"not the official archive")
    with serve_folder(mirror) as url:
        got = subprocess.run(
            shlex.split(command),
            capture_output=True,
            text=True,
            env={**env, "PAPERCLI_FASHION_MNIST_URL": url},
            check=False,
        )
    assert got.returncode == 1 and got.stderr.startswith(
        f"papercli: error: {url}train-images-idx3-ubyte.gz: checksum mismatch"
    ), got.stderr
    assert list(empty.iterdir()) == []


# ----------------------------------------------------------------------------- lazy command group
def _group():
    import typer.main

    return typer.main.get_command(app)  # what `papercli` and Typer's test runner build


def test_running_a_command_converts_only_that_command(capsys):
    group = _group()
    assert group.commands.converted() == []
    assert list(group.commands)[:4] == ["list", "summary", "show", "search"]
    group.main(["show", "vit", "--json"], prog_name="papercli", standalone_mode=False)
    assert json.loads(capsys.readouterr().out)["id"] == "vit"
    assert group.commands.converted() == ["show"]


def test_help_lists_every_command_as_the_full_conversion_would():
    group = _group()
    ctx = group.context_class(group, info_name="papercli")
    lazy = group.get_help(ctx)
    assert group.commands.converted() == []
    for name in list(group.commands):
        assert group.commands[name].name == name  # convert every command, as Typer does
    assert group.commands.converted() == list(group.commands)
    assert lazy == group.get_help(ctx)
    for name in ("list", "reproduce", "doctor"):
        assert re.search(rf"^  {name} +\S", lazy, re.M), lazy


def test_unknown_command_is_a_usage_error_with_a_suggestion(runner):
    result = runner.invoke(app, ["lst"])
    assert result.exit_code == 2
    assert "No such command 'lst'. Did you mean 'list'?" in result.output


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("papercli r", ['"reproduce":"Train a paper', '"recipes":', '"runs":']),
        ("papercli list --f", ['"--field":"Only this field."']),
        ("papercli reproduce unet --sc", ['"--scale":']),
    ],
)
def test_shell_completion_sees_every_command_and_option(words, expected, papercli_home):
    env = {
        **os.environ,
        "PAPERCLI_HOME": str(papercli_home),
        "_PAPERCLI_COMPLETE": "complete_zsh",
        "_TYPER_COMPLETE_ARGS": words,
    }
    code = "import sys; sys.argv = ['papercli']; from papercli.cli import main; main()"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    for item in expected:
        assert item in proc.stdout, proc.stdout
