"""Retry a Valohai execution after a transient error by starting a fresh copy of it.

Copy this one file into your project (it needs ``requests`` and ``valohai-utils``) and
wrap your entry point::

    import retry

    retry.run(main, retries=3, delay=60)

The whole story, in the order this file tells it:

1. :func:`run` calls ``main``.  A retry first waits out what is left of its delay (the
   not-before instant it was handed), after checking that it is the one copy of its retry.
2. When ``main`` raises, :func:`handle_failure` decides: an error that is not transient
   (a bug) fails at once with ``Not retried ...``; when the ``retry: N`` tag says the
   retries are used up, ``Gave up after N retries ...``; else a retry is started.
3. On Valohai, the execution reads its own detail from the API, creates a copy of itself
   tagged ``retry: N+1`` (same commit, step, parameters, inputs, environment, resources),
   which must not start work before the failure plus the delay, sets its status detail and
   exits with :data:`EXIT_RETRY_STARTED` (75): its machine is released at once.  If the
   create call's answer is lost, the retry is looked for before it is asked for again.
4. Locally (no ``VH_JOB_ID``), the failed process is replaced by a fresh run of the same
   command line, with the retry number in ``RETRY_LOCAL_NUMBER``: no account needed.
5. With ``checkpoint="<input>"``, the retry gets the failed attempt's newest checkpoint in
   that input, and :func:`checkpoint_path` tells the job where to resume from.

The rest is the plumbing all that needs: the policy, tags, the retry's payload,
checkpoints, the API client, the token and host, the status detail.  ``chains.py``,
beside this file, queries chains and reports on them; this file needs nothing from it.

Environment:
    ``VH_API_TOKEN``   API token, set as a *secret* project environment variable.
    ``VALOHAI_HOST``   API address; rarely needed: inside an execution the address of the
                       installation's own API is read from ``api.json``, and the default
                       is ``https://app.valohai.com``.
    ``VH_CONFIG_DIR``  where ``execution.json`` and friends are (default ``/valohai/config``
                       in an execution, ``.valohai/config`` locally, as valohai-utils has it).
    ``RETRY_API_TIMEOUT``  read timeout of each API request in seconds (default 30).

Exit codes: 0 success (or a duplicate retry that stood down), :data:`EXIT_GAVE_UP` (1),
:data:`EXIT_BAD_CONFIG` (2), :data:`EXIT_RELAUNCH_FAILED` (3),
:data:`EXIT_RETRY_UNCONFIRMED` (4), :data:`EXIT_RETRY_STARTED` (75).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import email.utils
import fnmatch
import inspect
import ipaddress
import json
import math
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
import urllib.request
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import requests
import requests.auth
import valohai
import valohai.paths
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

try:  # valohai-utils' pre-signed call helper; set_status_detail() wraps it without a timeout
    from valohai.internals.api_calls import send_api_request as _send_signed_request
except ImportError:  # pragma: no cover - a future valohai-utils may move it
    _send_signed_request = None  # type: ignore[assignment]

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

#: The attempt failed and a retry execution was started (``EX_TEMPFAIL``).
EXIT_RETRY_STARTED = 75
#: The attempt failed for good: retries exhausted, the error is not transient, or the
#: job itself exited with a non-zero code.
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
    try:
        policy = _process.policy = _policy_from(policy, settings)
        attempt = _begin_attempt(runtime)
    except (ConfigError, TypeError) as exc:
        _end_process(_finish(f"invalid retry settings: {_one_line(exc)}", EXIT_BAD_CONFIG))
    _announce(policy, attempt.number, runtime)
    try:
        _stand_down_if_duplicate(attempt, policy, runtime)
        if wait_for_turn(attempt.not_before, policy, attempt.number, runtime) > 0:
            _stand_down_if_duplicate(attempt, policy, runtime)  # a copy the API showed late is seen now
        result = _call(fn)
    except SystemExit as stop:  # the job ended itself: respect it, but say so
        _end_process(_job_exit(stop, attempt.number))
    except KeyboardInterrupt:
        _finish(f"Not retried: attempt {attempt.number + 1} was interrupted (KeyboardInterrupt)", EXIT_GAVE_UP)
        raise
    except _MisuseError as exc:
        _end_process(_finish(f"invalid use of retry.run: {exc}", EXIT_BAD_CONFIG))
    except BaseException as error:  # the point is to classify any failure (asyncio's CancelledError too)
        code = handle_failure(error, policy, runtime=runtime)
        del error  # drop the traceback's frames (and what they hold) before exiting
        _end_process(code)
    _say(f"the job succeeded on attempt {attempt.number + 1}")
    return result


def _policy_from(policy: object, settings: Mapping[str, Any]) -> Policy:
    if policy is None:
        return Policy(**settings)
    if not isinstance(policy, Policy):
        raise ConfigError(f"policy must be a retry.Policy, got {type(policy).__name__}")
    if settings:
        raise ConfigError(f"give a policy or settings, not both (got {', '.join(sorted(settings))} too)")
    return policy


# --- the decision on a failure ---------------------------------------------------------


def handle_failure(error: BaseException, policy: Policy, *, runtime: Runtime | None = None) -> int:
    """Deal with ``error`` from an attempt: retry it or give up; return the exit code.

    Prints the traceback and a one-line summary, and sets the status detail.  One failure
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
        _process.outcome = _decide(error, policy, runtime)
        return _process.outcome


def _decide(error: BaseException, policy: Policy, runtime: Runtime) -> int:
    _print_traceback(error)
    summary = describe(error)
    try:
        transient = policy.should_retry(error)
    except Exception as exc:  # a broken retry_on predicate must not hide the real error
        _print_traceback(exc)
        return _finish(f"Not retried: retry_on raised {describe(exc)}: {summary}", EXIT_GAVE_UP)
    if not transient:
        return _finish(f"Not retried (not a transient error): {summary}", EXIT_GAVE_UP)
    try:
        done = _retries_done(runtime)
    except RetryError as exc:  # fail closed: an unknown count could restart the chain forever
        return _finish(f"{summary} - not retried: cannot tell which retry this is: {exc}", exc.exit_code)
    progress = _Progress(number=done + 1)
    try:
        if _out_of_retries(done, policy):
            return _finish(_gave_up_message(done, summary), EXIT_GAVE_UP)
        if runtime.on_valohai:
            return _retry_on_valohai(error, summary, policy, progress, runtime)
        return _retry_locally(error, summary, policy, progress, runtime)
    except Exception as exc:
        if not isinstance(exc, RetryError):  # a bug or an answer of a shape never seen
            _print_traceback(exc)
        reason = str(exc) if isinstance(exc, RetryError) else f"unexpected {describe(exc)}"
        which = f"retry {progress.number}/{policy.retries}"
        if progress.maybe_created:
            message = (
                f"{summary} - {which} may have been started, but the API never confirmed it: {reason};"
                f" look for the tag 'retry: {progress.number}' in the project's executions before starting anything"
            )
            return _finish(message, EXIT_RETRY_UNCONFIRMED)
        code = exc.exit_code if isinstance(exc, RetryError) else EXIT_RELAUNCH_FAILED
        return _finish(f"{summary} - could not start {which}: {reason}", code)


@dataclasses.dataclass
class _Progress:
    """How far a relaunch got: what its failure message may claim."""

    number: int
    maybe_created: bool = False  # a create call was sent and its outcome is not known to be "no"


def _retries_done(runtime: Runtime) -> int:
    """How many retries came before this attempt (its ``retry: N``), from its config."""
    if runtime.on_valohai:
        return read_execution().retry
    return current_retry(runtime)


def _out_of_retries(done: int, policy: Policy) -> bool:
    return done > MAX_RETRIES or done >= policy.retries


def _gave_up_message(done: int, summary: str) -> str:
    if done > MAX_RETRIES:
        return (
            f"Not retried: this execution is tagged as retry {done}, above the ceiling of {MAX_RETRIES};"
            f" remove its 'retry:' tag to start a new chain: {summary}"
        )
    return f"Gave up after {done} {'retry' if done == 1 else 'retries'}: {summary}"


# --- relaunching on Valohai ------------------------------------------------------------


