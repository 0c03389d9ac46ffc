"""Retry a Valohai execution after a transient error by starting a fresh copy of it.

Copy this one file into your project (it needs ``requests`` and ``valohai-utils``), then::

    import retry

    retry.run(main, retries=3, delay=60)

:func:`run` calls ``main``; a retry first makes sure it is the copy its parent named, then
waits out what is left of its delay.  When ``main`` raises, :func:`decide` (a pure function
of the policy, the chain's state and the error) says: not retried (a bug), gave up (the
``retry: N`` tag says the retries are used up), or retry N, not before an instant.  A
platform carries it out: on Valohai the execution creates a copy of itself tagged
``retry: N+1``, names it in its :class:`Record` (the end of its status detail) and exits at
once with 75; locally (no ``VH_JOB_ID``) the same command runs again in this process.  With
``checkpoint=<input>`` the retry gets the failed attempt's newest checkpoint, and
:func:`checkpoint_path` says where to resume.  Below them: the policy, the payload,
checkpoints, the API client, token and host, output.  Reference: docs/reference.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import copy
import dataclasses
import datetime
import difflib
import email.utils
import fnmatch
import gc
import inspect
import io
import ipaddress
import json
import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback
import unicodedata
import urllib.request
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

try:
    import requests
    import valohai
    import valohai.paths
    from urllib3.util import parse_url
except ImportError as missing:  # pragma: no cover - the first thing a new project may hit
    needed = f"retry.py needs the packages requests and valohai-utils ({missing.name} is missing)"
    raise ImportError(f"{needed}: pip install requests valohai-utils") from None

# What a job calls or catches.  The building blocks below stay importable and documented.
__all__ = [
    "EXIT_BAD_CONFIG",
    "EXIT_GAVE_UP",
    "EXIT_RELAUNCH_FAILED",
    "EXIT_RETRY_STARTED",
    "EXIT_RETRY_UNCONFIRMED",
    "APIError",
    "ConfigError",
    "Policy",
    "RetryError",
    "Runtime",
    "checkpoint_path",
    "current_retry",
    "handle_failure",
    "is_transient",
    "run",
]

# Exit codes: a retry was started (EX_TEMPFAIL); failed for good (retries used up, not transient, or
# the job exited non-zero); invalid settings; transient, but no retry could be started; a retry may
# have been started, but the API never confirmed it.
EXIT_RETRY_STARTED, EXIT_GAVE_UP, EXIT_BAD_CONFIG, EXIT_RELAUNCH_FAILED, EXIT_RETRY_UNCONFIRMED = 75, 1, 2, 3, 4
T = TypeVar("T")


# --- the entry point -------------------------------------------------------------------


def run(fn: Callable[[], T], policy: Policy | None = None, *, runtime: Runtime | None = None, **settings: Any) -> T:
    """Call ``fn`` (an ``async def`` one with ``asyncio.run``) and return what it returns; on a
    transient error start a retry, else fail for good.  Settings are :class:`Policy` fields or a
    ``policy``.  A failure prints the traceback and one line, and ends the process (from any
    thread) with an ``EXIT_*`` code."""
    runtime = runtime or Runtime()
    _remember_token(runtime.environ)
    platform = _platform(runtime)
    try:
        policy = _process.policy = _policy_from(policy, settings)
        state = _chain_state(platform)
    except ConfigError as exc:
        _end_process(platform.record(f"invalid retry settings: {exc}", Record("invalid", 0), EXIT_BAD_CONFIG))
    platform.announce(policy, state)
    try:
        _take_turn(platform, state, policy)  # waits; a copy of a retry that its parent did not name stands down
        result = _call(fn)
    except _StoodDown:
        _end_process(0, worked=False)
    except SystemExit as stop:  # the job ended itself: respect it, but say so
        if stop.code is None or (isinstance(stop.code, int) and stop.code == 0):
            _say(f"the job succeeded on attempt {state.done + 1} (it called sys.exit({stop.code!r}))")
            _end_process(0)
        message = f"Not retried: the job called sys.exit({_shown(stop.code)})"
        _end_process(platform.record(message, Record("not_retried", state.done), EXIT_GAVE_UP))
    except KeyboardInterrupt:
        with _process.lock:  # said once; and a failure another thread already acted on keeps its record
            _process.outcome = _interrupted(platform, state) if _process.outcome is None else _process.outcome
        raise
    except _MisuseError as exc:
        _end_process(platform.record(f"invalid use of retry.run: {exc}", Record("invalid", 0), EXIT_BAD_CONFIG))
    except BaseException as error:  # the point is to classify any failure (asyncio's CancelledError too)
        code = handle_failure(error, policy, runtime=runtime)
        del error  # drop the traceback's frames (and what they hold) before exiting
        _end_process(code)
    _say(f"the job succeeded on attempt {state.done + 1}")
    return result


def handle_failure(error: BaseException, policy: Policy, *, runtime: Runtime | None = None) -> int:
    """Deal with ``error`` from an attempt: print it, retry it or give up, record the outcome, and
    return the exit code (locally a retry replaces this process: no return).  One failure per
    process is acted on: a second call (another thread's) returns the first one's code."""
    runtime = runtime or Runtime()
    _remember_token(runtime.environ)
    with _process.lock:
        if _process.outcome is not None:
            code, summary = _process.outcome, describe(error)
            _say(f"this process already handled a failure (exit code {code}); not starting another retry for {summary}")
            return _process.outcome
        _print_traceback(error)
        platform, summary = _platform(runtime), describe(error)
        state = _chain_state(platform)
        if state.unknown:  # fail closed: an unknown count could restart the chain forever
            message = f"{summary} - not retried: cannot tell which retry this is: {state.unknown}"
            _process.outcome = platform.record(message, Record("not_started", 0, cause=summary), EXIT_RELAUNCH_FAILED)
            return _process.outcome
        decision = decide(policy, state, error, now=runtime.now(), uniform=runtime.uniform)
        if decision.outcome == "retry":
            try:
                _process.outcome = platform.start_retry(decision, state, policy, summary, error)
            except KeyboardInterrupt:  # Ctrl-C while it waits (wait_in="failed", a child): no retry, and said
                _process.outcome = _interrupted(platform, state)
                raise
        else:
            record = Record(decision.outcome, decision.number, cause=summary)
            _process.outcome = platform.record(f"{decision.reason}: {summary}", record, EXIT_GAVE_UP)
        return _process.outcome


def _take_turn(platform: _Valohai | _Local, state: ChainState, policy: Policy) -> None:
    """Wait for the retry's not-before instant, then make sure this copy is the one that works (else
    :class:`_StoodDown`): once per process, as a second ``run`` (a later stage, a thread) is the same attempt."""
    with _process.turn:
        if _process.works is None:
            _process.works = False  # until this turn is over: one that Ctrl-C ended is no other thread's to take
            wait_for_turn(state.not_before, policy, state.done, platform.runtime)
            _process.works = platform.claim(state, policy)
    if not _process.works:
        raise _StoodDown


def _interrupted(platform: _Valohai | _Local, state: ChainState) -> int:
    """Ctrl-C ends the chain: say so (the interrupt itself goes on).  Once a create was sent, the
    retry may exist all the same: the record then says so, as its copies decide by it."""
    sent, attempt = platform.sent if isinstance(platform, _Valohai) else None, state.done + 1
    if sent is None:
        message = f"Not retried: attempt {attempt} was interrupted (KeyboardInterrupt)"
        return platform.record(message, Record("not_retried", state.done, cause="KeyboardInterrupt"), EXIT_GAVE_UP)
    message = f"Not retried: attempt {attempt} was interrupted (KeyboardInterrupt) after a create was sent: retry {sent.retry} may exist all the same; look for the tag 'retry: {sent.retry}'"  # noqa: E501 - one line to grep
    return platform.record(message, sent, EXIT_RETRY_UNCONFIRMED)


def _policy_from(policy: object, settings: Mapping[str, Any]) -> Policy:
    if policy is not None and not isinstance(policy, Policy):
        raise ConfigError(f"policy must be a retry.Policy, got {type(policy).__name__}")
    if policy is not None and settings:
        raise ConfigError(f"give a policy or settings, not both (got {', '.join(sorted(settings))} too)")
    names = [field.name for field in dataclasses.fields(Policy)]
    for unknown in sorted(set(settings) - set(names)):  # a typo must not pass for a default
        close = sorted(
            difflib.get_close_matches(unknown, names, n=3, cutoff=0.5), key=names.index
        )  # 'retry' is near two
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(
            f"retry.run got an unknown setting {quote(unknown)}{hint}; the settings are {', '.join(names)}"
        )
    return policy or Policy(**settings)


# --- the decision ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChainState:
    """Where an attempt stands in its chain: all the chain hands it, read once per process."""

    done: int  # retries before this attempt: its ``retry: N`` (0 for the first attempt)
    not_before: str | None = None  # do not start work before this instant (ISO 8601)
    parent: str | None = None  # on Valohai: the execution whose failure this attempt retries
    checkpoint: str | None = None  # locally: the checkpoint file handed to this attempt
    unknown: str | None = None  # why ``done`` could not be read, if it could not


@dataclasses.dataclass(frozen=True)
class Decision:
    """``retry`` (retry ``number``, after ``wait`` s: not before ``not_before``), or a verdict,
    ``gave_up`` or ``not_retried`` (``number``: the retries done; ``reason``: what people read)."""

    outcome: str
    number: int
    wait: float = 0.0
    not_before: float = 0.0
    reason: str = ""


def decide(
    policy: Policy, state: ChainState, error: BaseException, *, now: float, uniform: Callable[[float, float], float]
) -> Decision:
    """The decision on a failure: a pure function of the policy, the chain and the error
    (``uniform`` draws the jitter, ``now`` dates the not-before instant)."""
    done = state.done
    try:
        transient = policy.should_retry(error)
    except Exception as exc:  # a broken retry_on predicate must not hide the real error
        return Decision("not_retried", done, reason=f"Not retried: retry_on raised {describe(exc)}")
    if not transient:
        return Decision("not_retried", done, reason="Not retried (not a transient error)")
    if done > MAX_RETRIES:
        reason = f"Not retried: this execution is tagged as retry {done}, above the ceiling of {MAX_RETRIES}"
        return Decision("not_retried", done, reason=f"{reason}; remove its 'retry:' tag to start a new chain")
    if policy.retries == 0:
        return Decision("not_retried", done, reason="Not retried: retrying is off (retries=0)")
    if done >= policy.retries:
        return Decision("gave_up", done, reason=f"Gave up after {done} {'retry' if done == 1 else 'retries'}")
    wait = policy.wait_before(done + 1, error, uniform=uniform, now=now)
    return Decision("retry", done + 1, wait=wait, not_before=now + wait)


# --- the record: how an attempt ended, as data -----------------------------------------

#: How an attempt can end; ``started`` names its heir (and ``stood_down`` the copy that works);
#: ``waiting``: a retry controller waits out the delay before it starts one.
OUTCOMES = ("started", "unconfirmed", "not_started", "gave_up", "not_retried", "stood_down", "invalid", "waiting")
#: Where the record begins in a status detail: what comes before it is for people.
RECORD_MARK = " | retry-record "


@dataclasses.dataclass(frozen=True)
class Record:
    """How an attempt ended, as data: the end of its status detail (what a job writes that the API
    returns, in an execution's detail and list entries), after :data:`RECORD_MARK`, as JSON.

    ``outcome``: one of :data:`OUTCOMES`; ``retry``: the retry number it concerns; ``heir``: the
    execution it started and confirmed, or (``stood_down``) the copy that works; ``cause``: the
    job's error; ``failed``: in a controller's record (and only there), the execution it acted for,
    ``""`` when its payload named none.  Copies of a
    retry read their parent's record to learn which of them works; ``chains.py`` reports on records.
    """

    outcome: str
    retry: int
    heir: str | None = None
    cause: str = ""
    failed: str | None = None


def status_with_record(message: str, record: Record) -> str:
    """The status detail that tells ``message`` to people and ``record`` to programs."""
    data = {key: value for key, value in dataclasses.asdict(record).items() if value or key == "retry"}
    data.update({"cause": _unmarked(_one_line(record.cause, 120))} if record.cause else {})
    data.update({"failed": record.failed} if record.failed is not None else {})
    data.update({key: data[key][:100] for key in ("heir", "failed") if key in data})  # ids, never essays
    tail = RECORD_MARK + _unmarked(json.dumps(data, ensure_ascii=False))  # characters, not \ud83d escapes
    return _unmarked(_one_line(message, STATUS_DETAIL_LIMIT - len(tail))) + tail


def read_record(item: Mapping[str, Any] | str | None) -> Record | None:
    """The record of an execution (its detail or list entry) or of a status detail, if any."""
    text = item.get("status_detail") if isinstance(item, Mapping) else item
    _, mark, tail = text.rpartition(RECORD_MARK) if isinstance(text, str) else ("", "", "")
    try:
        data = json.loads(tail) if mark else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("outcome") not in OUTCOMES:
        return None
    heir, cause = (_text(data.get(key)) for key in ("heir", "cause"))
    if data["outcome"] == "started" and heir is None:  # names no heir: as good as no record
        return None
    failed = data["failed"] if isinstance(data.get("failed"), str) else None
    return Record(data["outcome"], _integer(data.get("retry")) or 0, heir, cause or "", failed)


def _unmarked(text: str) -> str:
    return text.replace(RECORD_MARK.strip(), "retry record")  # the mark appears once: where the record starts


class _StoodDown(Exception):  # noqa: N818 - not an error: a copy of a retry left the work to its twin
    pass


# --- the platforms: Valohai, and this machine ------------------------------------------


def _platform(runtime: Runtime) -> _Valohai | _Local:
    return _Valohai(runtime) if runtime.on_valohai else _Local(runtime)


class _Valohai:
    """Retries as executions: the chain in tags and variables, the outcome in a record."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.sent: Record | None = None  # once a create was sent: the record that holds if Ctrl-C ends the start

    def read_state(self) -> ChainState:
        """The retries before this attempt (its tag, else why it is unknown), and its parent."""
        state = ChainState(0, parent=self.runtime.environ.get("RETRY_PARENT") or None)
        try:
            return dataclasses.replace(state, done=read_execution().retry)
        except RetryError as exc:  # the job still runs; a failure is then not relaunched
            return dataclasses.replace(state, unknown=str(exc))

    def announce(self, policy: Policy, state: ChainState) -> None:
        tag = f" as '{format_retry_tag(state.done)}'" if state.done else ""
        _say(f"attempt {state.done + 1} of up to {policy.retries + 1}, running on Valohai{tag}")
        if policy.retries and not self.runtime.environ.get("VH_API_TOKEN", "").strip():
            _say("warning: VH_API_TOKEN is not set, so a failure here cannot start a retry")

    def claim(self, state: ChainState, policy: Policy) -> bool:
        """Whether this copy works: the one its parent's record names does; another stands down.

        A lost create answer can leave two copies of a retry; the parent names the one it
        confirmed.  While it has neither ended nor named one, this copy waits, bounded; a parent
        that ended naming none (it crashed, or a retry controller started this copy) leaves it to
        the lowest copy.  Unable to check, a copy works.
        """
        if not state.parent:
            return True
        number = state.done
        try:
            if "_restart" in _config_json("inputs.json") or os.path.isdir(valohai.paths.get_inputs_path("_restart")):
                return True  # Valohai restarted the copy that works after a spot interruption: this is it
            me = read_execution()
            parent = _detail(self.api(CHECK_BUDGET), state.parent)
            if read_record(parent) is None and _status(parent) in INCOMPLETE_STATUSES:
                parent = self._await_record(state.parent)  # it had the delay to write it: a little more
            record = read_record(parent)
            number = record.retry if record else state.done
            if record and record.outcome == "started":
                if record.heir == me.id:
                    return True
                stood = (
                    f"Stood down: {_counter_text(parent)} named another execution as retry {number}/{policy.retries}"
                )
                self.record(f"{stood}; this copy did nothing", Record("stood_down", number, record.heir), 0)
                return False
            like = {"step": me.step, "title": me.title, "parameters": _config_json("parameters.json") or None}
            twin = find_copy(self.api(CHECK_BUDGET), me.project_id, parent, number, like, below=me.counter)
        except Exception as exc:  # an answer of a shape never seen too: the job must not pay for the check
            _say(f"could not check that this is the only retry {number} of its parent, so doing the work: {_why(exc)}")
            return True
        if twin is None:
            return True
        stood = f"Stood down: {_counter_text(twin)} is already retry {number}/{policy.retries} of the same failure"
        self.record(f"{stood} and does the work; this copy did nothing", Record("stood_down", number, twin["id"]), 0)
        return False

    def _await_record(self, parent_id: str) -> dict[str, Any]:
        deadline, pause = self.runtime.monotonic() + PARENT_WAIT, 0.5  # the parent, once it names one or ends
        set_status_detail("Waiting for the failed execution to name its retry")
        while True:
            parent = _detail(self.api(CHECK_BUDGET), parent_id)
            if read_record(parent) is not None or _status(parent) not in INCOMPLETE_STATUSES:
                return parent
            if self.runtime.monotonic() + pause > deadline:
                _say(f"its parent has neither ended nor named its retry after {PARENT_WAIT:g} s")
                return parent
            self.runtime.sleep(pause)
            pause = min(pause * 2, 15.0)

    def start_retry(self, decision: Decision, state: ChainState, policy: Policy, summary: str, error: Any) -> int:
        """Create the retry, name it in the record, and return 75; or say why not."""
        # Said at once: a retry controller reading the log of an execution lost from here on
        # knows the traceback above it for retry.py's, not the job's own.
        _say(f"starting retry {decision.number}/{policy.retries} of this execution")
        unconfirmed = False
        try:
            execution = read_execution()
            if execution.pipeline_id:
                raise RetryError(
                    "this execution runs in a pipeline, which owns retrying: give its node on-error: retry"
                )
            if execution.task_id:
                _say("this execution belongs to a task; the retry will run outside the task")
            api = self.api()  # one budget for the whole relaunch
            detail = _detail(api, execution.id)
            for key in ("inputs", "parameters"):  # what the detail lacks, this execution's config files know
                detail[key] = (
                    detail.get(key) if isinstance(detail.get(key), (dict, list)) else _config_json(f"{key}.json")
                )
            if retry_number(tags_of(detail)) > state.done:  # a tag lost from execution.json must not restart the chain
                later = dataclasses.replace(state, done=retry_number(tags_of(detail)))
                decision = decide(policy, later, error, now=self.runtime.now(), uniform=self.runtime.uniform)
                if decision.outcome != "retry":
                    record = Record(decision.outcome, decision.number, cause=summary)
                    return self.record(f"{decision.reason}: {summary}", record, EXIT_GAVE_UP)
            not_before = _plan_wait(decision, policy, self.runtime)
            api = api if not_before else self.api()  # a wait spent here was not the API's time
            payload = build_retry_payload(detail, decision.number, parent_id=execution.id, not_before=not_before)
            if policy.checkpoint:
                pending = _finished_outputs(policy.checkpoint_pattern)  # live uploads under way
                payload["inputs"] = inputs_with_checkpoint(payload, api, execution.id, policy, pending=pending)
            self.sent = Record("unconfirmed", decision.number, cause=summary)
            created, unconfirmed = create_retry(api, payload, policy.checkpoint)
        except Exception as exc:
            return self._not_started(exc, decision.number, policy, summary, unconfirmed)
        number, counter = decision.number, counter_of(created)
        self.sent = Record("started", number, str(created["id"]), summary)
        _say(f"retry {number}/{policy.retries} is execution {_counter_text(created)}: {display_url(created)}")
        message = f"{summary} - retry {number}/{policy.retries} started as #{counter}"
        if counter is None:
            message = f"{summary} - retry {number}/{policy.retries} started (the API did not say its number)"
        return self.record(message, self.sent, EXIT_RETRY_STARTED)

    def _not_started(self, exc: Exception, number: int, policy: Policy, summary: str, unconfirmed: bool) -> int:
        if not isinstance(exc, RetryError):  # a bug, or an answer of a shape never seen
            _print_traceback(exc)
        reason = _why(exc)
        if unconfirmed or isinstance(exc, _AmbiguousRequestError):
            message = (
                f"{summary} - retry {number}/{policy.retries} may have been started, but the API never confirmed it:"
                f" {reason}; look for the tag 'retry: {number}' in the project's executions before starting anything"
            )
            return self.record(message, Record("unconfirmed", number, cause=summary), EXIT_RETRY_UNCONFIRMED)
        code = exc.exit_code if isinstance(exc, RetryError) else EXIT_RELAUNCH_FAILED
        message = f"{summary} - could not start retry {number}/{policy.retries}: {reason}"
        return self.record(message, Record("not_started", number, cause=summary), code)

    def record(self, message: str, record: Record, code: int) -> int:
        """Record the outcome (asked again: the next copy decides by it), say it, return ``code``.  A
        record that could not be written is said with the message: a retry controller reads the log."""
        if not write_record(message, record, self.runtime.sleep):
            _say("could not write the record of this attempt: its retry, if any, will look for copies itself")
            message = status_with_record(message, record)
        _say(message)
        return code

    def api(self, budget: float = 0.0) -> ValohaiAPI:
        return api_client(self.runtime, budget or API_BUDGET)


def _plan_wait(decision: Decision, policy: Policy, runtime: Runtime) -> str | None:
    """Wait here (``wait_in="failed"``) and return None, or return the retry's not-before instant."""
    number, wait = decision.number, _seconds(decision.wait)
    if policy.wait_in == "failed":
        countdown(decision.wait, f"waiting {wait} s in this execution before starting retry {number}", runtime)
        return None
    _say(f"retry {number}/{policy.retries} will wait {wait} s before it starts work")
    return format_instant(decision.not_before)


def create_retry(api: ValohaiAPI, payload: dict[str, Any], checkpoint: str | None) -> tuple[dict[str, Any], bool]:
    """Create the retry; return the confirmed execution and whether an earlier create may have made a copy.

    A create whose answer is lost (or a 5xx, or a 201 that cannot be read) is sent again,
    :data:`MAX_CREATES` times at most: a copy made all the same stands down when it starts, as the
    record names only the confirmed one.  A create refused for its checkpoint input (a purged
    datum, an input the commit does not declare) is sent once more without it.
    """
    unconfirmed: APIError | None = None
    parent = payload["environment_variables"].get("RETRY_PARENT")
    for tries in range(1, MAX_CREATES + 1):
        try:
            created = api.post("/api/v0/executions/", payload)
        except _AmbiguousRequestError as exc:
            unconfirmed = exc
        except APIError as exc:
            if exc.status == 400 and checkpoint in payload["inputs"] and unconfirmed is None:
                _say(f"{exc}; sending it once more without the checkpoint, so the retry starts from the beginning")
                payload["inputs"] = {name: urls for name, urls in payload["inputs"].items() if name != checkpoint}
                continue
            raise (_AmbiguousRequestError(str(exc)) if unconfirmed else exc) from None
        else:
            if is_execution_id(created.get("id")) and created["id"] != parent:
                return created, unconfirmed is not None
            unconfirmed = APIError("POST /api/v0/executions/: created, but the answer names no new execution id")
        if tries < MAX_CREATES:
            _say(f"{unconfirmed}; asking once more (a copy made all the same will stand down)")
    raise _AmbiguousRequestError(f"{unconfirmed} ({MAX_CREATES} tries)")


def find_copy(
    api: ValohaiAPI,
    project_id: str,
    parent: Mapping[str, Any],
    number: int,
    like: Mapping[str, Any],
    *,
    below: int | None = None,
    working: bool = True,
    bounds: tuple[int, int] = (0, 0),
) -> dict[str, Any] | None:
    """The lowest copy of retry ``number`` of ``parent`` (below counter ``below``), if any; bounded.

    The executions between parent and ``below`` are listed, and look-alikes (a sweep's other
    chains) told apart by what the list shows (``like``: step, title, parameters, tags) before any
    detail is read.  With ``working``, a copy that stood down (or had invalid settings) does not
    count; one that crashed or was stopped does, as a named one would.  Only for a parent that named none.
    ``bounds``: list pages and details read at most (:data:`FALLBACK_PAGES`, ... by default).
    """
    pages, details = bounds[0] or FALLBACK_PAGES, bounds[1] or FALLBACK_DETAILS
    floor, found, ordered, last, cut = counter_of(parent) or 0, [], True, None, None
    try:
        for page in execution_pages(api, project_id, max_pages=pages):
            for item in page:
                counter = counter_of(item) or 0
                ordered, last = ordered and (last is None or counter < last), counter
                found += [item] if floor < counter < (below or counter + 1) else []
            if ordered and last is not None and last <= floor:
                break  # newest first, and down to the parent: nothing older is a copy
    except ListTooLongError as exc:  # what was read may hold the copy all the same
        cut = exc
    alike = [i for i in found if all(i.get(k) in (None, v) for k, v in like.items() if v is not None)]
    alike = sorted(
        (i for i in alike if "tags" not in i or retry_number(tags_of(i)) == number), key=lambda i: counter_of(i) or 0
    )
    for item in alike[:details]:
        whole = all(key in item for key in ("environment_variables", "status_detail", "tags"))
        known = item if whole else _detail(api, str(item.get("id")))
        record = read_record(known)
        ours = parent_of(known) == parent.get("id") and retry_number(tags_of(known)) == number
        if ours and not (working and record and record.outcome in ("stood_down", "invalid")):
            return known
    if cut is not None or len(alike) > details:
        raise cut or APIError(f"more than {details} look-alike executions to read; stopped there")
    return None


class _Local:
    """Retries as fresh runs of the same command, in place of the failed process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def read_state(self) -> ChainState:
        """The retries before this attempt: ``RETRY_LOCAL_NUMBER`` (:class:`ConfigError` if garbled)."""
        raw = self.runtime.environ.get("RETRY_LOCAL_NUMBER", "").strip()
        done = _ascii_count(raw) if raw else 0
        if done is None or done > MAX_RETRIES:
            raise ConfigError(
                f"RETRY_LOCAL_NUMBER must be a retry number from 0 to {MAX_RETRIES}, got {quote(raw, 20)}"
            )
        return ChainState(done)

    def announce(self, policy: Policy, state: ChainState) -> None:
        attempt, tag = f"attempt {state.done + 1} of up to {policy.retries + 1}", format_retry_tag(state.done)
        if self.runtime.environ.get("VH_JOB_ID"):
            _say(f"{attempt}, running in a program the job started: its retries run as local processes")
        else:
            _say(f"{attempt}, running locally as '{tag}'" if state.done else f"{attempt}, running locally")

    def claim(self, state: ChainState, policy: Policy) -> bool:
        """Nothing to find: locally one process of a chain runs at a time."""
        return True

    def start_retry(self, decision: Decision, state: ChainState, policy: Policy, summary: str, error: Any) -> int:
        """Replace this process with the retry, the same command (so it does not return); or say why not."""
        number, runtime, pattern = decision.number, self.runtime, policy.checkpoint_pattern
        try:
            argv = list(runtime.argv) if runtime.argv is not None else _command_line()
            not_before = _plan_wait(decision, policy, runtime)
            started = _ENVIRON_AT_START if runtime.environ is os.environ else runtime.environ  # not the job's edits
            environ = {name: value for name, value in started.items() if name not in CHAIN_VARIABLES}
            environ.update(RETRY_LOCAL_NUMBER=str(number), **({"RETRY_NOT_BEFORE": not_before} if not_before else {}))
            if policy.checkpoint:
                finished = _finished_outputs(pattern)  # of one second, the last by name (names sort by age)
                newest = max(finished.values(), key=lambda path: (int(path.stat().st_mtime), path.name), default=None)
                handed = str(newest.resolve()) if newest else _handed_checkpoint(state)
                where = Path(valohai.paths.get_outputs_path()).resolve()
                environ.update({"RETRY_CHECKPOINT": handed} if handed else {})
                none = (
                    f"no finished checkpoint matching {quote(pattern)} in {where}: the retry starts from the beginning"
                )
                _say(f"the retry resumes from the checkpoint {handed}" if handed else none)
            message = f"{summary} - starting retry {number}/{policy.retries}: the same command, in this process"
            self.record(message, Record("started", number), 0)
            _flush()
            return runtime.replace_process(argv, environ, _STARTED_IN)  # normally it does not return
        except RetryError as exc:
            message = f"{summary} - could not start retry {number}/{policy.retries}: {exc}"
            return self.record(message, Record("not_started", number), exc.exit_code)

    def record(self, message: str, record: Record, code: int) -> int:
        """Locally the outcome is the last log line: there is no status detail to write."""
        _say(message)
        return code


def _replace_process(argv: Sequence[str], environ: Mapping[str, str], cwd: str) -> int:
    """Run ``argv`` in place of this process (on Windows, as a child whose code is returned).  First
    the failed attempt ends as a Python process does, so a chain runs one process at a time: the
    job's multiprocessing children that are not daemonic joined (ended after CHILD_WAIT s), then its
    exit handlers run (multiprocessing's among them: pools and daemonic children ended)."""
    multiprocessing = sys.modules.get("multiprocessing")
    for child in multiprocessing.active_children() if multiprocessing else ():
        if not child.daemon:  # a pool's workers are daemonic: they end with their pool, below
            child.join(CHILD_WAIT)
            if child.is_alive():
                _say(f"ending the child process {child.pid}: still running {CHILD_WAIT:g} s after the attempt failed")
                child.terminate()
                child.join(1)
    with contextlib.suppress(Exception):  # private, but the only way: exec skips the atexit handlers
        atexit._run_exitfuncs()
    atexit._clear()
    for stream in [item for item in gc.get_objects() if isinstance(item, io.IOBase)]:  # files left open: what
        with contextlib.suppress(Exception):  # they hold is written, as when Python's exit closes them
            stream.flush()
    if os.name != "posix":  # os.exec* on Windows starts a new process and exits 0 at once
        return subprocess.call(list(argv), env=dict(environ), cwd=cwd)
    with contextlib.suppress(AttributeError, OSError, ValueError):  # the signals of a fresh process:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # none blocked (this thread's set is handed on)
    if threading.current_thread() is threading.main_thread():  # none ignored that the command did not ignore
        for number in set(signal.valid_signals()) - _IGNORED_AT_START:  # (nohup's SIGHUP stays; main thread only)
            with contextlib.suppress(OSError, ValueError):
                if signal.getsignal(number) is signal.SIG_IGN:
                    signal.signal(number, signal.SIG_DFL)
    try:
        os.chdir(cwd)
        os.execve(argv[0], list(argv), dict(environ))
    except OSError as exc:
        raise RetryError(f"could not run {argv[0]} in {cwd}: {exc.strerror or exc}") from None
    raise AssertionError("unreachable: os.execve returned")  # pragma: no cover


def _command_line() -> list[str]:
    """This process's command line as it started, to run again in the folder it started in: the
    interpreter's flags (``-u``, ``-X ...``) are kept from Python 3.10 on; before, the script runs
    without them."""
    script = _ARGV_AT_START[0] if _ARGV_AT_START else ""
    if script in ("", "-"):
        raise RetryError("the script was read from standard input, so it cannot be run again: save it to a file")
    if not sys.executable:
        raise RetryError("the path of the Python interpreter is unknown (sys.executable is empty)")
    path = os.path.join(_STARTED_IN, script)  # __main__.__file__ may be a profiler's or inside a zipapp
    original = list(getattr(sys, "orig_argv", None) or [])
    module = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
    command, position = [sys.executable, *original[1:]], len(original) - len(_ARGV_AT_START)
    if not original and script == "-c":
        raise RetryError("a program given with -c cannot be run again before Python 3.10: save it to a file")
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)  # under -m, argv[0] is its file
    ran_module = isinstance(main_file, str) and os.path.abspath(main_file) == os.path.abspath(path)
    if not original and ran_module and isinstance(module, str) and module != "__main__":  # python -m package.module
        return [sys.executable, "-m", re.sub(r"\.__main__$", "", module), *_ARGV_AT_START[1:]]
    if original and not (0 < position < len(command) and command[position] == script):  # -c or -m, 3.10+
        return command
    if not (os.path.isfile(path) or os.path.isdir(path)):  # a pipe (/dev/stdin, <(...)) reads only once
        raise RetryError(
            f"the script {quote(path)} is not a regular file (a pipe?), so it cannot be run again: save it to a file"
        )
    return command if original else [sys.executable, *_ARGV_AT_START]  # as given: it runs where it started


def _start_folder() -> str:
    """The folder this process started in: the current one, unless the script changed folder before
    it imported this file (its absolute ``__main__.__file__``, Python 3.9 on, ends in its argv[0])."""
    script, main_file = (sys.argv or [""])[0], getattr(sys.modules.get("__main__"), "__file__", None)
    tail = os.sep + os.path.normpath(script)
    if script and not os.path.isabs(script) and isinstance(main_file, str) and main_file.endswith(tail):
        return main_file[: -len(tail)] or os.sep
    return os.getcwd()


# How the job started: a retry starts the same way, whatever os.chdir, os.environ or signal.signal did since.
_STARTED_IN, _ARGV_AT_START, _STARTED_AT = _start_folder(), list(sys.argv), time.time()
_ENVIRON_AT_START = dict(os.environ)
_IGNORED_AT_START = {number for number in signal.valid_signals() if signal.getsignal(number) is signal.SIG_IGN}


# --- the attempt: its state, its turn, the job itself ----------------------------------


@dataclasses.dataclass
class _ProcessState:
    state: ChainState | None = None  # what one process remembers: its chain, once read
    policy: Policy | None = None  # the running retry.run's: checkpoint_path() reads its settings
    works: bool | None = None  # this attempt waited its turn, and is the copy that works (or stood down)
    outcome: int | None = None  # the exit code of the one failure it acted on
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    turn: threading.Lock = dataclasses.field(default_factory=threading.Lock)  # held while it waits and checks


_process = _ProcessState()
#: The variables a chain hands to its next attempt; taken out of the environment when it starts.
CHAIN_VARIABLES = ("RETRY_LOCAL_NUMBER", "RETRY_NOT_BEFORE", "RETRY_PARENT", "RETRY_CHECKPOINT")


def _chain_state(platform: _Valohai | _Local) -> ChainState:
    """What the chain handed this attempt, read once per process and taken out of the environment
    (so that programs the job starts cannot take themselves for late retries)."""
    with _process.lock:  # a second run() in another thread reads the same
        if _process.state is None:
            environ = platform.runtime.environ
            not_before, checkpoint = environ.get("RETRY_NOT_BEFORE") or None, environ.get("RETRY_CHECKPOINT") or None
            _process.state = dataclasses.replace(platform.read_state(), not_before=not_before, checkpoint=checkpoint)
            if isinstance(environ, MutableMapping):
                for name in CHAIN_VARIABLES:
                    environ.pop(name, None)
                if isinstance(platform, _Valohai):  # programs this one starts know they are not the execution
                    environ["RETRY_OWNER_PID"] = str(os.getpid())
        return _process.state


def current_retry(runtime: Runtime | None = None) -> int:
    """This attempt's retry number: 0 for the first attempt, N for the one tagged ``retry: N``."""
    return _chain_state(_platform(runtime or Runtime())).done


def wait_for_turn(not_before: str | None, policy: Policy, number: int, runtime: Runtime) -> float:
    """Wait until the not-before instant a retry was given (whatever its number); return the wait.
    An instant that cannot be read, or further than ``max_delay`` (clock skew, tampering), is
    clamped to ``max_delay``."""
    if not not_before:
        return 0.0
    longest = policy.max_delay
    try:
        remaining = parse_instant(not_before) - runtime.now()
    except (ValueError, OverflowError):
        _say(f"warning: RETRY_NOT_BEFORE={quote(not_before, 40)} is not an ISO 8601 instant; waiting {longest:g} s")
        remaining = longest
    if remaining > longest:
        _say(f"warning: RETRY_NOT_BEFORE is {remaining:.0f} s away, more than the policy allows; waiting {longest:g} s")
        remaining = longest
    if remaining <= 0:
        return 0.0
    left = _seconds(remaining)
    set_status_detail(f"Waiting {left} s before retry {number}/{policy.retries} starts work")
    countdown(remaining, f"retry {number}/{policy.retries} waits {left} s before it starts work", runtime)
    return remaining


def countdown(seconds: float, message: str, runtime: Runtime | None = None) -> None:
    """Say ``message``, then sleep ``seconds``, saying what remains so a long wait is visibly alive;
    it ends no sooner by the wall clock either (which may drift from the clock ``sleep`` uses)."""
    runtime = runtime or Runtime()
    _say(message)
    end, remaining = runtime.now() + seconds, seconds
    tick = seconds if seconds <= 5 else 1.0 if seconds <= 10 else 10.0 if seconds <= 300 else 60.0
    while remaining > 0:
        runtime.sleep(min(tick, remaining))
        remaining -= min(tick, remaining)
        if remaining >= 1:
            _say(f"  {remaining:.0f} s left of the wait")
    late = end - runtime.now()
    if 0 < late <= 1:  # only drift is made up for: a clock that does not move is not waited on
        runtime.sleep(late)


def _call(fn: Callable[[], T]) -> T:
    """Call the job; a coroutine it returns (``async def``) is run to its end."""
    if not callable(fn):
        raise _MisuseError(f"it needs a function to call, got {type(fn).__name__}")
    result = fn()
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        raise _MisuseError("the function is a generator, which does no work until it is iterated: pass one that does")
    if not inspect.iscoroutine(result):
        return result
    in_a_loop = True
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop runs in this thread: the normal case
        in_a_loop = False
    if in_a_loop:
        result.close()
        raise _MisuseError("it got a coroutine inside a running event loop: call retry.run from synchronous code")
    return asyncio.run(result)  # type: ignore[no-any-return]  # not in the except: the job's error gets no context


def _end_process(code: int, *, worked: bool = True) -> NoReturn:
    """End the process with ``code``, a failure this process handled winning over a success.  From a
    worker thread, ``sys.exit`` would end only that thread; and a failed attempt whose job left
    threads running (a heartbeat) would wait for them, holding its machine: both end at once, as
    does a copy that stood down (``worked`` false)."""
    with _process.lock:  # a relaunch under way in another thread ends first
        code = code if _process.outcome is None else _process.outcome
    me = threading.current_thread()
    waiting_for = [t.name for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]
    if me is threading.main_thread() and (not waiting_for or (code == 0 and worked)):
        sys.exit(code)
    if me is not threading.main_thread() and code:
        _say(f"retry.run ran outside the main thread: ending the whole process with exit code {code}")
    elif code:
        _say(f"ending the process with exit code {code} now, not waiting for its threads {', '.join(waiting_for)}")
    _flush()
    os._exit(code)


# --- what is transient, and the policy -------------------------------------------------

TRANSIENT_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})
#: Hard ceilings: of retries (whatever the tags say), and of one wait in seconds (a day).
MAX_RETRIES, MAX_WAIT = 100, 86_400.0
#: Output files whose name matches this are checkpoints, unless a policy says otherwise.
DEFAULT_CHECKPOINT_PATTERN = "*checkpoint*"


