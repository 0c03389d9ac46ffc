"""Retry a Valohai execution after a transient error by starting a fresh copy of it.

Copy this one file into your project (it needs ``requests`` and ``valohai-utils``) and
wrap your entry point::

    import retry

    retry.run(main, retries=3, delay=60)

The story, in the order this file tells it:

1. :func:`run` calls ``main``.  A retry first makes sure that it is the copy its parent
   named (see :class:`Record`), then waits out what is left of its delay.
2. When ``main`` raises, :func:`handle_failure` asks :func:`decide`, a pure function of
   the policy, the chain's state and the error: not retried (a bug), gave up (the
   ``retry: N`` tag says the retries are used up), or retry N, not before an instant.
3. A platform carries the decision out.  On Valohai the execution reads its own detail,
   creates a copy of itself tagged ``retry: N+1`` that must not work before that
   instant, names the copy in its status detail (its record) and exits at once with
   :data:`EXIT_RETRY_STARTED` (75).  Locally (no ``VH_JOB_ID``) the same command runs
   again in this process: no account needed.
4. With ``checkpoint="<input>"`` the retry gets the failed attempt's newest checkpoint in
   that input, and :func:`checkpoint_path` tells the job where to resume from.

Below them: the policy, the record, the retry's payload, checkpoints, the API client, the
token and host, the status detail and the output.  ``chains.py`` beside this file reports
on chains; this file needs nothing from it.

Environment:
    ``VH_API_TOKEN``   API token, set as a *secret* project environment variable.
    ``VALOHAI_HOST``   API address; rarely needed: inside an execution the address of the
                       installation's own API is read from ``api.json``, and the default
                       is ``https://app.valohai.com``.
    ``VH_CONFIG_DIR``  where ``execution.json`` and friends are (as valohai-utils has it).
    ``RETRY_API_TIMEOUT``  read timeout of each API request in seconds (default 30).

Exit codes: 0 success (or a duplicate retry that stood down), :data:`EXIT_GAVE_UP` (1),
:data:`EXIT_BAD_CONFIG` (2), :data:`EXIT_RELAUNCH_FAILED` (3),
:data:`EXIT_RETRY_UNCONFIRMED` (4), :data:`EXIT_RETRY_STARTED` (75).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import datetime
import difflib
import email.utils
import fnmatch
import inspect
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
    import requests.auth
    import valohai
    import valohai.paths
    from urllib3.util import parse_url
except ImportError as missing:  # pragma: no cover - the first thing a new project may hit
    raise ImportError(
        f"retry.py needs the packages requests and valohai-utils ({missing.name} is missing):"
        " pip install requests valohai-utils"
    ) from None

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

#: The attempt failed and a retry was started (``EX_TEMPFAIL``).
EXIT_RETRY_STARTED = 75
#: The attempt failed for good: retries used up, not transient, or the job exited non-zero.
EXIT_GAVE_UP = 1
#: The retry settings (or the script's parameters) are invalid; nothing was relaunched.
EXIT_BAD_CONFIG = 2
#: The attempt failed with a transient error, but no retry could be started.
EXIT_RELAUNCH_FAILED = 3
#: A create call may have started the retry, but the API never confirmed it.
EXIT_RETRY_UNCONFIRMED = 4

T = TypeVar("T")


# --- the entry point -------------------------------------------------------------------


def run(fn: Callable[[], T], policy: Policy | None = None, *, runtime: Runtime | None = None, **settings: Any) -> T:
    """Call ``fn``; on a transient error start a retry and exit, else fail for good.

    Settings are :class:`Policy` fields (``retries=3, delay=60, ...``) or a ``policy``.
    Returns what ``fn`` returns (an ``async def`` function is run with ``asyncio.run``).
    On failure the process exits with one of the ``EXIT_*`` codes after printing the
    traceback and a one-line summary, from whatever thread ``run`` was called in.
    """
    runtime = runtime or Runtime()
    _remember_token(runtime.environ)
    platform = _platform(runtime)
    try:
        policy = _process.policy = _policy_from(policy, settings)
        state = chain_state(runtime)
    except ConfigError as exc:
        _end_process(platform.record(f"invalid retry settings: {exc}", Record("invalid", 0), EXIT_BAD_CONFIG))
    platform.announce(policy, state)
    try:
        platform.claim(state, policy)  # a duplicate of a retry stands down here
        wait_for_turn(state.not_before, policy, state.done, runtime)
        result = _call(fn)
    except _StoodDown:
        _end_process(0)
    except SystemExit as stop:  # the job ended itself: respect it, but say so
        _end_process(_job_exit(stop, state, platform))
    except KeyboardInterrupt:
        message = f"Not retried: attempt {state.done + 1} was interrupted (KeyboardInterrupt)"
        platform.record(message, Record("not_retried", state.done, cause="KeyboardInterrupt"), EXIT_GAVE_UP)
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
    """Deal with ``error`` from an attempt: retry it or give up; return the exit code.

    Prints the traceback and a one-line summary, and records the outcome.  One failure
    per process is acted on: a second call (another thread failing at the same time)
    starts nothing and returns the first call's exit code.  Locally the retry replaces
    this process, so the call does not return when a retry starts.
    """
    runtime = runtime or Runtime()
    _remember_token(runtime.environ)
    with _process.lock:
        if _process.outcome is not None:
            _say(
                f"this process already handled a failure (exit code {_process.outcome});"
                f" not starting another retry for {describe(error)}"
            )
            return _process.outcome
        _print_traceback(error)
        platform = _platform(runtime)
        state = chain_state(runtime)
        summary = describe(error)
        if state.unknown:  # fail closed: an unknown count could restart the chain forever
            message = f"{summary} - not retried: cannot tell which retry this is: {state.unknown}"
            _process.outcome = platform.record(message, Record("not_started", 0, cause=summary), EXIT_RELAUNCH_FAILED)
        else:
            decision = decide(policy, state, error, now=runtime.now(), uniform=runtime.uniform)
            _process.outcome = platform.carry_out(decision, state, policy, summary, error)
        return _process.outcome


def _policy_from(policy: object, settings: Mapping[str, Any]) -> Policy:
    if policy is not None and not isinstance(policy, Policy):
        raise ConfigError(f"policy must be a retry.Policy, got {type(policy).__name__}")
    if policy is not None and settings:
        raise ConfigError(f"give a policy or settings, not both (got {', '.join(sorted(settings))} too)")
    unknown = sorted(set(settings) - {field.name for field in dataclasses.fields(Policy)})
    if unknown:
        names = [field.name for field in dataclasses.fields(Policy)]
        close = difflib.get_close_matches(unknown[0], names, n=3, cutoff=0.5)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        raise ConfigError(
            f"retry.run got an unknown setting {quote(unknown[0])}{hint}; the settings are {', '.join(names)}"
        )
    return policy or Policy(**settings)


# --- the decision ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ChainState:
    """Where an attempt stands in its chain: all the chain hands to it, read once."""

    done: int  # retries before this attempt: its ``retry: N`` (0 for the first attempt)
    not_before: str | None = None  # do not start work before this instant (ISO 8601)
    parent: str | None = None  # the execution whose failure this attempt retries (on Valohai)
    checkpoint: str | None = None  # locally, the checkpoint file handed to this attempt
    unknown: str | None = None  # why ``done`` could not be read, if it could not


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to do about a failure.

    ``outcome`` is ``"retry"`` (start retry ``number``, which must not work before
    ``not_before``, epoch seconds, after waiting ``wait``), ``"gave_up"`` or
    ``"not_retried"``; for those two, ``number`` is the retries done and ``reason`` the
    verdict that goes in front of the error's summary.
    """

    outcome: str
    number: int
    wait: float = 0.0
    not_before: float = 0.0
    reason: str = ""


def decide(
    policy: Policy,
    state: ChainState,
    error: BaseException,
    *,
    now: float,
    uniform: Callable[[float, float], float] = random.uniform,
) -> Decision:
    """The decision on a failure: a pure function of the policy, the chain and the error.

    (``uniform`` draws the jitter and ``now`` dates the not-before instant, so that the
    same inputs give the same decision.)
    """
    done = state.done
    try:
        transient = policy.should_retry(error)
    except Exception as exc:  # a broken retry_on predicate must not hide the real error
        return Decision("not_retried", done, reason=f"Not retried: retry_on raised {describe(exc)}")
    if not transient:
        return Decision("not_retried", done, reason="Not retried (not a transient error)")
    if done > MAX_RETRIES:
        reason = (
            f"Not retried: this execution is tagged as retry {done}, above the ceiling of {MAX_RETRIES};"
            " remove its 'retry:' tag to start a new chain"
        )
        return Decision("not_retried", done, reason=reason)
    if policy.retries == 0:
        return Decision("not_retried", done, reason="Not retried: retrying is off (retries=0)")
    if done >= policy.retries:
        return Decision("gave_up", done, reason=f"Gave up after {done} {'retry' if done == 1 else 'retries'}")
    wait = policy.wait_before(done + 1, error, uniform=uniform, now=now)
    return Decision("retry", done + 1, wait=wait, not_before=now + wait)


# --- the record: an attempt's outcome, as data -----------------------------------------

#: What an attempt can end with: ``started`` names its heir; the others name none.
OUTCOMES = ("started", "unconfirmed", "not_started", "gave_up", "not_retried", "stood_down", "invalid")
#: Where the record begins in a status detail: what precedes it is for people.
RECORD_MARK = " | retry-record "


@dataclasses.dataclass(frozen=True)
class Record:
    """How an attempt ended, as data: the last part of its status detail.

    The status detail is the one place a job writes that the API shows, in the
    execution's detail and in list entries, so it carries the record: a person's
    sentence, then :data:`RECORD_MARK` and this as JSON.  ``outcome`` is one of
    :data:`OUTCOMES`; ``retry`` the retry number it concerns (the one started, or this
    attempt's own); ``heir`` the id of the execution the attempt started and confirmed
    as its retry (``started``), or of the copy that works (``stood_down``); ``cause``
    the job's error.  Copies of a retry read their parent's
    record to learn which one works; ``chains.py`` reads records to report.
    """

    outcome: str
    retry: int
    heir: str | None = None
    cause: str = ""


