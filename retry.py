"""Retry a Valohai execution after a transient error by starting a fresh copy of it.

Copy this one file into your project (it needs ``requests`` and ``valohai-utils``) and
wrap your entry point::

    import retry

    retry.run(main, retries=3, delay=60)

When ``main`` raises a transient error (a dropped connection, a timeout, HTTP 429 or
5xx), the execution asks the Valohai API for a copy of itself tagged ``retry: N+1`` and
exits with :data:`EXIT_RETRY_STARTED`.  The copy waits out the delay before it starts
work, so the failed machine is released at once.  Any other error fails the execution
straight away.  After ``retries`` retries the chain stops and says so in the status
detail.  Outside Valohai (no ``VH_JOB_ID``) the same policy relaunches the script as a
fresh local process, so the behaviour can be tried on a laptop.

Environment:
    ``VH_API_TOKEN``   API token, set as a *secret* project environment variable.
    ``VALOHAI_HOST``   API address for self-hosted installations
                       (default ``https://app.valohai.com``).
    ``VH_CONFIG_DIR``  where ``execution.json`` and friends are (default ``/valohai/config``).
    ``RETRY_API_TIMEOUT``  read timeout of each API request in seconds (default 30).

Exit codes: 0 success, :data:`EXIT_GAVE_UP` (1), :data:`EXIT_BAD_CONFIG` (2),
:data:`EXIT_RELAUNCH_FAILED` (3), :data:`EXIT_RETRY_STARTED` (75).

Query a chain of attempts: ``python retry.py chain <counter> [--project ID]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import email.utils
import ipaddress
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import requests
import valohai
import valohai.paths

try:  # valohai-utils' pre-signed call helper; set_status_detail() wraps it without a timeout
    from valohai.internals.api_calls import send_api_request as _send_signed_request
except ImportError:  # pragma: no cover - a future valohai-utils may move it
    _send_signed_request = None  # type: ignore[assignment]

__all__ = [
    "EXIT_BAD_CONFIG",
    "EXIT_GAVE_UP",
    "EXIT_RELAUNCH_FAILED",
    "EXIT_RETRY_STARTED",
    "APIError",
    "ConfigError",
    "Execution",
    "Policy",
    "RetryError",
    "Runtime",
    "ValohaiAPI",
    "api_host",
    "build_retry_payload",
    "chain",
    "config_dir",
    "countdown",
    "current_retry",
    "find_retry",
    "format_chain",
    "format_retry_tag",
    "handle_failure",
    "is_transient",
    "main",
    "read_execution",
    "read_token",
    "relaunch",
    "request_timeout",
    "retry_after_seconds",
    "retry_number",
    "retry_tags",
    "run",
    "set_status_detail",
    "wait_for_turn",
]

#: The attempt failed and a retry execution was started (``EX_TEMPFAIL``).
EXIT_RETRY_STARTED = 75
#: The attempt failed for good: retries exhausted, or the error is not transient.
EXIT_GAVE_UP = 1
#: The retry settings (or the script's parameters) are invalid; nothing was relaunched.
EXIT_BAD_CONFIG = 2
#: The attempt failed with a transient error, but no retry could be started.
EXIT_RELAUNCH_FAILED = 3

DEFAULT_HOST = "https://app.valohai.com"
TOKEN_VARIABLE = "VH_API_TOKEN"
HOST_VARIABLE = "VALOHAI_HOST"
#: Set on a retry: the UTC instant before which it must not start work.
NOT_BEFORE_VARIABLE = "RETRY_NOT_BEFORE"
#: Set on a retry: the id of the execution whose failure it retries.
PARENT_VARIABLE = "RETRY_PARENT"
#: Local mode only: the retry number of this process (the tag it would carry).
LOCAL_RETRY_VARIABLE = "RETRY_LOCAL_NUMBER"

#: Hard ceiling on retries: a chain can never grow past it, whatever the tags say.
MAX_RETRIES = 100
#: Hard ceiling on a single wait, in seconds (one day).
MAX_WAIT = 86_400.0
TRANSIENT_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})

#: Connect and read timeouts of every API request, in seconds.
REQUEST_TIMEOUT = (5.0, 30.0)
#: Overrides the read timeout, e.g. for a slow proxy.
TIMEOUT_VARIABLE = "RETRY_API_TIMEOUT"
#: Total time the API calls of one relaunch may spend retrying a flaky API, in seconds.
API_BUDGET = 60.0
#: API answers worth asking again: the service is briefly unavailable.
_RETRYABLE_API_STATUSES = frozenset({429, 502, 503, 504})
#: Of those, the ones where a POST may still have been acted on behind a gateway.
_AMBIGUOUS_API_STATUSES = frozenset({502, 504})
STATUS_DETAIL_TIMEOUT = 10.0
_STATUS_DETAIL_LIMIT = 1000

_RETRY_TAG = re.compile(r"^\s*retry\s*:\s*([0-9]+)\s*$", re.IGNORECASE)
# Longer digit strings are absurd counts; int() on huge strings is slow or refused.
_MAX_TAG_DIGITS = 9

T = TypeVar("T")
if TYPE_CHECKING:  # only for annotations, so that this file still imports on Python 3.8
    #: What ``Policy.retry_on`` takes: a predicate, an exception type, or a tuple of types.
    RetryOn = Callable[[BaseException], bool] | type[BaseException] | tuple[type[BaseException], ...]


# --- errors ----------------------------------------------------------------------------


class RetryError(Exception):
    """A problem of the retry machinery itself, explained in one line.

    ``exit_code`` is what the process exits with when this ends the attempt.
    """

    exit_code = EXIT_RELAUNCH_FAILED


class ConfigError(RetryError):
    """Invalid retry settings or parameters: nothing is relaunched."""

    exit_code = EXIT_BAD_CONFIG


class APIError(RetryError):
    """The Valohai API could not be used; ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class _AmbiguousRequestError(APIError):
    """The request may or may not have been acted on (answer lost)."""


