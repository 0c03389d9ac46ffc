"""The official client drives the stand-in: `vh execution run train` starts a chain of real
train.py processes, retry.py relaunches them, and `vh execution list`, `info` and `outputs`
read the chain back.

`vh` runs as its own process, pointed at the stand-in with VALOHAI_HOST, VALOHAI_TOKEN and
VALOHAI_PROJECT (it accepts a plain http:// host), with HOME, XDG_CONFIG_HOME and
VALOHAI_CONFIG_DIR in temporary folders so that nothing of the developer's own
configuration is read or written. In local mode `vh execution run --commit SHA` reads the
step from `git show SHA:valohai.yaml` in the project folder; the stand-in's commit
identifier is fixed, so the folder is a git repository whose one real commit the replace ref
``refs/replace/<COMMIT>`` stands in for.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from standin import COMMIT, ENVIRONMENT, PROJECT_ID, ROOT, Platform

import retry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

CHAIN_TIMEOUT = 60.0  # hang guards, sized for a machine many times as busy
VH_TIMEOUT = 60.0
#: The console script pip installed beside this interpreter (requirements-dev.txt).
VH = Path(sys.executable).with_name("vh")
#: What valohai-cli's create call sends when the step has no time limit, environment variable
#: groups or Kubernetes resources, and no --environment, --image or --priority is given.
CLI_CREATE_KEYS = {
    "commit",
    "inputs",
    "parameters",
    "project",
    "step",
    "title",
    "tags",
    "environment_variables",
    "runtime_config",
}


@dataclass
class Vh:
    """Runs the real `vh` against one stand-in, from a project folder of its own."""

    platform: Platform
    folder: Path
    env: dict[str, str]
    printed: list[str] = field(default_factory=list)

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(VH), *args],
            cwd=self.folder,
            env=self.env,
            stdin=subprocess.DEVNULL,  # a prompt would fail at once, not wait
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=VH_TIMEOUT,
            check=False,
        )
        self.printed += [done.stdout, done.stderr]
        if ok:
            assert done.returncode == 0, f"vh {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done

    def run_train(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """`vh execution run train --commit COMMIT ...`, options and dashed parameters as given."""
        return self("execution", "run", "train", f"--commit={COMMIT}", *args, ok=ok)

    def outputs(self, counter: int) -> dict[str, str]:
        """`vh execution outputs N` read back: ``{file name: datum URL}``."""
        rows = (line.split() for line in self("execution", "outputs", str(counter)).stdout.splitlines())
        return {row[0]: row[1] for row in rows if len(row) == 3 and row[1].startswith("datum://")}


def git_clone_at_commit(folder: Path, home: Path) -> None:
    """A git repository holding valohai.yaml, its commit readable as the stand-in's COMMIT."""
    folder.mkdir()
    shutil.copy(ROOT / "valohai.yaml", folder / "valohai.yaml")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER") for what, value in _IDENTITY.items()},
    }
    for command in (
        ["init", "--quiet"],
        ["add", "valohai.yaml"],
        ["commit", "--quiet", "--message", "The sample step"],
        ["update-ref", f"refs/replace/{COMMIT}", "HEAD"],
    ):
        subprocess.run(["git", *command], cwd=folder, env=env, check=True, capture_output=True, timeout=60)


_IDENTITY = {"NAME": "Stand-in", "EMAIL": "standin@example.com", "DATE": "2025-01-15T09:30:00Z"}


def vh_for(platform: Platform, tmp_path: Path, *, mode: str = "local") -> Vh:
    home = tmp_path / "home"
    (home / "valohai-cli").mkdir(parents=True)
    folder = tmp_path / "project"
    if mode == "local":
        git_clone_at_commit(folder, home)
    else:  # remote: the step comes from the API's commit detail, no checkout needed
        folder.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),  # vh runs git
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "VALOHAI_CONFIG_DIR": str(home / "valohai-cli"),
        "VALOHAI_HOST": platform.host,
        "VALOHAI_TOKEN": platform.token or "",
        "VALOHAI_PROJECT": PROJECT_ID,
        "VALOHAI_PROJECT_MODE": mode,
        "VALOHAI_PROJECT_ROOT": str(folder),
        "COLUMNS": "200",
        "PYTHONUTF8": "1",  # vh prints emoji
    }
    return Vh(platform, folder, env)


