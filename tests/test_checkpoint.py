"""Checkpoints: which one a retry gets, how it is found, and how the job reads it."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import responses
from conftest import (
    AUTH,
    CREATE_URL,
    CREATED,
    EXECUTION_ID,
    HOST,
    STATUS_URL,
    FakeClock,
    Spawned,
    connection_error,
    expect_detail,
    expected_payload,
    fail,
    instant,
    load_fixture,
)
from responses import matchers

import retry

DATA_URL = f"{HOST}/api/v0/data/"


def datum(name: str, ctime: str, datum_id: str | None = None) -> dict[str, Any]:
    return {
        "id": datum_id or f"d-{name}",
        "name": name,
        "size": 120,
        "ctime": ctime,
        "file_ctime": ctime,
        "file_mtime": ctime,
        "uri": f"s3://acme/data/{name}",
        "output_execution": {"id": EXECUTION_ID, "counter": 41},
    }


def data_page(offset: int) -> Any:
    return matchers.query_param_matcher(
        {"output_execution": EXECUTION_ID, "ordering": "-ctime", "limit": "1000", "offset": str(offset)}
    )


@pytest.fixture
def outputs(config_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "outputs"
    folder.mkdir()
    monkeypatch.setenv("VH_OUTPUTS_DIR", str(folder))
    return folder


def expect_relaunch_with(api: responses.RequestsMock, clock: FakeClock, checkpoint: list[str] | None) -> None:
    """The create call, strictly: the fixture's inputs plus (or without) this checkpoint."""
    payload = expected_payload(["nightly", "retry: 1"], instant(clock.now_value + 60))
    if checkpoint is not None:
        payload["inputs"]["checkpoint"] = checkpoint
    strict = matchers.json_params_matcher(payload, strict_match=True)
    api.post(CREATE_URL, json=CREATED, status=201, match=[AUTH, strict])
    api.post(STATUS_URL)