def status_with_record(message: str, record: Record) -> str:
    """The status detail that tells ``message`` to people and ``record`` to programs."""
    data: dict[str, Any] = {"outcome": record.outcome, "retry": record.retry}
    if record.heir:
        data["heir"] = record.heir
    if record.cause:
        data["cause"] = _unmarked(_one_line(record.cause, 120))
    tail = RECORD_MARK + json.dumps(data)
    return _unmarked(_one_line(message, STATUS_DETAIL_LIMIT - len(tail))) + tail


def read_record(item: Mapping[str, Any] | str | None) -> Record | None:
    """The record of an execution (its detail or list entry) or status detail, if it has one."""
    text = item.get("status_detail") if isinstance(item, Mapping) else item
    _, mark, tail = text.rpartition(RECORD_MARK) if isinstance(text, str) else ("", "", "")
    try:
        data = json.loads(tail) if mark else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("outcome") not in OUTCOMES:
        return None
    heir, cause = data.get("heir"), data.get("cause")
    return Record(
        outcome=data["outcome"],
        retry=_integer(data.get("retry")) or 0,
        heir=heir if isinstance(heir, str) and heir else None,
        cause=cause if isinstance(cause, str) else "",
    )


def _unmarked(text: str) -> str:
    """``text`` that cannot be mistaken for the start of a record."""
    return text.replace(RECORD_MARK.strip(), "retry record")


class _StoodDown(Exception):  # noqa: N818 - not an error: a duplicate leaving the work to its twin
    """A duplicate of a retry stood down (and said so); the process ends with 0."""


# --- the platforms: Valohai, and this machine ------------------------------------------


def _platform(runtime: Runtime) -> _Valohai | _Local:
    return _Valohai(runtime) if runtime.on_valohai else _Local(runtime)


class _Valohai:
    """Retries as executions: read the chain, find the copy that works, create, record."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def announce(self, policy: Policy, state: ChainState) -> None:
        attempt, tag = f"attempt {state.done + 1} of up to {policy.retries + 1}", format_retry_tag(state.done)
        _say(f"{attempt}, running on Valohai as '{tag}'" if state.done else f"{attempt}, running on Valohai")
        if policy.retries and not self.runtime.environ.get("VH_API_TOKEN", "").strip():
            _say("warning: VH_API_TOKEN is not set, so a failure here cannot start a retry")

    def claim(self, state: ChainState, policy: Policy) -> None:
        """Make sure this is the copy that works: the one its parent's record names.

        Creating an execution is not idempotent, so a lost answer can leave two copies
        of one retry; the parent names the one it confirmed.  This copy works if it is
        named, stands down (raises :class:`_StoodDown`) if another is, and waits,
        bounded, while the parent has not ended.  A parent that ended without naming
        one (killed while relaunching, its record lost) leaves it to the lowest copy
        that works.  When the check cannot be made, the work is done.
        """
        if not state.parent or _process.claimed:
            return
        _process.claimed = True  # a second run() in this process is the same attempt
        try:
            me = read_execution()
            api = self.api(budget=CHECK_BUDGET)
            parent = _detail(api, state.parent)
            record = read_record(parent)
            if record is None and _status(parent) in INCOMPLETE_STATUSES:
                wait_for_turn(state.not_before, policy, state.done, self.runtime)  # time to write it
                parent, record = self._await_record(state.parent)
        except RetryError as exc:
            _say(f"could not read the record of its parent, so this copy does the work: {exc}")
            return
        number = record.retry if record else state.done
        if record and record.outcome == "started" and record.heir == me.id:
            return
        if record and record.outcome == "started":
            message = (
                f"Stood down: its parent {_counter_text(parent)} named another execution"
                f" as retry {number}/{policy.retries}"
            )
            self.record(f"{message}; this copy did nothing", Record("stood_down", number, heir=record.heir), 0)
            raise _StoodDown
        twin = self._lowest_working_copy(me, parent, number)
        if twin is not None:
            message = (
                f"Stood down: {_counter_text(twin)} is already retry {number}/{policy.retries}"
                " of the same failure and does the work"
            )
            self.record(
                f"{message}; this copy did nothing", Record("stood_down", number, heir=_text(twin.get("id"))), 0
            )
            raise _StoodDown

    def _await_record(self, parent_id: str) -> tuple[dict[str, Any], Record | None]:
        """The parent's detail and record, once it has one or has ended; bounded by PARENT_WAIT."""
        runtime = self.runtime
        deadline = runtime.monotonic() + PARENT_WAIT
        pause = 0.5
        set_status_detail("Waiting for the failed execution to name its retry")
        while True:
            parent = _detail(self.api(budget=CHECK_BUDGET), parent_id)
            record = read_record(parent)
            if record is not None or _status(parent) not in INCOMPLETE_STATUSES:
                return parent, record
            if runtime.monotonic() + pause > deadline:
                _say(f"its parent has neither ended nor named its retry after {PARENT_WAIT:g} s")
                return parent, None
            runtime.sleep(pause)
            pause = min(pause * 2, 15.0)

    def _lowest_working_copy(self, me: Execution, parent: Mapping[str, Any], number: int) -> dict[str, Any] | None:
        """A copy of this retry below this one that does (or did) the work, if any.

        Only when the parent ended without naming its retry: rare, so a scan of the
        executions between parent and copy is affordable, and it is bounded.  Look-alikes
        (a sweep's other chains) are told apart by everything the list shows before any
        detail is read; a copy that failed without a verdict (it crashed or was stopped
        before its job ran) or stood down does not count.
        """
        floor = counter_of(parent) or 0
        like = {"step": me.step, "title": me.title, "parameters": _config_json("parameters.json") or None}
        try:
            found: list[dict[str, Any]] = []
            api, ordered, last = self.api(budget=CHECK_BUDGET), True, None
            for page in execution_pages(api, me.project_id, max_pages=FALLBACK_PAGES):
                for item in page:
                    counter = counter_of(item) or 0
                    ordered, last = ordered and (last is None or counter < last), counter
                    found += [item] if floor < counter < me.counter else []
                if ordered and last is not None and last <= floor:
                    break  # newest first, and down to the parent: nothing older is a copy
            candidates = sorted(
                (item for item in found if retry_number(tags_of(item)) == number and _alike(item, like)),
                key=lambda item: counter_of(item) or 0,
            )
            for item in candidates[:FALLBACK_DETAILS]:
                known = item if "environment_variables" in item else _detail(api, str(item.get("id")))
                if parent_of(known) == parent.get("id") and _did_or_does_work(known):
                    return known
            if len(candidates) > FALLBACK_DETAILS:
                raise APIError(f"more than {FALLBACK_DETAILS} look-alike executions to read; stopped there")
        except RetryError as exc:
            _say(f"could not check that this is the only retry {number} of its parent, so doing the work: {exc}")
        return None

    def carry_out(
        self, decision: Decision, state: ChainState, policy: Policy, summary: str, error: BaseException
    ) -> int:
        """Record a verdict, or create the retry, name it in the record, and return 75."""
        if decision.outcome != "retry":
            record = Record(decision.outcome, decision.number, cause=summary)
            return self.record(f"{decision.reason}: {summary}", record, EXIT_GAVE_UP)
        number = decision.number
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
            done = retry_number(tags_of(detail))  # a lost tag in execution.json must not restart the chain
            if done > state.done:
                state = dataclasses.replace(state, done=done)
                decision = decide(policy, state, error, now=self.runtime.now(), uniform=self.runtime.uniform)
                if decision.outcome != "retry":
                    return self.carry_out(decision, state, policy, summary, error)
                number = decision.number
            not_before = _plan_wait(decision, policy, self.runtime)
            if not_before is None:  # the wait was spent here: the calls from now on get the whole budget
                api = self.api()
            payload = build_retry_payload(detail, number, parent_id=execution.id, not_before=not_before)
            if policy.checkpoint:
                payload["inputs"] = _inputs_with_checkpoint(payload["inputs"], api, execution, policy, self.runtime)
            created, unconfirmed = _create(api, payload, policy.checkpoint)
        except Exception as exc:
            if not isinstance(exc, RetryError):  # a bug or an answer of a shape never seen
                _print_traceback(exc)
            reason = str(exc) if isinstance(exc, RetryError) else f"unexpected {describe(exc)}"
            if unconfirmed or isinstance(exc, _UnconfirmedError):
                message = (
                    f"{summary} - retry {number}/{policy.retries} may have been started,"
                    f" but the API never confirmed it: {reason};"
                    f" look for the tag 'retry: {number}' in the project's executions before starting anything"
                )
                return self.record(message, Record("unconfirmed", number, cause=summary), EXIT_RETRY_UNCONFIRMED)
            code = exc.exit_code if isinstance(exc, RetryError) else EXIT_RELAUNCH_FAILED
            return self.record(
                f"{summary} - could not start retry {number}/{policy.retries}: {reason}",
                Record("not_started", number, cause=summary),
                code,
            )
        counter = counter_of(created)
        _say(f"retry {number}/{policy.retries} is execution {_counter_text(created)}: {display_url(created)}")
        message = f"{summary} - retry {number}/{policy.retries} started as #{counter}"
        if counter is None:
            message = f"{summary} - retry {number}/{policy.retries} started (the API did not say its number)"
        return self.record(message, Record("started", number, heir=str(created["id"]), cause=summary), 75)

    def record(self, message: str, record: Record, code: int) -> int:
        """Write the record (retried: the next copy decides by it), log ``message``, return ``code``."""
        if not _write_record(status_with_record(message, record), self.runtime.sleep):
            _say("could not write the record of this attempt: its retry, if any, will look for copies itself")
        _say(message)
        return code

    def api(self, *, budget: float = 0.0) -> ValohaiAPI:
        """An API client with this attempt's token, host, timeouts, clock and sleep."""
        environ = self.runtime.environ
        return ValohaiAPI(
            read_token(environ),
            api_host(environ),
            session=self.runtime.session,
            budget=budget or API_BUDGET,
            timeout=request_timeout(environ),
            sleep=self.runtime.sleep,
            clock=self.runtime.monotonic,
        )