@pytest.fixture
def vh(tmp_path: Path) -> Iterator[Vh]:
    assert VH.exists(), f"{VH} is missing: pip install -r requirements-dev.txt"
    with Platform(tmp_path / "standin") as platform:
        cli = vh_for(platform, tmp_path)
        yield cli
        assert platform.leaks() == []
        assert not any(platform.token and platform.token in text for text in cli.printed)
        # vh kept to the folders it was given and wrote nothing there: no config, no cache.
        home = tmp_path / "home"
        assert [path.relative_to(home).as_posix() for path in sorted(home.rglob("*"))] == ["valohai-cli"]


def test_vh_run_starts_a_chain_that_recovers_and_vh_reads_it_back(vh: Vh) -> None:
    # TRAIN_OUTAGE_ATTEMPTS=1: the first attempt fails in epoch 3 of 5, the retry resumes
    # from epoch 2. The variable is the CLI's own --var, copied by the retry.
    created = vh.run_train("--title=CLI chain", "--tag=nightly", "--var=TRAIN_OUTAGE_ATTEMPTS=1", "--delay=0")
    assert "Execution #41 created" in created.stderr  # vh says what it did on stderr
    first, second = vh.platform.wait_until_idle(CHAIN_TIMEOUT)
    assert (first.counter, first.status, first.exit_code) == (41, "error", retry.EXIT_RETRY_STARTED)
    assert (second.counter, second.status, second.tags) == (42, "complete", ["nightly", "retry: 1"])

    listing = vh("execution", "list").stdout
    rows = [line.split()[:3] for line in listing.splitlines() if line[:1].isdigit()]
    assert rows == [["42", "complete", "train"], ["41", "error", "train"]]
    entries = json.loads(vh("--output-format=json", "execution", "list").stdout)
    assert [(e["counter"], e["tags"], e["title"]) for e in entries] == [
        (42, ["nightly", "retry: 1"], "CLI chain"),
        (41, ["nightly"], "CLI chain"),
    ]

    info = vh("execution", "info", "41").stdout
    assert "retry 1/3 started as #42" in info
    assert ENVIRONMENT["name"] in info  # the project's default: the CLI named none
    assert re.search(r"failure_rate\s+0\.5", info)  # the step's default, sent by the CLI

    outputs = vh.outputs(41)
    assert sorted(outputs) == ["checkpoint-epoch-0001.json", "checkpoint-epoch-0002.json"]
    retry_outputs = vh.outputs(42)
    assert set(retry_outputs) == {f"checkpoint-epoch-000{n}.json" for n in (3, 4, 5)} | {"model.json"}
    # The retry's input is the failed attempt's newest checkpoint, as vh shows both.
    retry_info = vh("execution", "info", "42").stdout
    assert re.search(rf"checkpoint\s+{re.escape(outputs['checkpoint-epoch-0002.json'])}", retry_info)


