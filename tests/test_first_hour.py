"""What a new user meets in the first hour: each case here was tried by one, and each broke once."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import responses
from conftest import HOST, PROJECT_ID, ROOT, TOKEN, FakeClock, Spawned, connection_error, raised

import chains
import retry


def test_a_failing_async_job_prints_one_traceback(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned, capsys: Any
) -> None:
    async def main() -> None:
        raise connection_error()

    with pytest.raises(SystemExit):
        retry.run(main, runtime=runtime)
    err = capsys.readouterr().err
    assert err.count("Traceback (most recent call last)") == 1
    assert "During handling of the above exception" not in err and "no running event loop" not in err


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"retry": 3},
            "invalid retry settings: retry.run got an unknown setting 'retry' (did you mean retries or retry_on?);"
            " the settings are retries, delay, backoff, max_delay, jitter, retry_on, wait_in, checkpoint,"
            " checkpoint_pattern",
        ),
        (
            {"dealy": 5},
            "invalid retry settings: retry.run got an unknown setting 'dealy' (did you mean delay or max_delay?)",
        ),
        ({"checkpoint": True}, "invalid retry settings: checkpoint must be the name of one of the step's inputs"),
    ],
)
def test_a_misspelled_or_mistyped_setting_says_what_was_meant(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, capsys: Any, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        retry.run(lambda: None, runtime=runtime, **settings)
    assert exit_info.value.code == retry.EXIT_BAD_CONFIG
    assert capsys.readouterr().err.startswith(f"[retry] {message}")


def test_without_valohai_utils_the_import_says_what_to_install(tmp_path: Path) -> None:
    program = "import sys; sys.modules['valohai'] = None; import retry"  # as if it were not installed
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=100, check=False
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ImportError: retry.py needs the packages requests and valohai-utils (valohai is missing):"
        " pip install requests valohai-utils"
    )


def test_with_retrying_off_the_verdict_says_so(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned, capsys: Any
) -> None:
    assert retry.handle_failure(raised(connection_error()), retry.Policy(retries=0), runtime=runtime) == 1
    assert spawned.calls == []
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "[retry] Not retried: retrying is off (retries=0): ConnectionError: could not connect to db.internal:5432"
    )


def test_a_short_wait_is_never_said_to_be_zero(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, clock: FakeClock, capsys: Any
) -> None:
    clean_env.setenv("RETRY_LOCAL_NUMBER", "1")
    clean_env.setenv("RETRY_NOT_BEFORE", retry.format_instant(clock.now_value + 0.4))
    retry.run(lambda: None, retries=3, delay=1, runtime=runtime)
    err = capsys.readouterr().err
    assert "retry 1/3 waits 0.4 s before it starts work" in err and "waits 0 s" not in err
    assert [retry._seconds(s) for s in (0.001, 0.4, 0.96, 9.9, 12.2, 60)] == ["0.1", "0.4", "1", "9.9", "12", "60"]


@pytest.mark.parametrize("megabytes", [20, 50])
def test_summarising_a_huge_message_costs_a_few_megabytes(megabytes: int) -> None:
    error = ValueError("x " * (megabytes * 500_000))
    tracemalloc.start()
    try:
        summary = retry.describe(error)
        record = retry.status_with_record(
            f"Gave up after 3 retries: {summary}", retry.Record("gave_up", 3, cause=summary)
        )
        retry.quote(str(error))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000
    assert len(record) <= retry.STATUS_DETAIL_LIMIT


def test_handling_a_huge_message_costs_no_more_than_python_printing_it(
    clean_env: pytest.MonkeyPatch, runtime: retry.Runtime, spawned: Spawned, capsys: Any
) -> None:
    message = "y " * 10_000_000  # 20 MB
    error = raised(ConnectionError(message))
    tracemalloc.start()
    try:
        retry.handle_failure(error, retry.Policy(), runtime=runtime)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(message) * 2 + 5_000_000  # its traceback line, once; before: 25 times the message
    err = capsys.readouterr().err
    assert "(19900018 more characters)" in err and len(err) < 250_000  # the line cut, the summary one line


# --- chains.py on a laptop ---------------------------------------------------------------


def test_chains_py_never_takes_its_host_from_a_stray_api_json(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, api: responses.RequestsMock
) -> None:
    # A clone, checkout or unpacked artifact that carries .valohai/config/api.json.
    config = tmp_path / ".valohai" / "config"
    config.mkdir(parents=True)
    signed = {"set_status_detail": {"url": "https://collector.example.com/x/?s=1", "method": "POST"}}
    (config / "api.json").write_text(json.dumps(signed))
    clean_env.chdir(tmp_path)
    clean_env.setenv("VH_API_TOKEN", TOKEN)
    api.get(f"{HOST}/api/v0/projects/{PROJECT_ID}/", json={"id": PROJECT_ID, "name": "churn-model"})
    api.get(f"{HOST}/api/v0/executions/", json={"count": 0, "next": None, "results": []})

    assert chains.main(["report", "--project", PROJECT_ID]) == 0
    assert all(call.request.url.startswith(f"{HOST}/") for call in api.calls)


def test_the_report_escapes_what_the_api_says(capsys: Any) -> None:
    attempt = chains.Attempt(
        id="a",
        counter=7,
        number=0,
        parent=None,
        status="error",
        record=None,
        cause="ValueError: \x1b[2J\x1b[31mcleared\u202e",
        duration=None,
        url="https://x/\nChains: 99 | succeeded on the first attempt: 99",
        created=None,
    )
    report = chains.summarize(chains.Period(attempts=[attempt]), project_id="p", project_name="a\x1bb", days=1, since=0)
    text = chains.format_report(report)
    assert "\x1b" not in text and "\u202e" not in text
    assert [line for line in text.splitlines() if line.startswith("Chains: ")] == [
        "Chains: 1 | succeeded on the first attempt: 0 | recovered: 0 | gave up: 0 | not retried (not transient): 0"
        " | could not relaunch: 0 | still running: 0 | ended without a verdict: 1"
    ]