def _retry_on_valohai(error: BaseException, summary: str, policy: Policy, progress: _Progress, runtime: Runtime) -> int:
    token = read_token(runtime.environ)
    execution = read_execution()
    if execution.pipeline_id:
        raise RetryError("this execution runs in a pipeline, which owns retrying: give its node on-error: retry")
    if execution.task_id:
        _say("this execution belongs to a task; the retry will run outside the task")
    api = _api_for(runtime, token)
    detail = api.get(f"/api/v0/executions/{execution.id}/", {"exclude": "metadata,events"})
    # The count is the highest of every source read: a lost tag must not restart the chain.
    done = max(execution.retry, retry_number(tags_of(detail)))
    progress.number = done + 1
    if _out_of_retries(done, policy):
        return _finish(_gave_up_message(done, summary), EXIT_GAVE_UP)
    not_before = _plan_wait(error, policy, progress.number, runtime)
    if not_before is None:  # the delay was spent waiting here: it is not the API's time
        api.reset_budget()
    payload = build_retry_payload(detail, progress.number, parent_id=execution.id, not_before=not_before)
    if policy.checkpoint:
        current = payload["inputs"].get(policy.checkpoint, [])
        outputs_api = _api_for(runtime, token, budget=CHECK_BUDGET)  # a slow list must not cost the retry
        checkpoint = _checkpoint_on_valohai(outputs_api, execution, policy, runtime, current)
        payload["inputs"] = _inputs_with_checkpoint(payload["inputs"], checkpoint, policy)
        api.reset_budget()  # the time spent on checkpoints was not the create call's
    created = relaunch(api, execution, progress.number, payload, progress=progress)
    return _announce_retry(api, execution, created, summary=summary, policy=policy, number=progress.number)


def relaunch(
    api: ValohaiAPI,
    execution: Execution,
    number: int,
    payload: Mapping[str, Any],
    *,
    progress: _Progress | None = None,
) -> dict[str, Any]:
    """Create retry ``number`` of ``execution`` from ``payload``; return what is known of it.

    Creating is not idempotent.  When the answer to the create call is lost, the
    project's executions are searched for the retry first, and it is created again only
    when it is not there.  A create whose answer arrives but cannot be read did create
    the retry; it is looked up to learn its number (``{}`` when that fails too).
    A retry created twice anyway (the API stored it after we gave up on the answer)
    stands down when it starts: see :func:`run`.
    """
    progress = progress or _Progress(number=number)
    try:
        progress.maybe_created = True
        return _create(api, payload)
    except _UnreadableAnswerError as exc:
        return _look_up_created(api, execution, number, payload, exc)
    except _AmbiguousRequestError as exc:
        _say(f"{exc}; looking for the retry before asking again")
    except RetryError:  # a definite refusal: nothing was created
        progress.maybe_created = False
        raise
    found = _find_created(api, execution, number, payload)
    if found is not None:
        _say(f"the retry was created after all: {_counter_text(found)}")
        return found
    try:
        return _create(api, payload)
    except _UnreadableAnswerError as exc:
        return _look_up_created(api, execution, number, payload, exc)


def _create(api: ValohaiAPI, payload: Mapping[str, Any]) -> dict[str, Any]:
    return api.post("/api/v0/executions/", payload)


def _find_created(
    api: ValohaiAPI, execution: Execution, number: int, payload: Mapping[str, Any]
) -> dict[str, Any] | None:
    like = {key: payload.get(key) for key in ("step", "title", "parameters")}
    return find_retry(api, execution.project_id, execution.id, number, parent_counter=execution.counter, like=like)


def _look_up_created(
    api: ValohaiAPI, execution: Execution, number: int, payload: Mapping[str, Any], error: APIError
) -> dict[str, Any]:
    """The retry a create call made although its answer was unreadable (``{}`` if not found)."""
    _say(f"{error}; the retry was created, looking up its number")
    try:
        found = _find_created(api, execution, number, payload)
    except Exception as exc:  # the retry exists either way: this only names it
        _say(f"could not look up the retry's number: {_one_line(exc)}")
        return {}
    return found or {}


def _announce_retry(
    api: ValohaiAPI, execution: Execution, created: Mapping[str, Any], *, summary: str, policy: Policy, number: int
) -> int:
    """Log and set the status detail of a started retry; nothing here can undo the start."""
    counter = _counter_text(created)
    message = f"{summary} - retry {number}/{policy.retries} started as {counter}"
    try:
        _say(f"retry {number}/{policy.retries} is execution {counter}: {display_url(created)}")
        if number == 1 and policy.retries > 1:  # the project's variables do not change along the chain
            message += _token_warning(api, execution.project_id, counter)
    except Exception as exc:  # best effort: the retry exists whatever happens here
        _say(f"could not check the project's variables: unexpected {describe(exc)}")
    return _finish(message, EXIT_RETRY_STARTED)


def _token_warning(api: ValohaiAPI, project_id: str, counter: str) -> str:
    """A warning if the retry will lack the token, because it is not a project variable.

    A token set on one execution only is not copied (a secret's value never leaves the
    API), so the retry could not start retries of its own. Best effort: "" if unsure.
    """
    try:
        project = api.get(f"/api/v0/projects/{project_id}/")
    except RetryError as exc:
        _say(f"could not check the project's variables: {exc}")
        return ""
    if "environment_variables" not in project or "VH_API_TOKEN" in _variables(project["environment_variables"]):
        return ""
    warning = (
        f"warning: VH_API_TOKEN is not a project variable, so {counter} cannot start further retries:"
        " add it as a secret in Project settings > Environment variables"
    )
    _say(warning)
    return f"; {warning}"


def _stand_down_if_duplicate(attempt: _Attempt, policy: Policy, runtime: Runtime) -> None:
    """On Valohai, make sure this is the one retry N of its parent; a duplicate exits 0.

    The create call is not idempotent, so a lost or late answer can leave two copies of
    one retry.  The copy with the lowest counter does the work; any other stands down
    before doing anything.  A lower copy that failed without starting a retry of its own
    (it never got to the work) does not count.  When the check cannot be made, the work
    is done.
    """
    if not (runtime.on_valohai and attempt.number and attempt.parent):
        return
    which = f"retry {attempt.number}/{policy.retries}"
    try:
        token = read_token(runtime.environ)
        execution = read_execution()
        api = _api_for(runtime, token, budget=CHECK_BUDGET)
        like = {"step": execution.step, "title": execution.title}
        twin = find_retry(
            api, execution.project_id, attempt.parent, attempt.number, below=execution.counter, like=like, working=True
        )
    except Exception as exc:  # the check is a safeguard: without it the work still happens
        reason = str(exc) if isinstance(exc, RetryError) else f"unexpected {describe(exc)}"
        _say(f"could not check that this is the only {which} of its parent, so doing the work: {reason}")
        return
    if twin is None:
        return
    message = (
        f"Stood down: {_counter_text(twin)} is already {which} of the same failure and does the work;"
        f" this duplicate did nothing {display_url(twin)}".rstrip()
    )
    _end_process(_finish(message, 0))


# --- relaunching locally ---------------------------------------------------------------


def _retry_locally(error: BaseException, summary: str, policy: Policy, progress: _Progress, runtime: Runtime) -> int:
    """Replace this process with a fresh run of the same command line (the retry)."""
    number = progress.number
    argv = list(runtime.argv) if runtime.argv is not None else _command_line()
    not_before = _plan_wait(error, policy, number, runtime)
    environ = {name: value for name, value in runtime.environ.items() if name not in _CHAIN_VARIABLES}
    environ["RETRY_LOCAL_NUMBER"] = str(number)
    if not_before:
        environ["RETRY_NOT_BEFORE"] = not_before
    if policy.checkpoint:
        checkpoint = _newest_local_checkpoint(policy.checkpoint_pattern) or _handed_checkpoint()
        if checkpoint:
            environ["RETRY_CHECKPOINT"] = checkpoint
            _say(f"the next process resumes from the checkpoint {checkpoint}")
        else:
            _say("no checkpoint yet: the retry starts from the beginning")
    _finish(f"{summary} - starting retry {number}/{policy.retries} as a new process", EXIT_RETRY_STARTED)
    _flush()
    # Normally this does not return: the retry takes over this process (same PID), so a
    # chain holds one process at a time and signals reach the attempt that is running.
    return runtime.replace_process(argv, environ, _STARTED_IN)


def _replace_process(argv: Sequence[str], environ: Mapping[str, str], cwd: str) -> int:
    """Run ``argv`` in place of this process; on Windows, as a child whose code is returned."""
    if os.name != "posix":  # os.exec* on Windows starts a new process and exits 0 at once
        return subprocess.call(list(argv), env=dict(environ), cwd=cwd)
    _end_daemonic_children()
    _reset_signals()
    try:
        os.chdir(cwd)
        os.execve(argv[0], list(argv), dict(environ))
    except OSError as exc:
        raise RetryError(f"could not run {argv[0]} in {cwd}: {exc.strerror or exc}") from None
    raise AssertionError("unreachable: os.execve returned")  # pragma: no cover


def _end_daemonic_children() -> None:
    """End the job's daemonic multiprocessing workers, as Python's own exit would.

    A replaced process runs no exit handlers: without this they would outlive it.
    """
    multiprocessing = sys.modules.get("multiprocessing")
    for child in multiprocessing.active_children() if multiprocessing else ():
        if child.daemon:
            child.terminate()
            child.join(1)


def _reset_signals() -> None:
    """Give the retry the signals of a fresh process: none blocked, none ignored.

    A replaced process keeps both; a job that blocked or ignored SIGTERM would otherwise
    hand that on, and its retry could not be stopped.  (Only the main thread can reset
    handlers; the blocked set is this thread's, and is what the retry inherits.)
    """
    with contextlib.suppress(AttributeError, OSError, ValueError):
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                signal.signal(getattr(signal, name), signal.SIG_DFL)


