"""A local stand-in for the parts of the Valohai platform this project uses.

It serves the REST API on 127.0.0.1 (creating, reading and listing executions, token
checked on every call), a pre-signed status-detail endpoint per execution, and runs each
created execution as a real process of the step's command with its own config folder,
much as Valohai does. Everything that happens is recorded for the tests to assert on.

Faults can be injected per request (error statuses, dropped connections, lost answers,
slow answers, bodies that are not JSON), and the runner can override parameters of a
given attempt so that "fail, then recover on retry 2" is deterministic.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import valohai_yaml
from greppable import not_greppable, retry_lines

import retry
from retry import Record  # annotations in Execution, whose property `retry` hides the module

ROOT = Path(__file__).resolve().parent.parent
PROJECT_ID = "0185f0d4-1c2b-4a3d-9e8f-7a6b5c4d3e2f"
PROJECT_NAME = "acme/churn-model"
COMMIT = "5f2c1a9e0b7d4c3a8e6f1d2b9c0a7e4f3b2d1c0a"
TYPES: dict[str, type | tuple[type, ...]] = {"integer": int, "float": (int, float), "string": str, "flag": bool}
ENVIRONMENT = {"id": "0187c1f5-2b9a-4c7e-9d3f-6a1b2c3d4e5f", "name": "Local stand-in", "slug": "local-standin"}
#: Create-call keys beyond the basics, with their types (valohai-cli's payload builder).
OPTION_TYPES: dict[str, type] = {
    "runtime_config": dict,
    "priority": int,
    "environment_variable_groups": list,
    "runtime_config_preset": str,
    "inherit_environment_variables": bool,
    "time_limit": int,
}


@dataclass
class Fault:
    """Something to do instead of (or besides) answering one request.

    kind: ``status`` (answer ``status`` with ``headers``), ``drop`` (close the connection
    before doing anything), ``lost`` (act on the request, then close without answering),
    ``slow`` (act, then answer after ``seconds``), ``late`` (wait ``seconds``, then act
    and answer: the platform stores the execution after the client gave up),
    ``truncated`` (act, then send half the body and close), ``trickle`` (act, then send
    the body one byte every ``seconds``), ``html`` (act, then answer with the real status
    and an HTML body), ``not-json`` (answer 200 with HTML without acting).
    ``others`` executions of other chains (tagged ``retry: 1``, not run) are created just
    before the request is acted on: a sweep failing at the same moment.
    """

    method: str
    path: str  # a regular expression matched against the path
    kind: str
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    times: int = 1
    others: int = 0


@dataclass
class Execution:
    """One execution, as the stand-in knows it."""

    id: str
    counter: int
    step: str
    title: str | None
    tags: list[str]
    parameters: dict[str, Any]
    inputs: dict[str, list[str]]
    environment_variables: dict[str, str]
    image: str | None
    time_limit: int | None
    environment: str | None
    # What else the create call set: runtime_config, priority, environment_variable_groups,
    # runtime_config_preset, inherit_environment_variables.
    options: dict[str, Any] = field(default_factory=dict)
    signature: str = field(default_factory=lambda: secrets.token_hex(8))
    status: str = "queued"
    status_detail: str | None = None
    status_details: list[str] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    work_started_at: float | None = None
    failed_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    log: list[tuple[float, str, str]] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)  # what its process was started with
    dummy: bool = False  # created only to crowd the project: never run
    stop_requested: bool = False  # a user pressed Stop
    # The create call's body as received (it passed _validate): which keys the client sent.
    create_body: dict[str, Any] = field(default_factory=dict)

    @property
    def retry(self) -> int:
        return retry.retry_number(self.tags)

    def log_text(self) -> str:
        return "\n".join(line for _, _, line in self.log)

    @property
    def verdict(self) -> str | None:
        """The part of its status detail written for people (before the record, if any)."""
        return None if self.status_detail is None else self.status_detail.partition(retry.RECORD_MARK)[0]

    @property
    def record(self) -> Record | None:
        """The record its status detail ends with, if any."""
        return retry.read_record(self.status_detail)


@dataclass
class Datum:
    """An uploaded output file."""

    id: str
    name: str  # relative to the outputs folder it came from
    size: int
    ctime: float
    stored: Path
    execution: Execution | None  # None: uploaded by hand, no execution's output

    def as_api(self) -> dict[str, Any]:
        """The datum as the data list shows it (valohai-cli's OUTPUT_DATUM_DATA shape)."""
        return {
            "id": self.id,
            "name": self.name,
            "size": self.size,
            "ctime": _iso(self.ctime),
            "file_ctime": _iso(self.ctime),
            "file_mtime": _iso(self.ctime),
            "uri": f"s3://standin-bucket/data/{self.id}/{self.name}",
            "output_execution": {"id": self.execution.id, "counter": self.execution.counter}
            if self.execution
            else None,
        }


@dataclass
class Call:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str
    body: Any
    at: float
    user_agent: str = ""  # e.g. "valohai-cli/0.37.0 on CPython ...", "python-requests/2.32.4"


class Platform:
    """The stand-in: an HTTP server, the executions it created, and their runner."""

    def __init__(
        self,
        workdir: Path,
        *,
        token: str | None = "standin-token-5b0f0c2d9e",
        token_on_project: bool = True,
        queue_time: float = 0.0,
        retry_queue_time: float | None = None,
        epoch_seconds: float = 0.02,
        read_timeout: float = 1.0,
        script: str = "train.py",
        extra_env: dict[str, str] | None = None,
        host_variable: bool = False,
        fork: bool = True,
        abridged_lists: bool = False,
    ) -> None:
        self.workdir = workdir
        self.script = script
        self.extra_env = dict(extra_env or {})
        # Valohai does not set VALOHAI_HOST: a job finds its API from api.json's URLs.
        self.host_variable = host_variable
        self.token = token
        # False: the token was set on the first execution only, as a secret of its own.
        self.token_on_project = token_on_project
        self.queue_time = queue_time
        # The queue time of a retry (tagged "retry: N"), when it differs from a first attempt's:
        # a retry that starts on the warm machine its parent left, or on a new one.
        self.retry_queue_time = retry_queue_time
        self.epoch_seconds = epoch_seconds
        self.read_timeout = read_timeout
        # True: list entries leave out status details too, as a real API may serve them.
        self.abridged_lists = abridged_lists
        # The most a list page holds, whatever limit the client asks for (as on a real server).
        self.page_cap = 50
        # When set, every list page carries this as its "next" link (endless, elsewhere, relative).
        self.next_override: str | None = None
        self.executions: dict[int, Execution] = {}
        self.data: dict[str, Datum] = {}
        # How long a live upload takes, from the file turning read-only to its datum.
        self.upload_latency = 0.1
        # A data list that ignores its output_execution filter; inputs the commit does not declare.
        self.data_filter_ignored = False
        self.undeclared_inputs: set[str] = set()
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.overrides: dict[int, dict[str, Any]] = {}
        # Overrides of one chain's attempts, by its title (which every retry copies): chains
        # running at once can end differently.
        self.chain_overrides: dict[tuple[str | None, int], dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._in_flight = 0  # requests being answered
        self._threads: list[threading.Thread] = []
        self._processes: list[Any] = []
        self._launcher: Launcher = ForkLauncher() if fork and ForkLauncher.available() else Launcher()
        self._steps = _load_steps()
        self._step = self._steps["train"]
        # The script each step runs (valohai.yaml's commands run `python <script> {parameters}`).
        self.scripts = {"train": script, "retry-controller": "controller.py"}
        # A notification trigger on "Execution fails": the statuses that fire it (none: no trigger),
        # how many times it fires per failure, and the parameters of the controller it launches.
        self.trigger_on: set[str] = set()
        self.trigger_fires = 1
        self.controller_parameters: dict[str, Any] = {}
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self.host = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._serving = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    # --- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> Platform:
        self._serving.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for process in list(self._processes):
            if process.poll() is None:
                process.kill()
        self._server.shutdown()
        self._server.server_close()
        self._launcher.close()
        if exc[0] is None:  # what the executions printed and set can be found in the source
            said = [line for e in self.executions.values() for line in retry_lines(e.log_text())]
            said += [detail for e in self.executions.values() for detail in e.status_details]
            assert not_greppable(said) == [], "messages that grep -F cannot find in the source"

    # --- what tests use --------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Apply ``fault`` to the next matching request(s)."""
        with self._lock:
            self.faults.append(fault)

    def override(self, retry_number: int, **parameters: Any) -> None:
        """Run the attempt tagged ``retry: retry_number`` with other parameter values."""
        self.overrides[retry_number] = parameters

    def override_chain(self, title: str, retry_number: int, **parameters: Any) -> None:
        """Run the attempt tagged ``retry: retry_number`` of the chain titled ``title`` with other values.

        Applied after :meth:`override`, so a chain's own values win.
        """
        self.chain_overrides[(title, retry_number)] = parameters

    def start(
        self,
        title: str = "Nightly training",
        *,
        inputs: dict[str, list[str]] | None = None,
        variables: dict[str, str] | None = None,
        **parameters: Any,
    ) -> Execution:
        """Create and run a first attempt, as a user pressing *Create execution* would.

        ``variables`` are environment variables of this execution (the retries copy them).
        """
        payload = {
            "inputs": inputs or {},
            "project": PROJECT_ID,
            "commit": COMMIT,
            "step": "train",
            "title": title,
            "tags": ["nightly"],
            "parameters": {**self._defaults(), **parameters},
            "environment_variables": {"LOG_LEVEL": "info", **(variables or {})},
            "environment": ENVIRONMENT["id"],
            "runtime_config": {"autorestart": False, "no_output_timeout": 3600},
            "priority": 2,
            "inherit_environment_variables": True,  # the UI's box is ticked by default
        }
        status, body = self._create(payload)
        assert status == 201, body
        return self.executions[body["counter"]]

    def wait_until_idle(self, timeout: float) -> list[Execution]:
        """Wait until every execution has ended; return them in counter order."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # An execution creates its retry before it exits, so once all have ended,
            # no new one can appear.
            with self._lock:
                ended = all(execution.ended_at is not None for execution in self.executions.values())
                if ended and not self._in_flight:  # a late create may still be on its way
                    return [self.executions[n] for n in sorted(self.executions) if not self.executions[n].dummy]
            time.sleep(0.05)
        raise TimeoutError(f"executions still running after {timeout} s: {self.summary()}")

    def summary(self) -> str:
        return ", ".join(f"#{e.counter} {e.status} {e.tags}" for e in self.executions.values())

    def restart_inputs(self, execution: Execution) -> dict[str, list[str]]:
        """The ``_restart`` input Valohai gives a run restarted after a spot interruption."""
        return {"_restart": [f"datum://{datum.id}" for datum in self.outputs_of(execution)]}

    def upload_by_hand(self, name: str, content: str) -> Datum:
        """A file a user uploaded to the project's data: nobody's output."""
        datum_id = str(uuid.uuid4())
        stored = self.workdir / "data" / datum_id / Path(name).name
        stored.parent.mkdir(parents=True)
        stored.write_text(content)
        with self._lock:
            self.data[datum_id] = Datum(datum_id, name, len(content), time.time(), stored, None)
        return self.data[datum_id]

    def outputs_of(self, execution: Execution) -> list[Datum]:
        """What ``execution`` uploaded, oldest first."""
        with self._lock:
            return sorted((d for d in self.data.values() if d.execution is execution), key=lambda d: d.ctime)

    def relaunch_calls(self, failed: Execution) -> list[Call]:
        """The requests ``failed`` made to start its retry: from reading its own detail to its end."""
        own = self.calls_of(failed)
        detail = f"/api/v0/executions/{failed.id}/"
        start = min((call.at for call in own if call.path == detail), default=None)
        return [call for call in own if start is not None and call.at >= start]

    def calls_of(self, execution: Execution) -> list[Call]:
        """The requests ``execution``'s own process made: its API calls (retry.py names its job in
        its User-Agent) and its pre-signed status-detail calls."""
        return [
            call
            for call in self.calls
            if execution.id in call.user_agent or ("status-detail" in call.path and execution.id in call.path)
        ]

    def start_calls(self, execution: Execution) -> list[Call]:
        """The requests a retry made before its job started (or it stood down): its start's cost."""
        until = execution.work_started_at or execution.ended_at or time.time()
        return [call for call in self.calls_of(execution) if call.at <= until]

    def creates(self) -> list[Call]:
        """The create calls received (whatever their outcome)."""
        return [call for call in self.calls if call.method == "POST" and call.path == "/api/v0/executions/"]

    # --- the API ---------------------------------------------------------------------

    def _defaults(self, step: str = "train") -> dict[str, Any]:
        return {name: parameter.default for name, parameter in self._steps[step].parameters.items()}

    def _validate(self, payload: Any) -> dict[str, list[str]]:
        if not isinstance(payload, dict):
            return {"non_field_errors": ["Expected a JSON object."]}
        errors: dict[str, list[str]] = {}
        if payload.get("project") != PROJECT_ID:
            errors["project"] = [f"Project {payload.get('project')!r} not found."]
        if payload.get("commit") != COMMIT:
            errors["commit"] = [f"Commit {payload.get('commit')!r} not found."]
        step = self._steps.get(str(payload.get("step"))) or self._step
        if payload.get("step") not in self._steps:
            errors["step"] = [f"Step {payload.get('step')!r} not found in the commit's valohai.yaml."]
        for name, value in (payload.get("parameters") or {}).items():
            parameter = step.parameters.get(name)
            if parameter is None:
                errors.setdefault("parameters", []).append(f"Unknown parameter {name!r}.")
            elif not isinstance(value, TYPES[parameter.type]) or isinstance(value, bool) != (parameter.type == "flag"):
                errors.setdefault("parameters", []).append(f"{name}: not a valid {parameter.type}.")
        tags = payload.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(tag, str) and tag.strip() for tag in tags):
            errors["tags"] = ["Expected a list of non-empty strings."]
        variables = payload.get("environment_variables", {})
        if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
            errors["environment_variables"] = ["Expected an object of strings."]
        errors.update(self._validate_inputs(payload.get("inputs", {}), step))
        for name, kind in OPTION_TYPES.items():
            if name in payload and (
                not isinstance(payload[name], kind) or isinstance(payload[name], bool) != (kind is bool)
            ):
                errors[name] = [f"Expected a {kind.__name__}."]
        if payload.get("environment") not in (None, ENVIRONMENT["id"], ENVIRONMENT["slug"]):
            errors["environment"] = [f"Environment {payload.get('environment')!r} not found."]
        return errors

    def _validate_inputs(self, inputs: Any, step: valohai_yaml.objs.Step) -> dict[str, list[str]]:
        """Inputs are ``{name: [url, ...]}``, for inputs the step declares (or ``_restart``)."""
        if not isinstance(inputs, dict) or not all(isinstance(urls, list) for urls in inputs.values()):
            return {"inputs": ["Expected an object of lists."]}
        problems = []
        for name, urls in inputs.items():
            if (name not in step.inputs and name != "_restart") or name in self.undeclared_inputs:
                problems.append(f"Step {step.name!r} has no input {name!r}.")
            for url in urls:
                if not isinstance(url, str) or (url.startswith("datum://") and url[8:] not in self.data):
                    problems.append(f"{name}: {url!r} is not a known datum or URL.")
        return {"inputs": problems} if problems else {}

    def crowd(self, count: int) -> None:
        """Create ``count`` executions of other chains, as a sweep failing at once would."""
        for _ in range(count):
            payload = {
                "project": PROJECT_ID,
                "commit": COMMIT,
                "step": "train",
                "title": "Nightly training",  # as alike as can be: only RETRY_PARENT tells them apart
                "tags": ["nightly", "retry: 1"],
                "environment_variables": {"RETRY_PARENT": str(uuid.uuid4())},
            }
            self._create(payload, dummy=True)

    def _create(self, payload: Any, *, dummy: bool = False) -> tuple[int, Any]:
        errors = self._validate(payload)
        if errors:
            return 400, errors
        with self._lock:
            counter = max(self.executions, default=40) + 1
            execution = Execution(
                id=str(uuid.uuid4()),
                counter=counter,
                step=payload["step"],
                title=payload.get("title"),
                tags=list(payload.get("tags", [])),
                parameters={**self._defaults(payload["step"]), **payload.get("parameters", {})},
                inputs=dict(payload.get("inputs", {})),
                environment_variables=dict(payload.get("environment_variables", {})),
                image=payload.get("image"),
                time_limit=payload.get("time_limit"),
                environment=payload.get("environment"),
                options={name: payload[name] for name in OPTION_TYPES if name in payload},
                dummy=dummy,
                create_body=json.loads(json.dumps(payload)),
            )
            self.executions[counter] = execution
        if dummy:
            execution.ended_at = time.time()
            return 201, self._detail(execution)
        thread = threading.Thread(target=self._run, args=(execution,), daemon=True)
        self._threads.append(thread)
        thread.start()
        return 201, self._detail(execution)

    def _detail(self, execution: Execution) -> dict[str, Any]:
        """The execution detail, in the shape of valohai-cli's fixtures (tests/fixtures/README.md)."""
        variables: dict[str, Any] = {
            name: {"value": value, "secret": False} for name, value in execution.environment_variables.items()
        }
        if self._has_token(execution):  # a secret: listed, value hidden
            variables["VH_API_TOKEN"] = {"value": None, "secret": True}
        api_url = f"{self.host}/api/v0/executions/{execution.id}/"
        ended = execution.ended_at if execution.ended_at is not None else None
        detail = {
            "id": execution.id,
            "counter": execution.counter,
            "url": api_url,
            "urls": {
                "display": f"{self.host}/p/{PROJECT_NAME}/execution/{execution.id}/",
                "copy": f"{api_url}copy/",
                "stop": f"{api_url}stop/",
            },
            "ctime": _iso(execution.created_at),
            "duration": round(ended - execution.started_at) if ended and execution.started_at else None,
            "status": execution.status,
            "status_detail": execution.status_detail,
            "step": execution.step,
            "title": execution.title,
            "tags": list(execution.tags),
            "image": execution.image,
            "time_limit": execution.time_limit,
            "project": {"id": PROJECT_ID, "name": PROJECT_NAME, "urls": {"display": f"{self.host}/p/{PROJECT_NAME}/"}},
            "commit": {"repository": 1, "identifier": COMMIT, "ref": "main"},
            # Every execution runs in an environment: the project's default when its create call
            # named none (as valohai-cli's does without --environment). `vh execution info` reads
            # its name unconditionally.
            "environment": ENVIRONMENT,
            "parameters": dict(execution.parameters),
            "inputs": [{"name": name, "urls": urls} for name, urls in execution.inputs.items()],
            "environment_variables": variables,
            "outputs": [],
            "task": None,
            "pipeline": None,
        }
        detail.update(
            {name: value for name, value in execution.options.items() if name != "inherit_environment_variables"}
        )
        return detail

    def _summary_item(self, execution: Execution) -> dict[str, Any]:
        """A list entry: the detail without its environment variables, as valohai-cli's list mocks;
        with ``abridged_lists``, without its status detail too (so without its record)."""
        left_out = {"environment_variables", "status_detail"} if self.abridged_lists else {"environment_variables"}
        return {key: value for key, value in self._detail(execution).items() if key not in left_out}

    def handle(self, method: str, path: str, query: dict[str, list[str]], authorization: str, body: Any) -> Any:
        """Answer one API request: ``(status, json_body)``."""
        status_detail = re.fullmatch(r"/api/v0/executions/([^/]+)/status-detail/", path)
        if status_detail:
            return self._set_status_detail(status_detail.group(1), query, authorization, body)
        if not self.token or authorization != f"Token {self.token}":
            return 401, {"detail": "Invalid token."}
        with self._lock:
            if method == "POST" and path == "/api/v0/executions/":
                return self._create(body)
            if method == "GET" and path == "/api/v0/executions/":
                if query.get("project") != [PROJECT_ID]:
                    return 400, {"project": ["This filter is required."]}
                ordered = sorted(self.executions.values(), key=lambda e: -e.counter)
                return 200, self._page(path, query, [self._summary_item(e) for e in ordered])
            if method == "GET" and path == "/api/v0/data/":
                wanted = query.get("output_execution", [""])[0]
                data = sorted(self.data.values(), key=lambda d: -d.ctime)
                if not self.data_filter_ignored:
                    data = [d for d in data if d.execution is not None and d.execution.id == wanted]
                return 200, self._page(path, query, [d.as_api() for d in data])
            download = re.fullmatch(r"/api/v0/data/([^/]+)/download/", path)
            if method == "GET" and download:
                found = download.group(1) in self.data
                return (
                    (200, {"url": f"{self.host}/files/{download.group(1)}"})
                    if found
                    else (404, {"detail": "Not found."})
                )
            if method == "GET" and path == f"/api/v0/projects/{PROJECT_ID}/":
                secret = {"VH_API_TOKEN": {"value": None, "secret": True}}
                variables = secret if self.token and self.token_on_project else {}
                return 200, {"id": PROJECT_ID, "name": PROJECT_NAME, "environment_variables": variables}
            match = re.fullmatch(r"/api/v0/executions/([^/]+)/", path)
            if method == "GET" and match:
                execution = self._find(match.group(1))
                return (200, self._detail(execution)) if execution else (404, {"detail": "Not found."})
            served = self._serve_events(method, path)
            if served is not None:
                return served
            served = self._serve_commits(method, path, query)
            if served is not None:
                return served
        return 404, {"detail": "Not found."}

    # --- what valohai-cli reads besides executions -----------------------------------

    def commit(self, *, config: bool = False) -> dict[str, Any]:
        """The project's one commit, ``COMMIT``, as the commit list and detail show it.

        Its shape is valohai-cli's (``DEPLOYMENT_VERSION_DATA["commit"]`` in its test data,
        ``url`` as in ``EXECUTION_DATA``); ``vh execution run`` reads ``identifier``,
        ``commit_time``, ``adhoc`` and ``url``, and in remote mode ``config`` from the detail.
        """
        url = f"{self.host}/api/v0/commits/{COMMIT}/"
        commit: dict[str, Any] = {
            "identifier": COMMIT,
            "ref": "main",
            "ref_names": ["main"],
            "repository": 1,
            "project_id": PROJECT_ID,
            "adhoc": False,
            "commit_time": "2025-01-15T09:30:00Z",
            "ctime": "2025-01-15T09:31:04.512000Z",
            "description": "Sample step that fails on purpose",
            "yaml_path": "valohai.yaml",
            "has_config": True,
            "url": url,
            "urls": {"display": f"{self.host}/p/{PROJECT_NAME}/commits/{COMMIT}/"},
        }
        if config:  # the parsed valohai.yaml, as ?include=config adds it
            with (ROOT / "valohai.yaml").open() as file:
                commit["config"] = valohai_yaml.parse(file).serialize()
        return commit

    def _serve_commits(self, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, Any] | None:
        """``GET /api/v0/commits/?project=...`` and ``GET /api/v0/commits/<identifier>/``; None for other paths."""
        if method == "GET" and path == "/api/v0/commits/":
            if query.get("project") != [PROJECT_ID]:
                return 400, {"project": ["This filter is required."]}
            adhoc = query.get("adhoc", [""])[0]
            commits = [] if adhoc == "true" else [self.commit()]  # the project has no ad-hoc commits
            return 200, self._page(path, query, commits)
        match = re.fullmatch(r"/api/v0/commits/([^/]+)/", path)
        if method == "GET" and match:
            if match.group(1) != COMMIT:
                return 404, {"detail": "Not found."}
            return 200, self.commit(config="config" in query.get("include", [""])[0].split(","))
        return None

    def _serve_events(self, method: str, path: str) -> Any:
        """An execution's log, as `vh execution logs` reads it (``<execution url>events/``); None for
        another path."""
        events = re.fullmatch(r"/api/v0/executions/([^/]+)/events/", path)
        if method != "GET" or events is None:
            return None
        execution = self._find(events.group(1))
        if execution is None:
            return 404, {"detail": "Not found."}
        lines = [{"time": _iso(at)[:-1], "stream": stream, "message": text} for at, stream, text in execution.log]
        return 200, {"total": len(lines), "truncated": False, "events": lines}

    def _page(self, path: str, query: dict[str, list[str]], items: list[dict[str, Any]]) -> dict[str, Any]:
        """One page of ``items`` with limit and offset, as Django REST framework pages them."""
        limit = min(int(query.get("limit", ["100"])[0]), self.page_cap)
        offset = int(query.get("offset", ["0"])[0])
        more = offset + limit < len(items)

        def link(start: int) -> str:
            kept = "&".join(f"{key}={values[0]}" for key, values in query.items() if key not in ("limit", "offset"))
            return f"{self.host}{path}?{kept}&limit={limit}&offset={start}"

        return {
            "count": len(items),
            "next": self.next_override or (link(offset + limit) if more else None),
            "previous": link(max(0, offset - limit)) if offset else None,
            "results": items[offset : offset + limit],
        }

    def file(self, datum_id: str) -> bytes | None:
        """A datum's content, as its download URL serves it."""
        datum = self.data.get(datum_id)
        return datum.stored.read_bytes() if datum else None

    def list_calls(self) -> list[Call]:
        """The list requests received."""
        return [call for call in self.calls if call.method == "GET" and call.path == "/api/v0/executions/"]

    @staticmethod
    def status_detail_path(execution: Execution) -> str:
        return f"/api/v0/executions/{execution.id}/status-detail/"

    def _find(self, key: str) -> Execution | None:
        if ":" in key:
            project, _, counter = key.partition(":")
            return self.executions.get(int(counter)) if project == PROJECT_ID and counter.isdigit() else None
        return next((e for e in self.executions.values() if e.id == key), None)

    def _set_status_detail(self, key: str, query: dict[str, list[str]], authorization: str, body: Any) -> Any:
        execution = self._find(key)
        if execution is None or query.get("signature") != [execution.signature]:
            return 403, {"detail": "Bad signature."}
        if authorization != f"Signature {execution.signature}":
            return 403, {"detail": "Pre-signed calls take their own signature, not a token."}
        if not isinstance(body, dict) or not isinstance(body.get("status_detail"), str):
            return 400, {"status_detail": ["Required."]}
        execution.status_detail = body["status_detail"]
        execution.status_details.append(body["status_detail"])
        return 200, {"ok": True}

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.method == method and re.fullmatch(fault.path, path) and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    # --- the runner ------------------------------------------------------------------

    def _run(self, execution: Execution) -> None:
        queue = self.queue_time if execution.retry == 0 or self.retry_queue_time is None else self.retry_queue_time
        time.sleep(queue)  # queueing, starting a machine, pulling the image
        folder = self.workdir / f"execution-{execution.counter}"
        config = folder / "config"
        config.mkdir(parents=True)
        outputs = folder / "outputs"
        outputs.mkdir()
        inputs = self._materialize_inputs(execution, folder / "inputs")
        self._write_config(execution, config, inputs)
        parameters = {**execution.parameters}
        if execution.step == "train":
            parameters.update(self.overrides.get(execution.retry, {}))
            parameters.update(self.chain_overrides.get((execution.title, execution.retry), {}))
        script = self.scripts[execution.step]
        command = [sys.executable, script, *(f"--{name}={value}" for name, value in parameters.items())]
        environ = {
            "PATH": "/usr/bin:/bin",
            "PYTHONUNBUFFERED": "1",
            "VH_JOB_ID": execution.id,
            "VH_CONFIG_DIR": str(config),
            "VH_OUTPUTS_DIR": str(outputs),
            "VH_INPUTS_DIR": str(folder / "inputs"),
            **({"VALOHAI_HOST": self.host} if self.host_variable else {}),
            "TRAIN_EPOCH_SECONDS": str(self.epoch_seconds),
            "RETRY_API_TIMEOUT": str(self.read_timeout),
            **self.extra_env,
            **execution.environment_variables,
        }
        if self._has_token(execution):
            environ["VH_API_TOKEN"] = self.token or ""
        execution.environ = environ
        execution.status = "started"
        execution.started_at = time.time()
        process = self._launcher.start(command, environ, ROOT)
        process.execution = execution
        self._processes.append(process)
        if execution.stop_requested:  # Stop was pressed while the process was starting: stop() missed it
            process.kill()
        readers = [
            threading.Thread(target=self._read, args=(execution, process.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(execution, process.stderr, "stderr"), daemon=True),
        ]
        stop_watching = threading.Event()
        watcher = threading.Thread(target=self._watch_outputs, args=(execution, outputs, stop_watching), daemon=True)
        for thread in (*readers, watcher):
            thread.start()
        try:
            execution.exit_code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            execution.exit_code = process.wait()
        for reader in readers:
            reader.join(timeout=5)
        stop_watching.set()
        watcher.join(timeout=5)
        for path in sorted(outputs.rglob("*")):  # whatever its status, what is left is uploaded
            if path.is_file():
                self._upload(execution, outputs, path)
        execution.status = (
            "stopped" if execution.stop_requested else "complete" if execution.exit_code == 0 else "error"
        )
        if execution.status in self.trigger_on:  # a controller's own failure too, as on Valohai
            for _ in range(self.trigger_fires):  # before it is marked ended: wait_until_idle sees the controller
                self.fire_trigger(execution)
        execution.ended_at = time.time()

    def fire_trigger(self, failed: Execution) -> Execution:
        """A notification trigger on the failure: launch ``retry-controller`` with the event's payload as
        its input ``payload`` (its "Payload input name"), shaped as Valohai's notifications are (an
        envelope; the execution's ``valohai.*`` fields under ``data``; docs/platform.md)."""
        payload = {
            "project": PROJECT_ID,
            "type": "execution_failed",
            "title": f"Execution failed: {PROJECT_NAME}/#{failed.counter}",
            "body": f"Execution #{failed.counter} failed.",
            "url": f"/p/{PROJECT_NAME}/execution/{failed.id}/",
            "data": {
                "valohai.execution-id": failed.id,
                "valohai.execution-counter": failed.counter,
                "valohai.execution-status": failed.status,
                "valohai.execution-step": failed.step,
                "valohai.execution-title": failed.title,
                "valohai.execution-ctime": _iso(failed.created_at),
                "valohai.project-id": PROJECT_ID,
                "valohai.project-name": PROJECT_NAME,
                "valohai.commit-identifier": COMMIT,
            },
        }
        datum = self.upload_by_hand("payload.json", json.dumps(payload))
        create = {
            "project": PROJECT_ID,
            "commit": COMMIT,
            "step": "retry-controller",
            "title": "Retry controller",
            "inputs": {"payload": [f"datum://{datum.id}"]},
            "parameters": {**self._defaults("retry-controller"), **self.controller_parameters},
            "environment_variables": {},
            "inherit_environment_variables": True,
        }
        status, body = self._create(create)
        assert status == 201, body
        return self.executions[body["counter"]]

    def stop(self, execution: Execution) -> None:
        """A user's Stop: the execution's process ends, and it is marked ``stopped``."""
        execution.stop_requested = True
        for process in self._processes:
            if getattr(process, "execution", None) is execution:
                process.kill()

    def controllers(self) -> list[Execution]:
        """The retry controllers the trigger launched, in counter order."""
        return [e for n, e in sorted(self.executions.items()) if e.step == "retry-controller"]

    def _watch_outputs(self, execution: Execution, outputs: Path, stop: threading.Event) -> None:
        """Live upload: a file turned read-only is uploaded right away and taken from the folder."""
        while not stop.is_set():
            for path in sorted(outputs.rglob("*")):
                with contextlib.suppress(FileNotFoundError):  # renamed by the job meanwhile (a .partial file)
                    if path.is_file() and not path.stat().st_mode & stat.S_IWUSR:
                        time.sleep(self.upload_latency)
                        self._upload(execution, outputs, path)
            stop.wait(0.05)

    def _upload(self, execution: Execution, outputs: Path, path: Path) -> None:
        datum_id = str(uuid.uuid4())
        stored = self.workdir / "data" / datum_id / path.name
        stored.parent.mkdir(parents=True)
        shutil.copyfile(path, stored)
        name = path.relative_to(outputs).as_posix()
        with self._lock:
            self.data[datum_id] = Datum(datum_id, name, stored.stat().st_size, time.time(), stored, execution)
        path.unlink()

    def _materialize_inputs(self, execution: Execution, folder: Path) -> dict[str, Any]:
        """Download the inputs into the execution's inputs folder; return ``inputs.json``."""
        listing: dict[str, Any] = {}
        for name, urls in execution.inputs.items():
            files: list[dict[str, Any]] = []
            for url in urls:
                datum = self.data.get(url[len("datum://") :]) if url.startswith("datum://") else None
                if datum is None:  # a bucket URL: listed, not fetched by the stand-in
                    files.append({"name": url.rsplit("/", 1)[-1], "uri": url})
                    continue
                target = folder / name / datum.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(datum.stored, target)
                api = datum.as_api()
                files.append(
                    {
                        "name": datum.name,
                        "uri": api["uri"],
                        "path": str(target),
                        "size": datum.size,
                        "datum_id": datum.id,
                    }
                )
            listing[name] = {"files": files}
        return listing

    def _has_token(self, execution: Execution) -> bool:
        """Whether the execution gets VH_API_TOKEN: from the project, if it inherits the
        project's variables (an unpublished default: here, not unless asked), or as a
        variable of its own on the first execution."""
        first = min(self.executions) if self.executions else execution.counter
        inherits = execution.options.get("inherit_environment_variables") is True
        return bool(self.token) and ((self.token_on_project and inherits) or execution.counter == first)

    def leaks(self) -> list[str]:
        """Places where the token shows up: log lines, status details, request bodies."""
        if not self.token:
            return []
        found = [
            f"#{e.counter} log: {line}" for e in self.executions.values() for _, _, line in e.log if self.token in line
        ]
        found += [
            f"#{e.counter} status detail" for e in self.executions.values() for d in e.status_details if self.token in d
        ]
        found += [f"{c.method} {c.path} body" for c in self.calls if self.token in json.dumps(c.body)]
        found += [
            f"{c.method} {c.path} header"
            for c in self.calls
            if "status-detail" in c.path and "Token" in c.authorization
        ]
        return found

    def _read(self, execution: Execution, stream: Any, name: str) -> None:
        for line in stream:
            now = time.time()
            execution.log.append((now, name, line.rstrip("\n")))
            if line.startswith("Training ") and execution.work_started_at is None:
                execution.work_started_at = now
            if line.startswith("Traceback") and execution.failed_at is None:
                execution.failed_at = now

    def _write_config(self, execution: Execution, config: Path, inputs: dict[str, Any]) -> None:
        files = {
            "execution.json": {
                "valohai.execution-id": execution.id,
                "valohai.execution-counter": execution.counter,
                "valohai.execution-tags": execution.tags,
                "valohai.execution-title": execution.title,
                "valohai.execution-step": execution.step,
                "valohai.execution-image": execution.image,
                "valohai.project-id": PROJECT_ID,
                "valohai.project-name": PROJECT_NAME,
                "valohai.commit-identifier": COMMIT,
                "valohai.pipeline-id": None,
                "valohai.task-id": None,
            },
            "parameters.json": execution.parameters,
            "inputs.json": inputs,
            "api.json": {
                "set_status_detail": {
                    "url": f"{self.host}{self.status_detail_path(execution)}?signature={execution.signature}",
                    "method": "POST",
                    "headers": {"Authorization": f"Signature {execution.signature}"},
                }
            },
        }
        for name, content in files.items():
            (config / name).write_text(json.dumps(content))


class Launcher:
    """Starts an execution's process as ``subprocess.Popen`` does."""

    def start(self, command: list[str], environ: dict[str, str], cwd: Path) -> Any:
        return subprocess.Popen(
            command, cwd=cwd, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def close(self) -> None:
        pass


class ForkLauncher(Launcher):
    """Starts processes through ``forkserver.py``: the same processes, without the import time.

    Benchmarks that measure start-up use :class:`Launcher` (``Platform(fork=False)``).
    """

    def __init__(self) -> None:
        self._socket, theirs = socket.socketpair()
        self._server = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("forkserver.py")), str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        return hasattr(socket, "send_fds") and hasattr(os, "fork")

    def start(self, command: list[str], environ: dict[str, str], cwd: Path) -> Any:
        pipes = [os.pipe() for _ in range(3)]  # stdout, stderr, status
        request = json.dumps({"argv": command, "env": environ, "cwd": str(cwd)}).encode()
        with self._lock:
            socket.send_fds(self._socket, [request], [write for _, write in pipes])
        for _, write in pipes:
            os.close(write)
        return Forked(*(os.fdopen(read, encoding="utf-8", errors="replace") for read, _ in pipes))

    def close(self) -> None:
        self._socket.close()  # the server reads the end of its requests, and ends
        try:
            self._server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()


class Forked:
    """A process the fork server started, with the part of ``Popen`` the stand-in uses."""

    def __init__(self, stdout: Any, stderr: Any, status: Any) -> None:
        self.stdout, self.stderr, self._status = stdout, stderr, status
        self.pid = int(status.readline())
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            ready, _, _ = select.select([self._status], [], [], timeout)
            if not ready:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0)
            self.returncode = int(self._status.readline())
            self._status.close()
        return self.returncode

    def poll(self) -> int | None:
        try:
            return self.wait(0)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _load_steps() -> dict[str, valohai_yaml.objs.Step]:
    with (ROOT / "valohai.yaml").open() as file:
        return dict(valohai_yaml.parse(file).steps)


