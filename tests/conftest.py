"""Shared fixtures: a fake Valohai execution folder, a strict API mock, an injected clock."""

from __future__ import annotations

import datetime
import json
import shutil
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import responses
from responses import matchers

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(ROOT))

# A suite started in the background of a non-interactive shell inherits SIGINT ignored, and so would
# every job it starts: they are to get Ctrl-C as a terminal gives it (before retry.py notes what it found).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import retry  # noqa: E402

HOST = "https://app.valohai.com"
TOKEN = "tok-3f9a1c7e5b2d4a6f8e0c"
EXECUTION_ID = "0193a8e2-55c1-7d0e-8b1a-2f3e4d5c6b7a"
PROJECT_ID = "0185f0d4-1c2b-4a3d-9e8f-7a6b5c4d3e2f"
STATUS_URL = f"{HOST}/api/v0/executions/{EXECUTION_ID}/status-detail/?signature=d1e2f3"
DETAIL_URL = f"{HOST}/api/v0/executions/{EXECUTION_ID}/"
CREATE_URL = f"{HOST}/api/v0/executions/"


def load_fixture(name: str) -> Any:
    """A fresh copy of one of the sample Valohai files."""
    return json.loads((FIXTURES / name).read_text())


@dataclass
class FakeClock:
    """Wall clock and sleep for tests: sleeping only moves the time forward."""

    now_value: float = 1_800_000_000.0
    sleeps: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.now_value

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now_value += seconds

    @property
    def slept(self) -> float:
        return sum(self.sleeps)


@dataclass
class Spawned:
    """Records the local relaunches instead of starting processes."""

    calls: list[tuple[list[str], dict[str, str]]] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    exit_code: int = 0

    def __call__(self, argv: Any, env: Any, cwd: str) -> int:
        self.calls.append((list(argv), dict(env)))
        self.folders.append(cwd)
        return self.exit_code


@pytest.fixture(autouse=True)
def fresh_process_state() -> Iterator[None]:
    """Each test is a new process to retry.py: no attempt read, no failure handled, no secrets."""
    retry._process = retry._ProcessState()
    retry._secrets.clear()
    yield
    retry._process = retry._ProcessState()
    retry._secrets.clear()