def is_transient(error: BaseException) -> bool:
    """Tell whether ``error`` is worth a retry: the default classification.

    Transient: ``requests.ConnectionError`` and ``requests.Timeout`` (with subclasses),
    ``requests.HTTPError`` with status 429, 500, 502, 503 or 504, the built-in ``ConnectionError``
    and ``TimeoutError``, and an error raised ``from`` one of those; not one that merely happened
    while handling one, which is usually a bug.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    kinds = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, socket.timeout)  # (3.8, 3.9)
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.HTTPError):
            if _integer(getattr(current.response, "status_code", None)) in TRANSIENT_HTTP_STATUSES:
                return True
        elif isinstance(current, kinds):
            return True
        current = current.__cause__
    return False


def retry_after_seconds(error: BaseException | None, now: float | None = None) -> float:
    """The wait that a 429 or 503 error's ``Retry-After`` header asks for (0 if none)."""
    response = getattr(error, "response", None)
    if _integer(getattr(response, "status_code", None)) not in (429, 503):
        return 0.0
    try:
        value = str(response.headers.get("Retry-After", ""))  # type: ignore[union-attr]
    except Exception:  # an odd response object: no header to honour
        return 0.0
    return _retry_after(value, time.time() if now is None else now)


def _retry_after(value: str, now: float) -> float:
    """Seconds a ``Retry-After`` value asks for: ASCII digits or an HTTP date; else 0."""
    seconds = _ascii_count(value.strip())
    if seconds is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
        return max(0.0, (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp() - now)
    except Exception:  # not a date either: nothing to honour
        return 0.0


def _ascii_count(text: str) -> int | None:
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) else None  # never "²" nor a huge number


