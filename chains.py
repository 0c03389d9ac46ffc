"""Report on the retry chains of a Valohai project: how they end, what they cost, why they fail.

``retry.py`` lets one execution recover by itself; this file watches the pattern across a
project, as Valohai's guide advises ("frequent retries may indicate systemic issues")::

    python chains.py report --project <id> [--days 7] [--json]
    python chains.py chain <counter> [--project <id>]

``report`` reads the project's executions of the last ``--days`` days through the API,
newest first and page by page, with the token and host rules of ``retry.py``
(``VH_API_TOKEN``, ``VALOHAI_HOST``, ``RETRY_API_TIMEOUT``).  It groups them into chains by
their ``RETRY_PARENT`` and ``retry: N`` tags and prints how the chains ended, the machine
time of the failed attempts and the top causes of failure; ``--json`` prints the same as one
JSON document.  ``chain`` prints every attempt of one chain, oldest first.

How executions are counted:

* A chain is a first attempt and the retries that followed it.  Its outcome is its last
  attempt's: complete (on the first attempt, or recovered on retry N, by its tag); still
  running (queued or running, or it says it started a retry that is not in the list yet);
  or failed, and then its status detail tells why: gave up, not retried, could not relaunch.
  A failure without a status detail of ``retry.py`` (the execution was stopped, killed, ran
  out of memory, or does not use ``retry.py``) ends its chain "without a verdict".
* An execution that never used ``retry.py`` is a chain of one attempt.
* A chain that began before the period is counted by its attempts inside the period: its
  outcome is still that of its last attempt, and only the failures inside the period count
  for machine time and causes.  Nothing older than the period is read.
* A duplicate retry (the API created it twice) that stood down belongs to no chain: it is
  counted as stood down.  A duplicate that has not stood down is counted as a duplicate; the
  chain goes on with its parent's first retry, as ``retry.py`` has it.

The reading is bounded (:class:`Bounds`): list pages, execution detail reads (one for each
retry, to learn its ``RETRY_PARENT``), and time.  At a bound the report covers the newest
executions it read, and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import retry

__all__ = [
    "Attempt",
    "Bounds",
    "Cause",
    "Period",
    "Report",
    "build_report",
    "cause_of",
    "format_report",
    "group_chains",
    "main",
    "normalize",
    "outcome",
    "read_period",
    "report_json",
    "summarize",
]

#: How many days a report looks back unless told.
DEFAULT_DAYS = 7.0
#: The longest period a report accepts, in days (ten years).
MAX_DAYS = 3650.0
#: List pages read at most: 20,000 executions at 100 a page.
MAX_REPORT_PAGES = 200
#: Execution details read at most (one per retry, for its RETRY_PARENT).
MAX_REPORT_DETAILS = 2000
#: Seconds of reading at most; a request under way then may still finish.
REPORT_SECONDS = 180.0
#: What the API client may take beyond that: one slow request and its retries.
API_GRACE = 60.0
#: How many causes the text report lists (the JSON lists them all).
TOP_CAUSES = 10

# How a chain ends: the JSON keys of the report.
FIRST_ATTEMPT = "first_attempt"
RECOVERED = "recovered"
GAVE_UP = "gave_up"
NOT_RETRIED = "not_retried"
RELAUNCH_FAILED = "relaunch_failed"
RUNNING = "running"
NO_VERDICT = "no_verdict"

#: Statuses of executions that have not ended (valohai-cli's ``incomplete_execution_statuses``).
INCOMPLETE_STATUSES = frozenset({"created", "queued", "started", "stopping"})
#: The cause of a failed attempt that left no status detail.
NO_DETAIL = "(no status detail)"


# --- the command line ------------------------------------------------------------------


def main(
    argv: Sequence[str] | None = None,
    *,
    now: Callable[[], float] = time.time,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    bounds: Bounds | None = None,
) -> int:
    """Command line: ``report --project ID [--days N] [--json]`` or ``chain <counter> [--project ID]``.

    Bad input ends with one line and :data:`retry.EXIT_BAD_CONFIG` (2); a token, host or
    API problem with one line and the exit code of ``retry.py`` for it (3).  The keyword
    arguments are for tests: the clocks, the sleep between API retries, the report's bounds.
    """
    args = _parser().parse_args(argv)
    try:
        if args.command == "chain":
            _print_chain(args, clock, sleep)
        else:
            _print_report(args, bounds or Bounds(), now, clock, sleep)
    except retry.RetryError as exc:
        _fail(str(exc), exc.exit_code)
    except Exception as exc:  # an answer of a shape never seen: one line all the same
        _fail(f"unexpected {retry.describe(exc)} while reading the project", retry.EXIT_RELAUNCH_FAILED)
    return 0


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a mistake is one line and exit code 2 (retry.EXIT_BAD_CONFIG)."""

    def error(self, message: str) -> NoReturn:
        _fail(f"invalid arguments: {message} (python chains.py --help)", retry.EXIT_BAD_CONFIG)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="chains.py", description="Report on retry chains of Valohai executions.")
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="how the project's retry chains ended, what failed, and why")
    report.add_argument("--project", help="project id (default: VH_PROJECT_ID, or this execution's project)")
    report.add_argument("--days", default=f"{DEFAULT_DAYS:g}", help="how many days back to look (default: 7)")
    report.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    show = commands.add_parser("chain", help="print every attempt of a retry chain")
    show.add_argument("counter", type=int, help="counter of any execution in the chain")
    show.add_argument("--project", help="project id (default: VH_PROJECT_ID, or this execution's project)")
    return parser