def test_a_relaunch_reads_one_page_of_outputs_whatever_the_execution_holds(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    # The newest thousand outputs hold no checkpoint: older pages are not read (a constant cost),
    # and the retry gets the newest of what was listed (the order on the page does not matter).
    expect_detail(api)
    first = [
        datum("checkpoint-epoch-0001.json", "2026-11-20T09:14:10.000000Z"),
        datum("model.json", "2026-11-20T09:15:59.000000Z"),  # newer, but not a checkpoint
        datum("checkpoint-epoch-0002.json", "2026-11-20T09:14:20.5Z", "d-newest"),
    ]
    api.get(DATA_URL, json={"count": 60000, "next": "more", "results": first}, match=[AUTH, data_page(0)])
    expect_relaunch_with(api, clock, ["datum://d-newest"])

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert len([call for call in api.calls if call.request.url.startswith(DATA_URL)]) == 1
    assert "more outputs than one page lists: the retry gets the newest checkpoint among the 3 newest" in (
        capsys.readouterr().err
    )


def test_a_server_that_lists_newest_first_is_read_no_further_than_needed(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    expect_detail(api)
    newest_first = [
        datum("model.json", "2026-11-20T09:15:59Z"),
        datum("checkpoint-epoch-0003.json", "2026-11-20T09:14:30Z", "d-3"),
        datum("checkpoint-epoch-0002.json", "2026-11-20T09:14:20Z", "d-2"),
    ]
    api.get(DATA_URL, json={"count": 5000, "next": "more", "results": newest_first}, match=[AUTH, data_page(0)])
    expect_relaunch_with(api, clock, ["datum://d-3"])

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED  # one page of thousands


@pytest.mark.parametrize(
    "owner",
    [{"id": "x"}, None, EXECUTION_ID, {"counter": 41}, [EXECUTION_ID], "missing"],
    ids=["another", "null", "a-bare-id", "no-id", "a-list", "missing"],
)
def test_an_output_of_another_or_an_unknown_owner_is_never_handed_on(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, owner: Any
) -> None:
    # A server that ignores the filter lists a hand upload or another execution's checkpoint.
    expect_detail(api)
    foreign = datum("checkpoint-epoch-0009.json", "2026-11-20T09:20:00Z", "d-other")
    if owner == "missing":
        del foreign["output_execution"]
    else:
        foreign["output_execution"] = owner
    own = datum("checkpoint-epoch-0002.json", "2026-11-20T09:14:20Z", "d-own")
    api.get(DATA_URL, json={"count": 2, "next": None, "results": [foreign, own]})
    expect_relaunch_with(api, clock, ["datum://d-own"])

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED


def test_a_slow_output_list_costs_only_the_checkpoint_not_the_retry(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    expect_detail(api)
    api.get(DATA_URL, body=requests.ConnectionError("connection reset"))  # every time it is asked
    expect_relaunch_with(api, clock, None)

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert clock.slept <= retry.CHECKPOINT_BUDGET  # the lookup gave up within its own part of the budget


def test_without_a_new_checkpoint_the_retry_gets_the_one_this_attempt_started_from(
    outputs: Path, config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    started = {
        "checkpoint": {"files": [{"name": "checkpoint-epoch-0002.json", "datum_id": "d-given", "uri": "s3://x"}]}
    }
    (config_dir / "inputs.json").write_text(
        json.dumps({**json.loads((config_dir / "inputs.json").read_text()), **started})
    )
    expect_detail(api)
    api.get(DATA_URL, json={"count": 1, "next": None, "results": [datum("model.json", "2026-11-20T09:14:10Z")]})
    expect_relaunch_with(api, clock, ["datum://d-given"])

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert "no newer checkpoint: the retry resumes from datum://d-given" in capsys.readouterr().err


def test_a_restart_input_is_never_sent_and_its_newest_checkpoint_is_handed_on(
    outputs: Path, config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    restart = {
        "_restart": {
            "files": [
                {
                    "name": "checkpoint-epoch-0004.json",
                    "path": "/valohai/inputs/_restart/checkpoint-epoch-0004.json",
                    "datum_id": "d-4",
                },
                {
                    "name": "checkpoint-epoch-0007.json",
                    "path": "/valohai/inputs/_restart/checkpoint-epoch-0007.json",
                    "datum_id": "d-7",
                },
                {"name": "notes.txt", "path": "/valohai/inputs/_restart/notes.txt", "datum_id": "d-notes"},
            ]
        }
    }
    (config_dir / "inputs.json").write_text(json.dumps(restart))
    detail = json.loads(json.dumps(__import__("conftest").load_fixture("execution-detail.json")))
    detail["inputs"].append({"name": "_restart", "urls": ["datum://d-4", "datum://d-7", "datum://d-notes"]})
    expect_detail(api, detail)
    api.get(DATA_URL, json={"count": 0, "next": None, "results": []})
    expect_relaunch_with(api, clock, ["datum://d-7"])

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED


def test_no_checkpoint_anywhere_leaves_the_input_out(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    expect_detail(api)
    api.get(DATA_URL, json={"count": 0, "next": None, "results": []})
    expect_relaunch_with(api, clock, None)

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert "no checkpoint uploaded yet: the retry starts from the beginning" in capsys.readouterr().err


def test_a_failing_output_list_costs_only_the_newest_checkpoint(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    expect_detail(api)
    api.get(DATA_URL, status=403, json={"detail": "Forbidden"})
    expect_relaunch_with(api, clock, None)

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert "could not list this execution's outputs, so the retry gets the checkpoint this attempt had" in (
        capsys.readouterr().err
    )


def read_only(path: Path, text: str = "{}") -> Path:
    path.write_text(text)
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return path


def test_a_checkpoint_still_uploading_is_waited_for(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    pending = read_only(outputs / "checkpoint-epoch-0003.json")
    read_only(outputs / "model.json")  # uploading too, but not a checkpoint: not waited for

    def platform_takes_it(seconds: float) -> None:
        clock.sleep(seconds)
        if clock.slept >= 1.0 and pending.exists():  # the upload finishes a second later
            pending.chmod(stat.S_IWUSR | stat.S_IRUSR)
            pending.unlink()

    runtime.sleep = platform_takes_it
    expect_detail(api)
    uploaded = [
        datum("checkpoint-epoch-0002.json", "2026-11-20T09:14:20Z"),
        datum("checkpoint-epoch-0003.json", "2026-11-20T09:14:31Z"),
    ]
    api.get(DATA_URL, json={"count": 2, "next": None, "results": uploaded})
    expect_relaunch_with(api, clock, ["datum://d-checkpoint-epoch-0003.json"])

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert 1.0 <= clock.slept < 1.5


def test_the_wait_for_an_upload_is_bounded(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock
) -> None:
    read_only(outputs / "checkpoint-epoch-0003.json")  # never taken: the platform is stuck
    expect_detail(api)
    listed = [datum("checkpoint-epoch-0002.json", "2026-11-20T09:14:20Z")]
    api.get(DATA_URL, json={"count": 1, "next": None, "results": listed})  # once, after the whole wait
    expect_relaunch_with(api, clock, ["datum://d-checkpoint-epoch-0002.json"])

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert clock.slept == pytest.approx(retry.CHECKPOINT_UPLOAD_WAIT, abs=0.25)


@pytest.mark.parametrize("pattern", ["*.ckpt", "weights/*"])
def test_the_pattern_says_which_outputs_are_checkpoints(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, pattern: str
) -> None:
    expect_detail(api)
    listed = [
        datum("checkpoint-epoch-0009.json", "2026-11-20T09:20:00Z"),
        datum("weights/step-100.ckpt", "2026-11-20T09:14:00Z", "d-match"),
    ]
    api.get(DATA_URL, json={"count": 2, "next": None, "results": listed})
    expect_relaunch_with(api, clock, ["datum://d-match"])

    assert fail(runtime, checkpoint="checkpoint", checkpoint_pattern=pattern) == retry.EXIT_RETRY_STARTED


# --- locally -------------------------------------------------------------------------------


@pytest.fixture
def local_outputs(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "local-outputs"
    folder.mkdir()
    clean_env.setenv("VH_OUTPUTS_DIR", str(folder))
    return folder


def aged(path: Path, mtime: float, text: str = "{}") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def finished(path: Path, mtime: float | None = None) -> Path:
    """A checkpoint the attempt wrote and marked for live upload (read-only), now or at ``mtime``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"epoch": 1}')
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    path.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return path


def test_locally_the_next_process_is_handed_the_newest_finished_checkpoint(
    local_outputs: Path, runtime: retry.Runtime, spawned: Spawned, capsys: Any
) -> None:
    now = retry._STARTED_AT + 10
    finished(local_outputs / "checkpoint-epoch-0001.json", now)
    newest = finished(local_outputs / "sub" / "checkpoint-epoch-0002.json", now + 1)
    finished(local_outputs / "model.json", now + 2)

    retry.handle_failure(connection_error(), retry.Policy(checkpoint="checkpoint"), runtime=runtime)

    [(_, environ)] = spawned.calls
    assert environ["RETRY_CHECKPOINT"] == str(newest.resolve())
    assert f"the retry resumes from the checkpoint {newest.resolve()}" in capsys.readouterr().err


@pytest.mark.parametrize("age", [86_400, 0.5], ids=["yesterday", "a-run-that-ended-just-before"])
@pytest.mark.parametrize("flat", [True, False], ids=["VH_FLAT_LOCAL_OUTPUTS", "VH_OUTPUTS_DIR"])
def test_locally_a_stale_or_unfinished_checkpoint_is_never_handed_on(
    local_outputs: Path,
    runtime: retry.Runtime,
    spawned: Spawned,
    capsys: Any,
    clean_env: pytest.MonkeyPatch,
    flat: bool,
    age: float,
) -> None:
    if flat:  # yesterday's run left its files where this one writes too
        clean_env.delenv("VH_OUTPUTS_DIR")
        clean_env.setenv("VH_FLAT_LOCAL_OUTPUTS", "1")
        clean_env.chdir(local_outputs.parent)
        clean_env.setattr(retry, "_STARTED_IN", str(local_outputs.parent))  # not pytest's: others write there
        local_outputs = local_outputs.parent / ".valohai" / "outputs"
    finished(local_outputs / "checkpoint-epoch-0005.json", retry._STARTED_AT - age)  # an earlier run's
    (local_outputs / "checkpoint-epoch-0006.json").write_text('{"epo')  # still being written

    retry.handle_failure(connection_error(), retry.Policy(checkpoint="checkpoint"), runtime=runtime)

    [(_, environ)] = spawned.calls
    assert "RETRY_CHECKPOINT" not in environ
    err = capsys.readouterr().err
    assert f"no finished checkpoint matching '*checkpoint*' in {local_outputs.resolve()}:" in err


def test_locally_without_the_setting_nothing_is_handed_on(
    local_outputs: Path, runtime: retry.Runtime, spawned: Spawned
) -> None:
    finished(local_outputs / "checkpoint-epoch-0001.json")
    retry.handle_failure(connection_error(), retry.Policy(), runtime=runtime)
    [(_, environ)] = spawned.calls
    assert "RETRY_CHECKPOINT" not in environ


def test_locally_a_retry_that_saved_nothing_hands_on_what_it_was_handed(
    local_outputs: Path, tmp_path: Path, runtime: retry.Runtime, spawned: Spawned, clean_env: pytest.MonkeyPatch
) -> None:
    given = aged(tmp_path / "earlier" / "checkpoint-epoch-0004.json", 1000)
    clean_env.setenv("RETRY_LOCAL_NUMBER", "1")
    clean_env.setenv("RETRY_CHECKPOINT", str(given))

    with pytest.raises(SystemExit):
        retry.run(lambda: (_ for _ in ()).throw(connection_error()), checkpoint="checkpoint", runtime=runtime)

    [(_, environ)] = spawned.calls
    assert environ["RETRY_CHECKPOINT"] == str(given)


# --- the job's side: checkpoint_path() ------------------------------------------------------


def write_inputs(config_dir: Path, inputs_dir: Path, files: dict[str, list[str]]) -> None:
    listing = {}
    for name, names in files.items():
        entries = []
        for file_name in names:
            path = aged(inputs_dir / name / file_name, 1000)
            entries.append({"name": file_name, "path": str(path), "uri": f"s3://x/{file_name}"})
        listing[name] = {"files": entries}
    (config_dir / "inputs.json").write_text(json.dumps(listing))


@pytest.fixture
def fresh_inputs(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """valohai-utils reads inputs.json once: make it read the test's own."""
    from valohai.internals import global_state

    def reset() -> None:
        monkeypatch.setattr(global_state, "loaded", False)
        monkeypatch.setattr(global_state, "inputs", {})

    reset()
    return reset


def test_checkpoint_path_prefers_a_restarts_checkpoint_to_the_one_its_run_was_given(
    config_dir: Path, tmp_path: Path, fresh_inputs: Callable[[], None]
) -> None:
    # An auto-restart of a retry: _restart holds what the interrupted run saved after it
    # started from its checkpoint input, so it is newer.
    write_inputs(config_dir, tmp_path / "inputs", {"checkpoint": ["checkpoint-1.pt"], "_restart": ["checkpoint-9.pt"]})
    path = retry.checkpoint_path()
    assert path is not None and path.name == "checkpoint-9.pt"


@pytest.mark.parametrize(
    ("files", "chosen"),
    [
        (["checkpoint-epoch-0004.json", "train.log"], "checkpoint-epoch-0004.json"),  # not the last by name
        (["given.pt"], "given.pt"),  # a lone file passed by hand counts whatever its name
        (["notes.txt", "train.log"], None),
    ],
)
def test_checkpoint_path_reads_the_given_input(
    config_dir: Path, tmp_path: Path, fresh_inputs: Callable[[], None], files: list[str], chosen: str | None
) -> None:
    write_inputs(config_dir, tmp_path / "inputs", {"checkpoint": files})
    path = retry.checkpoint_path()
    assert (path.name if path else None) == chosen


def test_checkpoint_path_uses_the_settings_of_the_running_retry_run(
    config_dir: Path, tmp_path: Path, fresh_inputs: Callable[[], None], runtime: retry.Runtime
) -> None:
    write_inputs(config_dir, tmp_path / "inputs", {"weights": ["epoch-0003.pt", "epoch-0002.pt"]})
    seen: list[Path | None] = []
    retry.run(
        lambda: seen.append(retry.checkpoint_path()), checkpoint="weights", checkpoint_pattern="*.pt", runtime=runtime
    )
    assert [path.name if path else None for path in seen] == ["epoch-0003.pt"]


def test_checkpoint_path_takes_the_last_checkpoint_by_name_from_restart(
    config_dir: Path, tmp_path: Path, fresh_inputs: Callable[[], None]
) -> None:
    names = ["checkpoint-epoch-0010.json", "checkpoint-epoch-0009.json", "zz-notes.txt", "model.json"]
    write_inputs(config_dir, tmp_path / "inputs", {"_restart": names})
    path = retry.checkpoint_path()
    assert path is not None and path.name == "checkpoint-epoch-0010.json"


def test_checkpoint_path_is_none_for_a_fresh_start(config_dir: Path, fresh_inputs: Callable[[], None]) -> None:
    (config_dir / "inputs.json").write_text(json.dumps({"dataset": {"files": []}}))
    assert retry.checkpoint_path() is None


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"checkpoint": "../x"}, "checkpoint"),
        ({"checkpoint": ""}, "checkpoint"),
        ({"checkpoint_pattern": " "}, "checkpoint_pattern"),
    ],
)
def test_checkpoint_settings_are_checked(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(retry.ConfigError, match=named):
        retry.Policy(**settings)


def test_locally_a_job_that_changed_folder_after_saving_still_hands_on_its_checkpoint(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, runtime: retry.Runtime, spawned: Spawned
) -> None:
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    saved = finished(start / "outs" / "checkpoint-epoch-0003.json")
    elsewhere.mkdir()
    clean_env.setenv("VH_OUTPUTS_DIR", "outs")  # relative, as valohai-utils' local default is
    clean_env.setattr(retry, "_STARTED_IN", str(start))
    clean_env.chdir(elsewhere)

    retry.handle_failure(connection_error(), retry.Policy(checkpoint="checkpoint"), runtime=runtime)

    [(_, environ)] = spawned.calls
    assert environ["RETRY_CHECKPOINT"] == str(saved.resolve())


def test_an_upload_that_is_slow_to_be_listed_is_looked_for_once_more(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    pending = read_only(outputs / "checkpoint-epoch-0003.json")

    def platform_takes_it(seconds: float) -> None:
        clock.sleep(seconds)
        if pending.exists():
            pending.chmod(stat.S_IWUSR | stat.S_IRUSR)
            pending.unlink()  # taken from the folder, but not in the list yet

    runtime.sleep = platform_takes_it
    expect_detail(api)
    older = [datum("checkpoint-epoch-0002.json", "2026-11-20T09:14:20Z")]
    api.get(DATA_URL, json={"count": 1, "next": None, "results": older})  # twice: then it gives up on it
    expect_relaunch_with(api, clock, ["datum://d-checkpoint-epoch-0002.json"])

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert sum(1 for call in api.calls if call.request.url.startswith(DATA_URL)) == 2
    assert "still not listed after the wait, so the retry gets the newest listed one: checkpoint-epoch-0003.json" in (
        capsys.readouterr().err
    )


def test_a_create_refused_for_its_checkpoint_is_sent_once_more_without_it(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    # The datum was purged, or this commit does not declare the input: it costs the checkpoint only.
    expect_detail(api)
    api.get(
        DATA_URL,
        json={"count": 1, "next": None, "results": [datum("checkpoint-epoch-0002.json", "2026-11-20T09:14:20Z")]},
    )
    with_checkpoint = expected_payload(["nightly", "retry: 1"], instant(clock.now_value + 60))
    with_checkpoint["inputs"]["checkpoint"] = ["datum://d-checkpoint-epoch-0002.json"]
    refusal = {"inputs": ["checkpoint: 'datum://d-checkpoint-epoch-0002.json' is not a known datum or URL."]}
    api.post(
        CREATE_URL, status=400, json=refusal, match=[matchers.json_params_matcher(with_checkpoint, strict_match=True)]
    )
    expect_relaunch_with(api, clock, None)

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RETRY_STARTED
    assert (
        "is not a known datum or URL.; sending it once more without the checkpoint,"
        " so the retry starts from the beginning" in capsys.readouterr().err
    )


def test_a_refusal_for_another_reason_still_ends_the_relaunch(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    expect_detail(api)
    api.get(
        DATA_URL,
        json={"count": 1, "next": None, "results": [datum("checkpoint-epoch-0002.json", "2026-11-20T09:14:20Z")]},
    )
    api.post(CREATE_URL, status=400, json={"step": ["Step 'train' not found."]})  # with and without the checkpoint
    api.post(STATUS_URL)

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RELAUNCH_FAILED
    assert sum(call.request.method == "POST" and call.request.url == CREATE_URL for call in api.calls) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("step: Step 'train' not found.")


def test_without_the_setting_a_restart_input_is_never_copied() -> None:
    detail = load_fixture("execution-detail.json")
    detail["inputs"].append({"name": "_restart", "urls": ["datum://d-4", "datum://d-7"]})
    assert retry.build_retry_payload(detail, 1, parent_id="p")["inputs"] == {
        "dataset": ["s3://acme-ml-data/churn/train.csv"]
    }


def test_one_budget_covers_the_whole_relaunch_checkpoints_included(
    outputs: Path, api: responses.RequestsMock, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    api.get(f"{HOST}/api/v0/executions/{EXECUTION_ID}/", status=503, headers={"Retry-After": "25"})
    expect_detail(api)
    api.get(DATA_URL, body=requests.ConnectionError("connection reset"))  # costs its 20 s
    api.post(CREATE_URL, status=429, headers={"Retry-After": "30"})  # 45 s gone: 30 more would pass 60
    api.post(STATUS_URL)

    assert fail(runtime, checkpoint="checkpoint") == retry.EXIT_RELAUNCH_FAILED
    assert clock.slept <= retry.API_BUDGET
    assert "HTTP 429, rate limited (gave up after 1 tries)" in capsys.readouterr().err


def test_an_answer_over_the_size_cap_is_not_asked_for_again(
    config_dir: Path, api: responses.RequestsMock, runtime: retry.Runtime, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setattr(retry, "MAX_ANSWER_BYTES", 1000)
    api.get(f"{HOST}/api/v0/executions/{EXECUTION_ID}/", json={"padding": "x" * 2000})
    api.post(STATUS_URL)

    assert fail(runtime) == retry.EXIT_RELAUNCH_FAILED
    assert sum(call.request.method == "GET" for call in api.calls) == 1  # it cannot shrink
    assert "the answer is larger than 1000 bytes" in capsys.readouterr().err