if TYPE_CHECKING:  # only for annotations, so that this file still imports on Python 3.8
    RetryOn = Callable[[BaseException], bool] | type[BaseException] | tuple[type[BaseException], ...]


@dataclasses.dataclass(frozen=True)
class Policy:
    """How many retries, how long to wait, and which errors count as transient.

    The wait before retry ``n`` (1-based) is ``delay * backoff ** (n - 1)`` plus a random
    ``0..jitter`` seconds, at most ``max_delay``, and at least what a 429/503 error's
    ``Retry-After`` asks.  ``retry_on``: a predicate or exception types.  ``wait_in="retry"``
    starts the retry at once and lets it wait, its start-up overlapping the delay; ``"failed"``
    waits in the failed execution.  ``checkpoint`` names the step's input through which a retry
    gets the failed attempt's newest output matching ``checkpoint_pattern``.
    """

    retries: int = 3
    delay: float = 60.0
    backoff: float = 1.0
    max_delay: float = 3600.0
    jitter: float = 0.0
    retry_on: RetryOn = is_transient
    wait_in: str = "retry"
    checkpoint: str | None = None
    checkpoint_pattern: str = DEFAULT_CHECKPOINT_PATTERN

    def __post_init__(self) -> None:
        _check_number("retries", self.retries, 0, MAX_RETRIES, integer=True)
        for setting, low, high in (("delay", 0, MAX_WAIT), ("backoff", 1, 100), ("max_delay", 0, MAX_WAIT)):
            _check_number(setting, getattr(self, setting), low, high)
        _check_number("jitter", self.jitter, 0, MAX_WAIT)
        if self.delay > self.max_delay:
            raise ConfigError(f"delay ({self.delay} s) must not exceed max_delay ({self.max_delay} s)")
        if self.wait_in not in ("retry", "failed"):
            raise ConfigError(f"wait_in must be 'retry' or 'failed', got {quote(self.wait_in)}")
        types = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not callable(self.retry_on) and not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
            raise ConfigError("retry_on must be a predicate or exception types")
        name: object = self.checkpoint
        if name is not None and not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)):
            raise ConfigError(f"checkpoint must be the name of one of the step's inputs, got {quote(name)}")
        if not isinstance(self.checkpoint_pattern, str) or not self.checkpoint_pattern.strip():
            raise ConfigError(f"checkpoint_pattern must be a file name pattern, got {quote(self.checkpoint_pattern)}")

    def should_retry(self, error: BaseException) -> bool:
        """Tell whether ``error`` is one this policy retries."""
        types = self.retry_on if isinstance(self.retry_on, (type, tuple)) else None
        return isinstance(error, types) if types else bool(self.retry_on(error))  # type: ignore[operator]

    def wait_before(
        self, retry: int, error: BaseException | None = None, *, uniform: Any = random.uniform, now: float | None = None
    ) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        planned = self.delay * self.backoff ** (retry - 1) + (uniform(0.0, self.jitter) if self.jitter else 0.0)
        return float(min(self.max_delay, max(planned, retry_after_seconds(error, now))))