# --- what is transient -----------------------------------------------------------------


def is_transient(error: BaseException) -> bool:
    """Tell whether ``error`` is worth a retry: the default classification.

    Transient: ``requests.ConnectionError`` and ``requests.Timeout`` (with their
    subclasses), ``requests.HTTPError`` with status 429, 500, 502, 503 or 504, and the
    built-in ``ConnectionError`` and ``TimeoutError``.  An error raised ``from`` a
    transient one (``raise LoadError(...) from exc``) is transient too; an error that
    merely happened while handling one is not, since that is usually a bug.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_transient_itself(current):
            return True
        current = current.__cause__
    return False


def _is_transient_itself(error: BaseException) -> bool:
    if isinstance(error, requests.HTTPError):
        response = error.response
        return response is not None and response.status_code in TRANSIENT_HTTP_STATUSES
    # socket.timeout is TimeoutError only from Python 3.10 on.
    transient = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, socket.timeout)
    return isinstance(error, transient)


def retry_after_seconds(error: BaseException | None, now: float | None = None) -> float:
    """The wait that a 429 or 503 error's ``Retry-After`` header asks for (0 if none)."""
    response = getattr(error, "response", None)
    if response is None or getattr(response, "status_code", None) not in (429, 503):
        return 0.0
    value = str(response.headers.get("Retry-After", "")).strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return 0.0
    if when is None:
        return 0.0
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