def _plan_wait(decision: Decision, policy: Policy, runtime: Runtime) -> str | None:
    """Wait here (``wait_in="failed"``) and return None, or return the retry's not-before instant."""
    number, wait = decision.number, _seconds(decision.wait)
    if policy.wait_in == "failed":
        countdown(
            decision.wait,
            f"waiting {wait} s in this execution before starting retry {number}/{policy.retries}",
            runtime,
        )
        return None
    _say(f"retry {number}/{policy.retries} will wait {wait} s before it starts work")
    return _format_instant(decision.not_before)


def _create(api: ValohaiAPI, payload: dict[str, Any], checkpoint: str | None) -> tuple[dict[str, Any], bool]:
    """Create the retry; return the confirmed execution and whether an earlier create may have made a copy.

    A create whose answer is lost (or a 5xx, or a 201 that cannot be read) may have
    happened: it is sent again, at most :data:`MAX_CREATES` times, and a copy made all
    the same stands down when it starts, since the record names only the confirmed one.
    A create refused because of the checkpoint input (a purged datum, an input the
    commit does not declare) is sent once more without it.
    """
    unconfirmed: APIError | None = None
    for _ in range(MAX_CREATES):
        try:
            created = api.post("/api/v0/executions/", payload)
        except _AmbiguousRequestError as exc:
            unconfirmed = exc
        except APIError as exc:
            if exc.status == 400 and checkpoint in payload["inputs"] and unconfirmed is None:
                _say(f"{exc}; sending it once more without the checkpoint, so the retry starts from the beginning")
                payload["inputs"] = {name: urls for name, urls in payload["inputs"].items() if name != checkpoint}
                continue
            raise (_UnconfirmedError(str(exc)) if unconfirmed else exc) from None
        else:
            if _text(created.get("id")):
                return created, unconfirmed is not None
            unconfirmed = APIError("POST /api/v0/executions/: created, but the answer names no execution id")
        _say(f"{unconfirmed}; asking once more (a copy made all the same will stand down)")
    raise _UnconfirmedError(f"{unconfirmed} ({MAX_CREATES} tries)")


def _did_or_does_work(item: Mapping[str, Any]) -> bool:
    """Whether a copy of a retry is doing its job, will, or did: not one that failed
    without a verdict of its own (crashed, stopped before its job ran) or stood down."""
    record = read_record(item)
    if record is not None:
        return record.outcome not in ("stood_down", "invalid")
    return _status(item) not in FAILED_STATUSES


def _alike(item: Mapping[str, Any], like: Mapping[str, Any]) -> bool:
    """False when ``item`` shows a field that differs from ``like``: it cannot be a copy."""
    return all(item.get(key) in (None, value) for key, value in like.items() if value is not None)


