"""What a relaunch and a retry's start cost in a herd and a crowded project: the scale
benchmark's limits, on a smaller run (benchmarks/scale.py measures the full size)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from standin import PROJECT_ID, Fault, Platform

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import scale


def asked_once(labels: tuple[str, ...]) -> list[str]:
    """The requests, a status-detail write asked again at once (its answer was slow) counted once."""
    return [label for n, label in enumerate(labels) if not (n and label == labels[n - 1] == "status detail (record)")]


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a_herd_in_a_crowded_project_keeps_each_relaunch_and_start_within_its_limit(tmp_path: Path) -> None:
    # 12 chains failing at once, half with checkpoints; 300 look-alikes appear as the first
    # create is served, between every parent and its retry; list entries abridged.
    run = scale.measure([False, True] * 6, others=300, delay=2.0, workdir=tmp_path, timeout=100.0)
    assert run.executions == 12 + 300 + 12  # no copy of a retry was made
    assert run.lists == 0  # nothing read the project's execution list
    for chain in run.chains:
        assert chain.problems == ()
        relaunch = asked_once(chain.relaunch)
        assert len(relaunch) <= (4 if chain.checkpoint else 3), chain.relaunch
        assert len(chain.start) <= 4, chain.start
        assert chain.relaunch[0] == "own detail" and chain.relaunch[-1] == "status detail (record)"
        assert ("outputs list" in chain.relaunch) == chain.checkpoint
        assert [label for label in chain.start if label != scale.WAITING] == ["parent's detail"]
        assert chain.start[0] in (scale.WAITING, "parent's detail")  # the delay first, if any is left


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_a_retry_whose_parent_has_no_record_after_the_delay_reads_it_once_per_pause(tmp_path: Path) -> None:
    # The parent's record is stored 3 s late: after its 1 s delay the retry reads its parent and
    # finds none, says it waits for the record, and reads again after 0.5, 1, 2 ... s.
    environ = {"SCALE_DELAY": "1", "SCALE_CHECKPOINT": "0"}
    with Platform(tmp_path, script=scale.JOB, extra_env=environ, read_timeout=scale.READ_TIMEOUT) as platform:
        platform.inject(Fault("POST", r".*/status-detail/", "late", seconds=3))
        first = platform.start()
        executions = platform.wait_until_idle(timeout=100)
        [heir] = [e for e in executions if first.record is not None and e.id == first.record.heir]
        start = [scale.label(call, heir, first) for call in platform.start_calls(heir)]
    assert len(executions) == 2 and heir.status == "complete"
    reads = [label for label in start if label != scale.WAITING]
    if reads == ["parent's detail"]:
        pytest.skip("the retry started after its parent's record was stored (a loaded machine): nothing to test")
    assert reads[:2] == ["parent's detail", "status detail (waiting for the record)"]
    assert set(reads[2:]) == {"parent's detail"} and len(reads[2:]) <= 4  # after 0.5, 1, 2, 4 s at most


def listed_and_detailed(platform: Platform) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The project's list entries and the executions' details, as the API serves them."""
    headers = {"Authorization": f"Token {platform.token}"}
    url = f"{platform.host}/api/v0/executions/"
    entries = requests.get(url, params={"project": PROJECT_ID}, headers=headers, timeout=5).json()["results"]
    details = [requests.get(f"{url}{entry['id']}/", headers=headers, timeout=5).json() for entry in entries]
    return entries, details


@pytest.mark.parametrize("abridged", [False, True])
def test_abridged_list_entries_carry_neither_variables_nor_status_details(tmp_path: Path, abridged: bool) -> None:
    with Platform(tmp_path, fork=False, abridged_lists=abridged) as platform:
        platform.crowd(2)  # executions that are never run: no process needed
        for execution in platform.executions.values():
            execution.status_detail = "Done"
        entries, details = listed_and_detailed(platform)
    assert len(entries) == 2
    for entry, detail in zip(entries, details):
        assert "environment_variables" not in entry
        assert ("status_detail" in entry) is not abridged
        assert detail["status_detail"] == "Done" and "RETRY_PARENT" in detail["environment_variables"]
        assert {key: value for key, value in detail.items() if key in entry} == entry  # nothing else differs