# --- the policy ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Policy:
    """How many retries, how long to wait, and which errors count as transient.

    The wait before retry ``n`` (1-based) is ``delay * backoff ** (n - 1)`` plus a random
    ``0..jitter`` seconds, at most ``max_delay``; a ``Retry-After`` header on a 429/503
    error makes it at least that long (still at most ``max_delay``).  The defaults give a
    plain constant delay.

    ``wait_in`` says where the wait is spent: ``"retry"`` (default) starts the retry at
    once and lets it wait before it does work, which frees the failed machine;
    ``"failed"`` keeps the failed execution waiting before it asks for the retry.
    """

    retries: int = 3
    delay: float = 60.0
    backoff: float = 1.0
    max_delay: float = 3600.0
    jitter: float = 0.0
    retry_on: RetryOn = is_transient
    wait_in: str = "retry"

    def __post_init__(self) -> None:
        _check_number("retries", self.retries, 0, MAX_RETRIES, integer=True)
        _check_number("delay", self.delay, 0, MAX_WAIT)
        _check_number("backoff", self.backoff, 1, 100)
        _check_number("max_delay", self.max_delay, 0, MAX_WAIT)
        _check_number("jitter", self.jitter, 0, MAX_WAIT)
        if self.delay > self.max_delay:
            raise ConfigError(f"delay ({self.delay} s) must not exceed max_delay ({self.max_delay} s)")
        if self.wait_in not in ("retry", "failed"):
            raise ConfigError(f"wait_in must be 'retry' or 'failed', got {self.wait_in!r}")
        if not callable(self.retry_on) and not _is_exception_types(self.retry_on):
            raise ConfigError("retry_on must be a predicate or exception types")

    def should_retry(self, error: BaseException) -> bool:
        """Tell whether ``error`` is one this policy retries."""
        if isinstance(self.retry_on, (type, tuple)):
            return isinstance(error, self.retry_on)
        return bool(self.retry_on(error))

    def wait_before(
        self,
        retry: int,
        error: BaseException | None = None,
        *,
        uniform: Callable[[float, float], float] = random.uniform,
        now: float | None = None,
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        planned = self.delay * self.backoff ** (retry - 1) + (uniform(0.0, self.jitter) if self.jitter else 0.0)
        return min(self.max_delay, max(planned, retry_after_seconds(error, now)))


def _check_number(name: str, value: object, low: float, high: float, *, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    valid_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not valid_type or not (low <= value <= high):  # type: ignore[operator]
        raise ConfigError(f"{name} must be {kind} from {low:g} to {high:g}, got {value!r}")


def _is_exception_types(value: object) -> bool:
    types = value if isinstance(value, tuple) else (value,)
    return all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in types)


# --- tags ------------------------------------------------------------------------------


def format_retry_tag(number: int) -> str:
    """The tag that marks retry ``number``: ``retry: N``, as the Valohai UI shows it."""
    return f"retry: {number}"


def _parse_retry_tag(tag: object) -> int | None:
    match = _RETRY_TAG.match(tag) if isinstance(tag, str) else None
    if match is None:
        return None
    digits = match.group(1)
    return int(digits) if len(digits) <= _MAX_TAG_DIGITS else 10**_MAX_TAG_DIGITS


def retry_number(tags: Sequence[object]) -> int:
    """The retry number that ``tags`` carry: the highest valid ``retry: N`` tag, else 0.

    Tolerant: other tags, non-strings and malformed ``retry:`` tags are ignored, and
    spacing and case may vary (``retry:2``, ``Retry : 2``).
    """
    numbers = [number for number in map(_parse_retry_tag, tags) if number is not None]
    return max(numbers, default=0)


def retry_tags(tags: Sequence[object], number: int) -> list[str]:
    """``tags`` without their ``retry: N`` tags, plus the tag for retry ``number``."""
    kept = [tag for tag in tags if isinstance(tag, str) and _parse_retry_tag(tag) is None]
    return [*kept, format_retry_tag(number)]


# --- this execution --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Execution:
    """The running execution, as its ``execution.json`` describes it."""

    id: str
    counter: int
    project_id: str
    tags: tuple[str, ...] = ()
    step: str | None = None
    commit: str | None = None
    title: str | None = None
    pipeline_id: str | None = None
    task_id: str | None = None

    @property
    def retry(self) -> int:
        """This execution's retry number (0 for the first attempt)."""
        return retry_number(self.tags)


def config_dir() -> Path:
    """The folder of Valohai's config files (``VH_CONFIG_DIR``, else ``/valohai/config``)."""
    return Path(valohai.paths.get_config_path())


def read_execution(directory: Path | None = None) -> Execution:
    """Read ``execution.json``; raise :class:`RetryError` if it is missing or incomplete."""
    path = (directory or config_dir()) / "execution.json"
    data = _read_json_object(path)
    missing = [key for key in ("execution-id", "execution-counter", "project-id") if not data.get(f"valohai.{key}")]
    if missing:
        raise RetryError(
            f"{path} lacks {', '.join('valohai.' + key for key in missing)}: not relaunching from partial data"
        )
    counter = data["valohai.execution-counter"]
    if isinstance(counter, bool) or not isinstance(counter, int):
        raise RetryError(f"{path}: valohai.execution-counter is not an integer: {counter!r}")
    tags = data.get("valohai.execution-tags") or []
    return Execution(
        id=str(data["valohai.execution-id"]),
        counter=counter,
        project_id=str(data["valohai.project-id"]),
        tags=tuple(tag for tag in tags if isinstance(tag, str)) if isinstance(tags, list) else (),
        step=data.get("valohai.execution-step") or None,
        commit=data.get("valohai.commit-identifier") or None,
        title=data.get("valohai.execution-title") or None,
        pipeline_id=data.get("valohai.pipeline-id") or None,
        task_id=data.get("valohai.task-id") or None,
    )


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RetryError(f"{path} not found: is this running in a Valohai execution?") from None
    except (OSError, ValueError) as exc:
        raise RetryError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RetryError(f"{path} does not hold a JSON object")
    return data


# --- token, host, status detail --------------------------------------------------------


def read_token(environ: Mapping[str, str] | None = None) -> str:
    """The API token from ``VH_API_TOKEN``; raise :class:`RetryError` if it is unset."""
    token = (os.environ if environ is None else environ).get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise RetryError(
            f"{TOKEN_VARIABLE} is not set: add your Valohai API token as a secret project "
            "environment variable named VH_API_TOKEN (Project settings > Environment variables)"
        )
    if not token.isprintable() or any(character.isspace() for character in token):
        # Checked here: an HTTP library's complaint about the header would quote the token.
        raise RetryError(f"{TOKEN_VARIABLE} contains spaces or control characters: paste the token again")
    return token


def api_host(environ: Mapping[str, str] | None = None) -> str:
    """The API address: ``VALOHAI_HOST`` or the default, checked to be safe for a token.

    Plain ``http`` is refused unless the host is a loopback address (local tests).
    """
    host = ((os.environ if environ is None else environ).get(HOST_VARIABLE) or DEFAULT_HOST).strip().rstrip("/")
    parts = urlsplit(host)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise RetryError(f"{HOST_VARIABLE} must be an address like https://valohai.example.com, got {host!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise RetryError(f"{HOST_VARIABLE} uses plain http ({host}): the token would travel unencrypted; use https")
    return host


def request_timeout(environ: Mapping[str, str] | None = None) -> tuple[float, float]:
    """Connect and read timeouts for API requests; ``RETRY_API_TIMEOUT`` sets the read one."""
    raw = (os.environ if environ is None else environ).get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return REQUEST_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 600:
        raise ConfigError(f"{TIMEOUT_VARIABLE} must be a number of seconds from 0 to 600, got {raw!r}")
    return (min(REQUEST_TIMEOUT[0], seconds), seconds)


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def set_status_detail(text: str) -> bool:
    """Set this execution's status detail; best effort, never raises, never blocks long.

    Uses the pre-signed call that Valohai puts in ``api.json`` (no token involved).
    Returns whether it was set; locally (no ``api.json``) it does nothing.
    """
    text = _redact(text)[:_STATUS_DETAIL_LIMIT]
    try:
        _send_status_detail(text)
    except FileNotFoundError:
        return False
    except Exception as exc:  # a status detail must never hide the real error
        _say(f"could not set the status detail: {_one_line(exc)}")
        return False
    return True


def _send_status_detail(text: str) -> None:
    if _send_signed_request is None:  # its public helper has no timeout, but it is all there is
        valohai.set_status_detail(text)
        return
    # The same call valohai.set_status_detail() makes, with a timeout so it cannot hang.
    timeout = tuple(min(seconds, STATUS_DETAIL_TIMEOUT) for seconds in request_timeout())
    _send_signed_request(endpoint="set_status_detail", json={"status_detail": text}, timeout=timeout)


# --- the API ---------------------------------------------------------------------------


class ValohaiAPI:
    """A small client for the few Valohai API calls this module makes.

    Every request has connect and read timeouts; connection failures and 429/502/503/504
    answers are retried with backoff (honouring ``Retry-After``) within ``budget`` seconds.
    Redirects are not followed, so the token never goes to another address.
    """

    def __init__(
        self,
        token: str,
        host: str | None = None,
        *,
        session: requests.Session | None = None,
        budget: float = API_BUDGET,
        timeout: tuple[float, float] = REQUEST_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = api_host({HOST_VARIABLE: host} if host else None)
        self._token = token
        self._timeout = timeout
        self._session = session or requests.Session()
        self._budget = budget
        self._deadline: float | None = None  # set by the first request: the budget is shared
        self._sleep = sleep
        self._clock = clock

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET ``path`` (below the host) and return the decoded JSON."""
        return self._request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``path`` and return the decoded JSON answer.

        Raises :class:`_AmbiguousRequestError` when the request may have been acted on
        without an answer reaching us; the caller decides whether sending again is safe.
        """
        return self._request("POST", path, body=body)

    def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> dict[str, Any]:
        url = self.host + path
        headers = {"Authorization": f"Token {self._token}", "Accept": "application/json"}
        if self._deadline is None:
            self._deadline = self._clock() + self._budget
        deadline = self._deadline
        attempt = 0
        while True:
            attempt += 1
            # A slow answer may not outlast the budget either (at least 1 s to read it).
            read_timeout = max(1.0, min(self._timeout[1], deadline - self._clock()))
            try:
                response = self._session.request(
                    method, url, params=params, json=body, headers=headers,
                    timeout=(self._timeout[0], read_timeout), allow_redirects=False,
                )  # fmt: skip
            except (requests.ConnectionError, requests.Timeout) as exc:
                if method == "POST" and not _surely_unsent(exc):
                    raise _AmbiguousRequestError(f"{method} {path}: the answer was lost ({_one_line(exc)})") from None
                failure: APIError = APIError(f"{method} {path}: could not reach {self.host}: {_one_line(exc)}")
                wait = _backoff(attempt)
            else:
                if response.status_code not in _RETRYABLE_API_STATUSES:
                    return _decode(method, path, response)
                if method == "POST" and response.status_code in _AMBIGUOUS_API_STATUSES:
                    raise _AmbiguousRequestError(_explain(method, path, response), response.status_code)
                failure = APIError(_explain(method, path, response), response.status_code)
                wait = max(_backoff(attempt), _retry_after(response))
            if self._clock() + wait > deadline:
                raise APIError(f"{failure} (gave up after {attempt} tries)", failure.status)
            _say(f"{failure}; asking again in {wait:g} s")
            self._sleep(wait)


def _backoff(attempt: int) -> float:
    """0.5, 1, 2, 4, 8, then 16 s between tries of one API call."""
    return float(min(0.5 * 2 ** (attempt - 1), 16))


def _retry_after(response: requests.Response) -> float:
    return retry_after_seconds(requests.HTTPError(response=response))


def _surely_unsent(error: Exception) -> bool:
    """True when the request never left: the connection itself could not be made."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return type(reason).__name__ in ("NewConnectionError", "NameResolutionError")


def _decode(method: str, path: str, response: requests.Response) -> dict[str, Any]:
    if not 200 <= response.status_code < 300:
        raise APIError(_explain(method, path, response), response.status_code)
    try:
        body = response.json()
    except ValueError:
        raise APIError(f"{method} {path}: HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(body, dict):  # every answer this module uses is an object
        raise APIError(f"{method} {path}: HTTP {response.status_code} with JSON that is not an object")
    return body


def _explain(method: str, path: str, response: requests.Response) -> str:
    status = response.status_code
    where = f"{method} {path}: HTTP {status}"
    if status == 400:
        return f"{where}, the request was rejected: {_field_errors(response)}"
    if status == 401:
        return f"{where}, {TOKEN_VARIABLE} was refused: the token is invalid or revoked; create a new one"
    if status == 403:
        return f"{where}, {TOKEN_VARIABLE} is not allowed to do this: its user needs rights to run executions here"
    if status == 404:
        return f"{where}, not found: check {HOST_VARIABLE} and that the token's user can see the project"
    if 300 <= status < 400:
        target = response.headers.get("Location", "?")
        return f"{where}, redirected to {target}: set {HOST_VARIABLE} to the final address (not followed)"
    if status == 429:
        return f"{where}, rate limited"
    return f"{where}, the Valohai API failed"


def _field_errors(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text) or "no details"
    if isinstance(body, dict):
        return "; ".join(f"{field}: {_flatten(value)}" for field, value in body.items()) or "no details"
    return _flatten(body)


def _flatten(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_flatten(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_flatten(item)}" for key, item in value.items())
    return str(value)


# --- relaunching -----------------------------------------------------------------------


def build_retry_payload(
    detail: Mapping[str, Any],
    number: int,
    *,
    parent_id: str,
    not_before: str | None = None,
    config: Path | None = None,
) -> dict[str, Any]:
    """The body of ``POST /api/v0/executions/`` that creates retry ``number`` of ``detail``.

    Copies project, commit, step, parameters, inputs, environment, image, title, time
    limit and the non-secret environment variables.  A secret comes back from the API
    without its value and is never sent; the project's own secret variables reach the
    retry anyway.  Tags are the current ones with ``retry: number`` replacing old retry tags.
    """
    project = _id_of(detail.get("project"))
    commit = _value_of(detail.get("commit"), "identifier")
    step = detail.get("step")
    missing = [name for name, value in (("project", project), ("commit", commit), ("step", step)) if not value]
    if missing:
        raise RetryError(f"the execution's detail lacks {', '.join(missing)}: not relaunching from partial data")
    variables = _plain_variables(detail.get("environment_variables"))
    variables[PARENT_VARIABLE] = parent_id
    if not_before:
        variables[NOT_BEFORE_VARIABLE] = not_before
    payload: dict[str, Any] = {
        "project": project,
        "commit": commit,
        "step": step,
        "parameters": _parameters(detail, config),
        "inputs": _inputs(detail, config),
        "tags": retry_tags(list(detail.get("tags") or []), number),
        "environment_variables": variables,
    }
    optional = {
        "environment": _id_of(detail.get("environment")),
        "image": detail.get("image"),
        "title": detail.get("title"),
        "time_limit": detail.get("time_limit"),
    }
    payload.update({key: value for key, value in optional.items() if value})
    return payload


def _id_of(value: Any) -> str | None:
    return _value_of(value, "id")


def _value_of(value: Any, key: str) -> str | None:
    if isinstance(value, dict):
        value = value.get(key)
    return str(value) if value else None


def _variables(value: Any) -> dict[str, Any]:
    """Environment variables from the API as ``{name: entry}``, whatever shape they come in."""
    if isinstance(value, list):  # tolerate [{"name": ..., "value": ...}]
        value = {item.get("name"): item for item in value if isinstance(item, dict)}
    return value if isinstance(value, dict) else {}


def _variable_value(entry: Any) -> Any:
    """A variable's value, whether the API gives ``{"value": ...}`` or the bare value."""
    return entry.get("value") if isinstance(entry, dict) else entry


def _plain_variables(variables: Any) -> dict[str, str]:
    """Non-secret variables as ``{name: value}``; secrets and our own markers dropped."""
    plain = {}
    for name, item in _variables(variables).items():
        secret = isinstance(item, dict) and bool(item.get("secret"))
        value = _variable_value(item)
        ours = name in (TOKEN_VARIABLE, PARENT_VARIABLE, NOT_BEFORE_VARIABLE)
        if isinstance(name, str) and value is not None and not secret and not ours:
            plain[name] = str(value)
    return plain


def _parameters(detail: Mapping[str, Any], config: Path | None) -> dict[str, Any]:
    if isinstance(detail.get("parameters"), dict):
        return dict(detail["parameters"])
    path = (config or config_dir()) / "parameters.json"
    return _read_json_object(path) if path.exists() else {}


def _inputs(detail: Mapping[str, Any], config: Path | None) -> dict[str, list[str]]:
    """Inputs as ``{name: [url, ...]}``, from the detail or else from ``inputs.json``."""
    inputs = detail.get("inputs")
    if isinstance(inputs, dict):
        return {name: _urls(value) for name, value in inputs.items()}
    if isinstance(inputs, list):
        return {item["name"]: _urls(item) for item in inputs if isinstance(item, dict) and item.get("name")}
    path = (config or config_dir()) / "inputs.json"
    if not path.exists():
        return {}
    return {
        name: [file["uri"] for file in value.get("files", []) if file.get("uri")]
        for name, value in _read_json_object(path).items()
    }


def _urls(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [url for item in value for url in _urls(item)]
    if isinstance(value, dict):
        for key in ("urls", "url", "uri"):
            if key in value:
                return _urls(value[key])
        return _urls(value.get("files", []))
    return []


def relaunch(
    api: ValohaiAPI,
    execution: Execution,
    number: int,
    *,
    not_before: str | None = None,
) -> dict[str, Any]:
    """Create retry ``number`` of ``execution``; return the new execution's detail.

    Creating is not idempotent: if the answer to the create call is lost, the project's
    recent executions are searched for the retry first, and it is created again only
    when it is not there.
    """
    detail = api.get(f"/api/v0/executions/{execution.id}/", {"exclude": "metadata,events"})
    payload = build_retry_payload(detail, number, parent_id=execution.id, not_before=not_before)
    try:
        return api.post("/api/v0/executions/", payload)
    except _AmbiguousRequestError as exc:
        _say(f"{exc}; looking for the retry before asking again")
        found = find_retry(api, execution, number)
        if found is not None:
            _say(f"the retry was created after all: #{found.get('counter')}")
            return found
    try:
        created = api.post("/api/v0/executions/", payload)
    except _AmbiguousRequestError as exc:
        raise APIError(f"{exc}; the retry may or may not exist: check the project's executions") from None
    return created


def find_retry(api: ValohaiAPI, execution: Execution, number: int) -> dict[str, Any] | None:
    """The retry ``number`` that ``execution`` already started, if the API lists one."""
    page = api.get("/api/v0/executions/", {"project": execution.project_id, "ordering": "-counter", "limit": 50})
    return _find_child(api, page.get("results") or [], execution.id, execution.counter, number)


def _find_child(
    api: ValohaiAPI, items: Sequence[Any], parent_id: object, parent_counter: object, number: int
) -> dict[str, Any] | None:
    """Among ``items``, the retry ``number`` whose ``RETRY_PARENT`` is ``parent_id``, if any."""
    floor = parent_counter if isinstance(parent_counter, int) else 0
    candidates = sorted(
        (
            item
            for item in items
            if isinstance(item, dict)
            and isinstance(item.get("counter"), int)
            and item["counter"] > floor  # a retry is always created after its parent
            and retry_number(item.get("tags") or []) == number
        ),
        key=lambda item: int(item["counter"]),
    )
    return next((dict(item) for item in candidates if _parent_of(api, item) == parent_id), None)


def _parent_of(api: ValohaiAPI, item: Mapping[str, Any]) -> str | None:
    """The execution that ``item`` retries, from its ``RETRY_PARENT`` variable."""
    if "environment_variables" not in item:  # list entries may be abridged
        item = api.get(f"/api/v0/executions/{item['id']}/", {"exclude": "metadata,events"})
    value = _variable_value(_variables(item.get("environment_variables")).get(PARENT_VARIABLE))
    return str(value) if value else None


# --- the entry point -------------------------------------------------------------------


def _start_process(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    return subprocess.call(list(argv), env=dict(environ))


def _command_line() -> list[str]:
    # sys.orig_argv (3.10+) keeps interpreter flags such as -u or -X.
    return list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])


@dataclasses.dataclass
class Runtime:
    """What the retry logic needs from the world; tests replace the parts they control."""

    environ: Mapping[str, str] = dataclasses.field(default_factory=lambda: os.environ)
    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    uniform: Callable[[float, float], float] = random.uniform
    spawn: Callable[[Sequence[str], Mapping[str, str]], int] = _start_process
    argv: Sequence[str] = dataclasses.field(default_factory=_command_line)
    session: requests.Session | None = None

    @property
    def on_valohai(self) -> bool:
        """Whether this is a Valohai execution (``VH_JOB_ID`` set)."""
        return bool(self.environ.get("VH_JOB_ID"))


def run(fn: Callable[[], T], policy: Policy | None = None, *, runtime: Runtime | None = None, **settings: Any) -> T:
    """Call ``fn``; on a transient error start a retry and exit, else fail for good.

    Settings are :class:`Policy` fields (``retries=3, delay=60, ...``) or a ``policy``.
    Returns what ``fn`` returns.  On failure the process exits with one of the
    ``EXIT_*`` codes after printing the traceback and a one-line summary.
    """
    runtime = runtime or Runtime()
    try:
        policy = policy or Policy(**settings)
    except (ConfigError, TypeError) as exc:
        _fail(f"invalid retry settings: {exc}", EXIT_BAD_CONFIG)
    number = current_retry(runtime)
    _announce(policy, number, runtime)
    wait_for_turn(policy, number, runtime)
    try:
        result = fn()
    except Exception as error:  # the point is to classify any failure
        code = handle_failure(error, policy, runtime=runtime)
        del error  # drop the traceback's frames before a local retry runs beside them
        sys.exit(code)
    _say(f"attempt {number + 1} succeeded")
    return result


def current_retry(runtime: Runtime | None = None) -> int:
    """This attempt's retry number: 0 for the first attempt, N for the one tagged ``retry: N``."""
    runtime = runtime or Runtime()
    if runtime.on_valohai:
        try:
            return read_execution().retry
        except RetryError:
            return 0  # reported properly when a relaunch is needed
    value = runtime.environ.get(LOCAL_RETRY_VARIABLE, "0")
    return int(value) if value.isdigit() else 0


def _announce(policy: Policy, number: int, runtime: Runtime) -> None:
    where = "on Valohai" if runtime.on_valohai else "locally"
    tag = f", tag '{format_retry_tag(number)}'" if number else ""
    _say(f"attempt {number + 1} of up to {policy.retries + 1} {where}{tag}")
    if runtime.on_valohai and policy.retries and not runtime.environ.get(TOKEN_VARIABLE, "").strip():
        _say(f"warning: {TOKEN_VARIABLE} is not set, so a failure here cannot start a retry")


def wait_for_turn(policy: Policy, number: int, runtime: Runtime) -> float:
    """Wait until the not-before instant a retry was given, if any; return the wait.

    An unparsable instant, or one further away than the policy's longest wait (clock
    skew, tampering), is clamped to that longest wait with a warning.
    """
    raw = runtime.environ.get(NOT_BEFORE_VARIABLE)
    if not raw or number == 0:
        return 0.0
    longest = policy.max_delay
    try:
        remaining = _parse_instant(raw) - runtime.now()
    except ValueError:
        _say(f"warning: {NOT_BEFORE_VARIABLE}={raw!r} is not an ISO 8601 instant; waiting {longest:g} s")
        remaining = longest
    if remaining > longest:
        _say(
            f"warning: {NOT_BEFORE_VARIABLE} is {remaining:.0f} s away, more than the policy allows;"
            f" waiting {longest:g} s"
        )
        remaining = longest
    if remaining <= 0:
        return 0.0
    set_status_detail(f"Waiting {remaining:.0f} s before retry {number}/{policy.retries} starts work")
    countdown(remaining, f"retry {number}/{policy.retries} starts work", runtime.sleep)
    return remaining


def _parse_instant(text: str) -> float:
    value = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


def _format_instant(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def countdown(seconds: float, what: str, sleep: Callable[[float], None] = time.sleep) -> None:
    """Sleep ``seconds``, logging what remains so a long wait is visibly alive."""
    _say(f"waiting {seconds:.0f} s before {what}")
    if seconds <= 5:
        sleep(seconds)
        return
    tick = 1.0 if seconds <= 10 else 10.0 if seconds <= 300 else 60.0
    remaining = seconds
    while remaining > 0:
        step = min(tick, remaining)
        sleep(step)
        remaining -= step
        if remaining > 0:
            _say(f"  {remaining:.0f} s left")


def handle_failure(error: BaseException, policy: Policy, *, runtime: Runtime | None = None) -> int:
    """Deal with ``error`` from an attempt: retry it or give up; return the exit code.

    Prints the traceback and a one-line summary, and sets the status detail.
    """
    runtime = runtime or Runtime()
    _print_traceback(error)
    summary = _describe(error)
    number = current_retry(runtime)
    if not policy.should_retry(error):
        return _finish(f"Not retried (not a transient error): {summary}", EXIT_GAVE_UP)
    if number > MAX_RETRIES:
        message = (
            f"Not retried: this execution is tagged as retry {number}, above the ceiling of {MAX_RETRIES};"
            f" remove its 'retry:' tag to start a new chain: {summary}"
        )
        return _finish(message, EXIT_GAVE_UP)
    if number >= policy.retries:
        plural = "retry" if number == 1 else "retries"
        return _finish(f"Gave up after {number} {plural}: {summary}", EXIT_GAVE_UP)
    try:
        if runtime.on_valohai:
            return _retry_on_valohai(error, summary, policy, number + 1, runtime)
        return _retry_locally(error, summary, policy, number + 1, runtime)
    except RetryError as exc:
        return _finish(f"{summary} - could not start retry {number + 1}/{policy.retries}: {exc}", exc.exit_code)
    except Exception as exc:  # a bug or an API answer of a shape never seen: still end clearly
        _print_traceback(exc)
        message = f"{summary} - could not start retry {number + 1}/{policy.retries}: unexpected {_describe(exc)}"
        return _finish(message, EXIT_RELAUNCH_FAILED)


def _retry_on_valohai(error: BaseException, summary: str, policy: Policy, number: int, runtime: Runtime) -> int:
    token = read_token(runtime.environ)
    execution = read_execution()
    if execution.pipeline_id:
        raise RetryError("this execution runs in a pipeline, which owns retrying: give its node on-error: retry")
    if execution.task_id:
        _say("this execution belongs to a task; the retry will run outside the task")
    api = ValohaiAPI(
        token,
        runtime.environ.get(HOST_VARIABLE),
        session=runtime.session,
        timeout=request_timeout(runtime.environ),
        sleep=runtime.sleep,
        clock=runtime.now,
    )
    not_before = _plan_wait(error, policy, number, runtime)
    created = relaunch(api, execution, number, not_before=not_before)
    counter = created.get("counter")
    _say(f"retry {number}/{policy.retries} is execution #{counter}: {(created.get('urls') or {}).get('display', '')}")
    message = f"{summary} - retry {number}/{policy.retries} started as #{counter}"
    if number == 1 and policy.retries > 1:  # the project's variables do not change along the chain
        message += _token_warning(api, execution.project_id, counter)
    return _finish(message, EXIT_RETRY_STARTED)


def _token_warning(api: ValohaiAPI, project_id: str, counter: object) -> str:
    """A warning if the retry will lack the token, because it is not a project variable.

    A token set on one execution only is not copied (a secret's value never leaves the
    API), so the retry could not start retries of its own. Best effort: "" if unsure.
    """
    try:
        project = api.get(f"/api/v0/projects/{project_id}/")
    except RetryError as exc:
        _say(f"could not check the project's variables: {exc}")
        return ""
    if "environment_variables" not in project or TOKEN_VARIABLE in _variables(project["environment_variables"]):
        return ""
    warning = (
        f"warning: {TOKEN_VARIABLE} is not a project variable, so #{counter} cannot start further retries:"
        f" add it as a secret in Project settings > Environment variables"
    )
    _say(warning)
    return f"; {warning}"


def _retry_locally(error: BaseException, summary: str, policy: Policy, number: int, runtime: Runtime) -> int:
    not_before = _plan_wait(error, policy, number, runtime)
    _finish(f"{summary} - starting retry {number}/{policy.retries} as a new process", EXIT_RETRY_STARTED)
    environ = {**runtime.environ, LOCAL_RETRY_VARIABLE: str(number)}
    environ.pop(NOT_BEFORE_VARIABLE, None)
    if not_before:
        environ[NOT_BEFORE_VARIABLE] = not_before
    sys.stdout.flush()
    sys.stderr.flush()
    # The retry's exit code is the outcome of the whole chain, as the shell should see it.
    return runtime.spawn(runtime.argv, environ)


def _plan_wait(error: BaseException, policy: Policy, number: int, runtime: Runtime) -> str | None:
    """Wait here (``wait_in="failed"``) or return the retry's not-before instant."""
    wait = policy.wait_before(number, error, uniform=runtime.uniform, now=runtime.now())
    if policy.wait_in == "failed":
        countdown(wait, f"starting retry {number}/{policy.retries}", runtime.sleep)
        return None
    _say(f"retry {number}/{policy.retries} will wait {wait:.0f} s before it starts work")
    return _format_instant(runtime.now() + wait)


def _finish(message: str, code: int) -> int:
    set_status_detail(message)
    _say(message)
    return code


def _print_traceback(error: BaseException) -> None:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    print(_redact(text), end="", file=sys.stderr)


def _describe(error: BaseException) -> str:
    text = _one_line(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _one_line(value: object, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _redact(text: str) -> str:
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    return text.replace(token, "***") if len(token) >= 4 else text


def _say(message: str) -> None:
    print(f"[retry] {_redact(message)}", file=sys.stderr, flush=True)


def _fail(message: str, code: int) -> NoReturn:
    _say(message)
    sys.exit(code)


# --- chain query -----------------------------------------------------------------------


def chain(api: ValohaiAPI, project_id: str, counter: int, *, scan: int = 200) -> list[dict[str, Any]]:
    """Every attempt of the chain that execution ``counter`` belongs to, oldest first."""
    attempts = [api.get(f"/api/v0/executions/{project_id}:{counter}/", {"exclude": "metadata,events"})]
    # Backwards through RETRY_PARENT; the bound stops a tampered variable from looping.
    while len(attempts) <= MAX_RETRIES and (parent := _parent_of(api, attempts[0])) is not None:
        attempts.insert(0, api.get(f"/api/v0/executions/{parent}/", {"exclude": "metadata,events"}))
    later = _recent_executions(api, project_id, scan)
    while True:  # forwards: each child has a higher counter, so this ends
        last = attempts[-1]
        number = retry_number(last.get("tags") or []) + 1
        child = _find_child(api, later, last.get("id"), last.get("counter"), number)
        if child is None:
            return attempts
        attempts.append(child)


def _recent_executions(api: ValohaiAPI, project_id: str, scan: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    page = api.get("/api/v0/executions/", {"project": project_id, "ordering": "-counter", "limit": 100})
    while True:
        found.extend(item for item in page.get("results") or [] if isinstance(item, dict))
        next_url = page.get("next")
        if not next_url or len(found) >= scan:
            return found
        # Only the path and query are taken: the token goes to our host, whatever "next" says.
        parts = urlsplit(next_url)
        page = api.get(f"{parts.path}?{parts.query}")


def format_chain(attempts: Sequence[Mapping[str, Any]]) -> str:
    """A table of attempts: counter, retry number, status, status detail, URL."""
    lines = []
    for item in attempts:
        number = retry_number(item.get("tags") or [])
        fields = [f"#{item.get('counter')}", f"retry {number}", item.get("status", "?")]
        fields += [item.get("status_detail") or "-", (item.get("urls") or {}).get("display", "")]
        lines.append("  ".join(str(field) for field in fields))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python retry.py chain <counter> [--project ID]``."""
    parser = argparse.ArgumentParser(prog="retry.py", description="Inspect retry chains of Valohai executions.")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("chain", help="print every attempt of a retry chain")
    show.add_argument("counter", type=int, help="counter of any execution in the chain")
    show.add_argument("--project", help="project id (default: VH_PROJECT_ID, or this execution's project)")
    args = parser.parse_args(argv)
    try:
        project = args.project or os.environ.get("VH_PROJECT_ID") or read_execution().project_id
    except RetryError:
        _fail("no project: pass --project <id> (Project settings shows it) or set VH_PROJECT_ID", EXIT_BAD_CONFIG)
    try:
        api = ValohaiAPI(read_token(), timeout=request_timeout())
        print(format_chain(chain(api, project, args.counter)))
    except RetryError as exc:
        _fail(str(exc), exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