def _print_report(
    args: argparse.Namespace,
    bounds: Bounds,
    now: Callable[[], float],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    days = _days(args.days)  # checked before anything is read: bad input costs no request
    project = _project(args.project)
    api = _api(bounds.seconds + API_GRACE, clock, sleep)
    report = build_report(api, project, days=days, now=now(), clock=clock, bounds=bounds)
    print(json.dumps(report_json(report), indent=2) if args.json else format_report(report))


def _print_chain(args: argparse.Namespace, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    project = _project(args.project)
    api = _api(retry.CHECK_BUDGET, clock, sleep)
    print(format_chain(chain(api, project, args.counter)))


# --- one chain -------------------------------------------------------------------------


def chain(api: retry.ValohaiAPI, project_id: str, counter: int) -> list[dict[str, Any]]:
    """Every attempt of the chain that execution ``counter`` belongs to, oldest first.

    At most :data:`retry.MAX_RETRIES` + 1 attempts, whatever the variables and tags say; the
    project's executions newer than the chain are read once (bounded as every list).
    """
    attempts = [api.get(f"/api/v0/executions/{project_id}:{counter}/", {"exclude": "metadata,events"})]
    seen = {retry._hashable_id(attempts[0])}
    # Backwards through RETRY_PARENT; a tampered variable cannot make it loop.
    while (
        len(attempts) <= retry.MAX_RETRIES
        and (parent := retry.parent_of(attempts[0])) is not None
        and parent not in seen
    ):
        attempts.insert(0, api.get(f"/api/v0/executions/{parent}/", {"exclude": "metadata,events"}))
        seen.add(parent)
    later: dict[int, list[dict[str, Any]]] = {}  # the newer executions, by their retry number
    for item in retry.executions_after(api, project_id, counter=retry.counter_of(attempts[-1]) or 0):
        later.setdefault(retry.retry_number(retry.tags_of(item)), []).append(item)
    while len(attempts) <= retry.MAX_RETRIES:  # forwards: each retry has a higher counter than its parent
        last = attempts[-1]
        floor = retry.counter_of(last) or 0
        candidates = [
            item for item in later.get(retry.retry_number(retry.tags_of(last)) + 1, []) if int(item["counter"]) > floor
        ]
        child = retry.first_retry(api, candidates, str(last.get("id")))
        if child is None:
            break
        attempts.append(child)
    return attempts


def format_chain(attempts: Sequence[Mapping[str, Any]]) -> str:
    """A table of attempts: counter, retry number, status, status detail, URL."""
    lines = []
    for item in attempts:
        fields = [
            retry._counter_text(item),
            f"retry {retry.retry_number(retry.tags_of(item))}",
            item.get("status", "?"),
        ]
        fields += [retry._one_line(item.get("status_detail") or "-"), retry.display_url(item)]
        lines.append("  ".join(str(field) for field in fields))
    return "\n".join(lines)


# --- the report ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Cause:
    """One cause of failed attempts: its normalized text, how often, and the newest example."""

    cause: str
    count: int
    example: str


@dataclasses.dataclass(frozen=True)
class Report:
    """What a project's retry chains did in a period: counts, failed time, causes."""

    project_id: str
    project_name: str
    days: float
    since: float  # epoch seconds: the period's start
    executions: int
    chains: int
    first_attempt: int
    recovered: dict[int, int]  # retry number that succeeded -> chains
    gave_up: int
    not_retried: int
    relaunch_failed: int
    running: int
    no_verdict: int
    stood_down: int
    duplicates: int
    failed_attempts: int
    failed_seconds: float
    failed_without_duration: int
    causes: list[Cause]
    stopped: str | None = None  # the bound that cut the period short, if one did
    oldest: Attempt | None = None  # the oldest execution read


def build_report(
    api: retry.ValohaiAPI,
    project_id: str,
    *,
    days: float,
    now: float,
    clock: Callable[[], float] = time.monotonic,
    bounds: Bounds | None = None,
) -> Report:
    """Read the project's executions of the last ``days`` days before ``now`` and sum them up.

    Raises :class:`retry.APIError` when the project cannot be seen or the API fails.
    """
    name = _project_name(api, project_id)
    since = now - days * 86_400
    period = read_period(api, project_id, since, bounds=bounds or Bounds(), clock=clock)
    return summarize(period, project_id=project_id, project_name=name, days=days, since=since)


def summarize(period: Period, *, project_id: str, project_name: str, days: float, since: float) -> Report:
    """The report on the executions of ``period``: chains and their outcomes, failures, causes."""
    grouping = group_chains(period.attempts)
    outcomes = [outcome(path) for path in grouping.chains]
    recovered: dict[int, int] = {}
    for name, number in outcomes:
        if name == RECOVERED:
            recovered[number] = recovered.get(number, 0) + 1
    failed = [attempt for attempt in period.attempts if attempt.failed]
    durations = [attempt.duration for attempt in failed if attempt.duration is not None]
    names = [name for name, _ in outcomes]
    return Report(
        project_id=project_id,
        project_name=project_name,
        days=days,
        since=since,
        executions=len(period.attempts),
        chains=len(grouping.chains),
        first_attempt=names.count(FIRST_ATTEMPT),
        recovered=dict(sorted(recovered.items())),
        gave_up=names.count(GAVE_UP),
        not_retried=names.count(NOT_RETRIED),
        relaunch_failed=names.count(RELAUNCH_FAILED),
        running=names.count(RUNNING),
        no_verdict=names.count(NO_VERDICT),
        stood_down=len(grouping.stood_down),
        duplicates=len(grouping.duplicates),
        failed_attempts=len(failed),
        failed_seconds=sum(durations),
        failed_without_duration=len(failed) - len(durations),
        causes=top_causes(failed),
        stopped=period.stopped,
        oldest=min(period.attempts, key=lambda attempt: attempt.counter, default=None),
    )


def format_report(report: Report) -> str:
    """The report as text: period, summary line, duplicates, failed machine time, top causes."""
    lines = [
        f"Retry chains of {report.project_name} since {_when(report.since)} (--days {report.days:g}):"
        f" {report.executions} executions read",
    ]
    if report.stopped:
        lines.append(_stop_note(report))
    lines.append(_summary_line(report))
    lines.append(f"Duplicate retries: stood down: {report.stood_down} | not stood down: {report.duplicates}")
    machine_time = f"Machine time of failed attempts: {_duration_text(report.failed_seconds)}"
    machine_time += f" over {report.failed_attempts} attempts"
    if report.failed_without_duration:
        machine_time += f" ({report.failed_without_duration} without a duration)"
    lines.append(machine_time)
    lines += _cause_lines(report.causes)
    return "\n".join(lines)


def _summary_line(report: Report) -> str:
    recovered = sum(report.recovered.values())
    by_retry = ", ".join(f"retry {number}: {count}" for number, count in report.recovered.items())
    parts = [
        f"Chains: {report.chains}",
        f"succeeded on the first attempt: {report.first_attempt}",
        f"recovered: {recovered}" + (f" ({by_retry})" if by_retry else ""),
        f"gave up: {report.gave_up}",
        f"not retried (not transient): {report.not_retried}",
        f"could not relaunch: {report.relaunch_failed}",
        f"still running: {report.running}",
        f"ended without a verdict: {report.no_verdict}",
    ]
    return " | ".join(parts)


def _stop_note(report: Report) -> str:
    if report.oldest is None:
        return f"Stopped early, at {report.stopped}: no execution was read."
    return (
        f"Stopped early, at {report.stopped}: this report covers executions since"
        f" {_when(report.oldest.created)} (#{report.oldest.counter} and newer), not the whole period."
    )


def _cause_lines(causes: Sequence[Cause]) -> list[str]:
    if not causes:
        return ["Top causes of failed attempts: none"]
    lines = ["Top causes of failed attempts:"]
    for cause in causes[:TOP_CAUSES]:
        lines.append(f"  {cause.count:>4}  {cause.cause}")
        if cause.example:
            lines.append(f"        e.g. {cause.example}")
    if len(causes) > TOP_CAUSES:
        lines.append(f"  ... and {len(causes) - TOP_CAUSES} more causes (--json lists them all)")
    return lines


def report_json(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object, for dashboards and alerts."""
    return {
        "project": report.project_id,
        "project_name": report.project_name,
        "days": int(report.days) if float(report.days).is_integer() else report.days,
        "since": _iso(report.since),
        "executions": report.executions,
        "chains": report.chains,
        FIRST_ATTEMPT: report.first_attempt,
        RECOVERED: {str(number): count for number, count in report.recovered.items()},
        GAVE_UP: report.gave_up,
        NOT_RETRIED: report.not_retried,
        RELAUNCH_FAILED: report.relaunch_failed,
        RUNNING: report.running,
        NO_VERDICT: report.no_verdict,
        "stood_down": report.stood_down,
        "duplicates": report.duplicates,
        "failed_attempts": report.failed_attempts,
        "failed_seconds": round(report.failed_seconds),
        "failed_without_duration": report.failed_without_duration,
        "causes": [dataclasses.asdict(cause) for cause in report.causes],
        "whole_period": report.stopped is None,
        "stopped": report.stopped,
        "covers_since": _iso(report.oldest.created) if report.oldest and report.oldest.created is not None else None,
    }


# --- chains and how they end -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One execution of the period, as far as the report needs it."""

    id: str
    counter: int
    retry: int  # its ``retry: N`` tag; 0 for a first attempt
    parent: str | None  # RETRY_PARENT: the execution whose failure it retries
    status: str
    status_detail: str
    duration: float | None  # seconds, when the API gives it
    url: str
    created: float | None  # ctime, epoch seconds

    @property
    def running(self) -> bool:
        """Whether it has not ended yet."""
        return self.status in INCOMPLETE_STATUSES

    @property
    def failed(self) -> bool:
        """Whether it ended other than complete (error, crashed, stopped, ...)."""
        return not self.running and self.status != "complete"

    @property
    def stood_down(self) -> bool:
        """Whether it was a duplicate retry that left the work to the first copy."""
        return self.status_detail.startswith("Stood down:")


@dataclasses.dataclass
class Grouping:
    """Executions sorted into chains (oldest attempt first), stood-down and other duplicates."""

    chains: list[list[Attempt]] = dataclasses.field(default_factory=list)
    stood_down: list[Attempt] = dataclasses.field(default_factory=list)
    duplicates: list[Attempt] = dataclasses.field(default_factory=list)


def group_chains(attempts: Sequence[Attempt]) -> Grouping:
    """Sort ``attempts`` into chains by ``RETRY_PARENT``; every attempt lands in one place.

    A chain goes on with the lowest-counter retry of each attempt, as ``retry.py`` has it;
    other retries of the same attempt (and what followed them) are duplicates.  Retries of
    an execution that was not read (older than the period) start a chain of their own.  A
    parent must be older than its retry, so a tampered ``RETRY_PARENT`` cannot make a loop.
    """
    grouping = Grouping(stood_down=[attempt for attempt in attempts if attempt.stood_down])
    live = sorted((attempt for attempt in attempts if not attempt.stood_down), key=lambda attempt: attempt.counter)
    by_id = {attempt.id: attempt for attempt in live}
    children: dict[str, list[Attempt]] = {}  # parent id -> its retries, oldest first
    heads: list[Attempt] = []
    for attempt in live:
        parent = by_id.get(attempt.parent) if attempt.parent else None
        if attempt.parent and (parent is None or parent.counter < attempt.counter):
            children.setdefault(attempt.parent, []).append(attempt)
        else:
            heads.append(attempt)
    for parent_id, retries in children.items():
        if parent_id not in by_id:  # its parent is older than the period: the first retry heads a chain
            heads.append(retries[0])
            grouping.duplicates += _descendants(retries[1:], children)
    for head in sorted(heads, key=lambda attempt: attempt.counter):
        path = [head]
        while path[-1].id in children:
            first, *others = children[path[-1].id]
            path.append(first)
            grouping.duplicates += _descendants(others, children)
        grouping.chains.append(path)
    return grouping


def _descendants(roots: Sequence[Attempt], children: Mapping[str, Sequence[Attempt]]) -> list[Attempt]:
    """``roots`` and every retry that followed them."""
    found = list(roots)
    for attempt in found:  # grows while it is walked: each attempt has one parent, so it ends
        found += children.get(attempt.id, [])
    return found


def outcome(path: Sequence[Attempt]) -> tuple[str, int]:
    """How a chain ended, from its last attempt: an outcome and, for a recovery, the retry number."""
    last = path[-1]
    if last.running:
        return RUNNING, 0
    if last.status == "complete":
        number = max(last.retry, len(path) - 1)  # the tag, unless the chain read shows more
        return (RECOVERED, number) if number else (FIRST_ATTEMPT, 0)
    return _verdict(last.status_detail), 0


# The status details that retry.py writes when an attempt fails (see retry._decide).
_GAVE_UP = re.compile(r"Gave up after [0-9]+ retr(?:y|ies): ")
_NOT_RETRIED = re.compile(r"Not retried\b")
_STARTED = " - retry [0-9]+/[0-9]+ started as "
_NOT_STARTED = (
    " - could not start retry [0-9]+/[0-9]+: "
    "| - retry [0-9]+/[0-9]+ may have been started, but the API never confirmed it"
    "| - not retried: cannot tell which retry this is: "
)


def _verdict(detail: str) -> str:
    """The outcome a failed last attempt's status detail tells."""
    if _GAVE_UP.match(detail):
        return GAVE_UP
    if _NOT_RETRIED.match(detail):
        return NOT_RETRIED
    if re.search(_STARTED, detail):  # a retry was started, and the list does not show it yet
        return RUNNING
    if re.search(_NOT_STARTED, detail):
        return RELAUNCH_FAILED
    return NO_VERDICT


# --- causes ----------------------------------------------------------------------------


def top_causes(failed: Sequence[Attempt]) -> list[Cause]:
    """Causes of ``failed`` attempts, most frequent first, each with its newest example's URL."""
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    for attempt in sorted(failed, key=lambda attempt: -attempt.counter):
        cause = cause_of(attempt.status_detail)
        counts[cause] = counts.get(cause, 0) + 1
        examples.setdefault(cause, attempt.url)
    ranked = sorted(counts, key=lambda cause: (-counts[cause], cause))
    return [Cause(cause=cause, count=counts[cause], example=examples[cause]) for cause in ranked]


_VERDICT_PREFIX = re.compile(
    r"Gave up after [0-9]+ retr(?:y|ies): "
    r"|Not retried \(not a transient error\): "
    r"|Not retried: this execution is tagged as retry [0-9]+, above the ceiling of [0-9]+;"
    r" remove its 'retry:' tag to start a new chain: "
)
# Greedy: the last of these in the detail is retry.py's own suffix, whatever the error says.
_VERDICT_SUFFIX = re.compile(f"(?s)(.*)(?:{_STARTED}|{_NOT_STARTED})")


def cause_of(status_detail: str) -> str:
    """The error a failed attempt's status detail names, as ``Type: message``, normalized.

    ``retry.py``'s own words around the error (``Gave up after N retries: ``,
    `` - retry N/R started as #C`` and the like) are taken off; see :func:`normalize`.
    """
    text = status_detail.strip()
    if not text:
        return NO_DETAIL
    prefix = _VERDICT_PREFIX.match(text)
    if prefix:
        text = text[prefix.end() :]
    suffix = _VERDICT_SUFFIX.match(text)
    return normalize(suffix.group(1) if suffix else text)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_HEX_ID = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.IGNORECASE)
_COUNTER = re.compile(r"#[0-9]+")
# A number glued to a letter before it is part of a name (v1, s3, ipv4): kept.
_NUMBER = re.compile(r"(?<![A-Za-z_])[0-9]+(?:\.[0-9]+)?")


def normalize(message: str) -> str:
    """``message`` with what differs between occurrences of one error taken out.

    UUIDs and hex ids become ``<id>``, execution counters ``#<n>``, other numbers ``<n>``
    (ports, sizes, seconds, statuses), and whitespace is collapsed.
    """
    text = _UUID.sub("<id>", message)
    text = _HEX_ID.sub("<id>", text)
    text = _COUNTER.sub("#<n>", text)
    text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())


# --- reading the period ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bounds:
    """How much one report may read: list pages, execution details, seconds."""

    pages: int = MAX_REPORT_PAGES
    details: int = MAX_REPORT_DETAILS
    seconds: float = REPORT_SECONDS


@dataclasses.dataclass
class Period:
    """The executions read, newest first, and the bound that stopped the reading, if one did."""

    attempts: list[Attempt] = dataclasses.field(default_factory=list)
    details: int = 0  # execution details read
    stopped: str | None = None


def read_period(
    api: retry.ValohaiAPI,
    project_id: str,
    since: float,
    *,
    bounds: Bounds | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Period:
    """The project's executions created from ``since`` (epoch seconds) on, newest first.

    Pages are read as :func:`retry.execution_pages` reads them, until an execution
    older than ``since`` (or to the end, if the server does not list newest first).
    A retry whose list entry lacks its variables, or an ended execution whose entry lacks
    its status detail, costs one detail read.  At a bound the reading stops before the
    execution it could not read, so the period read is the newest part, without gaps.
    """
    bounds = bounds or Bounds()
    period = Period()
    deadline = clock() + bounds.seconds
    pages = retry.execution_pages(api, project_id, max_pages=bounds.pages)
    last, ordered = None, True
    try:
        while clock() < deadline:  # checked between requests: what a page holds costs nothing more
            page = next(pages, None)
            if page is None:
                return period
            executions = list(filter(_is_execution, page))  # without an id and a counter nothing can be chained
            for item in executions:  # a server that does not keep the order asked is read to the end
                ordered, last = ordered and (last is None or item["counter"] < last), item["counter"]
            for item in executions:
                created = _instant(item.get("ctime"))
                if created is not None and created < since:
                    if ordered:
                        return period  # newest first: all that follows is older still
                    continue
                known = item
                if _needs_detail(item):
                    period.stopped = _detail_bound(period, bounds, late=clock() >= deadline)
                    if period.stopped:
                        return period
                    known = _with_detail(api, item)
                    period.details += 1
                period.attempts.append(_attempt(known, created))
    except retry.ListTooLongError:
        period.stopped = f"the bound of {bounds.pages} list pages"
        return period
    period.stopped = f"the time bound of {bounds.seconds:g} s"
    return period


def _detail_bound(period: Period, bounds: Bounds, *, late: bool) -> str | None:
    """The bound that forbids one more detail read, if one does."""
    if period.details >= bounds.details:
        return f"the bound of {bounds.details} execution detail reads"
    if late:
        return f"the time bound of {bounds.seconds:g} s"
    return None


def _is_execution(item: Any) -> bool:
    return isinstance(item, dict) and retry.counter_of(item) is not None and isinstance(item.get("id"), str)


def _needs_detail(item: Mapping[str, Any]) -> bool:
    """Whether the list entry lacks what the report needs (list entries may be abridged)."""
    lacks_parent = retry.retry_number(retry.tags_of(item)) > 0 and "environment_variables" not in item
    ended = item.get("status") not in INCOMPLETE_STATUSES
    return lacks_parent or "status" not in item or (ended and "status_detail" not in item)


def _with_detail(api: retry.ValohaiAPI, item: dict[str, Any]) -> dict[str, Any]:
    """The list entry completed by the execution's detail (as it is, if it was deleted since)."""
    try:
        detail = api.get(f"/api/v0/executions/{item['id']}/", {"exclude": "metadata,events"})
    except retry.APIError as exc:
        if exc.status == 404:
            return item
        raise
    return {**item, **detail}


def _attempt(item: Mapping[str, Any], created: float | None) -> Attempt:
    parent = retry.parent_of(item)
    status = item.get("status")
    detail = item.get("status_detail")
    duration = item.get("duration")
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not 0 <= duration < 1e12:
        duration = None  # missing, or not a length of time (NaN, infinite, negative, absurd)
    return Attempt(
        id=str(item["id"]),
        counter=int(item["counter"]),
        retry=retry.retry_number(retry.tags_of(item)),
        parent=str(parent) if parent else None,
        status=status if isinstance(status, str) else "unknown",
        status_detail=detail if isinstance(detail, str) else "",
        duration=float(duration) if duration is not None else None,
        url=retry.display_url(item),
        created=created,
    )


def _project_name(api: retry.ValohaiAPI, project_id: str) -> str:
    """The project's name; an unknown project ends the report before any list is read."""
    try:
        project = api.get(f"/api/v0/projects/{project_id}/")
    except retry.APIError as exc:
        if exc.status == 404:
            raise retry.APIError(
                f"no project {project_id} at {api.host}: check the id (Project settings shows it),"
                " VALOHAI_HOST, and that the token's user can see the project",
                404,
            ) from None
        raise
    name = project.get("name")
    return name if isinstance(name, str) and name else project_id


# --- plumbing: input, API client, time -------------------------------------------------


def _days(text: str) -> float:
    """``--days`` as a number of days, or :class:`retry.ConfigError` (exit 2)."""
    days = float(text) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text.strip()) else -1.0
    if not 0 < days <= MAX_DAYS:
        raise retry.ConfigError(
            f"--days must be a number of days above 0 and at most {MAX_DAYS:g}, got {retry.quote(text, 20)}"
        )
    return days


def _project(given: str | None) -> str:
    """The project id: ``--project``, else ``VH_PROJECT_ID``, else this execution's project."""
    try:
        return given or os.environ.get("VH_PROJECT_ID") or retry.read_execution().project_id
    except retry.RetryError:
        raise retry.ConfigError(
            "no project: pass --project <id> (Project settings shows it) or set VH_PROJECT_ID"
        ) from None


def _api(budget: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> retry.ValohaiAPI:
    """An API client for a command on a laptop: an unreachable host ends it at once."""
    return retry.ValohaiAPI(
        retry.read_token(), timeout=retry.request_timeout(), budget=budget, clock=clock, sleep=sleep, patient=False
    )


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"[chains] {message}\n")
    sys.exit(code)


def _instant(value: Any) -> float | None:
    """An API time (ISO 8601) as epoch seconds, or None when it is missing or garbled."""
    try:
        return retry.parse_instant(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):
        return None


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "an unknown time"
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration_text(seconds: float) -> str:
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


if __name__ == "__main__":
    sys.exit(main())