def _command_line() -> list[str]:
    """This process's command line as it started, runnable again from any folder."""
    script = _ARGV_AT_START[0] if _ARGV_AT_START else ""
    if script in ("", "-"):
        raise RetryError("the script was read from standard input, so it cannot be run again: save it to a file")
    if not sys.executable:
        raise RetryError("the path of the Python interpreter is unknown (sys.executable is empty)")
    original = list(getattr(sys, "orig_argv", None) or [])  # 3.10+: keeps flags such as -u or -X
    if original:
        command = [sys.executable, *original[1:]]
        position = len(original) - len(_ARGV_AT_START)
        if 0 < position < len(command) and command[position] == script:  # a script path, not -c or -m
            command[position] = _script_path(script)
        return command
    # Python 3.8 and 3.9: the command line is rebuilt from what the interpreter knows.
    flags: list[str] = getattr(subprocess, "_args_from_interpreter_flags", list)()  # -O, -X, -W ...
    if script == "-c":
        raise RetryError("a program given with -c cannot be run again before Python 3.10: save it to a file")
    module = getattr(getattr(sys.modules.get("__main__"), "__spec__", None), "name", None)
    if isinstance(module, str) and module != "__main__":  # python -m package.module
        module = module[: -len(".__main__")] if module.endswith(".__main__") else module
        return [sys.executable, *flags, "-m", module, *_ARGV_AT_START[1:]]
    return [sys.executable, *flags, _script_path(script), *_ARGV_AT_START[1:]]


def _script_path(script: str) -> str:
    """The script's absolute path, checked to be a file (or folder) that can be read again."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    # __main__.__file__ is absolute from Python 3.9 on, whatever os.chdir did before this import.
    path = main_file if isinstance(main_file, str) and os.path.isabs(main_file) else os.path.join(_STARTED_IN, script)
    if not (os.path.isfile(path) or os.path.isdir(path)):  # a pipe (/dev/stdin, <(...)) reads only once
        raise RetryError(
            f"the script {quote(path)} is not a regular file (a pipe?), so it cannot be run again: save it to a file"
        )
    return path


# How the job started: a retry starts the same way, whatever os.chdir or the job did since.
_STARTED_IN = os.getcwd()
_ARGV_AT_START = list(sys.argv)


# --- the attempt: its number, its turn, the job itself ---------------------------------


@dataclasses.dataclass(frozen=True)
class _Attempt:
    """What a chain hands to the attempt that runs now."""

    number: int  # the retry number: 0 for the first attempt
    not_before: str | None  # RETRY_NOT_BEFORE: do not start work before this instant
    parent: str | None  # RETRY_PARENT: the execution whose failure this retries
    checkpoint: str | None = None  # RETRY_CHECKPOINT: locally, the file to resume from


@dataclasses.dataclass
class _ProcessState:
    """What one process remembers: its attempt, and the one failure it acted on."""

    attempt: _Attempt | None = None
    policy: Policy | None = None  # the running retry.run's: checkpoint_path() reads its settings
    outcome: int | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


_process = _ProcessState()

#: The variables a chain passes to its next attempt; consumed when the attempt starts.
_CHAIN_VARIABLES = ("RETRY_LOCAL_NUMBER", "RETRY_NOT_BEFORE", "RETRY_PARENT", "RETRY_CHECKPOINT")


def _begin_attempt(runtime: Runtime) -> _Attempt:
    """Read what the chain handed this attempt, and take it out of the environment.

    Consumed, the variables cannot leak into programs the job starts (a helper script
    that uses ``retry.run`` would otherwise think it is a late retry).
    """
    if _process.attempt is not None:  # a second run() in this process (a thread, a later stage)
        return _process.attempt
    environ = runtime.environ
    attempt = _Attempt(
        number=_read_retry_number(runtime),
        not_before=environ.get("RETRY_NOT_BEFORE") or None,
        parent=environ.get("RETRY_PARENT") or None,
        checkpoint=environ.get("RETRY_CHECKPOINT") or None,
    )
    if isinstance(environ, MutableMapping):
        for name in _CHAIN_VARIABLES:
            environ.pop(name, None)
        if runtime.on_valohai:  # programs this one starts inherit it, and know they are not the execution
            environ["RETRY_OWNER_PID"] = str(os.getpid())
    _process.attempt = attempt
    return attempt


def current_retry(runtime: Runtime | None = None) -> int:
    """This attempt's retry number: 0 for the first attempt, N for the one tagged ``retry: N``.

    Raises :class:`ConfigError` when a local chain's ``RETRY_LOCAL_NUMBER`` is not a number.
    """
    if _process.attempt is not None:  # run() read it, and took it out of the environment
        return _process.attempt.number
    return _read_retry_number(runtime or Runtime())


def _read_retry_number(runtime: Runtime) -> int:
    if runtime.on_valohai:
        try:
            return read_execution().retry
        except RetryError:
            return 0  # handle_failure reads it again and refuses to relaunch on an unknown count
    raw = runtime.environ.get("RETRY_LOCAL_NUMBER", "").strip()
    if not raw:
        return 0
    number = _ascii_count(raw)
    if number is None or number > MAX_RETRIES:
        raise ConfigError(f"RETRY_LOCAL_NUMBER must be a retry number from 0 to {MAX_RETRIES}, got {quote(raw, 20)}")
    return number


def _announce(policy: Policy, number: int, runtime: Runtime) -> None:
    attempt, tag = f"attempt {number + 1} of up to {policy.retries + 1}", format_retry_tag(number)
    if runtime.on_valohai:
        _say(f"{attempt}, running on Valohai as '{tag}'" if number else f"{attempt}, running on Valohai")
    elif runtime.environ.get("VH_JOB_ID"):
        _say(f"{attempt}, running in a program the job started: its retries run as local processes")
    else:
        _say(f"{attempt}, running locally as '{tag}'" if number else f"{attempt}, running locally")
    if runtime.on_valohai and policy.retries and not runtime.environ.get("VH_API_TOKEN", "").strip():
        _say("warning: VH_API_TOKEN is not set, so a failure here cannot start a retry")


def wait_for_turn(not_before: str | None, policy: Policy, number: int, runtime: Runtime) -> float:
    """Wait until the not-before instant a retry was given, if any; return the wait.

    The instant is honoured whatever the retry number says.  An unparsable instant, or
    one further away than the policy's longest wait (clock skew, tampering), is clamped
    to that longest wait with a warning.
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
    set_status_detail(f"Waiting {remaining:.0f} s before retry {number}/{policy.retries} starts work")
    countdown(remaining, f"retry {number}/{policy.retries} waits {remaining:.0f} s before it starts work", runtime)
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


def _plan_wait(error: BaseException, policy: Policy, number: int, runtime: Runtime) -> str | None:
    """Wait here (``wait_in="failed"``) or return the retry's not-before instant."""
    wait = policy.wait_before(number, error, uniform=runtime.uniform, now=runtime.now())
    if policy.wait_in == "failed":
        countdown(
            wait, f"waiting {wait:.0f} s in this execution before starting retry {number}/{policy.retries}", runtime
        )
        return None
    _say(f"retry {number}/{policy.retries} will wait {wait:.0f} s before it starts work")
    return _format_instant(runtime.now() + wait)


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
    except RuntimeError:  # no loop running in this thread: the normal case
        return asyncio.run(result)  # type: ignore[no-any-return]
    result.close()
    raise _MisuseError("it got a coroutine inside a running event loop: call retry.run from synchronous code")


def _job_exit(stop: SystemExit, number: int) -> int:
    """The exit code for a job that called ``sys.exit``: its own success, or a failure for good."""
    if stop.code is None or stop.code == 0:
        _say(f"the job succeeded on attempt {number + 1} (it called sys.exit({stop.code!r}))")
        return 0
    return _finish(f"Not retried: the job called sys.exit({_one_line(repr(stop.code), 80)})", EXIT_GAVE_UP)


def _end_process(code: int) -> NoReturn:
    """End the process with ``code`` (a failure this process handled wins over a success).

    From a thread other than the main one, ``sys.exit`` would end only that thread; and a
    failed attempt whose job left other threads running (a heartbeat, a loader) would wait
    for them, holding its machine.  Both end the whole process at once.
    """
    with _process.lock:  # a relaunch under way in another thread ends first
        code = code if _process.outcome is None else _process.outcome
    in_main = threading.current_thread() is threading.main_thread()
    waiting_for = _live_threads()
    if in_main and (code == 0 or not waiting_for):
        sys.exit(code)
    if not in_main:
        _say(f"retry.run ran outside the main thread: ending the whole process with exit code {code}")
    else:
        _say(f"ending the process with exit code {code} now, not waiting for its threads {', '.join(waiting_for)}")
    _flush()
    os._exit(code)