def _check_number(name: str, value: object, low: float, high: float, *, integer: bool = False) -> None:
    valid_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not valid_type or not (low <= value <= high):  # type: ignore[operator]
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{name} must be {kind} from {low:g} to {high:g}, got {quote(value)}")


# --- tags and the retry's payload ------------------------------------------------------

_RETRY_TAG = re.compile(r"^\s*retry\s*:\s*([0-9]+)\s*$", re.IGNORECASE)


def format_retry_tag(number: int) -> str:
    """The tag that marks retry ``number``: ``retry: N``, as the Valohai UI shows it."""
    return f"retry: {number}"


def _parse_retry_tag(tag: object) -> int | None:
    match = _RETRY_TAG.match(tag) if isinstance(tag, str) else None
    return None if match is None else min(int(match.group(1)[:10]), 10**9)  # a longer count is absurd


def retry_number(tags: Sequence[object]) -> int:
    """The highest valid ``retry: N`` of ``tags``, else 0 (other tags, odd spacing and case tolerated)."""
    return max((number for number in map(_parse_retry_tag, tags) if number is not None), default=0)


def retry_tags(tags: Sequence[object], number: int) -> list[str]:
    """``tags`` without their ``retry: N`` tags, plus the tag for retry ``number``."""
    return [*(tag for tag in tags if isinstance(tag, str) and _parse_retry_tag(tag) is None), format_retry_tag(number)]


