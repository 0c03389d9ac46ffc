"""A retry resumes from the failed attempt's last checkpoint: real chains on the stand-in."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import requests
from standin import COMMIT, PROJECT_ID, Execution, Platform

import retry

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]

JOB = str(Path(__file__).resolve().parent / "jobs" / "job.py")
CREATE = "/api/v0/executions/"


def epochs_logged(execution: Execution) -> list[int]:
    """The epochs whose metadata the execution printed: the epochs it finished."""
    found = []
    for _, stream, line in execution.log:
        if stream == "stdout" and line.startswith("{"):
            found.append(json.loads(line)["epoch"])
    return found


def resumed_from(execution: Execution) -> str | None:
    match = re.search(r"^Resuming from (\S+): epoch", execution.log_text(), re.MULTILINE)
    return match.group(1) if match else None


def checkpoint_sent(platform: Platform, create: int) -> list[str]:
    body: dict[str, Any] = platform.creates()[create].body
    return list(body["inputs"].get("checkpoint", []))


def datum_name(platform: Platform, url: str) -> str:
    return platform.data[url[len("datum://") :]].name


def test_the_retry_resumes_after_the_last_finished_epoch(tmp_path: Path) -> None:
    with Platform(tmp_path, extra_env={"TRAIN_OUTAGE_ATTEMPTS": "1"}) as platform:
        first, second = platform_chain(platform, retries=3)
        [sent] = checkpoint_sent(platform, 0)
        assert datum_name(platform, sent) == "checkpoint-epoch-0002.json"
        relaunch_calls = platform.relaunch_calls(first)
    assert epochs_logged(first) == [1, 2]  # it failed in epoch 3
    assert resumed_from(second) == "checkpoint-epoch-0002.json"
    assert epochs_logged(second) == [3, 4, 5]  # the numbering goes on across the chain
    assert second.status == "complete"
    assert second.inputs == {"checkpoint": [sent]}
    # Detail, outputs, create, the project's variables (first relaunch), status detail.
    assert len(relaunch_calls) <= 5
    assert [call.path for call in relaunch_calls].count("/api/v0/data/") == 1


def test_two_failures_never_send_training_backwards(tmp_path: Path) -> None:
    with Platform(tmp_path, extra_env={"TRAIN_OUTAGE_ATTEMPTS": "2"}) as platform:
        first, second, third = platform_chain(platform, retries=3)
        sent = [datum_name(platform, checkpoint_sent(platform, n)[0]) for n in (0, 1)]
    assert sent == ["checkpoint-epoch-0002.json", "checkpoint-epoch-0003.json"]
    finished = [epochs_logged(execution) for execution in (first, second, third)]
    assert finished == [[1, 2], [3], [4, 5]]
    started = sum(len(epochs) for epochs in finished) + 2  # plus the two epochs that failed
    assert started <= 5 + 2
    assert third.status == "complete"


def test_a_failure_before_the_first_checkpoint_starts_the_retry_from_the_beginning(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    environ = {"JOB_EPOCHS": "5", "JOB_FAIL_EPOCHS": "1", "JOB_EVENTS": str(events)}
    with Platform(tmp_path, script=JOB, extra_env=environ) as platform:
        first, second = platform_chain(platform, retries=1)
        assert checkpoint_sent(platform, 0) == []
    recorded = [json.loads(line) for line in events.read_text().splitlines()]
    resumes = [(event["attempt"], event["epoch"]) for event in recorded if event["event"] == "resume"]
    assert resumes == [(0, 0), (1, 0)]
    assert [event["epoch"] for event in recorded if event["event"] == "epoch" and event["attempt"] == 1] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert "no checkpoint uploaded yet: the retry starts from the beginning" in first.log_text()
    assert second.status == "complete" and "checkpoint" not in second.inputs


def test_a_retry_that_saved_nothing_hands_on_the_checkpoint_it_was_given(tmp_path: Path) -> None:
    # Attempt 1 fails in epoch 3 (checkpoint 2); retry 1 fails in its first epoch, before saving.
    events = tmp_path / "events.jsonl"
    environ = {"JOB_EPOCHS": "5", "JOB_FAIL_EPOCHS": "3,3", "JOB_EVENTS": str(events)}
    with Platform(tmp_path, script=JOB, extra_env=environ) as platform:
        _, _, third = platform_chain(platform, retries=2)
        assert checkpoint_sent(platform, 0) == checkpoint_sent(platform, 1)
    recorded = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(event["attempt"], event["epoch"]) for event in recorded if event["event"] == "resume"] == [
        (0, 0),
        (1, 2),
        (2, 2),
    ]
    assert third.status == "complete"


def test_an_execution_restarted_by_valohai_resumes_from_its_restart_input(tmp_path: Path) -> None:
    with Platform(tmp_path, extra_env={"TRAIN_OUTAGE_ATTEMPTS": "1"}) as platform:
        platform.start(retries=0)  # fails in epoch 3 and gives up: an interrupted run
        [interrupted] = platform.wait_until_idle(100)
        uploaded = sorted(datum.name for datum in platform.outputs_of(interrupted))
        platform.start(inputs=platform.restart_inputs(interrupted), retries=0)
        _, restarted = platform.wait_until_idle(100)
    assert uploaded == ["checkpoint-epoch-0001.json", "checkpoint-epoch-0002.json"]
    assert resumed_from(restarted) == "checkpoint-epoch-0002.json"
    assert epochs_logged(restarted)[0] == 3


def platform_chain(platform: Platform, **parameters: Any) -> list[Execution]:
    platform.start(failure_rate=0.0, delay=0, **parameters)
    executions = platform.wait_until_idle(100)
    assert all(execution.exit_code in (0, retry.EXIT_RETRY_STARTED) for execution in executions), platform.summary()
    assert platform.leaks() == []
    return executions


def test_the_standin_plays_the_data_api_like_valohai(tmp_path: Path) -> None:
    with Platform(tmp_path, extra_env={"TRAIN_OUTAGE_ATTEMPTS": "1"}) as platform:
        platform.start(retries=0)
        [execution] = platform.wait_until_idle(100)
        headers = {"Authorization": f"Token {platform.token}"}
        listed = requests.get(
            f"{platform.host}/api/v0/data/",
            params={"output_execution": execution.id, "limit": 1},
            headers=headers,
            timeout=5,
        ).json()
        assert listed["count"] == 2 and len(listed["results"]) == 1 and listed["next"]
        newest = listed["results"][0]
        assert newest["name"] == "checkpoint-epoch-0002.json"
        assert newest["output_execution"] == {"id": execution.id, "counter": execution.counter}
        link = requests.get(f"{platform.host}/api/v0/data/{newest['id']}/download/", headers=headers, timeout=5).json()
        assert json.loads(requests.get(link["url"], timeout=5).content)["epoch"] == 2
        create = f"{platform.host}/api/v0/executions/"
        base = {"project": PROJECT_ID, "commit": COMMIT, "step": "train"}
        for inputs in ({"not_declared": ["s3://x/y"]}, {"checkpoint": ["datum://no-such-datum"]}):
            answer = requests.post(create, json={**base, "inputs": inputs}, headers=headers, timeout=5)
            assert answer.status_code == 400 and "inputs" in answer.json()


def test_a_data_list_that_ignores_its_filter_hands_on_only_the_attempts_own_checkpoint(tmp_path: Path) -> None:
    with Platform(tmp_path, extra_env={"TRAIN_OUTAGE_ATTEMPTS": "1"}) as platform:
        platform.data_filter_ignored = True
        stray = json.dumps({"epoch": 5, "loss": 0.01, "weights": [0, 0, 0, 0]})
        platform.upload_by_hand("checkpoint-epoch-0009.json", stray)  # newer, and nobody's output
        _, second = platform_chain(platform, retries=3)
        [sent] = checkpoint_sent(platform, 0)
        assert datum_name(platform, sent) == "checkpoint-epoch-0002.json"
    assert resumed_from(second) == "checkpoint-epoch-0002.json"
    assert epochs_logged(second) == [3, 4, 5]


def test_a_create_refused_for_its_checkpoint_costs_only_the_checkpoint(tmp_path: Path) -> None:
    with Platform(tmp_path, extra_env={"TRAIN_OUTAGE_ATTEMPTS": "1"}) as platform:
        platform.undeclared_inputs = {"checkpoint"}  # as at a commit whose step does not declare it
        first, second = platform_chain(platform, retries=3)
        bodies = [call.body for call in platform.creates()]  # the relaunch's (the first attempt was not an API call)
    assert ["checkpoint" in body["inputs"] for body in bodies] == [True, False]
    assert "sending it once more without the checkpoint, so the retry starts from the beginning" in first.log_text()
    assert (second.status, resumed_from(second), epochs_logged(second)) == ("complete", None, [1, 2, 3, 4, 5])
