"""The files around the code say the same as each other: the Procfile is the truth about each
process's command (README.md's table and the Dockerfile's notes repeat it), CI runs README's
test command, uv.lock was made from pyproject.toml as it is, and pyproject's notes match its
settings."""
from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
PROCFILE = dict(line.split(": ", 1) for line in (REPO / "Procfile").read_text().splitlines() if line.strip())
README = (REPO / "README.md").read_text()


def test_readme_gives_each_process_the_procfiles_command():
    table = dict(re.findall(r"^\| `(\w+)` \| `(.+?)` \|", README, re.MULTILINE))
    assert {name: table.get(name) for name in PROCFILE} == PROCFILE


def test_the_dockerfile_notes_give_the_procfiles_commands():
    notes = dict(re.findall(r"^#\s+(\w+):\s+(.+)$", (REPO / "Dockerfile").read_text(), re.MULTILINE))
    assert notes["release"] == PROCFILE["release"] and notes["beat"] == PROCFILE["beat"]
    assert notes["worker"] == PROCFILE["worker"].replace("${WORKER_CONCURRENCY:-4}", "4")


def test_ci_runs_readmes_test_command():
    quick_start = README.split("## Quick start", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    [tests] = [line.split("#")[0].strip() for line in quick_start.splitlines() if "runs the tests" in line]
    # The gate first, as one && list: the script's exit status is the first failure's.
    assert tests == "./run ruff check && ./run ruff format --check && ./run mypy && ./run pytest"
    commands = [line for line in (REPO / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert commands[-1] == tests


def test_the_wrapper_is_an_executable_posix_script():
    wrapper = REPO / "run"
    assert wrapper.stat().st_mode & 0o111 and wrapper.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(wrapper)], check=True, timeout=10)


def _requirements(names: list[str], extra: str | None = None) -> set[tuple]:
    return {(r.name.lower(), tuple(sorted(r.extras)), str(r.specifier), extra) for r in map(Requirement, names)}


def test_uv_lock_was_made_from_pyproject_as_it_is():
    """What `uv lock --check` (and `./run`'s --locked) finds first, said without uv: run `uv lock`."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = _requirements(project["dependencies"]).union(
        *(_requirements(names, extra) for extra, names in project["optional-dependencies"].items()))
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    [relay] = [package for package in lock["package"] if package["name"] == "relay"]
    locked = set()
    for entry in relay["metadata"]["requires-dist"]:
        extra = re.fullmatch(r"extra == '(\w+)'", entry["marker"]).group(1) if "marker" in entry else None
        locked |= _requirements([f"{entry['name']}[{','.join(entry.get('extras', []))}]{entry.get('specifier', '')}"],
                                extra)
    assert locked == wanted, "uv.lock is not pyproject.toml's: run `uv lock` (./run installs uv)"


def test_pyprojects_note_on_processes_says_how_many_it_starts():
    pytest_settings = (REPO / "pyproject.toml").read_text().split("[tool.pytest.ini_options]", 1)[1]
    words = {"One": 1, "Two": 2, "Three": 3, "Four": 4, "Five": 5, "Six": 6, "Seven": 7, "Eight": 8}
    said = re.search(r"^# (\w+) process", pytest_settings, re.MULTILINE).group(1)
    started = int(re.search(r"-n (\d+)", pytest_settings).group(1))
    assert words[said] == started