def tags_of(item: Mapping[str, Any]) -> list[str]:
    """An API item's tags as strings, whether they come as a list, one string, or objects."""
    tags = item.get("tags")
    tags = [tags] if isinstance(tags, str) else tags if isinstance(tags, list) else []
    names = [t.get("name") if isinstance(t, dict) else t for t in tags]
    return [name for name in names if isinstance(name, str)]


def build_retry_payload(
    detail: Mapping[str, Any], number: int, *, parent_id: str, not_before: str | None = None
) -> dict[str, Any]:
    """The body of ``POST /api/v0/executions/`` that creates retry ``number`` of ``detail``.

    Copies project, commit, step, parameters, inputs (never ``_restart``, Valohai's own),
    environment, image, title, time limit, priority, runtime config, its preset, variable groups
    and the non-secret variables (a secret comes back without its value: the retry inherits the
    project's).  Tags: the current ones, ``retry: number`` in place of any earlier one.
    """
    project, commit, step = (
        _value_of(detail.get("project"), "id"),
        _value_of(detail.get("commit"), "identifier"),
        _text(detail.get("step")),
    )
    missing = [name for name, value in (("project", project), ("commit", commit), ("step", step)) if not value]
    if missing:
        raise RetryError(f"the execution's detail lacks {', '.join(missing)}: not relaunching from partial data")
    variables = {
        name: str(value)
        for name, entry in _variables(detail.get("environment_variables")).items()
        if (value := entry.get("value") if isinstance(entry, dict) else entry) is not None
        and not (isinstance(entry, dict) and entry.get("secret"))
        and name not in ("VH_API_TOKEN", *CHAIN_VARIABLES)
        and not any(secret in str(value) for secret in _secrets)  # the token under another name, or inside one
    }
    variables.update(RETRY_PARENT=parent_id, **({"RETRY_NOT_BEFORE": not_before} if not_before else {}))
    inputs, parameters, groups = (
        detail.get("inputs"),
        detail.get("parameters"),
        detail.get("environment_variable_groups"),
    )
    if isinstance(inputs, list):
        inputs = {item["name"]: item for item in inputs if isinstance(item, dict) and _text(item.get("name"))}
    inputs = inputs if isinstance(inputs, dict) else {}
    payload: dict[str, Any] = {
        "project": project,
        "commit": commit,
        "step": step,
        "parameters": dict(parameters) if isinstance(parameters, dict) else {},
        "inputs": {str(name): _urls(value) for name, value in inputs.items() if name != "_restart"},
        "tags": retry_tags(tags_of(detail), number),
        "environment_variables": variables,
    }
    # Keys, shapes and the rule (a key is left out only when the detail has no value for it)
    # follow valohai-cli 0.37's create payload, commands/execution/run/dynamic_run_command.py.
    optional = {
        "environment": _value_of(detail.get("environment"), "id"),
        "image": _text(detail.get("image")),
        "title": _text(detail.get("title")),
        "time_limit": _integer(detail.get("time_limit")),
        "priority": _integer(detail.get("priority")),
        "runtime_config": detail.get("runtime_config") if isinstance(detail.get("runtime_config"), dict) else None,
        "runtime_config_preset": _value_of(detail.get("runtime_config_preset"), "id"),
        "environment_variable_groups": [g for g in map(_value_of, groups, ["id"] * len(groups)) if g]
        if isinstance(groups, list)
        else None,
    }
    payload.update({key: value for key, value in optional.items() if value not in (None, "", [])})
    # Whether a new execution inherits the project's variables and secrets (VH_API_TOKEN among
    # them) has an unpublished API default: the UI's "Inherit project's environment variables" box.
    payload["inherit_environment_variables"] = True
    return payload


def is_execution_id(value: Any) -> bool:
    """Whether ``value`` can be an execution id (a UUID, as Valohai's are; nothing that could upset a record)."""
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.:-]{1,100}", value) is not None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _integer(value: Any) -> int | None:
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,18}", value.strip()):
        return int(value)  # "41": a number all the same
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _value_of(value: Any, key: str) -> str | None:
    value = value.get(key) if isinstance(value, dict) else value  # value[key] of an object, or value itself
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "" else None


def _variables(value: Any) -> dict[str, Any]:
    """Environment variables from the API as ``{name: entry}``, whatever shape they come in."""
    if isinstance(value, list):  # tolerate [{"name": ..., "value": ...}]
        value = {item.get("name"): item for item in value if isinstance(item, dict)}
    return {name: entry for name, entry in value.items() if isinstance(name, str)} if isinstance(value, dict) else {}


def _urls(value: Any) -> list[str]:
    """An input's URLs: a string, a list, or an object with ``urls``, ``url``, ``uri`` or ``files``."""
    if isinstance(value, (str, list)):
        return [value] if isinstance(value, str) else [url for item in value for url in _urls(item)]
    key = next((key for key in ("urls", "url", "uri") if key in value), "files") if isinstance(value, dict) else ""
    return _urls(value.get(key, [])) if isinstance(value, dict) else []


def parent_of(item: Mapping[str, Any]) -> str | None:
    """The execution that ``item`` (an execution's detail) retries, from its ``RETRY_PARENT``."""
    entry = _variables(item.get("environment_variables")).get("RETRY_PARENT")
    return _value_of(entry.get("value") if isinstance(entry, dict) else entry, "id")


# --- checkpoints: where a retry resumes ------------------------------------------------

#: The longest a relaunch waits for checkpoints still being live-uploaded, in seconds.
CHECKPOINT_UPLOAD_WAIT = 10.0
#: The outputs a relaunch reads (one page, newest first) to find the newest checkpoint.
OUTPUTS_PAGE = 1000


def checkpoint_path(input_name: str | None = None, pattern: str | None = None) -> Path | None:
    """The checkpoint file to resume from, or ``None`` to start from the beginning.

    For retries and for Valohai's own restarts, in order: the file a local retry was handed;
    Valohai's ``_restart`` input (all outputs of a run interrupted on a spot instance: newer than
    what it started from); the step's input ``input_name``.  In an input, the last file by name
    matching ``pattern`` (so name checkpoints to sort by age), or the lone file of
    ``input_name``.  Both default to the running ``retry.run``'s settings.
    """
    policy = _process.policy or Policy()
    input_name, pattern = input_name or policy.checkpoint or "checkpoint", pattern or policy.checkpoint_pattern
    chosen = _handed_checkpoint(_process.state) or _resume_choice(
        _input_files("_restart"), _input_files(input_name), pattern
    )
    return Path(chosen) if chosen else None


def _input_files(name: str) -> dict[str, str]:
    """An input's files as ``{name within the input: path}``, from ``inputs.json``, else from its
    folder (Valohai's own example reads ``/valohai/inputs/_restart`` as a folder)."""
    folder = Path(valohai.paths.get_inputs_path(name))
    paths = [Path(path) for path in valohai.inputs(name).paths(process_archives=False)]
    paths = paths or (sorted(path for path in folder.rglob("*") if path.is_file()) if folder.is_dir() else [])
    return {(path.relative_to(folder).as_posix() if folder in path.parents else path.name): str(path) for path in paths}


def _resume_choice(restart: Mapping[str, T], given: Mapping[str, T], pattern: str) -> T | None:
    """``_restart``'s newest checkpoint (the interrupted run had started from the given input),
    else the given input's, else its lone file (a checkpoint passed by hand)."""
    for files in (restart, given):
        newest = max((name for name in files if fnmatch.fnmatchcase(name, pattern)), default=None)
        if newest is not None:
            return files[newest]
    return next(iter(given.values())) if len(given) == 1 else None


def _handed_checkpoint(state: ChainState | None) -> str | None:
    handed = state.checkpoint if state is not None else os.environ.get("RETRY_CHECKPOINT")
    return handed if handed and os.path.isfile(handed) else None


def inputs_with_checkpoint(
    payload: Mapping[str, Any], api: ValohaiAPI, execution_id: str, policy: Policy, *, pending: Mapping[str, Path]
) -> dict[str, list[str]]:
    """The retry's inputs, the newest checkpoint ``execution_id`` uploaded as ``policy.checkpoint``,
    else the one it started from (progress never goes backwards).  Checkpoints ``pending`` (live
    uploads under way) are waited for, CHECKPOINT_UPLOAD_WAIT s at most; the outputs list gets
    CHECKPOINT_BUDGET of the API's time: a slow list costs the newest checkpoint, never the retry."""
    name, pattern, clock, sleep = str(policy.checkpoint), policy.checkpoint_pattern, api.clock, api.sleep
    inputs, deadline = {key: list(urls) for key, urls in payload["inputs"].items()}, clock() + CHECKPOINT_UPLOAD_WAIT
    if pending:
        _say(f"waiting for {len(pending)} checkpoint(s) still uploading: {printable(', '.join(sorted(pending))[:200])}")
    while clock() < deadline and any(path.exists() for path in pending.values()):
        sleep(0.2)
    try:
        part = api.within(CHECKPOINT_BUDGET)
        newest, listed = newest_checkpoint(part, execution_id, pattern)
        if set(pending) - listed and clock() < deadline:  # an upload may take a moment to be listed
            sleep(min(1.0, deadline - clock()))
            newest, listed = newest_checkpoint(part, execution_id, pattern)
        if set(pending) - listed:
            unlisted = printable(", ".join(sorted(set(pending) - listed))[:200])
            _say(f"checkpoint(s) still not listed after the wait, so the retry gets the newest listed one: {unlisted}")
    except Exception as exc:  # whatever the list did, it costs the newest checkpoint, never the retry
        _say(f"could not list this execution's outputs, so the retry gets the checkpoint this attempt had: {_why(exc)}")
        newest = None
    if newest is not None:
        _say(f"the retry resumes from {printable(newest['name'])} (datum://{newest['id']})")
        return {**inputs, name: [f"datum://{newest['id']}"]}
    listed_inputs = _config_json("inputs.json")
    restart, given = ({str(f["name"]): f for f in _listed_files(listed_inputs.get(key))} for key in ("_restart", name))
    started = _resume_choice(restart, given, pattern) or {}
    url = f"datum://{started['datum_id']}" if _text(started.get("datum_id")) else _text(started.get("uri"))
    urls = [url] if url else inputs.pop(name, [])
    _say(
        f"no newer checkpoint: the retry resumes from {', '.join(urls)}"
        if urls
        else "no checkpoint uploaded yet: the retry starts from the beginning"
    )
    return {**inputs, name: urls} if urls else inputs