def _live_threads() -> list[str]:
    """Names of the other threads that would keep the process alive (not daemons)."""
    me = threading.current_thread()
    return [
        thread.name for thread in threading.enumerate() if thread is not me and not thread.daemon and thread.is_alive()
    ]


# --- what is transient -----------------------------------------------------------------

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
        if _is_transient_itself(current):
            return True
        current = current.__cause__
    return False


def _is_transient_itself(error: BaseException) -> bool:
    if isinstance(error, requests.HTTPError):
        return _status_of(error) in TRANSIENT_HTTP_STATUSES
    # socket.timeout is TimeoutError only from Python 3.10 on.
    transient = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError, socket.timeout)
    return isinstance(error, transient)


def _status_of(error: BaseException) -> int | None:
    return _integer(getattr(getattr(error, "response", None), "status_code", None))


def retry_after_seconds(error: BaseException | None, now: float | None = None) -> float:
    """The wait that a 429 or 503 error's ``Retry-After`` header asks for (0 if none)."""
    if error is None or _status_of(error) not in (429, 503):
        return 0.0
    try:
        value = str(error.response.headers.get("Retry-After", "")).strip()  # type: ignore[attr-defined]
    except Exception:  # an odd response object: no header to honour
        return 0.0
    seconds = _ascii_count(value)
    if seconds is not None:
        return float(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        moment = when.timestamp()
    except Exception:  # not a date either: no header to honour
        return 0.0
    current = time.time() if now is None else now
    return max(0.0, moment - current)


def _ascii_count(text: str) -> int | None:
    """``text`` as a count when it is 1 to 9 ASCII digits (so never ``²`` or a huge number)."""
    return int(text) if re.fullmatch(r"[0-9]{1,9}", text) else None


# --- the policy ------------------------------------------------------------------------

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
    once and lets it wait before it does work, which frees the failed machine;
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
        if not callable(self.retry_on) and not _is_exception_types(self.retry_on):
            raise ConfigError("retry_on must be a predicate or exception types")
        if self.checkpoint is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(self.checkpoint)):
            raise ConfigError(f"checkpoint must be the name of one of the step's inputs, got {quote(self.checkpoint)}")
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


def _is_exception_types(value: object) -> bool:
    types = value if isinstance(value, tuple) else (value,)
    return all(isinstance(kind, type) and issubclass(kind, BaseException) for kind in types)


# --- tags ------------------------------------------------------------------------------

_RETRY_TAG = re.compile(r"^\s*retry\s*:\s*([0-9]+)\s*$", re.IGNORECASE)
# Longer digit strings are absurd counts; int() on huge strings is slow or refused.
_MAX_TAG_DIGITS = 9


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


def tags_of(item: Mapping[str, Any]) -> list[str]:
    """An API item's tags as strings, whether they come as a list, one string, or objects."""
    tags = item.get("tags")
    if isinstance(tags, str):  # never split a string into letters
        return [tags]
    if not isinstance(tags, list):
        return []
    names = [tag.get("name") if isinstance(tag, dict) else tag for tag in tags]
    return [name for name in names if isinstance(name, str)]


# --- the retry's payload ---------------------------------------------------------------


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
    limit, priority, runtime config (resources, Kubernetes settings, auto-restart), its
    preset, environment variable groups and the non-secret environment variables.  A
    secret comes back from the API without its value and is never sent; the retry inherits
    the project's variables and secrets instead.  Tags are the current ones with
    ``retry: number`` replacing old retry tags.
    """
    project = _id_of(detail.get("project"))
    commit = _value_of(detail.get("commit"), "identifier")
    step = detail.get("step") if isinstance(detail.get("step"), str) else None
    missing = [name for name, value in (("project", project), ("commit", commit), ("step", step)) if not value]
    if missing:
        raise RetryError(f"the execution's detail lacks {', '.join(missing)}: not relaunching from partial data")
    variables = _plain_variables(detail.get("environment_variables"))
    variables["RETRY_PARENT"] = parent_id
    if not_before:
        variables["RETRY_NOT_BEFORE"] = not_before
    payload: dict[str, Any] = {
        "project": project,
        "commit": commit,
        "step": step,
        "parameters": _parameters(detail, config),
        "inputs": _inputs(detail, config),
        "tags": retry_tags(tags_of(detail), number),
        "environment_variables": variables,
    }
    # The keys and their shapes follow the official CLI's create payload (valohai-cli 0.37,
    # valohai_cli/commands/execution/run/dynamic_run_command.py, lines 236-263), and so does
    # the rule: a key is left out only when the detail has no value for it (None or "").
    optional = {
        "environment": _id_of(detail.get("environment")),
        "image": _text(detail.get("image")),
        "title": _text(detail.get("title")),
        "time_limit": _integer(detail.get("time_limit")),
        "priority": _integer(detail.get("priority")),
        "runtime_config": detail.get("runtime_config") if isinstance(detail.get("runtime_config"), dict) else None,
        "runtime_config_preset": _id_of(detail.get("runtime_config_preset")),
        "environment_variable_groups": _ids(detail.get("environment_variable_groups")) or None,
    }
    payload.update({key: value for key, value in optional.items() if value not in (None, "")})
    # Whether a new execution gets the project's variables and secrets (VH_API_TOKEN among
    # them) has an unpublished API default; the UI's "Inherit project's environment variables
    # and secrets" box is this field, as payloads in Valohai's own examples send it.
    payload["inherit_environment_variables"] = True
    return payload


def _id_of(value: Any) -> str | None:
    return _value_of(value, "id")


def _ids(value: Any) -> list[str]:
    """Ids from a list of ids or of objects with an ``id``."""
    return [found for item in value if (found := _id_of(item))] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _value_of(value: Any, key: str) -> str | None:
    if isinstance(value, dict):
        value = value.get(key)
    return str(value) if isinstance(value, (str, int)) and value else None


def _variables(value: Any) -> dict[str, Any]:
    """Environment variables from the API as ``{name: entry}``, whatever shape they come in."""
    if isinstance(value, list):  # tolerate [{"name": ..., "value": ...}]
        value = {item.get("name"): item for item in value if isinstance(item, dict)}
    if not isinstance(value, dict):
        return {}
    return {name: entry for name, entry in value.items() if isinstance(name, str)}


def _variable_value(entry: Any) -> Any:
    """A variable's value, whether the API gives ``{"value": ...}`` or the bare value."""
    return entry.get("value") if isinstance(entry, dict) else entry


def _plain_variables(variables: Any) -> dict[str, str]:
    """Non-secret variables as ``{name: value}``; secrets and our own markers dropped."""
    plain = {}
    for name, item in _variables(variables).items():
        secret = isinstance(item, dict) and bool(item.get("secret"))
        value = _variable_value(item)
        ours = name in ("VH_API_TOKEN", *_CHAIN_VARIABLES)
        if value is not None and not secret and not ours:
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
        return {str(name): _urls(value) for name, value in inputs.items()}
    if isinstance(inputs, list):
        return {item["name"]: _urls(item) for item in inputs if isinstance(item, dict) and _is_text(item.get("name"))}
    path = (config or config_dir()) / "inputs.json"
    if not path.exists():
        return {}
    return {str(name): _urls(value) for name, value in _read_json_object(path).items()}


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


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


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
    policy = _process.policy
    input_name = input_name or (policy.checkpoint if policy is not None and policy.checkpoint else "checkpoint")
    pattern = pattern or (policy.checkpoint_pattern if policy is not None else DEFAULT_CHECKPOINT_PATTERN)
    handed = _handed_checkpoint()
    if handed:
        return Path(handed)
    restart, given = _input_files("_restart"), _input_files(input_name)
    chosen = _resume_choice(list(restart), list(given), pattern)
    if chosen is None:
        return None
    source, name = chosen
    return (restart if source == "_restart" else given)[name]


def _input_files(name: str) -> dict[str, Path]:
    """The files of one of this execution's inputs, by their names within the input."""
    folder = Path(valohai.paths.get_inputs_path(name))
    return {_name_within(Path(path), folder): Path(path) for path in valohai.inputs(name).paths(process_archives=False)}


def _resume_choice(restart: Sequence[str], given: Sequence[str], pattern: str) -> tuple[str, str] | None:
    """Which file to resume from: ``("_restart", name)``, ``("given", name)``, or None.

    ``_restart``'s newest checkpoint wins over the given input's: the interrupted run
    that left it had started from that input.  The given input's lone file counts even
    when its name does not fit the pattern (a checkpoint someone passed by hand).
    """
    from_restart = _last_by_name(restart, pattern)
    if from_restart:
        return "_restart", from_restart
    from_given = _last_by_name(given, pattern) or (given[0] if len(given) == 1 else None)
    return ("given", from_given) if from_given else None


