"""The README's two commands stay true: CI runs the test command verbatim."""

import re
from pathlib import Path

from click.testing import CliRunner

from dinosae.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_opens_with_the_run_and_test_commands() -> None:
    run, test = _commands()[:2]
    assert "pip install" in run and ".venv/bin/dinosae " in run
    assert "pip install -e '.[test]'" in test and test.endswith(".venv/bin/pytest")


def test_ci_runs_the_readme_test_command() -> None:
    test = _commands()[1]
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_run_command_is_a_real_command() -> None:
    run = _commands()[0]
    args = run.split(".venv/bin/dinosae ", 1)[1].split()
    result = CliRunner().invoke(main, [*args[:2], "--help"])
    assert result.exit_code == 0, result.output


def test_readme_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