def _listed_files(entry: Any) -> list[dict[str, Any]]:
    files = entry.get("files") if isinstance(entry, dict) else None  # an input's files, as inputs.json lists them
    return [f for f in files if isinstance(f, dict) and _text(f.get("name"))] if isinstance(files, list) else []


def newest_checkpoint(api: ValohaiAPI, execution_id: str, pattern: str) -> tuple[dict[str, Any] | None, set[str]]:
    """The newest output of ``execution_id`` that matches ``pattern``, and the names of all shown.

    One page, asked newest first (``ordering=-ctime``, as ``vh data list`` asks): the newest
    :data:`OUTPUTS_PAGE` outputs, whatever the execution has.  Only the execution's own outputs
    count: a datum of another owner, or of none that can be told, is never handed on.
    """
    newest, newest_age, names, listed = None, (0.0, ""), set(), 0
    params = {"output_execution": execution_id, "ordering": "-ctime"}
    try:
        for page in api.pages("/api/v0/data/", params, page_size=OUTPUTS_PAGE, max_pages=1):
            listed = len(page)
            for datum in page:
                owner, name, moment = datum.get("output_execution"), _text(datum.get("name")), 0.0
                if not (isinstance(owner, dict) and owner.get("id") == execution_id):
                    continue  # another execution's output, or one nobody can tell (a bare id, say)
                with contextlib.suppress(ValueError, OverflowError, AttributeError):  # a garbled time is no time
                    moment = parse_instant(datum.get("ctime"))  # type: ignore[arg-type]
                age = (moment, str(name))
                if name and _text(datum.get("id")) and fnmatch.fnmatchcase(name, pattern):
                    names.add(name)
                    newest, newest_age = (datum, age) if newest is None or age > newest_age else (newest, newest_age)
    except ListTooLongError:  # a constant cost, whatever the execution holds
        _say(f"more outputs than one page lists: the retry gets the newest checkpoint among the {listed} newest")
    return newest, names


def _finished_outputs(pattern: str) -> dict[str, Path]:
    """Checkpoints this attempt finished in its outputs folder, by name: read-only (live upload marks
    a file so when it is complete) and written since the attempt started.  A relative (local)
    folder is looked for where the job is and where it started."""
    outputs, found = Path(valohai.paths.get_outputs_path()), {}
    roots = [outputs] if outputs.is_absolute() else [Path.cwd() / outputs, Path(_STARTED_IN) / outputs]
    for root in dict.fromkeys(roots):
        for path in root.rglob("*") if root.is_dir() else ():
            with contextlib.suppress(OSError):  # a file taken away while this looks: not there
                status, name = path.stat(), path.relative_to(root).as_posix()
                coarse = status.st_mtime_ns % 1_000_000_000 == 0  # a file system of whole (FAT: two) seconds
                mine = status.st_mtime >= _STARTED_AT - (2.0 if coarse else 0.05)  # else the kernel's clock lags
                finished = stat.S_ISREG(status.st_mode) and not status.st_mode & stat.S_IWUSR
                found.update({name: path} if mine and finished and fnmatch.fnmatchcase(name, pattern) else {})
    return found


# --- this execution's config -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Execution:
    """The running execution, as its ``execution.json`` describes it."""

    id: str
    counter: int
    project_id: str
    tags: tuple[str, ...] = ()
    step: str | None = None
    title: str | None = None
    pipeline_id: str | None = None
    task_id: str | None = None

    @property
    def retry(self) -> int:
        """This execution's retry number (0 for the first attempt)."""
        return retry_number(self.tags)


def config_dir() -> Path:
    """Valohai's config folder as valohai-utils finds it (``VH_CONFIG_DIR``, else ``/valohai/config``
    in an execution and ``.valohai/config`` locally)."""
    return Path(valohai.paths.get_config_path())


def read_execution() -> Execution:
    """Read ``execution.json``; raise :class:`RetryError` if it is missing or incomplete."""
    path = config_dir() / "execution.json"
    data = _read_json_object(path)
    missing = [
        f"valohai.{key}"
        for key in ("execution-id", "execution-counter", "project-id")
        if not data.get(f"valohai.{key}")
    ]
    if missing:
        raise RetryError(f"{path} lacks {', '.join(missing)}: not relaunching from partial data")
    counter = _integer(data["valohai.execution-counter"])
    if counter is None:
        raise RetryError(
            f"{path}: valohai.execution-counter is not an integer: {quote(data['valohai.execution-counter'])}"
        )
    fields = [
        data.get(f"valohai.{key}") or None for key in ("execution-step", "execution-title", "pipeline-id", "task-id")
    ]
    tags = tuple(tags_of({"tags": data.get("valohai.execution-tags")}))
    return Execution(str(data["valohai.execution-id"]), counter, str(data["valohai.project-id"]), tags, *fields)


def _read_json_object(path: Path) -> dict[str, Any]:
    """A config file's JSON object; :class:`RetryError` for anything else."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RetryError(f"{path} not found: is this running in a Valohai execution?") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise RetryError(f"{path} is not readable JSON: {_one_line(exc, 120)}") from None
    if not isinstance(data, dict):
        raise RetryError(f"{path} does not hold a JSON object")
    return data


def _config_json(name: str) -> dict[str, Any]:
    path = config_dir() / name  # a config file of this execution; {} when it is not there
    return _read_json_object(path) if path.exists() else {}


# --- the API client --------------------------------------------------------------------

DEFAULT_HOST = "https://app.valohai.com"
#: Connect and read timeouts of every API request, in seconds.
REQUEST_TIMEOUT = (5.0, 30.0)
#: The time the API calls of one relaunch may take in all (a flaky API's retries included); the
#: most of it the outputs list may take; and the time of a retry's check of its place.
API_BUDGET, CHECKPOINT_BUDGET, CHECK_BUDGET = 60.0, 20.0, 20.0
#: How long a retry waits for a parent that has neither ended nor named its retry.  A parent names
#: its retry before it exits; one that died is marked ended once its outputs are uploaded.
PARENT_WAIT = 600.0
#: Bounds of the rare search for copies when a parent named none: list pages, detail reads.
FALLBACK_PAGES, FALLBACK_DETAILS = 20, 20
#: How long a local retry waits for the failed attempt's multiprocessing children to end.
CHILD_WAIT = 10.0
#: At most this many create calls per relaunch whose answer is lost.
MAX_CREATES = 3
#: List pages are read this many items at a time, and at most this many pages; no answer is read
#: past MAX_ANSWER_BYTES (a list page of 100 executions is far smaller).
PAGE_SIZE, MAX_PAGES, MAX_ANSWER_BYTES = 100, 50, 20_000_000
#: Statuses of an execution that has not ended (valohai-cli's ``consts.py``, and ``stopping_hard``),
#: and of one that has not failed; any other (error, crashed, stopped, one never seen) is a failure.
INCOMPLETE_STATUSES = frozenset({"created", "queued", "started", "stopping", "stopping_hard"})
NOT_FAILED_STATUSES = INCOMPLETE_STATUSES | {"complete"}


class RetryError(Exception):
    """A problem of the retry machinery, in one line (the token masked); ``exit_code`` is what
    the process exits with when this ends the attempt."""

    exit_code = EXIT_RELAUNCH_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(_mask(message))


class ConfigError(RetryError):
    """Invalid retry settings or parameters: nothing is relaunched."""

    exit_code = EXIT_BAD_CONFIG


class _MisuseError(ConfigError):
    """``retry.run`` was given something it cannot run."""


class APIError(RetryError):
    """The Valohai API could not be used; ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ListTooLongError(APIError):
    """A paged list went on past the pages a caller may read."""


class _AmbiguousRequestError(APIError):
    """The request may or may not have been acted on: its answer was lost or unreadable."""

    exit_code = EXIT_RETRY_UNCONFIRMED