class _Server(http.server.ThreadingHTTPServer):
    """The HTTP server, with room for a herd's connections: with the default backlog of 5, the
    kernel drops connections that 50 executions open at once, and each waits seconds to retry."""

    request_queue_size = 128


def _handler_for(platform: Platform) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms stall

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            query = parse_qs(parts.query)
            authorization = self.headers.get("Authorization", "")
            user_agent = self.headers.get("User-Agent", "")
            platform.calls.append(Call(method, parts.path, query, authorization, body, time.time(), user_agent))
            with platform._lock:
                platform._in_flight += 1
            try:
                self._serve_with_faults(method, parts.path, query, authorization, body)
            finally:
                with platform._lock:
                    platform._in_flight -= 1

        def _serve_with_faults(self, method: str, path: str, query: Any, authorization: str, body: Any) -> None:
            if method == "GET" and path.startswith("/files/"):  # a download URL: signed, no token
                content = platform.file(path[len("/files/") :])
                self._answer(200 if content is not None else 404, None, {}, content or b"")
                return
            fault = platform.take_fault(method, path)
            if fault and fault.kind == "drop":
                self.close_connection = True
                return
            if fault and fault.kind == "status":
                self._answer(fault.status, {"detail": "injected"}, fault.headers)
                return
            if fault and fault.kind == "not-json":
                self._answer(200, None, {}, b"<html>Service temporarily unavailable</html>")
                return
            if fault and fault.kind == "late":
                time.sleep(fault.seconds)
            if fault and fault.others:
                platform.crowd(fault.others)
            status, answer = platform.handle(method, path, query, authorization, body)
            if fault and fault.kind == "lost":
                self.close_connection = True
                return
            if fault and fault.kind == "slow":
                time.sleep(fault.seconds)
            if fault and fault.kind == "html":
                self._answer(status, None, {}, b"<html><body>Created</body></html>")
                return
            if fault and fault.kind in ("truncated", "trickle"):
                self._answer_badly(status, json.dumps(answer).encode(), fault)
                return
            self._answer(status, answer, {})

        def _answer(self, status: int, answer: Any, headers: dict[str, str], raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "text/html" if raw is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): nothing to answer

        def _answer_badly(self, status: int, data: bytes, fault: Fault) -> None:
            """Promise the whole body, then send half of it (truncated) or crawl (trickle)."""
            self.close_connection = True
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if fault.kind == "truncated":
                    self.wfile.write(data[: len(data) // 2])
                    return
                for index in range(len(data)):
                    self.wfile.write(data[index : index + 1])
                    self.wfile.flush()
                    time.sleep(fault.seconds)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read Platform.calls
            pass

    return Handler