def test_the_cli_create_call_passes_our_rules_and_leaves_out_inherit_environment_variables(vh: Vh) -> None:
    vh.run_train("--title=CLI chain", "--tag=nightly", "--var=TRAIN_OUTAGE_ATTEMPTS=1", "--delay=0")
    first, second = vh.platform.wait_until_idle(CHAIN_TIMEOUT)
    cli_create, retry_create = vh.platform.creates()
    assert cli_create.user_agent.startswith("valohai-cli/")
    assert not retry_create.user_agent.startswith("valohai-cli/")

    body = first.create_body
    assert body == cli_create.body
    assert vh.platform._validate(body) == {}  # the rules our own payload is held to
    assert set(body) >= CLI_CREATE_KEYS
    # The CLI has no option for it: whether the project's variables and secrets reach the
    # execution is left to the API's unpublished default. Nor does it name an environment.
    assert "inherit_environment_variables" not in body and "environment" not in body
    assert body["parameters"] == {"retries": 3, "delay": 0, "failure_rate": 0.5, "failure_type": "connection"}
    assert body["inputs"] == {"checkpoint": []}  # an optional input, sent empty
    assert (body["tags"], body["title"]) == (["nightly"], "CLI chain")
    assert (body["environment_variables"], body["runtime_config"]) == ({"TRAIN_OUTAGE_ATTEMPTS": "1"}, {})

    # retry.py's create of the retry: the same step, parameters and title, the environment
    # read from the detail, the checkpoint as input, inheritance asked for explicitly.
    ours = second.create_body
    assert {key: ours[key] for key in ("project", "commit", "step", "parameters", "title")} == {
        key: body[key] for key in ("project", "commit", "step", "parameters", "title")
    }
    assert (ours["inherit_environment_variables"], ours["environment"]) == (True, ENVIRONMENT["id"])
    assert ours["inputs"] == {"checkpoint": [f"datum://{vh.platform.outputs_of(first)[-1].id}"]}
    assert ours["environment_variables"]["TRAIN_OUTAGE_ATTEMPTS"] == "1"
    assert ours["environment_variables"]["RETRY_PARENT"] == first.id


def test_vh_run_with_dashed_parameters_starts_a_chain_that_gives_up(vh: Vh) -> None:
    vh.run_train("--failure-rate=1", "--retries=1", "--delay=0")
    first, second = vh.platform.wait_until_idle(CHAIN_TIMEOUT)
    sent = first.create_body["parameters"]  # --failure-rate on the command line, failure_rate in the body
    assert sent == {"retries": 1, "delay": 0, "failure_rate": 1.0, "failure_type": "connection"}
    assert (first.exit_code, second.exit_code) == (retry.EXIT_RETRY_STARTED, retry.EXIT_GAVE_UP)

    entries = json.loads(vh("--output-format=json", "execution", "list").stdout)
    assert [(e["counter"], e["status"], e["tags"]) for e in entries] == [(42, "error", ["retry: 1"]), (41, "error", [])]
    assert "retry 1/1 started as #42" in vh("execution", "info", "41").stdout
    assert "Gave up after 1 retry: ConnectionError" in vh("execution", "info", "42").stdout


def test_the_standin_refuses_what_valohai_would_and_vh_shows_why(vh: Vh) -> None:
    refused = vh.run_train("--environment=nowhere", "--failure-rate=0", ok=False)
    assert refused.returncode == 1
    assert "Environment 'nowhere' not found." in refused.stderr
    assert [call.body["environment"] for call in vh.platform.creates()] == ["nowhere"]
    assert vh.platform.executions == {}

    elsewhere = dict(vh.env, VALOHAI_PROJECT="00000000-0000-4000-8000-000000000000")
    unknown = subprocess.run(
        [str(VH), "execution", "list"], env=elsewhere, capture_output=True, text=True, timeout=VH_TIMEOUT, check=False
    )
    vh.printed += [unknown.stdout, unknown.stderr]
    assert unknown.returncode == 1
    assert "No project was found with the ID 00000000-0000-4000-8000-000000000000" in unknown.stderr


def test_vh_run_in_remote_mode_reads_the_step_from_the_commit_detail(tmp_path: Path) -> None:
    with Platform(tmp_path / "standin") as platform:
        vh = vh_for(platform, tmp_path, mode="remote")
        vh.run_train("--failure-rate=0")
        [execution] = platform.wait_until_idle(CHAIN_TIMEOUT)
        assert execution.status == "complete"
        assert [call.query for call in platform.calls if call.path == f"/api/v0/commits/{COMMIT}/"] == [
            {"include": ["config"]}
        ]
        assert "model.json" in vh.outputs(41)