@pytest.fixture(autouse=True)
def messages_are_greppable(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every message this test makes retry.py print or send must be found in the source."""
    from greppable import not_greppable

    import chains

    said: list[str] = []
    say, status, fail = retry._say, retry.set_status_detail, chains._fail

    def saying(message: str) -> None:
        said.append(message)
        say(message)

    def setting(text: str) -> bool:
        said.append(text)
        return status(text)

    def failing(message: str, code: int) -> Any:
        said.append(message)
        return fail(message, code)

    monkeypatch.setattr(retry, "_say", saying)
    monkeypatch.setattr(retry, "set_status_detail", setting)
    monkeypatch.setattr(chains, "_fail", failing)
    yield said
    assert not_greppable(said) == [], "messages that grep -F cannot find in the source"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def spawned() -> Spawned:
    return Spawned()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No Valohai or retry variables from the developer's shell leak into a test."""
    for name in (
        "VH_JOB_ID",
        "VH_CONFIG_DIR",
        "VH_API_TOKEN",
        "VALOHAI_HOST",
        "VH_PROJECT_ID",
        "RETRY_NOT_BEFORE",
        "RETRY_PARENT",
        "RETRY_LOCAL_NUMBER",
        "TRAIN_OUTAGE_ATTEMPTS",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def config_dir(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Path:
    """A Valohai execution's config folder, with VH_JOB_ID, VH_CONFIG_DIR and the token set."""
    folder = tmp_path / "config"
    folder.mkdir()
    for name in ("execution.json", "parameters.json", "inputs.json", "api.json"):
        shutil.copy(FIXTURES / name, folder / name)
    clean_env.setenv("VH_JOB_ID", "job-1")
    clean_env.setenv("VH_CONFIG_DIR", str(folder))
    clean_env.setenv("VH_API_TOKEN", TOKEN)
    return folder


def set_tags(folder: Path, tags: list[str], **extra: Any) -> None:
    """Rewrite execution.json with other tags (and other keys)."""
    data = json.loads((folder / "execution.json").read_text())
    data["valohai.execution-tags"] = tags
    data.update({f"valohai.{key}": value for key, value in extra.items()})
    (folder / "execution.json").write_text(json.dumps(data))


@pytest.fixture
def api() -> Iterator[responses.RequestsMock]:
    """A strict mock of the Valohai API: every registered call must happen, no other may."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock
        # responses answers an unmatched request with a ConnectionError, which the code
        # under test may treat as a transient fault: find those by their message.
        unexpected = [call.request.url for call in mock.calls if "match any registered mock" in str(call.response)]
        assert not unexpected, f"unexpected requests: {unexpected}"


@pytest.fixture
def runtime(clock: FakeClock, spawned: Spawned) -> retry.Runtime:
    """A runtime whose time, randomness and process starts are the test's."""
    import os

    return retry.Runtime(
        environ=os.environ,
        now=clock.now,
        monotonic=clock.now,
        sleep=clock.sleep,
        uniform=lambda low, high: high,
        replace_process=spawned,
        argv=["python", "train.py", "--delay=5"],
    )


def connection_error() -> Exception:
    import requests

    return requests.ConnectionError("could not connect to db.internal:5432")


# --- the API of a failed attempt ---------------------------------------------------

AUTH = matchers.header_matcher({"Authorization": f"Token {TOKEN}"})
SMALL = matchers.query_param_matcher({"exclude": "metadata,events"})
CREATED = {
    "id": "0193a8e9-0a11-7b2c-9d3e-4f5a6b7c8d9e",
    "counter": 42,
    "urls": {"display": "https://app.valohai.com/p/acme/churn-model/execution/0193a8e9/"},
}


def raised(error: BaseException) -> BaseException:
    """The error with a real traceback, as run() would catch it."""
    try:
        raise error
    except BaseException as caught:
        return caught


def fail(runtime: retry.Runtime, error: BaseException | None = None, **settings: Any) -> int:
    """Hand an attempt's failure (a connection error unless given) to handle_failure."""
    return retry.handle_failure(raised(error or connection_error()), retry.Policy(**settings), runtime=runtime)


def instant(timestamp: float) -> str:
    return (
        datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).isoformat(timespec="milliseconds")[:-6]
        + "Z"
    )


def expected_payload(tags: list[str], not_before: str | None) -> dict[str, Any]:
    """The exact create body for a retry of the fixture execution."""
    variables = {"LOG_LEVEL": "info", "RETRY_PARENT": EXECUTION_ID}
    if not_before:
        variables["RETRY_NOT_BEFORE"] = not_before
    return {
        "project": PROJECT_ID,
        "commit": "5f2c1a9e0b7d4c3a8e6f1d2b9c0a7e4f3b2d1c0a",
        "step": "train",
        "parameters": {"retries": 3, "delay": 60, "failure_rate": 0.5, "failure_type": "connection"},
        "inputs": {"dataset": ["s3://acme-ml-data/churn/train.csv"]},
        "tags": tags,
        "environment_variables": variables,
        "environment": "0187c1f5-2b9a-4c7e-9d3f-6a1b2c3d4e5f",
        "image": "python:3.12-slim",
        "title": "Nightly training",
        "time_limit": 3600,
        "priority": 0,
        "runtime_config": {"autorestart": False, "no_output_timeout": 604800},
        "inherit_environment_variables": True,
    }


def expect_status_detail(api: responses.RequestsMock, text: str, record: retry.Record | None = None) -> None:
    """The pre-signed status-detail call, with its own signature and never the token.

    ``text`` is what people read; ``record``, when given, the record that must follow it.
    """

    def says(request: Any) -> tuple[bool, str]:
        detail = json.loads(request.body)["status_detail"]
        human = detail.partition(retry.RECORD_MARK)[0]
        if human != text:
            return False, f"status detail {human!r} is not {text!r}"
        if record is not None and retry.read_record(detail) != record:
            return False, f"record {retry.read_record(detail)!r} is not {record!r}"
        return True, ""

    api.post(STATUS_URL, match=[says, matchers.header_matcher({"Authorization": "Signature d1e2f3a4b5c6"})])


def status_details(api: responses.RequestsMock) -> list[str]:
    """The status details sent, in order (their human part)."""
    sent = [json.loads(call.request.body)["status_detail"] for call in api.calls if "status-detail" in call.request.url]
    return [detail.partition(retry.RECORD_MARK)[0] for detail in sent]


def records(api: responses.RequestsMock) -> list[retry.Record | None]:
    """The records sent with status details, in order."""
    return [
        retry.read_record(json.loads(call.request.body)["status_detail"])
        for call in api.calls
        if "status-detail" in call.request.url
    ]


def expect_detail(api: responses.RequestsMock, detail: dict[str, Any] | None = None) -> None:
    api.get(DETAIL_URL, json=detail or load_fixture("execution-detail.json"), match=[AUTH, SMALL])