def _name_within(path: Path, folder: Path) -> str:
    """``path``'s name relative to ``folder`` (its input's folder), as patterns see it."""
    try:
        return path.relative_to(folder).as_posix()
    except ValueError:  # not below it (e.g. an archive's extracted member): its own name
        return path.name


def _handed_checkpoint() -> str | None:
    """The checkpoint file a local retry was handed, if it still exists."""
    attempt = _process.attempt
    handed = attempt.checkpoint if attempt is not None else os.environ.get("RETRY_CHECKPOINT")
    return handed if handed and os.path.isfile(handed) else None


def _last_by_name(names: Sequence[str], pattern: str) -> str | None:
    """Of ``names`` (relative to their folder), the last matching ``pattern``, else None."""
    return max((name for name in names if _matches(name, pattern)), default=None)


def _matches(name: str, pattern: str) -> bool:
    """Whether a file's name (relative to its folder; ``*`` spans folders) fits ``pattern``."""
    return fnmatch.fnmatchcase(name, pattern)


def _inputs_with_checkpoint(inputs: Mapping[str, list[str]], urls: list[str], policy: Policy) -> dict[str, list[str]]:
    """The retry's inputs: this attempt's, with ``urls`` as the checkpoint input.

    ``_restart`` is Valohai's to fill (after a spot interruption); it is never sent.
    """
    chosen = {name: list(value) for name, value in inputs.items() if name not in ("_restart", policy.checkpoint)}
    if urls:
        chosen[str(policy.checkpoint)] = urls
    return chosen


def _checkpoint_on_valohai(
    api: ValohaiAPI, execution: Execution, policy: Policy, runtime: Runtime, current: Sequence[str]
) -> list[str]:
    """The URL of the newest checkpoint the failed attempt uploaded, else of the one it started from.

    So progress never goes backwards: an attempt that failed before saving a checkpoint
    hands on the checkpoint it was given.  A failure to list the outputs costs only that.
    """
    try:
        newest = _newest_uploaded_checkpoint(api, execution, policy.checkpoint_pattern, runtime)
    except RetryError as exc:
        _say(f"could not list this execution's outputs, so the retry gets the checkpoint this attempt had: {exc}")
        newest = None
    if newest is not None:
        _say(f"the retry resumes from {newest.get('name')} (datum://{newest['id']})")
        return [f"datum://{newest['id']}"]
    found = _started_from_on_valohai(str(policy.checkpoint), policy.checkpoint_pattern)
    started_from = [found] if found else list(current)
    if started_from:
        _say(f"no newer checkpoint: the retry resumes from {', '.join(started_from)}")
    else:
        _say("no checkpoint yet: the retry starts from the beginning")
    return started_from


def _newest_uploaded_checkpoint(
    api: ValohaiAPI, execution: Execution, pattern: str, runtime: Runtime
) -> dict[str, Any] | None:
    """The newest uploaded output of ``execution`` whose name matches ``pattern``.

    Checkpoints still being live-uploaded (read-only files not yet taken from the
    outputs folder) are waited for, at most :data:`CHECKPOINT_UPLOAD_WAIT` seconds, and
    looked for once more if the list does not show them yet.
    """
    deadline = runtime.monotonic() + CHECKPOINT_UPLOAD_WAIT
    pending = _pending_uploads(pattern)
    if pending:
        _say(f"waiting for {len(pending)} checkpoint(s) still uploading: {', '.join(sorted(pending))[:200]}")
    while _pending_uploads(pattern) and runtime.monotonic() < deadline:
        runtime.sleep(0.2)
    newest, listed = _newest_listed_checkpoint(api, execution, pattern)
    if pending - listed and runtime.monotonic() < deadline:  # an upload may take a moment to be listed
        runtime.sleep(min(1.0, deadline - runtime.monotonic()))
        newest, listed = _newest_listed_checkpoint(api, execution, pattern)
    unlisted = ", ".join(sorted(pending - listed))[:200]
    if unlisted:
        _say(f"checkpoint(s) still not listed after the wait, so the retry gets the newest listed one: {unlisted}")
    return newest


def _newest_listed_checkpoint(
    api: ValohaiAPI, execution: Execution, pattern: str
) -> tuple[dict[str, Any] | None, set[str]]:
    """The newest checkpoint the outputs list shows, and the names of all it showed.

    Asked newest first (``ordering=-ctime``, as ``vh data list`` asks): then the first page
    holding a checkpoint is the last one read.  A server that does not keep that order is
    read on, as far as the list's bound; at the bound, the newest read so far is taken.
    """
    newest: dict[str, Any] | None = None
    names: set[str] = set()
    last, ordered = None, True
    params = {"output_execution": execution.id, "ordering": "-ctime"}
    try:
        for page in api.pages("/api/v0/data/", params, page_size=1000):
            for datum in page:
                owner = datum.get("output_execution")
                if isinstance(owner, dict) and owner.get("id") not in (None, execution.id):
                    continue  # another execution's output: a server that ignored the filter
                age = _datum_age(datum)
                ordered, last = ordered and (last is None or age <= last), age
                if _is_checkpoint_datum(datum, pattern):
                    names.add(str(datum["name"]))
                    newest = datum if newest is None or age > _datum_age(newest) else newest
            if ordered and newest is not None:
                break  # newest first: what follows is older
    except ListTooLongError as exc:
        _say(f"{exc}; the retry gets the newest checkpoint read so far")
    return newest, names


def _is_checkpoint_datum(datum: Mapping[str, Any], pattern: str) -> bool:
    name = datum.get("name")
    return _is_text(name) and _is_text(datum.get("id")) and _matches(str(name), pattern)


def _datum_age(datum: Mapping[str, Any]) -> tuple[float, str]:
    """Sort key of a datum: its creation time, then its name."""
    ctime = datum.get("ctime")
    try:
        created = (
            float(ctime)
            if isinstance(ctime, (int, float)) and not isinstance(ctime, bool)
            else parse_instant(str(ctime))
        )
    except (ValueError, OverflowError):
        created = 0.0
    created = created if math.isfinite(created) else 0.0
    return created, str(datum.get("name"))


def _pending_uploads(pattern: str) -> set[str]:
    """Checkpoint files still in the outputs folder and read-only: a live upload under way."""
    return {name for name, path, status in _output_files(pattern) if not status.st_mode & stat.S_IWUSR}


def _newest_local_checkpoint(pattern: str) -> str | None:
    """The newest checkpoint this process wrote to its outputs folder (a local run)."""
    found = [(status.st_mtime, name, path) for name, path, status in _output_files(pattern)]
    return str(max(found)[2].resolve()) if found else None


def _output_files(pattern: str) -> list[tuple[str, Path, os.stat_result]]:
    """Files in this attempt's outputs folder matching ``pattern``: name (relative), path, status.

    Locally the folder is relative to the working folder; the job may have saved there and
    changed folder since, so the folder it started in is looked in too.
    """
    outputs = Path(valohai.paths.get_outputs_path())
    roots = (
        [outputs] if outputs.is_absolute() else list(dict.fromkeys([Path.cwd() / outputs, Path(_STARTED_IN) / outputs]))
    )
    found = []
    for root in roots:
        for path in root.rglob("*") if root.is_dir() else ():
            name = path.relative_to(root).as_posix()
            with contextlib.suppress(OSError):  # a file taken away while this looks: not there
                status = path.stat()
                if stat.S_ISREG(status.st_mode) and _matches(name, pattern):
                    found.append((name, path, status))
    return found


def _started_from_on_valohai(input_name: str, pattern: str) -> str | None:
    """The URL of the checkpoint this attempt started from, from ``inputs.json``.

    The same file :func:`checkpoint_path` picks (see :func:`_resume_choice`).
    """
    path = config_dir() / "inputs.json"
    inputs = _read_json_object(path) if path.exists() else {}
    restart, given = _listed_files(inputs.get("_restart")), _listed_files(inputs.get(input_name))
    chosen = _resume_choice(list(restart), list(given), pattern)
    if chosen is None:
        return None
    source, name = chosen
    file = (restart if source == "_restart" else given)[name]
    return f"datum://{file['datum_id']}" if _is_text(file.get("datum_id")) else _text(file.get("uri"))


def _listed_files(entry: Any) -> dict[str, dict[str, Any]]:
    """An input's files as ``inputs.json`` lists them, by name."""
    files = entry.get("files") if isinstance(entry, dict) else None
    return {str(file["name"]): file for file in files or [] if isinstance(file, dict) and _is_text(file.get("name"))}


# --- finding a retry in the project's executions ---------------------------------------

#: At most this many execution details are read to learn candidates' RETRY_PARENT.
MAX_DETAIL_LOOKUPS = 200