class _Local:
    """Retries as fresh runs of the same command, in place of the failed process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def announce(self, policy: Policy, state: ChainState) -> None:
        attempt, tag = f"attempt {state.done + 1} of up to {policy.retries + 1}", format_retry_tag(state.done)
        if self.runtime.environ.get("VH_JOB_ID"):
            _say(f"{attempt}, running in a program the job started: its retries run as local processes")
        else:
            _say(f"{attempt}, running locally as '{tag}'" if state.done else f"{attempt}, running locally")

    def claim(self, state: ChainState, policy: Policy) -> None:
        """Nothing to check: locally one process of a chain runs at a time."""

    def carry_out(
        self, decision: Decision, state: ChainState, policy: Policy, summary: str, error: BaseException
    ) -> int:
        """Record a verdict, or replace this process with the retry (which does not return)."""
        if decision.outcome != "retry":
            return self.record(f"{decision.reason}: {summary}", Record(decision.outcome, decision.number), EXIT_GAVE_UP)
        number, runtime = decision.number, self.runtime
        try:
            argv = list(runtime.argv) if runtime.argv is not None else _command_line()
        except RetryError as exc:
            return self.record(
                f"{summary} - could not start retry {number}/{policy.retries}: {exc}",
                Record("not_started", number),
                exc.exit_code,
            )
        not_before = _plan_wait(decision, policy, runtime)
        environ = {name: value for name, value in runtime.environ.items() if name not in CHAIN_VARIABLES}
        environ["RETRY_LOCAL_NUMBER"] = str(number)
        if not_before:
            environ["RETRY_NOT_BEFORE"] = not_before
        if policy.checkpoint:
            handed = _newest_local_checkpoint(policy.checkpoint_pattern) or _handed_checkpoint(state)
            if handed:
                environ["RETRY_CHECKPOINT"] = handed
                _say(f"the retry resumes from the checkpoint {handed}")
            else:
                where = Path(valohai.paths.get_outputs_path()).resolve()
                _say(
                    f"no finished checkpoint matching {quote(policy.checkpoint_pattern)} in {where}:"
                    " the retry starts from the beginning"
                )
        self.record(
            f"{summary} - starting retry {number}/{policy.retries}: the same command, in this process",
            Record("started", number),
            0,
        )
        _flush()
        try:  # normally this does not return: the retry takes over this process (same pid)
            return runtime.replace_process(argv, environ, _STARTED_IN)
        except RetryError as exc:
            return self.record(
                f"could not start retry {number}/{policy.retries}: {exc}", Record("not_started", number), exc.exit_code
            )

    def record(self, message: str, record: Record, code: int) -> int:
        """Locally the outcome is the last log line (there is no status detail to write)."""
        _say(message)
        return code


def _replace_process(argv: Sequence[str], environ: Mapping[str, str], cwd: str) -> int:
    """Run ``argv`` in place of this process; on Windows, as a child whose code is returned."""
    _end_children()
    if os.name != "posix":  # os.exec* on Windows starts a new process and exits 0 at once
        return subprocess.call(list(argv), env=dict(environ), cwd=cwd)
    _reset_signals()
    try:
        os.chdir(cwd)
        os.execve(argv[0], list(argv), dict(environ))
    except OSError as exc:
        raise RetryError(f"could not run {argv[0]} in {cwd}: {exc.strerror or exc}") from None
    raise AssertionError("unreachable: os.execve returned")  # pragma: no cover


def _end_children() -> None:
    """End the job's multiprocessing children as Python's own exit would, so that one
    process of the chain runs at a time: daemonic ones are terminated, the others joined
    (and terminated, with a message, if they do not end within CHILD_WAIT seconds)."""
    multiprocessing = sys.modules.get("multiprocessing")
    for child in multiprocessing.active_children() if multiprocessing else ():
        if not child.daemon:
            child.join(CHILD_WAIT)
            if child.is_alive():
                _say(f"ending the child process {child.pid}: still running {CHILD_WAIT:g} s after the attempt failed")
        if child.is_alive():
            child.terminate()
            child.join(1)


def _reset_signals() -> None:
    """Give the retry the signals of a fresh process: none blocked, none ignored.

    A replaced process keeps both, and a job that ignored SIGTERM would hand that on.
    (Only the main thread can reset handlers; the blocked set is this thread's.)
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                signal.signal(getattr(signal, name), signal.SIG_DFL)


def _command_line() -> list[str]:
    """This process's command line as it started, runnable again from any folder.

    Python 3.10+ keeps the interpreter's own flags (``-u``, ``-X ...``); before, the
    script or module runs again without them.
    """
    script = _ARGV_AT_START[0] if _ARGV_AT_START else ""
    if script in ("", "-"):
        raise RetryError("the script was read from standard input, so it cannot be run again: save it to a file")
    if not sys.executable:
        raise RetryError("the path of the Python interpreter is unknown (sys.executable is empty)")
    original = list(getattr(sys, "orig_argv", None) or [])
    if original:
        command = [sys.executable, *original[1:]]
        position = len(original) - len(_ARGV_AT_START)
        if 0 < position < len(command) and command[position] == script:  # a script path, not -c or -m
            command[position] = _script_path(script)
        return command
    if script == "-c":
        raise RetryError("a program given with -c cannot be run again before Python 3.10: save it to a file")
    module = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
    if isinstance(module, str) and module != "__main__":  # python -m package.module
        module = module[: -len(".__main__")] if module.endswith(".__main__") else module
        return [sys.executable, "-m", module, *_ARGV_AT_START[1:]]
    return [sys.executable, _script_path(script), *_ARGV_AT_START[1:]]


def _script_path(script: str) -> str:
    """The script's absolute path, checked to be a file (or folder) that can be read again."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    path = main_file if isinstance(main_file, str) and os.path.isabs(main_file) else os.path.join(_STARTED_IN, script)
    if not (os.path.isfile(path) or os.path.isdir(path)):  # a pipe (/dev/stdin, <(...)) reads only once
        raise RetryError(
            f"the script {quote(path)} is not a regular file (a pipe?), so it cannot be run again: save it to a file"
        )
    return path


# How the job started: a retry starts the same way, whatever os.chdir or the job did since.
_STARTED_IN = os.getcwd()
_ARGV_AT_START = list(sys.argv)
_STARTED_AT = time.time()


# --- the attempt: its state, its turn, the job itself ----------------------------------


@dataclasses.dataclass
class _ProcessState:
    """What one process remembers: its chain state, its policy, the one failure it acted on."""

    state: ChainState | None = None
    policy: Policy | None = None  # the running retry.run's: checkpoint_path() reads its settings
    claimed: bool = False  # this retry made sure it is the copy that works
    outcome: int | None = None
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)


_process = _ProcessState()

#: The variables a chain hands to its next attempt; taken out of the environment when it starts.
CHAIN_VARIABLES = ("RETRY_LOCAL_NUMBER", "RETRY_NOT_BEFORE", "RETRY_PARENT", "RETRY_CHECKPOINT")


def chain_state(runtime: Runtime | None = None) -> ChainState:
    """What the chain handed this attempt, read once per process and taken out of the environment.

    Taken out, the variables cannot leak into programs the job starts (a helper script
    that uses ``retry.run`` would otherwise think it is a late retry).  On Valohai the
    retry number is the ``retry: N`` tag of ``execution.json``; locally it is
    ``RETRY_LOCAL_NUMBER`` (:class:`ConfigError` when that is not a number).
    """
    if _process.state is not None:  # a second run() in this process is the same attempt
        return _process.state
    runtime = runtime or Runtime()
    environ = runtime.environ
    done, unknown = 0, None
    if runtime.on_valohai:
        try:
            done = read_execution().retry
        except RetryError as exc:  # the job still runs; a failure is then not relaunched
            unknown = str(exc)
    else:
        raw = environ.get("RETRY_LOCAL_NUMBER", "").strip()
        number = _ascii_count(raw) if raw else 0
        if number is None or number > MAX_RETRIES:
            raise ConfigError(
                f"RETRY_LOCAL_NUMBER must be a retry number from 0 to {MAX_RETRIES}, got {quote(raw, 20)}"
            )
        done = number
    state = ChainState(
        done=done,
        not_before=environ.get("RETRY_NOT_BEFORE") or None,
        parent=(environ.get("RETRY_PARENT") or None) if runtime.on_valohai else None,
        checkpoint=environ.get("RETRY_CHECKPOINT") or None,
        unknown=unknown,
    )
    if isinstance(environ, MutableMapping):
        for name in CHAIN_VARIABLES:
            environ.pop(name, None)
        if runtime.on_valohai:  # programs this one starts inherit it, and know they are not the execution
            environ["RETRY_OWNER_PID"] = str(os.getpid())
    _process.state = state
    return state


def current_retry(runtime: Runtime | None = None) -> int:
    """This attempt's retry number: 0 for the first attempt, N for the one tagged ``retry: N``.

    Raises :class:`ConfigError` when a local chain's ``RETRY_LOCAL_NUMBER`` is not a number.
    """
    return chain_state(runtime).done


def wait_for_turn(not_before: str | None, policy: Policy, number: int, runtime: Runtime) -> float:
    """Wait until the not-before instant a retry was given, if any; return the wait.

    The instant is honoured whatever the retry number says.  An unparsable instant, or
    one further away than the policy's longest wait (clock skew, tampering), is clamped
    to that longest wait with a warning.  Once the instant has passed, this costs nothing.
    """
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
    """Say ``message``, then sleep ``seconds``, logging what remains so a long wait is visibly alive.

    It ends no sooner than ``seconds`` after it began by the runtime's wall clock too: a
    wall clock and the clock ``sleep`` uses can drift apart slightly.
    """
    runtime = runtime or Runtime()
    _say(message)
    end = runtime.now() + seconds
    tick = seconds if seconds <= 5 else 1.0 if seconds <= 10 else 10.0 if seconds <= 300 else 60.0
    remaining = seconds
    while remaining > 0:
        step = min(tick, remaining)
        runtime.sleep(step)
        remaining -= step
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
    try:
        asyncio.get_running_loop()
        in_a_loop = True
    except RuntimeError:  # no loop running in this thread: the normal case
        in_a_loop = False
    if in_a_loop:
        result.close()
        raise _MisuseError("it got a coroutine inside a running event loop: call retry.run from synchronous code")
    return asyncio.run(result)  # type: ignore[no-any-return]  # outside the except: no error "while handling"


def _job_exit(stop: SystemExit, state: ChainState, platform: _Valohai | _Local) -> int:
    """The exit code for a job that called ``sys.exit``: its own success, or a failure for good."""
    if stop.code is None or stop.code == 0:
        _say(f"the job succeeded on attempt {state.done + 1} (it called sys.exit({stop.code!r}))")
        return 0
    code = _one_line(repr(stop.code), 80)
    return platform.record(
        f"Not retried: the job called sys.exit({code})", Record("not_retried", state.done), EXIT_GAVE_UP
    )


def _end_process(code: int) -> NoReturn:
    """End the process with ``code`` (a failure this process handled wins over a success).

    From a thread other than the main one, ``sys.exit`` would end only that thread; and a
    failed attempt whose job left other threads running (a heartbeat, a loader) would wait
    for them, holding its machine.  Both end the whole process at once.
    """
    with _process.lock:  # a relaunch under way in another thread ends first
        code = code if _process.outcome is None else _process.outcome
    in_main = threading.current_thread() is threading.main_thread()
    me = threading.current_thread()
    waiting_for = [t.name for t in threading.enumerate() if t is not me and not t.daemon and t.is_alive()]
    if in_main and (code == 0 or not waiting_for):
        sys.exit(code)
    if not in_main and code:
        _say(f"retry.run ran outside the main thread: ending the whole process with exit code {code}")
    else:
        _say(f"ending the process with exit code {code} now, not waiting for its threads {', '.join(waiting_for)}")
    _flush()
    os._exit(code)


# --- what is transient, and the policy -------------------------------------------------

TRANSIENT_HTTP_STATUSES = frozenset({429, 500, 502, 503, 504})


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
        if isinstance(current, requests.HTTPError):
            if _integer(getattr(current.response, "status_code", None)) in TRANSIENT_HTTP_STATUSES:
                return True
        elif isinstance(
            current, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, socket.timeout)
        ):
            return True  # (socket.timeout is TimeoutError only from Python 3.10 on)
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
    """Seconds a ``Retry-After`` value asks for: ASCII digits or an HTTP date; 0 for anything else."""
    value = value.strip()
    seconds = _ascii_count(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
        moment = (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp()
    except Exception:  # not a date either: no header to honour
        return 0.0
    return max(0.0, moment - now)


def _ascii_count(text: str) -> int | None:
    """``text`` as a count when it is 1 to 9 ASCII digits (so never ``²`` or a huge number)."""
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) else None


#: Hard ceiling on retries: a chain can never grow past it, whatever the tags say.
MAX_RETRIES = 100
#: Hard ceiling on a single wait, in seconds (one day).
MAX_WAIT = 86_400.0
#: Output files whose name matches this are checkpoints, unless a policy says otherwise.
DEFAULT_CHECKPOINT_PATTERN = "*checkpoint*"

if TYPE_CHECKING:  # only for annotations, so that this file still imports on Python 3.8
    #: What ``Policy.retry_on`` takes: a predicate, an exception type, or a tuple of types.
    RetryOn = Callable[[BaseException], bool] | type[BaseException] | tuple[type[BaseException], ...]


@dataclasses.dataclass(frozen=True)
class Policy:
    """How many retries, how long to wait, and which errors count as transient.

    The wait before retry ``n`` (1-based) is ``delay * backoff ** (n - 1)`` plus a random
    ``0..jitter`` seconds, at most ``max_delay``; a ``Retry-After`` header on a 429/503
    error makes it at least that long (still at most ``max_delay``).  The defaults give a
    plain constant delay.

    ``wait_in`` says where the wait is spent: ``"retry"`` (default) starts the retry at
    once and lets it wait before it does work, so recovery overlaps its start-up;
    ``"failed"`` keeps the failed execution waiting before it asks for the retry.

    ``checkpoint`` names the step's input through which a retry gets the newest
    checkpoint of the attempt that failed (the newest output file whose name matches
    ``checkpoint_pattern``); the job reads it with :func:`checkpoint_path`.  Unset, a
    retry starts from the beginning and no output is looked at.
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
        _check_number("delay", self.delay, 0, MAX_WAIT)
        _check_number("backoff", self.backoff, 1, 100)
        _check_number("max_delay", self.max_delay, 0, MAX_WAIT)
        _check_number("jitter", self.jitter, 0, MAX_WAIT)
        if self.delay > self.max_delay:
            raise ConfigError(f"delay ({self.delay} s) must not exceed max_delay ({self.max_delay} s)")
        if self.wait_in not in ("retry", "failed"):
            raise ConfigError(f"wait_in must be 'retry' or 'failed', got {quote(self.wait_in)}")
        types = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not callable(self.retry_on) and not all(isinstance(t, type) and issubclass(t, BaseException) for t in types):
            raise ConfigError("retry_on must be a predicate or exception types")
        name = self.checkpoint
        if name is not None and not (isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name)):
            raise ConfigError(f"checkpoint must be the name of one of the step's inputs, got {quote(name)}")
        if not isinstance(self.checkpoint_pattern, str) or not self.checkpoint_pattern.strip():
            raise ConfigError(f"checkpoint_pattern must be a file name pattern, got {quote(self.checkpoint_pattern)}")

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
        raise ConfigError(f"{name} must be {kind} from {low:g} to {high:g}, got {quote(value)}")


# --- tags ------------------------------------------------------------------------------

_RETRY_TAG = re.compile(r"^\s*retry\s*:\s*([0-9]+)\s*$", re.IGNORECASE)


def format_retry_tag(number: int) -> str:
    """The tag that marks retry ``number``: ``retry: N``, as the Valohai UI shows it."""
    return f"retry: {number}"


def _parse_retry_tag(tag: object) -> int | None:
    match = _RETRY_TAG.match(tag) if isinstance(tag, str) else None
    if match is None:
        return None
    digits = match.group(1)
    return int(digits) if len(digits) <= 9 else 10**9  # a longer count is absurd; int() on it slow


def retry_number(tags: Sequence[object]) -> int:
    """The retry number that ``tags`` carry: the highest valid ``retry: N`` tag, else 0.

    Tolerant: other tags, non-strings and malformed ``retry:`` tags are ignored, and
    spacing and case may vary (``retry:2``, ``Retry : 2``).
    """
    return max((number for number in map(_parse_retry_tag, tags) if number is not None), default=0)


def retry_tags(tags: Sequence[object], number: int) -> list[str]:
    """``tags`` without their ``retry: N`` tags, plus the tag for retry ``number``."""
    return [*(tag for tag in tags if isinstance(tag, str) and _parse_retry_tag(tag) is None), format_retry_tag(number)]


