"""The retry controller: a retry for what the job could not catch.

``retry.run`` catches what Python can catch.  An out-of-memory kill, a segfault in a CUDA
kernel, a spot machine that disappears or a watchdog's verdict end an execution without a word
from Python: no verdict, no retry.  A Valohai notification trigger on "Execution fails" (or
"Watchdog detects a failed execution") can launch the step ``retry-controller`` with the
event's payload as its input ``payload``; this file is that step::

    python controller.py [--retries=3] [--delay=60] [--checkpoint=checkpoint] [--not_transient=...]

For the failed execution the payload names, it reads the execution's detail and does nothing,
saying why, when: the execution was stopped by a user; ``retry.py`` left its record (it started
a retry, judged the error not transient, or gave up); it ran in a pipeline, or is a retry
controller itself; its log shows a failure a restart cannot
fix (``--not_transient``: ``;``-separated text); a retry of it already exists (the trigger fired
twice); or its chain is out of retries.  Otherwise it waits out the delay here, on this cheap
machine, and starts exactly one retry with retry.py's own pieces: the same payload,
``retry: N+1``, the failed attempt's newest checkpoint in the input ``--checkpoint``.  Its status
detail says what it did, with a record that names the failed execution and its retry.  The
chain's ``retries`` and ``delay`` are the failed execution's parameters when it has them, else
this step's.  Set-up and limits: docs/controller.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import valohai

import retry

#: Text in a failed execution's log that a restart cannot fix (Python saw the error, so the job
#: failed outside retry.run: an import error, a syntax error; or the disk is full).
NOT_TRANSIENT = "Traceback (most recent call last);No space left on device"
#: How many of the last log lines are searched for it.
LOG_TAIL = 200
#: What the search for a retry that exists already may read: list pages, execution details.
SEARCH_BOUNDS = (1, 1)


class ExecutionLost(Exception):  # noqa: N818 - not an error of this program: what befell the execution
    """A failed execution that left no verdict: it was killed, crashed, or lost its machine."""


def main(argv: Sequence[str] | None = None, *, runtime: retry.Runtime | None = None) -> int:
    """Read the payload and the settings, act on the failed execution, and return the exit code."""
    runtime, failed_id = runtime or retry.Runtime(), None
    try:
        settings = _parser().parse_args(argv)
        _policy(settings, {})  # settings retry.py would refuse are refused before anything is read
        payload = read_payload()
        failed_id = failed_execution(payload)
        if payload["data"].get("valohai.execution-step") == retry.read_execution().step:  # no API: it may be down
            message = f"Nothing to do: {_shown(payload)} is a retry controller itself; read its log"
            return _done(message, retry.Record("stood_down", 0, failed=failed_id))  # no trigger, no loop
        return control(failed_id, settings, runtime)
    except Exception as exc:  # an answer of a shape never seen too: one line, a record, an exit code
        if isinstance(exc, retry.RetryError):
            reason, code = str(exc), exc.exit_code
        else:
            where = traceback.extract_tb(exc.__traceback__)[-1]
            reason, code = f"{retry.describe(exc)} (at {where.name}, line {where.lineno})", retry.EXIT_RELAUNCH_FAILED
        message = f"The retry controller could not act: {reason}"
        # The report counts the failed execution (if the payload named one) as one that could not relaunch.
        retry.write_record(message, retry.Record("not_started", 0, failed=failed_id or ""))
        _say(message)
        return code


def control(failed_id: str, settings: argparse.Namespace, runtime: retry.Runtime) -> int:
    """Start one retry of ``failed_id``, or say why not; return the exit code (0 for both)."""
    me, api = retry.read_execution(), retry.api_client(runtime)
    failed = api.get(f"/api/v0/executions/{failed_id}/", {"exclude": "metadata,events"})
    failed_id, shown = str(failed.get("id") or failed_id), f"#{retry.counter_of(failed)}"
    reason = _nothing_to_do(failed, shown, me.step)
    if reason is not None:
        done = retry.read_record(failed) or retry.Record("stood_down", 0)  # retry.py's, if it acted
        return _done(reason, retry.Record("stood_down", done.retry, done.heir, failed=failed_id))
    logged, signature = _read_log(api, failed_id, settings.not_transient, shown)
    if logged is not None:  # retry.py could not write its record, and said it in the log
        message = f"Nothing to do: retry.py dealt with {shown} itself (the record in its log says {logged.outcome})"
        return _done(message, retry.Record("stood_down", logged.retry, logged.heir, failed=failed_id))
    why = f"ended {retry.quote(failed.get('status'), 30)} without a verdict (killed, crashed, or its machine was lost)"
    error: BaseException = ValueError(f"its log shows {signature!r}") if signature else ExecutionLost(why)
    cause = retry.describe(error)  # the record's: the same for every crash, wherever it happened
    policy = _policy(settings, failed.get("parameters"))
    state = retry.ChainState(retry.retry_number(retry.tags_of(failed)), parent=failed_id)
    decision = retry.decide(policy, state, error, now=runtime.now(), uniform=runtime.uniform)
    if decision.outcome != "retry":
        message = f"{decision.reason} for {shown}: {cause}"
        return _done(message, retry.Record(decision.outcome, decision.number, cause=cause, failed=failed_id))
    number, which = decision.number, f"retry {decision.number}/{policy.retries}"
    waiting = f"Waiting {decision.wait:g} s here before starting {which} of {shown}"
    retry.write_record(waiting, retry.Record("waiting", number, cause=cause, failed=failed_id), runtime.sleep)
    retry.countdown(decision.wait, waiting, runtime)
    api = retry.api_client(runtime)  # the wait was not the API's time
    copy = _existing_retry(api, me.project_id, failed, number, shown=shown, which=which)
    if copy is not None:
        message = f"Nothing to do: {shown} already has {which}: #{retry.counter_of(copy)}"
        return _done(message, retry.Record("stood_down", number, str(copy.get("id")), failed=failed_id))
    payload = retry.build_retry_payload(
        failed, number, parent_id=failed_id, not_before=retry.format_instant(decision.not_before)
    )
    if policy.checkpoint:
        payload["inputs"] = _with_newest_checkpoint(payload["inputs"], api, failed_id, policy, shown)
    try:
        created, _ = retry.create_retry(api, payload, policy.checkpoint)
    except retry.RetryError as exc:
        unconfirmed = exc.exit_code == retry.EXIT_RETRY_UNCONFIRMED  # the create may have gone through
        record = retry.Record("unconfirmed" if unconfirmed else "not_started", number, cause=cause, failed=failed_id)
        maybe = f"Retry {number}/{policy.retries} of {shown} may have been started, but the API never confirmed it"
        _done(
            f"{maybe}: {exc}; look for the tag 'retry: {number}'"
            if unconfirmed
            else f"Could not start {which} of {shown}: {exc}",
            record,
        )
        return exc.exit_code
    message = f"Started {which} of {shown} as #{retry.counter_of(created)}: {shown} {why}"
    return _done(message, retry.Record("started", number, str(created["id"]), cause, failed=failed_id))


def _nothing_to_do(failed: Mapping[str, Any], shown: str, own_step: str | None) -> str | None:
    """Why the failed execution gets no retry from here, if it gets none."""
    status, record = str(failed.get("status")), retry.read_record(failed)
    if status == "stopped":
        return f"Nothing to do: {shown} was stopped by a user"
    if status in retry.NOT_FAILED_STATUSES:
        return f"Nothing to do: {shown} has not failed (it is {status})"
    if record is not None:
        return f"Nothing to do: retry.py dealt with {shown} itself (its record says {record.outcome})"
    if failed.get("pipeline"):
        return f"Nothing to do: {shown} ran in a pipeline, which owns retrying: give its node on-error: retry"
    if failed.get("step") == own_step:  # a trigger on every failure fires for ours too
        return f"Nothing to do: {shown} is a retry controller itself; read its log"
    return None


def _existing_retry(
    api: retry.ValohaiAPI, project_id: str, failed: Mapping[str, Any], number: int, *, shown: str, which: str
) -> dict[str, Any] | None:
    """Retry ``number`` of ``failed`` if one exists (the trigger fired twice), in one list page and one
    detail at most; unable to tell, None: the copies settle which one works, as copies of a retry do."""
    like = {"step": failed.get("step"), "title": failed.get("title"), "parameters": failed.get("parameters")}
    try:
        part = api.within(retry.CHECK_BUDGET)
        return retry.find_copy(part, project_id, failed, number, like, working=False, bounds=SEARCH_BOUNDS)
    except Exception as exc:  # an answer of a shape never seen too: the check must not cost the retry
        _say(f"could not check that {shown} has no {which} yet, so starting it: {retry.describe(exc)}")
        return None


def _with_newest_checkpoint(
    inputs: dict[str, list[str]], api: retry.ValohaiAPI, failed_id: str, policy: retry.Policy, shown: str
) -> dict[str, list[str]]:
    """The retry's inputs with the failed execution's newest checkpoint, else with the one it started
    from (the payload copied it): a failing outputs list costs the checkpoint, never the retry."""
    try:
        newest, _ = retry.newest_checkpoint(api.within(retry.CHECKPOINT_BUDGET), failed_id, policy.checkpoint_pattern)
    except Exception as exc:  # it costs the newest checkpoint, never the retry
        _say(f"could not list {shown}'s outputs, so the retry gets the checkpoint {shown} had: {retry.describe(exc)}")
        return inputs
    if newest is None:
        return inputs
    _say(f"the retry resumes from {retry.printable(str(newest.get('name')))} (datum://{newest['id']})")
    return {**inputs, str(policy.checkpoint): [f"datum://{newest['id']}"]}


def read_payload() -> dict[str, Any]:
    """The notification's payload: the JSON file of the step's input ``payload``."""
    path = valohai.inputs("payload").path(process_archives=False)
    if not path:
        raise retry.ConfigError(
            "no payload: this step is launched by a notification trigger whose Payload input name is payload"
        )
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise retry.ConfigError(
            f"the payload {retry.quote(path)} is not readable JSON: {retry.describe(exc)}"
        ) from None
    if not isinstance(payload, dict):
        raise retry.ConfigError("the payload is not a JSON object")
    return payload


def failed_execution(payload: Mapping[str, Any]) -> str:
    """The failed execution's id (or ``project:counter``) in the payload's ``data``."""
    data = payload["data"] if isinstance(payload.get("data"), dict) else {}
    execution_id, project, counter = (
        data.get(f"valohai.{key}") for key in ("execution-id", "project-id", "execution-counter")
    )
    if isinstance(execution_id, str) and execution_id:
        if not retry.is_execution_id(execution_id):
            raise retry.ConfigError(f"the payload's execution id {retry.quote(execution_id)} is not an execution id")
        return execution_id
    if isinstance(project, str) and project and retry.counter_of({"counter": counter}) is not None:
        return f"{project}:{counter}"
    raise retry.ConfigError(
        "the payload names no execution (data.valohai.execution-id): is the trigger on execution events?"
    )


def _shown(payload: Mapping[str, Any]) -> str:
    counter = retry.counter_of({"counter": payload["data"].get("valohai.execution-counter")})
    return f"#{counter}" if counter is not None else str(payload["data"].get("valohai.execution-id"))


def _read_log(
    api: retry.ValohaiAPI, execution_id: str, signatures: str, shown: str
) -> tuple[retry.Record | None, str | None]:
    """What the execution's last log lines tell (read as ``vh execution logs`` reads them, from
    ``<execution url>events/``): the record retry.py put there when it could not write its status
    detail, and the first of ``signatures`` after retry.py's last line (a traceback before it is
    one retry.py printed while it handled an error).  A log that cannot be read costs only itself."""
    try:
        events = api.get(f"/api/v0/executions/{execution_id}/events/").get("events")
    except Exception as exc:  # an answer of a shape never seen too
        _say(f"could not read {shown}'s log, so judging it by its status alone: {retry.describe(exc)}")
        return None, None
    messages = (
        [str(event.get("message")) for event in events if isinstance(event, dict)] if isinstance(events, list) else []
    )
    lines = [line for message in messages for line in message.splitlines()][-LOG_TAIL:]  # an event may hold several
    own = [number for number, line in enumerate(lines) if line.startswith("[retry] ")]
    logged = next((r for r in (retry.read_record(lines[n]) for n in reversed(own)) if r is not None), None)
    wanted = [text.strip() for text in signatures.split(";") if text.strip()]
    after = lines[own[-1] + 1 :] if own else lines
    return logged, next((text for line in after for text in wanted if text in line), None)


def _policy(settings: argparse.Namespace, parameters: object) -> retry.Policy:
    """The chain's policy, checked by retry.py's rules: ``retries`` and ``delay`` from the failed
    execution's ``parameters`` when it has usable ones, the rest (and else those) from this step's."""
    chosen: dict[str, Any] = {"retries": settings.retries, "delay": settings.delay}
    for name in chosen:
        probe: dict[str, Any] = {name: parameters.get(name) if isinstance(parameters, dict) else None}
        try:
            retry.Policy(max_delay=retry.MAX_WAIT, **probe)
            chosen.update(probe)
        except (retry.ConfigError, TypeError):  # not usable: this step's
            pass
    return retry.Policy(
        retries=chosen["retries"],
        delay=chosen["delay"],
        max_delay=retry.MAX_WAIT,
        retry_on=ExecutionLost,
        checkpoint=settings.checkpoint or None,
        checkpoint_pattern=settings.checkpoint_pattern,
    )


def _done(message: str, record: retry.Record) -> int:
    """Say what the controller did, in its status detail with its record, and end well."""
    if not retry.write_record(message, record):
        _say("could not write the controller's record")
    _say(message)
    return 0


def _say(message: str) -> None:
    sys.stderr.write(f"[retry-controller] {retry.printable(message)}\n")
    sys.stderr.flush()


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise retry.ConfigError(f"invalid parameter: {message}")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="controller.py", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--retries", type=int, default=3, help="retries of a chain, unless its execution has the parameter"
    )
    parser.add_argument(
        "--delay", type=float, default=60.0, help="seconds before a retry, unless its execution has the parameter"
    )
    parser.add_argument(
        "--checkpoint", default="checkpoint", help="the input through which a retry gets its checkpoint ('' for none)"
    )
    parser.add_argument(
        "--checkpoint_pattern", default=retry.DEFAULT_CHECKPOINT_PATTERN, help="which outputs are checkpoints"
    )
    parser.add_argument("--not_transient", default=NOT_TRANSIENT, help="';'-separated log text a restart cannot fix")
    return parser


if __name__ == "__main__":
    sys.exit(main())