def find_retry(
    api: ValohaiAPI,
    project_id: str,
    parent_id: str,
    number: int,
    *,
    parent_counter: int | None = None,
    below: int | None = None,
    like: Mapping[str, Any] | None = None,
    working: bool = False,
) -> dict[str, Any] | None:
    """The first execution (lowest counter) that is retry ``number`` of ``parent_id``, if any.

    Scans the project's executions newest first, page by page, down to the parent (its
    counter, when known, or its id), so a busy project cannot hide the retry; a server
    that does not keep that order is read to the end.  ``below`` skips executions from
    that counter up (a retry looking for an earlier copy of itself); ``like`` holds fields
    a copy must share (``step``, ``title``, ``parameters``), which spares reading the
    details of executions that differ in them; ``working`` skips copies that failed
    without starting a retry of their own (they will never do the work).  Bounded in
    pages, detail reads and the API client's time budget.
    """
    candidates = [
        item
        for item in executions_after(api, project_id, counter=parent_counter, execution_id=parent_id)
        if (below is None or int(item["counter"]) < below)
        and retry_number(tags_of(item)) == number
        and _alike(item, like or {})
    ]
    return first_retry(api, candidates, parent_id, working=working)


def executions_after(
    api: ValohaiAPI, project_id: str, *, counter: int | None = None, execution_id: str | None = None
) -> list[dict[str, Any]]:
    """The project's executions newer than one execution, given by its counter or its id.

    Read newest first, page by page, down to that execution, so a busy project cannot
    hide one; a server that does not keep that order is read to the end (bounded).
    """
    found: list[dict[str, Any]] = []
    floor, last, ordered = counter, None, True
    for page in execution_pages(api, project_id):
        for item in page:
            number = counter_of(item)
            if number is None:
                continue
            ordered = ordered and (last is None or number < last)
            last = number
            if floor is None and execution_id is not None and item.get("id") == execution_id:
                floor = number
            found.append(item)
        if ordered and floor is not None and last is not None and last <= floor:
            break  # newest first and down to that execution: nothing older is newer than it
    return [item for item in found if floor is None or int(item["counter"]) > floor]


def counter_of(item: Mapping[str, Any]) -> int | None:
    """An API item's counter, when it is a number."""
    return _integer(item.get("counter"))


def _alike(item: Mapping[str, Any], like: Mapping[str, Any]) -> bool:
    """False when ``item`` shows a field that differs from ``like``: it cannot be a copy."""
    return all(item.get(key) in (None, value) for key, value in like.items() if value is not None)


def first_retry(
    api: ValohaiAPI, candidates: Sequence[Mapping[str, Any]], parent_id: str, *, working: bool = False
) -> dict[str, Any] | None:
    """Of ``candidates``, the lowest-counter one whose ``RETRY_PARENT`` is ``parent_id``.

    With ``working``, only one that is doing (or did) the work: see :func:`_is_working`.
    """
    lookups = 0
    for item in sorted(candidates, key=lambda item: int(item["counter"])):
        known = dict(item)
        if "environment_variables" not in item:  # list entries may be abridged
            lookups += 1
            if lookups > MAX_DETAIL_LOOKUPS:
                raise APIError(f"more than {MAX_DETAIL_LOOKUPS} executions to read to find the retry; stopped there")
            known.update(_detail_of(api, item))
        if parent_of(known) == parent_id and (not working or _is_working(known)):
            return known
    return None


#: Statuses of an execution that ended without success.
_FAILED_STATUSES = frozenset({"error", "crashed", "stopped", "system_error", "killed", "timeout"})


def _is_working(item: Mapping[str, Any]) -> bool:
    """Whether a copy of a retry is doing the work, will, or did.

    Not when it failed without starting a retry of its own (it crashed before the job
    started, was stopped, or the chain gave up): a copy that defers to it would leave the
    work undone.  One that failed and started the next retry lives on in that retry.
    """
    failed = item.get("status") in _FAILED_STATUSES
    return not failed or " started as #" in str(item.get("status_detail") or "")


def _detail_of(api: ValohaiAPI, item: Mapping[str, Any]) -> dict[str, Any]:
    execution_id = item.get("id")
    if not _is_text(execution_id):
        raise APIError("an execution in the list has no id")
    return api.get(f"/api/v0/executions/{execution_id}/", {"exclude": "metadata,events"})


def parent_of(item: Mapping[str, Any]) -> str | None:
    """The execution that ``item`` (an execution's detail) retries, from its ``RETRY_PARENT``."""
    value = _variable_value(_variables(item.get("environment_variables")).get("RETRY_PARENT"))
    return str(value) if isinstance(value, (str, int)) and value else None


def execution_pages(api: ValohaiAPI, project_id: str, *, max_pages: int = 0) -> Iterator[list[dict[str, Any]]]:
    """The project's executions that were not deleted, highest counter first, a page at a time.

    A deleted execution is no attempt: a retry must not stand down for a deleted copy.
    ``deleted=false`` and ``ordering=-counter`` are how ``vh execution list`` asks.
    """
    params = {"project": project_id, "ordering": "-counter", "deleted": "false"}
    return api.pages("/api/v0/executions/", params, max_pages=max_pages)


def _counter_text(item: Mapping[str, Any]) -> str:
    counter = counter_of(item)
    return f"#{counter}" if counter is not None else "(number unknown)"


def display_url(item: Mapping[str, Any]) -> str:
    urls = item.get("urls")
    url = urls.get("display") if isinstance(urls, dict) else None
    return url if isinstance(url, str) else ""


# --- this execution's config -----------------------------------------------------------


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
    """The folder of Valohai's config files, as valohai-utils finds it.

    ``VH_CONFIG_DIR``, else ``/valohai/config`` in an execution and ``.valohai/config`` locally.
    """
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
        raise RetryError(f"{path}: valohai.execution-counter is not an integer: {quote(counter)}")
    return Execution(
        id=str(data["valohai.execution-id"]),
        counter=counter,
        project_id=str(data["valohai.project-id"]),
        tags=tuple(tags_of({"tags": data.get("valohai.execution-tags")})),
        step=data.get("valohai.execution-step") or None,
        commit=data.get("valohai.commit-identifier") or None,
        title=data.get("valohai.execution-title") or None,
        pipeline_id=data.get("valohai.pipeline-id") or None,
        task_id=data.get("valohai.task-id") or None,
    )


#: No config file is read past this size: Valohai's are a few kilobytes.
MAX_CONFIG_BYTES = 10_000_000