class ValohaiAPI:
    """A small client for the few Valohai API calls this file makes.

    Every request has connect and read timeouts and a deadline for the whole answer (a server
    that trickles bytes cannot hold it).  Connection failures and 429/502/503/504 answers (500 to
    a read) are asked again with backoff, honouring ``Retry-After``, within ``budget`` seconds
    shared by all calls on ``clock`` (monotonic).  Redirects are not followed and lists are paged
    by offset, never by ``next``: the token goes nowhere but ``host``.  ``patient=False`` gives up
    at once on a host that cannot be reached (commands on a laptop).
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
        patient: bool = True,
    ) -> None:
        self.host = _origin(host, "the API host") if host else api_host()
        _remember_secret(token)
        self._session, self._timeout, self._budget = session or requests.Session(), timeout, budget
        self._deadline: float | None = None  # set by the first request: the budget is shared
        self.sleep, self.clock, self._patient = sleep, clock, patient  # the sleep and clock of its caller too
        job = os.environ.get("VH_JOB_ID")  # so that the API's logs can tell which execution asked
        self._headers = {
            "Accept": "application/json",
            "User-Agent": f"retry.py (VH_JOB_ID {job})" if job else "retry.py",
        }

        def auth(request: requests.PreparedRequest) -> requests.PreparedRequest:  # no ~/.netrc entry replaces it
            request.headers["Authorization"] = f"Token {token}"
            return request

        plain = self.host.startswith("http:")  # loopback only (tests): no proxy of the environment may see the token
        self._options = {
            "auth": auth,
            "proxies": dict.fromkeys(["http", "https", "all", *urllib.request.getproxies()]) if plain else None,
        }

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET ``path`` (below the host) and return the decoded JSON object."""
        return self._request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON and return the answer; :class:`_AmbiguousRequestError` when the
        request may have been acted on without a readable answer: the caller decides."""
        return self._request("POST", path, body=dict(body))

    def within(self, seconds: float) -> ValohaiAPI:
        """This client, allowed at most ``seconds`` more of its budget (for a part of a task)."""
        part, now = copy.copy(self), self.clock()
        part._deadline = min(self._deadline if self._deadline is not None else now + self._budget, now + seconds)
        return part

    def pages(
        self, path: str, params: Mapping[str, Any], *, page_size: int = 0, max_pages: int = 0
    ) -> Iterator[list[dict[str, Any]]]:
        """A paged list, page by page (``limit`` and ``offset``; an item seen on an earlier page is not
        repeated); past ``max_pages`` (:data:`MAX_PAGES`), :class:`ListTooLongError`."""
        seen: set[object] = set()
        offset, size = 0, page_size or PAGE_SIZE
        for _ in range(max_pages or MAX_PAGES):
            page = self.get(path, {**params, "limit": size, "offset": offset})
            results = page.get("results")
            if not isinstance(results, list):
                raise APIError(f"GET {path}: a list page without results")
            offset += len(results)  # a server may serve fewer than asked for: skip nothing
            keys = [
                item.get("id") if isinstance(item.get("id"), (str, int)) else object()
                for item in results
                if isinstance(item, dict)
            ]
            yield [item for item, key in zip([i for i in results if isinstance(i, dict)], keys) if key not in seen]
            seen.update(keys)
            count = _integer(page.get("count"))  # no "next": its count tells; neither: a full page goes on
            more = (
                bool(page["next"]) if "next" in page else count > offset if count is not None else len(results) >= size
            )
            if not results or not more:
                return
        raise ListTooLongError(
            f"GET {path}: the list goes on past {max_pages or MAX_PAGES} pages ({offset} items); stopped there"
        )

    def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> dict[str, Any]:
        self._deadline = self.clock() + self._budget if self._deadline is None else self._deadline
        for tries in range(1, 1000):
            seconds = min(sum(self._timeout), self._deadline - self.clock())  # for the whole answer
            if seconds <= 0:  # the budget bounds the whole task, successful requests included
                raise APIError(f"{method} {path}: out of time (the API calls may take {self._budget:g} s in all)")
            timeout = (min(self._timeout[0], seconds), min(self._timeout[1], seconds))
            options = {"params": params, "json": body, "headers": self._headers, "timeout": timeout, **self._options}
            answer = _exchange(self._session, method, self.host + path, seconds, **options)
            failure, wait = self._judge(method, path, answer, tries)
            if failure is None:
                return _decode(method, path, answer)
            if self.clock() + wait > self._deadline:
                raise APIError(f"{failure} (gave up after {tries} tries)", failure.status)
            _say(f"{failure}; asking again in {wait:g} s")
            self.sleep(wait)
        raise AssertionError("unreachable: a clock that never moves")  # pragma: no cover

    def _judge(self, method: str, path: str, answer: _Answer, tries: int) -> tuple[APIError | None, float]:
        """``(None, 0)`` for an answer to decode, else the failure and the wait before asking again;
        raises at once what is not worth asking again."""
        backoff, status = float(min(0.5 * 2 ** (tries - 1), 16)), answer.status  # 0.5, 1, 2, 4, 8, then 16 s
        if status is None:  # no answer at all: the connection failed, or the answer was lost
            if method == "POST" and not _surely_unsent(answer.error):
                raise _AmbiguousRequestError(f"{method} {path}: the answer was lost ({_reason(answer.error)})")
            failure = APIError(f"{method} {path}: could not reach {self.host}: {_reason(answer.error)}")
            if not self._patient:
                raise failure
            return failure, backoff
        if answer.body is None and 200 <= status < 300:  # cut off, too slow or too large
            message = f"{method} {path}: HTTP {status}, but the answer was cut off ({_reason(answer.error)})"
            if method == "POST":
                raise _AmbiguousRequestError(message, status)
            if isinstance(answer.error, _TooLargeError):  # it cannot shrink if asked again
                raise APIError(message, status)
            return APIError(message, status), backoff
        if method == "POST" and status >= 500:  # behind a gateway the server may have acted all the same
            raise _AmbiguousRequestError(_explain(method, path, answer), status)
        if status in (429, 502, 503, 504) or (method == "GET" and status >= 500):  # asking again is harmless
            retry_after = _retry_after(answer.headers.get("Retry-After", ""), time.time())
            return APIError(_explain(method, path, answer), status), max(backoff, retry_after)
        return None, 0.0


@dataclasses.dataclass
class _Answer:
    status: int | None = None  # what came back for one request, as far as it came
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | None = None
    error: BaseException | None = None


class _TooLargeError(ValueError):
    pass  # an answer over MAX_ANSWER_BYTES


def _exchange(session: requests.Session, method: str, url: str, seconds: float, **options: Any) -> _Answer:
    """Send one request and read its whole answer within ``seconds``, whatever the server does: socket
    timeouts bound each read, not a whole answer, so the exchange runs in a daemon thread, left
    behind (its socket shut down) when the time is up."""
    answer, responses = _Answer(), []

    def talk() -> None:
        try:
            with session.request(method, url, stream=True, allow_redirects=False, **options) as response:
                responses.append(response)
                answer.status, answer.headers, chunks = response.status_code, response.headers, []
                for chunk in response.iter_content(65536):
                    chunks.append(chunk)
                    if sum(map(len, chunks)) > MAX_ANSWER_BYTES:
                        raise _TooLargeError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
                answer.body = b"".join(chunks)
        except BaseException as exc:  # handed to the waiting thread
            answer.error = exc

    worker = threading.Thread(target=talk, name="retry-request", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        answer.error = TimeoutError(f"no complete answer within {seconds:g} s")
        with contextlib.suppress(AttributeError, IndexError, OSError):  # ends the reader's wait at once
            responses[0].raw.connection.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    return answer


def _surely_unsent(error: BaseException | None) -> bool:
    """True when the request never left: the connection itself could not be made."""
    reason = getattr(error.args[0], "reason", None) if error is not None and error.args else None
    return isinstance(error, requests.ConnectTimeout) or type(reason).__name__ in (
        "NewConnectionError",
        "NameResolutionError",
    )


def _reason(error: BaseException | None) -> str:
    """A failed exchange's innermost cause, e.g. "Connection refused" (``requests`` wraps it in layers
    that repeat the URL); not its ``__context__``, which could be the job's own error."""
    seen, pending, innermost = set(), [error], error
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseException) and id(current) not in seen:
            seen.add(id(current))
            innermost = current
            pending += [*current.args, getattr(current, "reason", None), current.__cause__]
    if isinstance(innermost, OSError) and innermost.strerror:
        return str(innermost.strerror)
    return _one_line(innermost, 160) or _one_line(error, 160) or type(error).__name__


def _decode(method: str, path: str, answer: _Answer) -> dict[str, Any]:
    status, problem = answer.status or 0, "a body that is not JSON"
    if not 200 <= status < 300:
        raise APIError(_explain(method, path, answer), status)
    with contextlib.suppress(ValueError, RecursionError):
        body = json.loads(answer.body or b"")
        if isinstance(body, dict):  # every answer this file uses is an object
            return body
        problem = "JSON that is not an object"
    failure = _AmbiguousRequestError if method == "POST" else APIError  # a POST answered 2xx was acted on
    raise failure(f"{method} {path}: HTTP {status} with {problem}", status)


def _explain(method: str, path: str, answer: _Answer) -> str:
    status, where = answer.status, f"{method} {path}: HTTP {answer.status}"
    if status == 400:
        return f"{where}, the request was rejected: {_field_errors(answer.body)}"
    if status == 401:
        return f"{where}, VH_API_TOKEN was refused: the token is invalid or revoked; create a new one"
    if status == 403:
        return f"{where}, VH_API_TOKEN is not allowed to do this: its user needs rights to run executions here"
    if status == 404:
        return f"{where}, not found: check VALOHAI_HOST and that the token's user can see the project"
    if status is not None and 300 <= status < 400:
        target = _one_line(answer.headers.get("Location", "?"), 120)
        return f"{where}, redirected to {target}: set VALOHAI_HOST to the final address (not followed)"
    return f"{where}, rate limited" if status == 429 else f"{where}, the Valohai API failed"


def _field_errors(body: bytes | None) -> str:
    def flat(value: Any) -> str:
        if isinstance(value, dict):
            return "; ".join(f"{key}: {flat(item)}" for key, item in value.items())
        return " ".join(map(flat, value)) if isinstance(value, list) else str(value)

    try:
        return _one_line(flat(json.loads(body or b""))) or "no details"
    except (ValueError, RecursionError):
        return _one_line((body or b"")[:2000].decode(errors="replace"), 200) or "no details"


def _detail(api: ValohaiAPI, execution_id: str) -> dict[str, Any]:
    return api.get(f"/api/v0/executions/{execution_id}/", {"exclude": "metadata,events"})  # small: no metadata


def execution_pages(api: ValohaiAPI, project_id: str, *, max_pages: int = 0) -> Iterator[list[dict[str, Any]]]:
    """The project's executions that were not deleted, highest counter first, a page at a time
    (``deleted=false`` and ``ordering=-counter`` are how ``vh execution list`` asks)."""
    return api.pages(
        "/api/v0/executions/", {"project": project_id, "ordering": "-counter", "deleted": "false"}, max_pages=max_pages
    )


def counter_of(item: Mapping[str, Any]) -> int | None:
    """An API item's counter, when it is a number."""
    return _integer(item.get("counter"))


def _status(item: Mapping[str, Any]) -> str:
    return str(item.get("status")) if isinstance(item.get("status"), str) else "unknown"


def _counter_text(item: Mapping[str, Any]) -> str:
    return f"#{counter_of(item)}" if counter_of(item) is not None else "(number unknown)"


def display_url(item: Mapping[str, Any]) -> str:
    """An execution's address in the web UI, or ``""``."""
    urls = item.get("urls")
    return printable(_text(urls.get("display")) or "") if isinstance(urls, dict) else ""


def api_client(runtime: Runtime, budget: float = API_BUDGET) -> ValohaiAPI:
    """An API client with a runtime's token, host, timeouts, clock and sleep."""
    environ = runtime.environ
    token, host, timeout = read_token(environ), api_host(environ), request_timeout(environ)
    return ValohaiAPI(
        token,
        host,
        session=runtime.session,
        budget=budget,
        timeout=timeout,
        sleep=runtime.sleep,
        clock=runtime.monotonic,
    )


# --- token, host, timeouts -------------------------------------------------------------

#: Shorter tokens are refused: masking them in logs would not be safe (Valohai's have 40).
MIN_TOKEN_LENGTH = 16


def read_token(environ: Mapping[str, str] | None = None) -> str:
    """The API token from ``VH_API_TOKEN``, or :class:`RetryError`; masked from then on."""
    environ = os.environ if environ is None else environ
    token = environ.get("VH_API_TOKEN", "").strip()
    _remember_secret(token)
    if not token and environ.get("VH_JOB_ID"):
        raise RetryError(
            "VH_API_TOKEN is not set: add your Valohai API token as a secret project environment variable named VH_API_TOKEN (Project settings > Environment variables)"  # noqa: E501 - one line to grep
        )
    if not token:
        raise RetryError(
            "VH_API_TOKEN is not set: export VH_API_TOKEN=<your token> in this shell (My profile > Authentication)"
        )
    if not token.isascii() or not token.isprintable() or any(character.isspace() for character in token):
        # Checked here: an HTTP library's complaint about the header would quote the token.
        raise RetryError("VH_API_TOKEN contains spaces, control characters or non-ASCII characters: paste it again")
    if len(token) < MIN_TOKEN_LENGTH:
        raise RetryError(
            f"VH_API_TOKEN is too short to be an API token ({len(token)} characters): paste the whole token"
        )
    return token


def api_host(environ: Mapping[str, str] | None = None) -> str:
    """The API address, checked to be safe for a token: ``VALOHAI_HOST``; else, inside an execution
    (``VH_JOB_ID``), the origin of ``api.json``'s pre-signed status-detail URL (so self-hosted
    Valohai needs no setting; on a laptop a stray ``api.json`` is never read); else
    ``https://app.valohai.com``.  Plain http is for loopback only (tests)."""
    environ = os.environ if environ is None else environ
    if environ.get("VALOHAI_HOST", "").strip():
        return _origin(environ["VALOHAI_HOST"], "VALOHAI_HOST")
    signed = _signed_call("set_status_detail") if environ.get("VH_JOB_ID") else None
    url = parse_url(signed["url"]) if signed else None
    return _origin(f"{url.scheme}://{url.netloc}", "the status-detail URL in api.json") if url else DEFAULT_HOST