def tags_of(item: Mapping[str, Any]) -> list[str]:
    """An API item's tags as strings, whether they come as a list, one string, or objects."""
    tags = item.get("tags")
    if isinstance(tags, str):  # never split a string into letters
        return [tags]
    names = [tag.get("name") if isinstance(tag, dict) else tag for tag in tags] if isinstance(tags, list) else []
    return [name for name in names if isinstance(name, str)]


# --- the retry's payload ---------------------------------------------------------------


def build_retry_payload(
    detail: Mapping[str, Any], number: int, *, parent_id: str, not_before: str | None = None
) -> dict[str, Any]:
    """The body of ``POST /api/v0/executions/`` that creates retry ``number`` of ``detail``.

    Copies project, commit, step, parameters, inputs, environment, image, title, time
    limit, priority, runtime config (resources, Kubernetes settings, auto-restart), its
    preset, environment variable groups and the non-secret environment variables.  A
    secret comes back from the API without its value and is never sent; the retry inherits
    the project's variables and secrets instead.  Tags are the current ones with
    ``retry: number`` replacing old retry tags.  ``_restart`` (Valohai's own input after a
    spot restart) is never sent.
    """
    project = _value_of(detail.get("project"), "id")
    commit = _value_of(detail.get("commit"), "identifier")
    step = _text(detail.get("step"))
    missing = [name for name, value in (("project", project), ("commit", commit), ("step", step)) if not value]
    if missing:
        raise RetryError(f"the execution's detail lacks {', '.join(missing)}: not relaunching from partial data")
    variables = {
        name: str(_variable_value(entry))
        for name, entry in _variables(detail.get("environment_variables")).items()
        if _variable_value(entry) is not None
        and not (isinstance(entry, dict) and entry.get("secret"))
        and name not in ("VH_API_TOKEN", *CHAIN_VARIABLES)
    }
    variables["RETRY_PARENT"] = parent_id
    if not_before:
        variables["RETRY_NOT_BEFORE"] = not_before
    parameters = detail.get("parameters")
    payload: dict[str, Any] = {
        "project": project,
        "commit": commit,
        "step": step,
        "parameters": dict(parameters) if isinstance(parameters, dict) else _config_json("parameters.json"),
        "inputs": {name: urls for name, urls in _inputs(detail).items() if name != "_restart"},
        "tags": retry_tags(tags_of(detail), number),
        "environment_variables": variables,
    }
    # The keys and their shapes follow the official CLI's create payload (valohai-cli 0.37,
    # valohai_cli/commands/execution/run/dynamic_run_command.py, lines 236-263), and so does
    # the rule: a key is left out only when the detail has no value for it (None or "").
    groups = detail.get("environment_variable_groups")
    group_ids = [found for group in groups if (found := _value_of(group, "id"))] if isinstance(groups, list) else []
    optional = {
        "environment": _value_of(detail.get("environment"), "id"),
        "image": _text(detail.get("image")),
        "title": _text(detail.get("title")),
        "time_limit": _integer(detail.get("time_limit")),
        "priority": _integer(detail.get("priority")),
        "runtime_config": detail.get("runtime_config") if isinstance(detail.get("runtime_config"), dict) else None,
        "runtime_config_preset": _value_of(detail.get("runtime_config_preset"), "id"),
        "environment_variable_groups": group_ids or None,
    }
    payload.update({key: value for key, value in optional.items() if value not in (None, "")})
    # Whether a new execution gets the project's variables and secrets (VH_API_TOKEN among
    # them) has an unpublished API default; the UI's "Inherit project's environment variables
    # and secrets" box is this field, as payloads in Valohai's own examples send it.
    payload["inherit_environment_variables"] = True
    return payload


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _integer(value: Any) -> int | None:
    """``value`` if it is an integer (never a bool), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _value_of(value: Any, key: str) -> str | None:
    """``value[key]`` of an object, or ``value`` itself, as a non-empty string."""
    if isinstance(value, dict):
        value = value.get(key)
    return str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) and value != "" else None


def _variables(value: Any) -> dict[str, Any]:
    """Environment variables from the API as ``{name: entry}``, whatever shape they come in."""
    if isinstance(value, list):  # tolerate [{"name": ..., "value": ...}]
        value = {item.get("name"): item for item in value if isinstance(item, dict)}
    return {name: entry for name, entry in value.items() if isinstance(name, str)} if isinstance(value, dict) else {}


def _variable_value(entry: Any) -> Any:
    """A variable's value, whether the API gives ``{"value": ...}`` or the bare value."""
    return entry.get("value") if isinstance(entry, dict) else entry


def _inputs(detail: Mapping[str, Any]) -> dict[str, list[str]]:
    """Inputs as ``{name: [url, ...]}``, from the detail or else from ``inputs.json``."""
    inputs = detail.get("inputs")
    if isinstance(inputs, list):
        inputs = {item["name"]: item for item in inputs if isinstance(item, dict) and _text(item.get("name"))}
    if not isinstance(inputs, dict):
        inputs = _config_json("inputs.json")
    return {str(name): _urls(value) for name, value in inputs.items()}