def _read_json_object(path: Path) -> dict[str, Any]:
    """A config file's JSON object; :class:`RetryError` for anything else (never a hang)."""
    try:
        status = path.stat()
    except FileNotFoundError:
        raise RetryError(f"{path} not found: is this running in a Valohai execution?") from None
    except OSError as exc:
        raise RetryError(f"{path} is not readable: {exc.strerror or exc}") from None
    if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_CONFIG_BYTES:  # a pipe would block forever
        raise RetryError(f"{path} is not a regular file of at most {MAX_CONFIG_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise RetryError(f"{path} is not readable JSON: {_one_line(exc, 120)}") from None
    if not isinstance(data, dict):
        raise RetryError(f"{path} does not hold a JSON object")
    return data


# --- the API client --------------------------------------------------------------------

DEFAULT_HOST = "https://app.valohai.com"
#: Connect and read timeouts of every API request, in seconds.
REQUEST_TIMEOUT = (5.0, 30.0)
#: Total time the API calls of one relaunch may take, retries of a flaky API included.
API_BUDGET = 60.0
#: Total time a retry may spend checking that it is not a duplicate before it works.
CHECK_BUDGET = 20.0
#: List pages are read this many executions at a time, and at most this many pages.
PAGE_SIZE = 100
MAX_PAGES = 50
#: No answer is read past this size (a list page of 100 executions is far smaller).
MAX_ANSWER_BYTES = 20_000_000
#: API answers worth asking again: the service is briefly unavailable.  (A create that
#: got a 5xx is not sent again blind: the retry is looked for first.)
_RETRYABLE_API_STATUSES = frozenset({429, 502, 503, 504})


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
    """The request may or may not have been acted on (answer lost)."""


class _UnreadableAnswerError(APIError):
    """A success status whose body could not be read: the request was acted on."""


class ValohaiAPI:
    """A small client for the few Valohai API calls this module makes.

    Every request has connect and read timeouts and a deadline for the whole answer, so a
    server that trickles bytes cannot hold it.  Connection failures and 429/502/503/504
    answers are retried with backoff (honouring ``Retry-After``) within ``budget``
    seconds shared by all calls, measured on ``clock`` (monotonic).  Redirects are not
    followed, so the token never goes to another address.  ``patient=False`` gives up at
    once on a host that cannot be reached (for interactive commands).
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
        self._plain_http = self.host.startswith("http://")

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET ``path`` (below the host) and return the decoded JSON object."""
        return self._request("GET", path, params=params)

    def post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``path`` and return the decoded JSON answer.

        Raises :class:`_AmbiguousRequestError` when the request may have been acted on
        without an answer reaching us, and :class:`_UnreadableAnswerError` when a success
        status came with a body that cannot be read; the caller decides what that means.
        """
        return self._request("POST", path, body=dict(body))

    def reset_budget(self) -> None:
        """Give the calls from now on a whole budget again (after a deliberate wait)."""
        self._deadline = None

    def items(
        self, path: str, params: Mapping[str, Any], *, page_size: int = 0, max_pages: int = 0
    ) -> Iterator[dict[str, Any]]:
        """The items of a paged list, one after the other (see :meth:`pages`)."""
        for page in self.pages(path, params, page_size=page_size, max_pages=max_pages):
            yield from page

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
        offset = 0
        for _ in range(max_pages or MAX_PAGES):
            page = self.get(path, {**params, "limit": page_size or PAGE_SIZE, "offset": offset})
            results = page.get("results")
            if not isinstance(results, list):
                raise APIError(f"GET {path}: a list page without results")
            offset += len(results)  # a server may serve fewer than asked for: skip nothing
            new = [item for item in results if isinstance(item, dict) and _hashable_id(item) not in seen]
            seen.update(_hashable_id(item) for item in new if _hashable_id(item) is not None)
            yield new
            if not results or not _more_after(page, offset, len(results) >= (page_size or PAGE_SIZE)):
                return
        raise ListTooLongError(
            f"GET {path}: the list goes on past {max_pages or MAX_PAGES} pages ({offset} items); stopped there"
        )

    def _request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> dict[str, Any]:
        url = self.host + path
        headers = {"Accept": "application/json"}
        if self._deadline is None:
            self._deadline = self._clock() + self._budget
        attempt = 0
        while True:
            attempt += 1
            left = self._deadline - self._clock()
            if left <= 0:  # the budget bounds the whole relaunch, successful requests included
                raise APIError(f"{method} {path}: out of time (the API calls may take {self._budget:g} s in all)")
            seconds = min(sum(self._timeout), left)  # the whole answer, not only each read
            timeout = (min(self._timeout[0], seconds), min(self._timeout[1], seconds))
            answer = _exchange(
                self._session,
                method,
                url,
                seconds,
                params=params,
                json=body,
                headers=headers,
                timeout=timeout,
                auth=self._auth,
                proxies=_no_proxies() if self._plain_http else None,
            )
            failure, wait = self._judge(method, path, answer, attempt)
            if failure is None:
                return _decode(method, path, answer)
            if self._clock() + wait > self._deadline:
                raise APIError(f"{failure} (gave up after {attempt} tries)", failure.status)
            _say(f"{failure}; asking again in {wait:g} s")
            self._sleep(wait)

    def _judge(self, method: str, path: str, answer: _Answer, attempt: int) -> tuple[APIError | None, float]:
        """``(None, 0)`` for an answer to decode, else the failure and how long to wait.

        Raises at once what is not worth asking again.
        """
        status = answer.status
        if status is None:  # no answer at all: the connection failed, or the answer was lost
            assert answer.error is not None
            reason = _reason(answer.error)
            if method == "POST" and not _surely_unsent(answer.error):
                raise _AmbiguousRequestError(f"{method} {path}: the answer was lost ({reason})")
            failure = APIError(f"{method} {path}: could not reach {self.host}: {reason}")
            if not self._patient:
                raise failure
            return failure, _backoff(attempt)
        if method == "POST" and status >= 500:  # behind a gateway the server may have acted all the same
            raise _AmbiguousRequestError(_explain(method, path, answer), status)
        if status in _RETRYABLE_API_STATUSES or (method == "GET" and status >= 500):  # reading again is harmless
            return APIError(_explain(method, path, answer), status), max(_backoff(attempt), _retry_after(answer))
        if answer.body is None and 200 <= status < 300:  # cut off, too slow or too large
            assert answer.error is not None
            message = f"{method} {path}: HTTP {status}, but the answer was cut off ({_reason(answer.error)})"
            if method == "POST":
                raise _UnreadableAnswerError(message, status)
            return APIError(message, status), _backoff(attempt)  # reading again is harmless
        return None, 0.0


@dataclasses.dataclass
class _Answer:
    """What came back for one request, as far as it came: status, headers, body, error."""

    status: int | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    body: bytes | None = None
    error: BaseException | None = None
    response: requests.Response | None = None


def _exchange(session: requests.Session, method: str, url: str, seconds: float, **options: Any) -> _Answer:
    """Send one request and read its whole answer within ``seconds``, whatever the server does."""
    answer = _Answer()

    def talk() -> None:
        response = session.request(method, url, stream=True, allow_redirects=False, **options)
        answer.response = response
        answer.status, answer.headers = response.status_code, response.headers
        with response:
            answer.body = _read_body(response)

    try:
        _within(seconds, talk)
    except Exception as exc:
        answer.error = exc
        if answer.response is not None:
            _hang_up(answer.response)
    return answer


def _hang_up(response: requests.Response) -> None:
    """End the connection under a reader thread that is still at it, if it can be found.

    Closing the response itself would wait for the reader's lock; shutting the socket
    down ends its read at once.  Best effort: the thread is a daemon either way.
    """
    connection = getattr(response.raw, "connection", None) or getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _read_body(response: requests.Response) -> bytes:
    chunks = []
    size = 0
    for chunk in response.iter_content(65536):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise ValueError(f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """Run ``call`` and return its result, or raise ``TimeoutError`` after ``seconds``.

    Socket timeouts bound each read, not a whole answer; this bounds the whole.  The
    call goes on in a daemon thread when the time is up, and cannot hold the process.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc

    worker = threading.Thread(target=target, name="retry-request", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"no complete answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


class _TokenAuth(requests.auth.AuthBase):
    """``Authorization: Token <token>``, the header the Valohai API takes."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Token {self._token}"
        return request


def _no_proxies() -> dict[str, None]:
    """Every proxy the environment names, turned off.

    Plain http is allowed for loopback only (local tests), and must stay there: a proxy
    (``HTTP_PROXY``, ``ALL_PROXY``, ...) would receive the token in the clear.
    """
    return dict.fromkeys(["http", "https", "all", *urllib.request.getproxies()])


def _more_after(page: Mapping[str, Any], offset: int, full: bool) -> bool:
    """Whether a list goes on past ``offset``: its ``next`` link says so, else its ``count``.

    A page with neither (a server that leaves them out) goes on if it was full.
    """
    count = _integer(page.get("count"))
    if "next" in page:
        return bool(page["next"])
    return count > offset if count is not None else full


def _hashable_id(item: Mapping[str, Any]) -> object:
    key = item.get("id")
    return key if isinstance(key, (str, int)) else None


def _backoff(attempt: int) -> float:
    """0.5, 1, 2, 4, 8, then 16 s between tries of one API call."""
    return float(min(0.5 * 2 ** (attempt - 1), 16))


def _retry_after(answer: _Answer) -> float:
    response = requests.Response()
    response.status_code = answer.status or 0
    response.headers.update(answer.headers)
    return retry_after_seconds(requests.HTTPError(response=response))


def _surely_unsent(error: BaseException) -> bool:
    """True when the request never left: the connection itself could not be made."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return type(reason).__name__ in ("NewConnectionError", "NameResolutionError")


def _reason(error: BaseException) -> str:
    """A short reason for a failed exchange: its innermost cause, e.g. "Connection refused".

    ``requests`` wraps the cause of a connection failure in layers of text with the URL
    repeated; the user needs only the last link of the chain.
    """
    seen: set[int] = set()
    pending: list[Any] = [error]
    innermost = error
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        innermost = current
        # Not __context__: an API call made while the job's error is handled would find that error.
        pending += [*current.args, getattr(current, "reason", None), current.__cause__]
    if isinstance(innermost, OSError) and innermost.strerror:
        return str(innermost.strerror)
    return _one_line(innermost, 160) or _one_line(error, 160) or type(error).__name__


def _decode(method: str, path: str, answer: _Answer) -> dict[str, Any]:
    status = answer.status or 0
    if not 200 <= status < 300:
        raise APIError(_explain(method, path, answer), status)
    try:
        body = json.loads(answer.body or b"")
    except (ValueError, RecursionError):
        raise _UnreadableAnswerError(f"{method} {path}: HTTP {status} with a body that is not JSON", status) from None
    if not isinstance(body, dict):  # every answer this module uses is an object
        raise _UnreadableAnswerError(f"{method} {path}: HTTP {status} with JSON that is not an object", status)
    return body


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
    if status == 429:
        return f"{where}, rate limited"
    return f"{where}, the Valohai API failed"


def _field_errors(body: bytes | None) -> str:
    try:
        errors = json.loads(body or b"")
    except (ValueError, RecursionError):
        return _one_line((body or b"").decode(errors="replace"), 200) or "no details"
    if isinstance(errors, dict):
        return _one_line("; ".join(f"{field}: {_flatten(value)}" for field, value in errors.items())) or "no details"
    return _one_line(_flatten(errors))


def _flatten(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_flatten(item) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{key}: {_flatten(item)}" for key, item in value.items())
    return str(value)


def _api_for(runtime: Runtime, token: str, *, budget: float = API_BUDGET) -> ValohaiAPI:
    """The API client an attempt uses: its host, timeouts, clock and sleep."""
    return ValohaiAPI(
        token,
        api_host(runtime.environ),
        session=runtime.session,
        budget=budget,
        timeout=request_timeout(runtime.environ),
        sleep=runtime.sleep,
        clock=runtime.monotonic,
    )


# --- token, host, timeouts -------------------------------------------------------------

#: Shorter tokens are refused: masking them in logs would not be safe (Valohai's have 40).
MIN_TOKEN_LENGTH = 16


def read_token(environ: Mapping[str, str] | None = None) -> str:
    """The API token from ``VH_API_TOKEN``; raise :class:`RetryError` if it is unusable.

    From here on, the token is masked as ``***`` in everything this module prints.
    """
    token = (os.environ if environ is None else environ).get("VH_API_TOKEN", "").strip()
    _remember_secret(token)
    if not token:
        raise RetryError(
            "VH_API_TOKEN is not set: add your Valohai API token as a secret project "
            "environment variable named VH_API_TOKEN (Project settings > Environment variables)"
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
    2. inside an execution, the origin of the pre-signed status-detail URL in ``api.json``,
       which is the installation's own API (so a self-hosted Valohai needs no setting);
    3. ``https://app.valohai.com``.

    Plain ``http`` is refused unless the host is a loopback address (local tests).
    """
    configured = (os.environ if environ is None else environ).get("VALOHAI_HOST", "").strip()
    if configured:
        return _origin(configured, "VALOHAI_HOST")
    signed = _signed_call_url()
    if signed:
        parts = urlsplit(signed)
        return _origin(f"{parts.scheme}://{parts.netloc}", "the status-detail URL in api.json")
    return DEFAULT_HOST


def _signed_call_url() -> str | None:
    """The URL of the pre-signed status-detail call in ``api.json``; None without the file.

    An ``api.json`` that is there but unusable is an error, not a reason to send a
    self-hosted installation's token to app.valohai.com.
    """
    path = config_dir() / "api.json"
    if not os.path.lexists(path):  # locally, or an execution without pre-signed calls
        return None
    unusable = f"{path} has no usable set_status_detail URL to find the API by: set VALOHAI_HOST"
    try:
        entry = _read_json_object(path).get("set_status_detail")
    except RetryError as exc:
        raise RetryError(f"{unusable} ({exc})") from None
    url = entry.get("url") if isinstance(entry, dict) else None
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or not parts.scheme or not parts.netloc:
        raise RetryError(unusable)
    return str(url)


def _origin(address: str, name: str) -> str:
    """``scheme://host[:port]`` of ``address``, or :class:`RetryError` if a token must not go there.

    Parsed with the URL parser of the HTTP library that makes the requests (urllib3), so
    the host checked is the host connected to.  User info, backslashes, whitespace, paths
    and queries are refused: each is a way to make the two parsers disagree.
    """
    text = address.strip().rstrip("/")
    example = "an address like https://valohai.example.com"
    if not text or not text.isprintable() or any(character.isspace() or character in "\\@" for character in text):
        raise RetryError(f"{name} must be {example}, without spaces, backslashes or user info; got {quote(text, 80)}")
    try:
        url = parse_url(text)
    except LocationParseError:
        raise RetryError(f"{name} must be {example}, got {quote(text, 80)}") from None
    plain = urlsplit(text)
    if url.scheme not in ("https", "http") or not url.host or (url.path or url.query or url.fragment):
        raise RetryError(f"{name} must be {example} (no path or query), got {quote(text, 80)}")
    if (plain.hostname or "").lower() != url.host.strip("[]").lower() or plain.port != url.port:
        raise RetryError(f"{name} is ambiguous ({quote(text, 80)}): parsers disagree on its host")
    if url.scheme == "http" and not _is_loopback(url.host.strip("[]")):
        raise RetryError(f"{name} uses plain http ({text}): the token would travel unencrypted; use https")
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}"


def _is_loopback(hostname: str) -> bool:
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def request_timeout(environ: Mapping[str, str] | None = None) -> tuple[float, float]:
    """Connect and read timeouts for API requests; ``RETRY_API_TIMEOUT`` sets the read one."""
    raw = (os.environ if environ is None else environ).get("RETRY_API_TIMEOUT", "").strip()
    if not raw:
        return REQUEST_TIMEOUT
    try:
        seconds = float(raw) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", raw) else -1.0
    except ValueError:  # pragma: no cover - the pattern admits only valid floats
        seconds = -1.0
    if not 0 < seconds <= 600:
        raise ConfigError(
            f"RETRY_API_TIMEOUT must be a number of seconds above 0 and at most 600, got {quote(raw, 20)}"
        )
    return (min(REQUEST_TIMEOUT[0], seconds), seconds)


# --- status detail and output ----------------------------------------------------------

#: The longest a status detail call may take, whatever the server does.
STATUS_DETAIL_TIMEOUT = 10.0
_STATUS_DETAIL_LIMIT = 1000


def set_status_detail(text: str) -> bool:
    """Set this execution's status detail; best effort, never raises, never blocks long.

    Uses the pre-signed call that Valohai puts in ``api.json`` (no token involved).
    Returns whether it was set; locally (no ``api.json``) it does nothing.
    """
    text = _one_line(text, _STATUS_DETAIL_LIMIT)
    try:
        _send_status_detail(text)
    except FileNotFoundError:
        return False
    except Exception as exc:  # a status detail must never hide the real error
        _say(f"could not set the status detail: {_reason(exc)}")
        return False
    return True


def _send_status_detail(text: str) -> None:
    if _send_signed_request is None:  # its public helper has no timeout, but it is all there is
        valohai.set_status_detail(text)
        return
    # The same call valohai.set_status_detail() makes, bounded as a whole so it cannot hang.
    try:
        seconds = min(STATUS_DETAIL_TIMEOUT, request_timeout()[1])
    except ConfigError:  # a broken RETRY_API_TIMEOUT is reported on its own; the detail still goes
        seconds = STATUS_DETAIL_TIMEOUT
    timeout = (min(REQUEST_TIMEOUT[0], seconds), seconds)
    _within(
        seconds,
        lambda: _send_signed_request(endpoint="set_status_detail", json={"status_detail": text}, timeout=timeout),
    )


def _finish(message: str, code: int) -> int:
    """End an attempt's story: the status detail (on Valohai) and the last log line."""
    set_status_detail(message)
    _say(message)
    return code


def _print_traceback(error: BaseException) -> None:
    try:
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    except Exception:  # pragma: no cover - format_exception guards str() itself
        text = f"{type(error).__name__} (its traceback could not be formatted)\n"
    _write(_mask(text))


def describe(error: BaseException) -> str:
    """``Type: message`` on one line, masked and cut; safe for any exception."""
    name = type(error).__name__
    try:
        text = _one_line(error)
    except Exception:  # an exception whose __str__ fails still gets a summary
        text = "(its message could not be shown)"
    return f"{name}: {text}" if text else name


def quote(value: object, limit: int = 60) -> str:
    """A value someone gave, quoted for a message: masked, user info hidden, *then* cut.

    Safe for any value (an int too large to print, an object whose ``str`` fails).
    """
    try:
        text = _mask(value if isinstance(value, str) else repr(value))
    except Exception:  # repr() refused it (an int of 5000 digits): say what it is instead
        return f"<a {type(value).__name__}>"
    text = re.sub(r"(?<=//)[^/@]*@", "***@", text)  # https://user:password@host
    text = text if len(text) <= limit else text[:limit] + "..."
    return repr(text) if isinstance(value, str) else text


def _one_line(value: object, limit: int = 300) -> str:
    """``value`` as one line of at most ``limit`` characters, the token masked *before* cutting."""
    text = " ".join(_mask(str(value)).split())
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
    secrets = set(_secrets)
    secrets.add(os.environ.get("VH_API_TOKEN", "").strip())
    for secret in sorted((secret for secret in secrets if secret), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _say(message: str) -> None:
    """Print one ``[retry]`` line; line breaks in it (a folder's name, say) are shown escaped."""
    text = _mask(message).replace("\r", "\\r").replace("\n", "\\n")
    _write(f"[retry] {text}\n")


def _write(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed or broken: nothing else can be done
        pass


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


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


def _format_instant(timestamp: float) -> str:
    """``timestamp`` as an ISO 8601 UTC instant in milliseconds, rounded *up* (never early)."""
    milliseconds = -(-int(timestamp * 1_000_000) // 1000)  # ceiling, in integers: no float rounding
    moment = _EPOCH + datetime.timedelta(milliseconds=milliseconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


if __name__ == "__main__":  # pragma: no cover - a hint for whoever runs the file itself
    sys.stderr.write("[retry] retry.py is imported by a job: see its docstring; chains.py queries chains\n")
    sys.exit(EXIT_BAD_CONFIG)