def _signed_call(endpoint: str) -> dict[str, Any] | None:
    """A pre-signed call of ``api.json`` (``url``, ``method``, ``headers``); None without the file.
    One there but unusable is an error: the token must not go to a default instead."""
    path = config_dir() / "api.json"
    if not os.path.lexists(path):  # locally, or an execution without pre-signed calls
        return None
    unusable = f"{path} has no usable {endpoint} URL to find the API by: set VALOHAI_HOST"
    try:
        entry = _read_json_object(path).get(endpoint)
        url = parse_url(entry["url"]) if isinstance(entry, dict) and isinstance(entry.get("url"), str) else None
    except (RetryError, ValueError) as exc:
        raise RetryError(f"{unusable} ({exc})") from None
    if url is None or not url.scheme or not url.host:
        raise RetryError(unusable)
    return dict(entry)  # type: ignore[arg-type]  # a dict: checked above


def _origin(address: str, name: str) -> str:
    """``scheme://host[:port]`` of ``address``, or :class:`RetryError` if a token must not go there:
    parsed by urllib3, which makes the requests, so the host checked is the host connected to;
    user info, backslashes, whitespace, paths and queries are refused."""
    text = address.strip().rstrip("/")
    if not text or not text.isprintable() or any(character.isspace() or character in "\\@" for character in text):
        shown = quote(text, 80)
        raise RetryError(
            f"{name} must be an address like https://valohai.example.com, without spaces, backslashes or user info; got {shown}"  # noqa: E501 - one line to grep
        )
    try:
        url = parse_url(text)
    except ValueError:
        raise RetryError(f"{name} must be an address like https://valohai.example.com, got {quote(text, 80)}") from None
    if url.scheme not in ("https", "http") or not url.host or url.path or url.query or url.fragment:
        raise RetryError(
            f"{name} must be an address like https://valohai.example.com (no path or query), got {quote(text, 80)}"
        )
    if url.scheme == "http" and not _is_loopback(url.host.strip("[]")):
        raise RetryError(f"{name} uses plain http ({text}): the token would travel unencrypted; use https")
    return f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port is not None else "")


def _is_loopback(hostname: str) -> bool:
    try:
        return hostname.lower() == "localhost" or ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def request_timeout(environ: Mapping[str, str] | None = None) -> tuple[float, float]:
    """Connect and read timeouts for API requests; ``RETRY_API_TIMEOUT`` sets the read one."""
    raw = (os.environ if environ is None else environ).get("RETRY_API_TIMEOUT", "").strip()
    seconds = float(raw) if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", raw) else -1.0
    if raw and not 0 < seconds <= 600:
        raise ConfigError(
            f"RETRY_API_TIMEOUT must be a number of seconds above 0 and at most 600, got {quote(raw, 20)}"
        )
    return (min(REQUEST_TIMEOUT[0], seconds), seconds) if raw else REQUEST_TIMEOUT


# --- status detail and output ----------------------------------------------------------

#: The longest one status-detail call may take; the longest a status detail gets (its record
#: included); how many times a record is written before giving up.
STATUS_DETAIL_TIMEOUT, STATUS_DETAIL_LIMIT, RECORD_TRIES = 10.0, 1000, 3


def set_status_detail(text: str) -> bool:
    """Set this execution's status detail, through ``api.json``'s pre-signed call (no token), as
    ``valohai.set_status_detail`` does, but bounded in time; best effort, never raises.  Returns
    whether it was set; outside an execution it does nothing."""
    try:
        call = _signed_call("set_status_detail") if os.environ.get("VH_JOB_ID") else None
        if call is None:
            return False
        try:
            seconds = min(STATUS_DETAIL_TIMEOUT, request_timeout()[1])
        except ConfigError:  # a broken RETRY_API_TIMEOUT is reported on its own
            seconds = STATUS_DETAIL_TIMEOUT
        method, url = str(call.pop("method", "POST")), str(call.pop("url"))
        detail = re.sub("[\x00\ud800-\udfff]", "\ufffd", _one_line(text, STATUS_DETAIL_LIMIT))  # NUL, lone halves
        call.update(json={"status_detail": detail}, timeout=(min(5.0, seconds), seconds))
        call.update(auth=lambda request: request)  # its signature is all it sends: no ~/.netrc login
        answer = _exchange(requests.Session(), method, url, seconds, **call)
        if answer.body is None or not 200 <= (answer.status or 0) < 300:
            raise answer.error or APIError(f"HTTP {answer.status}")
    except Exception as exc:  # a status detail must never hide the real error
        _say(f"could not set the status detail: {_reason(exc)}")
        return False
    return True


def write_record(message: str, record: Record, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Set the status detail that ends with ``record``, asked again a few times (copies of a retry
    decide by it); return whether it was set."""
    for tries in range(1, RECORD_TRIES + 1):
        if set_status_detail(status_with_record(message, record)):
            return True
        if tries < RECORD_TRIES:
            sleep(0.5 * tries)
    return False


def _print_traceback(error: BaseException) -> None:
    """The traceback, masked; a line past 100,000 characters cut (a huge message must not cost the
    memory the verdict needs)."""
    for part in traceback.format_exception(type(error), error, error.__traceback__):
        chunk = part if len(part) <= 100_000 else f"{part[:100_000]}... ({len(part) - 100_000} more characters)\n"
        lines = [printable(line) for line in chunk.split("\n")]  # masked; an error's text cannot forge a line:
        _write("\n".join(f"  {line}" if line.startswith("[retry") else line for line in lines))  # nor a verdict


def _why(error: BaseException) -> str:
    """A failure of this file's own work in one line: its message, or what an unexpected error was."""
    return str(error) if isinstance(error, RetryError) else f"unexpected {describe(error)}"


def _shown(value: object) -> str:
    """``repr(value)`` on one line, or a word for a value whose ``repr`` fails."""
    try:
        return _one_line(repr(value), 80)
    except Exception:
        return "(a value that cannot be shown)"


def describe(error: BaseException) -> str:
    """``Type: message`` on one line, masked and cut; safe for any exception, cheap for a huge one."""
    try:
        text = _one_line(error)
    except Exception:  # an exception whose __str__ fails still gets a summary
        text = "(its message could not be shown)"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def quote(value: object, limit: int = 60) -> str:
    """A value someone gave, quoted for a message: masked, user info hidden, *then* cut."""
    try:
        text = _mask((value if isinstance(value, str) else repr(value))[: limit * 4 + 200])
    except Exception:  # repr() refused it (an int of 5000 digits): say what it is instead
        return f"<a {type(value).__name__}>"
    text = re.sub(r"(?<=//)[^/@]*@", "***@", text)  # https://user:password@host
    text = printable(text if len(text) <= limit else text[:limit] + "...")
    return repr(text) if isinstance(value, str) else text


def printable(text: str) -> str:
    """``text`` masked, with every control, format (bidi, zero-width) and line-separator character
    shown escaped (``\\n``, ``\\x1b``, ``\\u2028``): a line that cannot forge another, nor show a token."""
    text = _mask(text)
    hidden = (unicodedata.category(c)[0] == "C" or c in "\u2028\u2029" for c in text)
    return "".join(c.encode("unicode_escape").decode() if escape else c for c, escape in zip(text, hidden))


def _one_line(value: object, limit: int = 300) -> str:
    """``value`` as one line of at most ``limit`` characters, masked *before* it is cut; only the
    start of a long text is read, so a message of any size costs little."""
    text = _mask(str(value)[: 2 * limit + max(map(len, _secrets), default=0) + 64])
    for secret in _secrets:  # the window may have cut a token short: a part of it is masked too
        text = next((text[:-n] + "***" for n in range(len(secret) - 1, 3, -1) if text.endswith(secret[:n])), text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


_secrets: set[str] = set()  # every token this process has used or seen: masked in all it prints or sends


def _remember_secret(secret: str) -> None:
    if len(secret) >= MIN_TOKEN_LENGTH:  # a shorter one is refused, never sent: masking "1" would garble all
        _secrets.add(secret)


def _remember_token(environ: Mapping[str, str]) -> None:
    _remember_secret(str(environ.get("VH_API_TOKEN", "")).strip())


def _mask(text: str) -> str:
    _remember_token(os.environ)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _say(message: str) -> None:
    """Print one ``[retry]`` line (line breaks and control characters in it shown escaped)."""
    _write(f"[retry] {printable(message)}\n")


def _write(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr closed or broken: nothing else can be done
        sys.stderr.write(text)
        sys.stderr.flush()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def _seconds(seconds: float) -> str:
    """A wait as people read it: whole seconds, or tenths below ten, rounded up (never "0")."""
    return f"{seconds:.0f}" if seconds >= 10 else f"{max(0.0, -(-(seconds * 10 - 1e-6) // 1) / 10):g}"  # 1e-6: noise


# --- the world, as the retry logic sees it ---------------------------------------------


@dataclasses.dataclass
class Runtime:
    """What the retry logic needs from the world; tests replace the parts they control: ``now``
    (the wall clock: not-before instants cross machines), ``monotonic`` (budgets), ``sleep``,
    ``uniform`` (jitter), ``replace_process(argv, environ, cwd)`` (a local retry in place of this
    process), ``argv`` (the command line to run again, by default this process's), ``session``."""

    environ: Mapping[str, str] = dataclasses.field(default_factory=lambda: os.environ)
    now: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    uniform: Callable[[float, float], float] = random.uniform
    replace_process: Callable[[Sequence[str], Mapping[str, str], str], int] = _replace_process
    argv: Sequence[str] | None = None
    session: requests.Session | None = None

    @property
    def on_valohai(self) -> bool:
        """Whether this is a Valohai execution's own process: ``VH_JOB_ID`` is set and no other process
        of the execution runs ``retry.run`` (``RETRY_OWNER_PID``): a program the job starts retries
        itself as local processes, never the execution."""
        owner = self.environ.get("RETRY_OWNER_PID")
        return bool(self.environ.get("VH_JOB_ID")) and owner in (None, "", str(os.getpid()))


_INSTANT = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)


def parse_instant(text: str) -> float:
    """An ISO 8601 instant (``Z``, an offset like ``+01``, ``+0100`` or ``+01:00``, or none for UTC;
    any fraction) as epoch seconds, else ``ValueError``; by hand, as before Python 3.11
    ``datetime.fromisoformat`` reads neither ``Z`` nor every length of fraction."""
    match = _INSTANT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO 8601 instant: {quote(text, 40)}")
    date, time_of_day, fraction, zone = match.groups()
    offset = "+00:00" if zone in (None, "Z", "z") else f"{zone[:3]}:{zone[3:].lstrip(':') or '00'}"
    return datetime.datetime.fromisoformat(f"{date}T{time_of_day}{offset}").timestamp() + float(f"0.{fraction or 0}")


def format_instant(timestamp: float) -> str:
    """``timestamp`` as an ISO 8601 UTC instant in milliseconds, rounded *up* (never early)."""
    milliseconds = -(-int(timestamp * 1_000_000) // 1000)  # a ceiling, in integers: no float rounding
    moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=milliseconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


if __name__ == "__main__":  # pragma: no cover - a hint for whoever runs the file itself
    sys.stderr.write("[retry] retry.py is imported by a job: see its docstring; chains.py queries chains\n")
    sys.exit(EXIT_BAD_CONFIG)