def _urls(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [url for item in value for url in _urls(item)]
    if isinstance(value, dict):
        key = next((key for key in ("urls", "url", "uri") if key in value), "files")
        return _urls(value.get(key, []))
    return []


def parent_of(item: Mapping[str, Any]) -> str | None:
    """The execution that ``item`` (an execution's detail) retries, from its ``RETRY_PARENT``."""
    return _value_of(_variable_value(_variables(item.get("environment_variables")).get("RETRY_PARENT")), "id")


# --- checkpoints: where a retry resumes ------------------------------------------------

#: The longest a relaunch waits for checkpoints still being live-uploaded, in seconds.
CHECKPOINT_UPLOAD_WAIT = 10.0


def checkpoint_path(input_name: str | None = None, pattern: str | None = None) -> Path | None:
    """The checkpoint file to resume from, or ``None`` to start from the beginning.

    One resume path serves retries and Valohai's own restarts.  Looked for in order:

    1. the file a local retry was handed (the failed process's newest checkpoint);
    2. Valohai's ``_restart`` input, which holds every output of a run interrupted on a
       spot instance (newer than any checkpoint that run started from): of its files
       matching ``pattern``, the last by name (give checkpoints names that sort by age,
       e.g. ``checkpoint-epoch-0007.pt``);
    3. the step's input ``input_name``: how a retry on Valohai gets its checkpoint (of its
       files matching ``pattern``, the last by name; a lone file whatever its name).

    ``input_name`` and ``pattern`` default to what the running ``retry.run`` was given
    (``checkpoint`` and ``*checkpoint*`` without it).
    """
    policy = _process.policy or Policy()
    input_name = input_name or policy.checkpoint or "checkpoint"
    pattern = pattern or policy.checkpoint_pattern
    handed = _handed_checkpoint(_process.state)
    if handed:
        return Path(handed)
    chosen = _resume_choice(_input_files("_restart"), _input_files(input_name), pattern)
    return Path(chosen) if chosen else None


def _input_files(name: str) -> dict[str, str]:
    """One of this execution's inputs as ``{name within the input: path}``.

    From ``inputs.json`` (valohai-utils), else from the input's folder: Valohai's own
    example reads ``/valohai/inputs/_restart`` as a folder.
    """
    folder = Path(valohai.paths.get_inputs_path(name))
    paths = [Path(path) for path in valohai.inputs(name).paths(process_archives=False)]
    if not paths and folder.is_dir():
        paths = sorted(path for path in folder.rglob("*") if path.is_file())
    return {_name_within(path, folder): str(path) for path in paths}


def _name_within(path: Path, folder: Path) -> str:
    """``path``'s name relative to ``folder`` (its input's folder), as patterns see it."""
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:  # not below it (an archive's extracted member, say): its own name
        return path.name


def _resume_choice(restart: Mapping[str, T], given: Mapping[str, T], pattern: str) -> T | None:
    """What to resume from: ``_restart``'s newest checkpoint, else the given input's.

    ``_restart``'s wins: the interrupted run that left it had started from that input.
    The given input's lone file counts even when its name does not fit the pattern (a
    checkpoint someone passed by hand).
    """
    for files in (restart, given):
        newest = max((name for name in files if fnmatch.fnmatchcase(name, pattern)), default=None)
        if newest is not None:
            return files[newest]
    return next(iter(given.values())) if len(given) == 1 else None


def _handed_checkpoint(state: ChainState | None) -> str | None:
    """The checkpoint file a local retry was handed, if it still exists."""
    handed = state.checkpoint if state is not None else os.environ.get("RETRY_CHECKPOINT")
    return handed if handed and os.path.isfile(handed) else None


def _inputs_with_checkpoint(
    inputs: Mapping[str, list[str]], api: ValohaiAPI, execution: Execution, policy: Policy, runtime: Runtime
) -> dict[str, list[str]]:
    """The retry's inputs, with the failed attempt's newest uploaded checkpoint as ``policy.checkpoint``.

    Else the checkpoint the attempt started from, so progress never goes backwards.  The
    outputs list gets at most :data:`CHECKPOINT_BUDGET` of the relaunch's time: a slow or
    failing list costs the newest checkpoint, never the retry.
    """
    name = str(policy.checkpoint)
    try:
        newest = _newest_uploaded_checkpoint(
            api.within(CHECKPOINT_BUDGET), execution, policy.checkpoint_pattern, runtime
        )
    except RetryError as exc:
        _say(f"could not list this execution's outputs, so the retry gets the checkpoint this attempt had: {exc}")
        newest = None
    chosen = {key: list(urls) for key, urls in inputs.items() if key != name}
    if newest is not None:
        _say(f"the retry resumes from {printable(str(newest.get('name')))} (datum://{newest['id']})")
        chosen[name] = [f"datum://{newest['id']}"]
        return chosen
    listed = _config_json("inputs.json")
    files = {kind: _listed_files(listed.get(kind)) for kind in ("_restart", name)}
    started = _resume_choice(files["_restart"], files[name], policy.checkpoint_pattern) or {}
    url = f"datum://{started['datum_id']}" if _text(started.get("datum_id")) else _text(started.get("uri"))
    urls = [url] if url else list(inputs.get(name, []))
    if urls:
        _say(f"no newer checkpoint: the retry resumes from {', '.join(urls)}")
        chosen[name] = list(urls)
    else:
        _say("no checkpoint uploaded yet: the retry starts from the beginning")
    return chosen


def _listed_files(entry: Any) -> dict[str, dict[str, Any]]:
    """An input's files as ``inputs.json`` lists them, by name."""
    files = entry.get("files") if isinstance(entry, dict) else None
    return {str(f["name"]): f for f in files or [] if isinstance(f, dict) and _text(f.get("name"))}


def _newest_uploaded_checkpoint(
    api: ValohaiAPI, execution: Execution, pattern: str, runtime: Runtime
) -> dict[str, Any] | None:
    """The newest uploaded output of ``execution`` whose name matches ``pattern``.

    Checkpoints still being live-uploaded (read-only files not yet taken from the outputs
    folder) are waited for, at most :data:`CHECKPOINT_UPLOAD_WAIT` seconds, and looked for
    once more if the list does not show them yet.
    """
    deadline = runtime.monotonic() + CHECKPOINT_UPLOAD_WAIT
    pending = set(_finished_outputs(pattern))
    if pending:
        _say(f"waiting for {len(pending)} checkpoint(s) still uploading: {printable(', '.join(sorted(pending))[:200])}")
    while _finished_outputs(pattern) and runtime.monotonic() < deadline:
        runtime.sleep(0.2)
    newest, listed = _newest_listed_checkpoint(api, execution, pattern)
    if pending - listed and runtime.monotonic() < deadline:  # an upload may take a moment to be listed
        runtime.sleep(min(1.0, deadline - runtime.monotonic()))
        newest, listed = _newest_listed_checkpoint(api, execution, pattern)
    if pending - listed:
        unlisted = printable(", ".join(sorted(pending - listed))[:200])
        _say(f"checkpoint(s) still not listed after the wait, so the retry gets the newest listed one: {unlisted}")
    return newest


def _newest_listed_checkpoint(
    api: ValohaiAPI, execution: Execution, pattern: str
) -> tuple[dict[str, Any] | None, set[str]]:
    """The newest checkpoint the outputs list shows, and the names of all it showed.

    Asked newest first (``ordering=-ctime``, as ``vh data list`` asks), so reading stops at
    the first page that holds a checkpoint; a server that does not keep that order is
    read on, as far as the list's bound.  Only the attempt's own outputs count: a datum
    whose owner is another execution, or not given, is never handed on.
    """
    newest: dict[str, Any] | None = None
    newest_age: tuple[float, str] = (0.0, "")
    names: set[str] = set()
    last, ordered = None, True
    params = {"output_execution": execution.id, "ordering": "-ctime"}
    try:
        for page in api.pages("/api/v0/data/", params, page_size=1000):
            for datum in page:
                owner = datum.get("output_execution")
                if not (isinstance(owner, dict) and owner.get("id") == execution.id):
                    continue  # an output of another execution, or of none we can tell
                age = (
                    parse_instant(datum["ctime"]) if _is_instant(datum.get("ctime")) else 0.0,
                    str(datum.get("name")),
                )
                ordered, last = ordered and (last is None or age <= last), age
                if _text(datum.get("name")) and _text(datum.get("id")) and fnmatch.fnmatchcase(datum["name"], pattern):
                    names.add(datum["name"])
                    if newest is None or age > newest_age:
                        newest, newest_age = datum, age
            if ordered and newest is not None:
                break  # newest first: what follows is older
    except ListTooLongError as exc:
        _say(f"{exc}; the retry gets the newest checkpoint read so far")
    return newest, names


def _finished_outputs(pattern: str) -> dict[str, Path]:
    """Checkpoints this attempt finished in its outputs folder: read-only (live upload marks a
    file so when it is complete) and written since the attempt started, by name."""
    outputs = Path(valohai.paths.get_outputs_path())
    roots = (
        [outputs] if outputs.is_absolute() else list(dict.fromkeys([Path.cwd() / outputs, Path(_STARTED_IN) / outputs]))
    )
    found = {}
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else ():
            name = path.relative_to(root).as_posix()
            with contextlib.suppress(OSError):  # a file taken away while this looks: not there
                status = path.stat()
                mine = status.st_mtime >= _STARTED_AT - 0.1  # file clocks may lag the process's a little
                finished = stat.S_ISREG(status.st_mode) and not status.st_mode & stat.S_IWUSR
                if mine and finished and fnmatch.fnmatchcase(name, pattern):
                    found[name] = path
    return found


def _newest_local_checkpoint(pattern: str) -> str | None:
    """The newest finished checkpoint this process wrote to its outputs folder (a local run)."""
    found = [(path.stat().st_mtime, name, path) for name, path in _finished_outputs(pattern).items()]
    return str(max(found)[2].resolve()) if found else None


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
    """The folder of Valohai's config files, as valohai-utils finds it.

    ``VH_CONFIG_DIR``, else ``/valohai/config`` in an execution and ``.valohai/config`` locally.
    """
    return Path(valohai.paths.get_config_path())


def read_execution() -> Execution:
    """Read ``execution.json``; raise :class:`RetryError` if it is missing or incomplete."""
    path = config_dir() / "execution.json"
    data = _read_json_object(path)
    missing = [key for key in ("execution-id", "execution-counter", "project-id") if not data.get(f"valohai.{key}")]
    if missing:
        raise RetryError(
            f"{path} lacks {', '.join('valohai.' + key for key in missing)}: not relaunching from partial data"
        )
    counter = _integer(data["valohai.execution-counter"])
    if counter is None:
        raise RetryError(
            f"{path}: valohai.execution-counter is not an integer: {quote(data['valohai.execution-counter'])}"
        )
    return Execution(
        id=str(data["valohai.execution-id"]),
        counter=counter,
        project_id=str(data["valohai.project-id"]),
        tags=tuple(tags_of({"tags": data.get("valohai.execution-tags")})),
        step=data.get("valohai.execution-step") or None,
        title=data.get("valohai.execution-title") or None,
        pipeline_id=data.get("valohai.pipeline-id") or None,
        task_id=data.get("valohai.task-id") or None,
    )


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
    """A config file of this execution as an object; ``{}`` when it is not there."""
    path = config_dir() / name
    return _read_json_object(path) if path.exists() else {}


# --- the API client --------------------------------------------------------------------

DEFAULT_HOST = "https://app.valohai.com"
#: Connect and read timeouts of every API request, in seconds.
REQUEST_TIMEOUT = (5.0, 30.0)
#: Total time the API calls of one relaunch may take, retries of a flaky API included.
API_BUDGET = 60.0
#: Of that, the most the outputs list may take (a checkpoint is worth less than the retry).
CHECKPOINT_BUDGET = 20.0
#: Time for the API calls of one check a retry makes before it works.
CHECK_BUDGET = 20.0
#: How long a retry waits for a parent that has neither ended nor named its retry.  A
#: parent names its retry before it exits; an execution that died is marked ended only
#: once its outputs are uploaded.
PARENT_WAIT = 600.0
#: Bounds of the rare search for copies (its parent named none): list pages, detail reads.
FALLBACK_PAGES = 20
FALLBACK_DETAILS = 20
#: How long a local retry waits for the failed attempt's multiprocessing children to end.
CHILD_WAIT = 10.0
#: At most this many create calls per relaunch whose answer is lost.
MAX_CREATES = 3
#: List pages are read this many items at a time, and at most this many pages.
PAGE_SIZE = 100
MAX_PAGES = 50
#: No answer is read past this size (a list page of 100 executions is far smaller).
MAX_ANSWER_BYTES = 20_000_000
#: Statuses of an execution that has not ended (valohai-cli's ``consts.py``, plus ``stopping_hard``).
INCOMPLETE_STATUSES = frozenset({"created", "queued", "started", "stopping", "stopping_hard"})
#: Statuses of an execution that ended without success.
FAILED_STATUSES = frozenset({"error", "crashed", "stopped"})


class RetryError(Exception):
    """A problem of the retry machinery itself, explained in one line.

    ``exit_code`` is what the process exits with when this ends the attempt.  The
    message never contains the API token: it is masked when the error is made.
    """

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
    """The request may or may not have been acted on (its answer was lost or unreadable)."""


class _UnconfirmedError(APIError):
    """A create may have happened, but none was confirmed."""


class ValohaiAPI:
    """A small client for the few Valohai API calls this module makes.

    Every request has connect and read timeouts and a deadline for the whole answer, so a
    server that trickles bytes cannot hold it.  Connection failures and 429/502/503/504
    answers (and 500 to a read) are asked again with backoff, honouring ``Retry-After``,
    within ``budget`` seconds shared by all calls, measured on ``clock`` (monotonic).
    Redirects are not followed, so the token never goes to another address.
    ``patient=False`` gives up at once on a host that cannot be reached (for commands).
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
        self._auth = _TokenAuth(token)  # given as auth, so that no ~/.netrc entry replaces it
        self._timeout = timeout
        self._session = session or requests.Session()
        self._budget = budget
        self._deadline: float | None = None  # set by the first request: the budget is shared
        self._sleep = sleep
        self._clock = clock
        self._patient = patient
        job = os.environ.get("VH_JOB_ID")  # so that the API's logs can tell which execution asked
        self._headers = {
            "Accept": "application/json",
            "User-Agent": f"retry.py (VH_JOB_ID {job})" if job else "retry.py",
        }

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET ``path`` (below the host) and return the decoded JSON object."""
        return self._request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``path`` and return the decoded JSON answer.

        Raises :class:`_AmbiguousRequestError` when the request may have been acted on
        without a readable answer reaching us: the caller decides what that means.
        """
        return self._request("POST", path, body=dict(body))

    def within(self, seconds: float) -> ValohaiAPI:
        """This client, allowed at most ``seconds`` more of its budget (for a part of a task)."""
        part = copy.copy(self)
        now = self._clock()
        part._deadline = min(self._deadline if self._deadline is not None else now + self._budget, now + seconds)
        return part

    def pages(
        self, path: str, params: Mapping[str, Any], *, page_size: int = 0, max_pages: int = 0
    ) -> Iterator[list[dict[str, Any]]]:
        """The pages of a paged list, read one by one with ``limit`` and ``offset``.

        The ``next`` link of a page only tells whether there is more: it is never
        followed, so the token goes nowhere but this client's host.  An item seen on an
        earlier page (the list moved while it was read) is not repeated.  A list that
        never ends cannot hold the caller: past ``max_pages`` pages (:data:`MAX_PAGES`
        unless given) it raises :class:`ListTooLongError`.
        """
        seen: set[object] = set()
        offset, size = 0, page_size or PAGE_SIZE
        for _ in range(max_pages or MAX_PAGES):
            page = self.get(path, {**params, "limit": size, "offset": offset})
            results = page.get("results")
            if not isinstance(results, list):
                raise APIError(f"GET {path}: a list page without results")
            offset += len(results)  # a server may serve fewer than asked for: skip nothing
            new = [item for item in results if isinstance(item, dict) and _key(item) not in seen]
            seen.update(_key(item) for item in new)
            yield new
            count = _integer(page.get("count"))
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
        if self._deadline is None:
            self._deadline = self._clock() + self._budget
        tries = 0
        while True:
            tries += 1
            left = self._deadline - self._clock()
            if left <= 0:  # the budget bounds the whole task, successful requests included
                raise APIError(f"{method} {path}: out of time (the API calls may take {self._budget:g} s in all)")
            seconds = min(sum(self._timeout), left)  # the whole answer, not only each read
            answer = _exchange(
                self._session,
                method,
                self.host + path,
                seconds,
                params=params,
                json=body,
                headers=self._headers,
                timeout=(min(self._timeout[0], seconds), min(self._timeout[1], seconds)),
                auth=self._auth,
                proxies=dict.fromkeys(["http", "https", "all", *urllib.request.getproxies()])
                if self.host.startswith("http://")  # loopback only: no proxy may see a plain-http token
                else None,
            )
            failure, wait = self._judge(method, path, answer, tries)
            if failure is None:
                return _decode(method, path, answer)
            if self._clock() + wait > self._deadline:
                raise APIError(f"{failure} (gave up after {tries} tries)", failure.status)
            _say(f"{failure}; asking again in {wait:g} s")
            self._sleep(wait)

    def _judge(self, method: str, path: str, answer: _Answer, tries: int) -> tuple[APIError | None, float]:
        """``(None, 0)`` for an answer to decode, else the failure and how long to wait.

        Raises at once what is not worth asking again.
        """
        backoff = float(min(0.5 * 2 ** (tries - 1), 16))  # 0.5, 1, 2, 4, 8, then 16 s
        status = answer.status
        if status is None:  # no answer at all: the connection failed, or the answer was lost
            reason = _reason(answer.error)
            if method == "POST" and not _surely_unsent(answer.error):
                raise _AmbiguousRequestError(f"{method} {path}: the answer was lost ({reason})")
            failure = APIError(f"{method} {path}: could not reach {self.host}: {reason}")
            if not self._patient:
                raise failure
            return failure, backoff
        if answer.body is None and 200 <= status < 300:  # cut off, too slow or too large
            message = f"{method} {path}: HTTP {status}, but the answer was cut off ({_reason(answer.error)})"
            if method == "POST":
                raise _AmbiguousRequestError(message, status)
            if isinstance(answer.error, _TooLargeError):  # it would not shrink if asked again
                raise APIError(message, status)
            return APIError(message, status), backoff
        if method == "POST" and status >= 500:  # behind a gateway the server may have acted all the same
            raise _AmbiguousRequestError(_explain(method, path, answer), status)
        if status in (429, 502, 503, 504) or (method == "GET" and status >= 500):  # asking again is harmless
            return APIError(_explain(method, path, answer), status), max(
                backoff, _retry_after(answer.headers.get("Retry-After", ""), time.time())
            )
        return None, 0.0


@dataclasses.dataclass
class _Answer:
    """What came back for one request, as far as it came: status, headers, body, error."""

    status: int | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | None = None
    error: BaseException | None = None


class _TooLargeError(ValueError):
    """An answer over :data:`MAX_ANSWER_BYTES`."""


def _exchange(session: requests.Session, method: str, url: str, seconds: float, **options: Any) -> _Answer:
    """Send one request and read its whole answer within ``seconds``, whatever the server does.

    Socket timeouts bound each read, not a whole answer: the exchange runs in a daemon
    thread that is left behind (its socket shut down) when the time is up.
    """
    answer = _Answer()
    responses: list[requests.Response] = []

    def talk() -> None:
        try:
            with session.request(method, url, stream=True, allow_redirects=False, **options) as response:
                responses.append(response)
                answer.status, answer.headers = response.status_code, response.headers
                chunks, size = [], 0
                for chunk in response.iter_content(65536):
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise _TooLargeError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
                    chunks.append(chunk)
                answer.body = b"".join(chunks)
        except BaseException as exc:  # handed to the waiting thread
            answer.error = exc

    worker = threading.Thread(target=talk, name="retry-request", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        answer.error = TimeoutError(f"no complete answer within {seconds:g} s")
        connection = getattr(responses[0].raw, "connection", None) if responses else None
        with contextlib.suppress(OSError, AttributeError):  # ends the reader's wait at once
            connection.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
    return answer


class _TokenAuth(requests.auth.AuthBase):
    """``Authorization: Token <token>``, the header the Valohai API takes."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Token {self._token}"
        return request


def _key(item: Mapping[str, Any]) -> object:
    key = item.get("id")
    return key if isinstance(key, (str, int)) else object()  # no id: never taken for another


def _surely_unsent(error: BaseException | None) -> bool:
    """True when the request never left: the connection itself could not be made."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error is not None and error.args else None
    return type(reason).__name__ in ("NewConnectionError", "NameResolutionError")


def _reason(error: BaseException | None) -> str:
    """A short reason for a failed exchange: its innermost cause, e.g. "Connection refused".

    ``requests`` wraps the cause of a connection failure in layers of text with the URL
    repeated; the user needs only the last link of the chain.  (Not ``__context__``: an
    API call made while the job's error is handled would find that error.)
    """
    seen: set[int] = set()
    pending: list[Any] = [error]
    innermost: BaseException | None = error
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
    status = answer.status or 0
    if not 200 <= status < 300:
        raise APIError(_explain(method, path, answer), status)
    problem = "a body that is not JSON"
    with contextlib.suppress(ValueError, RecursionError):
        body = json.loads(answer.body or b"")
        if isinstance(body, dict):  # every answer this module uses is an object
            return body
        problem = "JSON that is not an object"
    failure = _AmbiguousRequestError if method == "POST" else APIError  # a POST that got 2xx was acted on
    raise failure(f"{method} {path}: HTTP {status} with {problem}", status)


def _explain(method: str, path: str, answer: _Answer) -> str:
    status = answer.status
    where = f"{method} {path}: HTTP {status}"
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
        if isinstance(value, list):
            return " ".join(map(flat, value))
        return (
            "; ".join(f"{key}: {flat(item)}" for key, item in value.items()) if isinstance(value, dict) else str(value)
        )

    try:
        return _one_line(flat(json.loads(body or b""))) or "no details"
    except (ValueError, RecursionError):
        return _one_line((body or b"")[:2000].decode(errors="replace"), 200) or "no details"


def _detail(api: ValohaiAPI, execution_id: str) -> dict[str, Any]:
    """An execution's detail, small (no metadata or events)."""
    return api.get(f"/api/v0/executions/{execution_id}/", {"exclude": "metadata,events"})


def execution_pages(api: ValohaiAPI, project_id: str, *, max_pages: int = 0) -> Iterator[list[dict[str, Any]]]:
    """The project's executions that were not deleted, highest counter first, a page at a time.

    ``deleted=false`` and ``ordering=-counter`` are how ``vh execution list`` asks.
    """
    params = {"project": project_id, "ordering": "-counter", "deleted": "false"}
    return api.pages("/api/v0/executions/", params, max_pages=max_pages)


def counter_of(item: Mapping[str, Any]) -> int | None:
    """An API item's counter, when it is a number."""
    return _integer(item.get("counter"))


def _status(item: Mapping[str, Any]) -> str:
    status = item.get("status")
    return status if isinstance(status, str) else "unknown"


def _counter_text(item: Mapping[str, Any]) -> str:
    counter = counter_of(item)
    return f"#{counter}" if counter is not None else "(number unknown)"


def display_url(item: Mapping[str, Any]) -> str:
    """An execution's address in the web UI, or ``""``."""
    urls = item.get("urls")
    return printable(_text(urls.get("display")) or "") if isinstance(urls, dict) else ""


# --- token, host, timeouts -------------------------------------------------------------

#: Shorter tokens are refused: masking them in logs would not be safe (Valohai's have 40).
MIN_TOKEN_LENGTH = 16


def read_token(environ: Mapping[str, str] | None = None) -> str:
    """The API token from ``VH_API_TOKEN``; raise :class:`RetryError` if it is unusable.

    From here on, the token is masked as ``***`` in everything this module prints.
    """
    environ = os.environ if environ is None else environ
    token = environ.get("VH_API_TOKEN", "").strip()
    _remember_secret(token)
    if not token and environ.get("VH_JOB_ID"):
        raise RetryError(
            "VH_API_TOKEN is not set: add your Valohai API token as a secret project "
            "environment variable named VH_API_TOKEN (Project settings > Environment variables)"
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
    """The API address, checked to be safe for a token: the first of these that is set.

    1. ``VALOHAI_HOST``;
    2. inside an execution (``VH_JOB_ID``), the origin of the pre-signed status-detail URL
       in ``api.json``, the installation's own API (so a self-hosted Valohai needs no
       setting); on a laptop a stray ``api.json`` in a checkout is never read;
    3. ``https://app.valohai.com``.

    Plain ``http`` is refused unless the host is a loopback address (local tests).
    """
    environ = os.environ if environ is None else environ
    configured = environ.get("VALOHAI_HOST", "").strip()
    if configured:
        return _origin(configured, "VALOHAI_HOST")
    signed = _signed_call("set_status_detail") if environ.get("VH_JOB_ID") else None
    if signed is None:
        return DEFAULT_HOST
    parts = parse_url(str(signed.get("url")))
    return _origin(f"{parts.scheme}://{parts.netloc}", "the status-detail URL in api.json")


def _signed_call(endpoint: str) -> dict[str, Any] | None:
    """A pre-signed call of ``api.json`` (``url``, ``method``, ``headers``); None without the file.

    An ``api.json`` that is there but unusable is an error, not a reason to send a
    self-hosted installation's token to app.valohai.com.
    """
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
    return dict(entry)  # type: ignore[arg-type]  # checked to be a dict above


def _origin(address: str, name: str) -> str:
    """``scheme://host[:port]`` of ``address``, or :class:`RetryError` if a token must not go there.

    Parsed with the URL parser of the HTTP library that makes the requests (urllib3), so
    the host checked is the host connected to.  User info, backslashes, whitespace, paths
    and queries are refused.
    """
    text = address.strip().rstrip("/")
    example = "an address like https://valohai.example.com"
    if not text or not text.isprintable() or any(character.isspace() or character in "\\@" for character in text):
        raise RetryError(f"{name} must be {example}, without spaces, backslashes or user info; got {quote(text, 80)}")
    try:
        url = parse_url(text)
    except ValueError:
        raise RetryError(f"{name} must be {example}, got {quote(text, 80)}") from None
    if url.scheme not in ("https", "http") or not url.host or url.path or url.query or url.fragment:
        raise RetryError(f"{name} must be {example} (no path or query), got {quote(text, 80)}")
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
    if not raw:
        return REQUEST_TIMEOUT
    seconds = float(raw) if re.fullmatch(r"[0-9]{1,6}(\.[0-9]{1,6})?", raw) else -1.0
    if not 0 < seconds <= 600:
        raise ConfigError(
            f"RETRY_API_TIMEOUT must be a number of seconds above 0 and at most 600, got {quote(raw, 20)}"
        )
    return (min(REQUEST_TIMEOUT[0], seconds), seconds)


# --- status detail and output ----------------------------------------------------------

#: The longest one status-detail call may take, whatever the server does.
STATUS_DETAIL_TIMEOUT = 10.0
#: The longest a status detail gets (its record included).
STATUS_DETAIL_LIMIT = 1000
#: A record is written up to this many times: the next copy of the chain decides by it.
RECORD_TRIES = 3


def set_status_detail(text: str) -> bool:
    """Set this execution's status detail; best effort, never raises, never blocks long.

    Uses the pre-signed call that Valohai puts in ``api.json`` (no token involved), as
    ``valohai.set_status_detail`` does, but bounded in time.  Returns whether it was set;
    locally (no ``api.json``) it does nothing.
    """
    try:
        call = _signed_call("set_status_detail") if os.environ.get("VH_JOB_ID") else None
        if call is None:
            return False
        try:
            seconds = min(STATUS_DETAIL_TIMEOUT, request_timeout()[1])
        except ConfigError:  # a broken RETRY_API_TIMEOUT is reported on its own; the detail still goes
            seconds = STATUS_DETAIL_TIMEOUT
        method, url = str(call.pop("method", "POST")), str(call.pop("url"))
        call.update(json={"status_detail": _one_line(text, STATUS_DETAIL_LIMIT)}, timeout=(min(5.0, seconds), seconds))
        answer = _exchange(requests.Session(), method, url, seconds, **call)
        if answer.body is None or not 200 <= (answer.status or 0) < 300:
            raise answer.error or APIError(f"HTTP {answer.status}")
    except Exception as exc:  # a status detail must never hide the real error
        _say(f"could not set the status detail: {_reason(exc)}")
        return False
    return True


def _write_record(text: str, sleep: Callable[[float], None]) -> bool:
    """Set the status detail that holds an attempt's record, asking again a few times."""
    for tries in range(1, RECORD_TRIES + 1):
        if set_status_detail(text):
            return True
        if tries < RECORD_TRIES:
            sleep(0.5 * tries)
    return False


def _print_traceback(error: BaseException) -> None:
    """The traceback, masked, with any line past 100,000 characters cut (a huge message
    must not cost the memory the verdict needs)."""
    for line in traceback.format_exception(type(error), error, error.__traceback__):
        cut = line if len(line) <= 100_000 else f"{line[:100_000]}... ({len(line) - 100_000} more characters)\n"
        _write(_mask(cut))


def describe(error: BaseException) -> str:
    """``Type: message`` on one line, masked and cut; safe for any exception, cheap for a huge one."""
    try:
        text = _one_line(error)
    except Exception:  # an exception whose __str__ fails still gets a summary
        text = "(its message could not be shown)"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def quote(value: object, limit: int = 60) -> str:
    """A value someone gave, quoted for a message: masked, user info hidden, *then* cut.

    Safe for any value (an int too large to print, an object whose ``str`` fails).
    """
    try:
        text = _mask((value if isinstance(value, str) else repr(value))[: limit * 4 + 200])
    except Exception:  # repr() refused it (an int of 5000 digits): say what it is instead
        return f"<a {type(value).__name__}>"
    text = re.sub(r"(?<=//)[^/@]*@", "***@", text)  # https://user:password@host
    text = printable(text if len(text) <= limit else text[:limit] + "...")
    return repr(text) if isinstance(value, str) else text


def printable(text: str) -> str:
    """``text`` with every control, format (bidi, zero-width) and line-separator character
    shown as an escape (``\\n``, ``\\x1b``, ``\\u2028``): one line that cannot forge another
    or steer a terminal."""
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char)[0] == "C" or unicodedata.category(char) in ("Zl", "Zp")
        else char
        for char in text
    )


def _one_line(value: object, limit: int = 300) -> str:
    """``value`` as one line of at most ``limit`` characters, the token masked *before* cutting.

    Only the start of a long text is looked at, so a message of any size costs little.
    """
    longest = max(map(len, _secrets), default=0) + 64
    text = " ".join(_mask(str(value)[: 2 * limit + longest]).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Every token this process has used or seen: masked in everything it prints or sends.
_secrets: set[str] = set()


def _remember_secret(secret: str) -> None:
    if secret:
        _secrets.add(secret)


def _remember_token(environ: Mapping[str, str]) -> None:
    """Mask the token of ``environ`` (a runtime's, not only ``os.environ``) from now on."""
    _remember_secret(str(environ.get("VH_API_TOKEN", "")).strip())


def _mask(text: str) -> str:
    _remember_token(os.environ)
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _say(message: str) -> None:
    """Print one ``[retry]`` line; line breaks and control characters in it are shown escaped."""
    _write(f"[retry] {printable(_mask(message))}\n")


def _write(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr closed or broken: nothing else can be done
        sys.stderr.write(text)
        sys.stderr.flush()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def _seconds(seconds: float) -> str:
    """A wait as people read it: whole seconds, or tenths below ten (rounded up: never "0")."""
    return f"{seconds:.0f}" if seconds >= 10 else f"{-(-seconds * 10 // 1) / 10:g}"


# --- the world, as the retry logic sees it ---------------------------------------------


@dataclasses.dataclass
class Runtime:
    """What the retry logic needs from the world; tests replace the parts they control.

    ``now`` is the wall clock (not-before instants cross machines); ``monotonic`` measures
    budgets.  ``replace_process(argv, environ, cwd)`` starts a local retry in place of
    this process; ``argv`` defaults to this process's own command line.
    """

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
        """Whether this process is a Valohai execution's own: ``VH_JOB_ID`` is set, and no
        other process of the execution already runs ``retry.run`` (``RETRY_OWNER_PID``).

        A program the job starts inherits the execution's variables; if it uses
        ``retry.run`` too, it retries itself as local processes, never the execution.
        """
        owner = self.environ.get("RETRY_OWNER_PID")
        return bool(self.environ.get("VH_JOB_ID")) and owner in (None, "", str(os.getpid()))


_INSTANT = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?([Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?"
)


def parse_instant(text: str) -> float:
    """An ISO 8601 instant (``Z``, an offset like ``+01``, ``+0100`` or ``+01:00``, or none
    for UTC; any fraction) as epoch seconds.

    Raises ``ValueError`` for anything else.  Parsed by hand: before Python 3.11
    ``datetime.fromisoformat`` reads neither ``Z`` nor every length of fraction.
    """
    match = _INSTANT.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an ISO 8601 instant: {quote(text, 40)}")
    date, time_of_day, fraction, zone = match.groups()
    offset = "+00:00" if zone in (None, "Z", "z") else f"{zone[:3]}:{zone[3:].lstrip(':') or '00'}"
    moment = datetime.datetime.fromisoformat(f"{date}T{time_of_day}{offset}")
    return moment.timestamp() + float(f"0.{fraction or 0}")


def _is_instant(value: Any) -> bool:
    return isinstance(value, str) and _INSTANT.fullmatch(value.strip()) is not None


def _format_instant(timestamp: float) -> str:
    """``timestamp`` as an ISO 8601 UTC instant in milliseconds, rounded *up* (never early)."""
    milliseconds = -(-int(timestamp * 1_000_000) // 1000)  # ceiling, in integers: no float rounding
    moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(milliseconds=milliseconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


if __name__ == "__main__":  # pragma: no cover - a hint for whoever runs the file itself
    sys.stderr.write("[retry] retry.py is imported by a job: see its docstring; chains.py queries chains\n")
    sys.exit(EXIT_BAD_CONFIG)
