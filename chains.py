"""Report on the retry chains of a Valohai project: how they end, what they cost, why they fail.

    python chains.py report --project <id> [--days 7] [--json]
    python chains.py chain <counter> [--project <id>]

It reads the records ``retry.py`` and ``controller.py`` leave at the end of each attempt's status
detail (:class:`retry.Record`), never their wording: a chain is a first attempt and the retries
its records name (else their ``RETRY_PARENT``), and ends as its last attempt's record says, or
"without a verdict".  The reading is bounded (:class:`Bounds`), and says where it stopped.
More: docs/report.md.
"""

from __future__ import annotations

import argparse
import contextlib
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

#: How many days a report looks back unless told, and at most (ten years).
DEFAULT_DAYS, MAX_DAYS = 7.0, 3650.0
#: A report reads at most 200 list pages (20,000 executions), 2,000 execution details (for what list
#: entries lack) and 180 s (a request under way then may still finish: API_GRACE is its time).
MAX_REPORT_PAGES, MAX_REPORT_DETAILS, REPORT_SECONDS, API_GRACE = 200, 2000, 180.0, 60.0
#: How many causes the text report lists (the JSON lists them all).
TOP_CAUSES = 10

# How a chain ends: the JSON keys of the report.
FIRST_ATTEMPT, RECOVERED, GAVE_UP, NOT_RETRIED = "first_attempt", "recovered", "gave_up", "not_retried"
RELAUNCH_FAILED, RUNNING, NO_VERDICT = "relaunch_failed", "running", "no_verdict"
#: How a chain whose last attempt failed ended, by that attempt's record.
VERDICTS = {
    "started": RUNNING,  # its retry is not in the list yet
    "waiting": RUNNING,  # a retry controller waits out the delay before it starts one
    "gave_up": GAVE_UP,
    "not_retried": NOT_RETRIED,
    "not_started": RELAUNCH_FAILED,
    "unconfirmed": RELAUNCH_FAILED,
}
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
    """``report --project ID [--days N] [--json]`` or ``chain <counter> [--project ID]``: bad input ends
    with one line and exit code 2, a token, host or API problem with one line and exit code 3.  The
    keyword arguments are for tests: the clocks, the sleep between API retries, the report's bounds."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "chain":
            project = _project(args.project)
            api = _api(REPORT_SECONDS + API_GRACE, clock, sleep)  # a chain of 101 attempts, read one by one
            print(format_chain(chain(api, project, args.counter)))
        else:
            days = _days(args.days)  # checked before anything is read: bad input costs no request
            project = _project(args.project)
            api = _api((bounds or Bounds()).seconds + API_GRACE, clock, sleep)
            report = build_report(api, project, days=days, now=now(), clock=clock, bounds=bounds or Bounds())
            lines = (json.dumps(report, indent=2) if args.json else format_report(report)).splitlines()
            print("\n".join(map(retry.printable, lines)))  # JSON is ASCII: this only masks a token
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


# --- one chain -------------------------------------------------------------------------


def chain(api: retry.ValohaiAPI, project_id: str, counter: int) -> list[dict[str, Any]]:
    """Every attempt of the chain that execution ``counter`` belongs to, oldest first: backwards by
    ``RETRY_PARENT`` (a deleted parent ends the walk), forwards by the heir each record names, or
    past a failure without a record (a crash) by a bounded search for its retry.  One detail read per
    attempt, :data:`retry.MAX_RETRIES` + 1 at most; a tampered variable or record cannot make it loop."""
    attempts = [_detail(api, f"{project_id}:{counter}", f"execution #{counter} was not found in project {project_id}")]
    if (acted := retry.read_record(attempts[0])) is not None and acted.failed:  # a retry controller's: the chain
        attempts = [_detail(api, acted.failed, f"execution {acted.failed}, which #{counter} acted for, was not found")]
    seen = {attempts[0].get("id")}
    while len(attempts) <= retry.MAX_RETRIES and (parent := retry.parent_of(attempts[0])) not in (None, *seen):
        with contextlib.suppress(_Deleted):
            attempts.insert(0, _detail(api, str(parent), ""))
        seen.add(parent)
    while len(attempts) <= retry.MAX_RETRIES:
        last, record = attempts[-1], retry.read_record(attempts[-1])
        heir = record.heir if record is not None else _crash_retry(api, project_id, last)
        if heir is None or heir in seen:
            break
        try:
            attempts.append(_detail(api, heir, ""))
        except _Deleted:  # deleted since it was named: the chain is what is left
            break
        seen.add(heir)
    return attempts


def _crash_retry(api: retry.ValohaiAPI, project_id: str, failed: Mapping[str, Any]) -> str | None:
    """The retry a controller started for ``failed`` (a failure without a record), if one is found."""
    if not isinstance(failed.get("status"), str) or failed["status"] in retry.NOT_FAILED_STATUSES:
        return None
    like = {"step": failed.get("step"), "title": failed.get("title")}
    with contextlib.suppress(retry.RetryError):
        found = retry.find_copy(api, project_id, failed, _retry_of(failed) + 1, like, working=False)
        return str(found["id"]) if found else None
    return None


def format_chain(attempts: Sequence[Mapping[str, Any]]) -> str:
    """A table of attempts: counter, retry number, status, status detail (its words), URL."""
    lines = []
    for item in attempts:
        counter, status = retry.counter_of(item), item.get("status") if isinstance(item.get("status"), str) else "?"
        fields = [f"#{counter}" if counter is not None else "#?", f"retry {_retry_of(item)}", str(status)]
        lines.append("  ".join([*fields, _words(item.get("status_detail")) or "-", retry.display_url(item)]))
    return "\n".join(map(retry.printable, lines))


# --- the report ------------------------------------------------------------------------


def build_report(
    api: retry.ValohaiAPI,
    project_id: str,
    *,
    days: float,
    now: float,
    clock: Callable[[], float] = time.monotonic,
    bounds: Bounds | None = None,
) -> dict[str, Any]:
    """Read the project's executions of the last ``days`` days before ``now`` and sum them up."""
    name = _project_name(api, project_id)
    since = now - days * 86_400
    period = read_period(api, project_id, since, bounds=bounds or Bounds(), clock=clock)
    return summarize(period, project_id=project_id, project_name=name, days=days, since=since)


def summarize(period: Period, *, project_id: str, project_name: str, days: float, since: float) -> dict[str, Any]:
    """The report on ``period``, as the JSON document ``--json`` prints (the text is made from it):
    chains by outcome, duplicates, the failed attempts' machine time, their causes, the bound hit."""
    attempts = controller_verdicts(period.attempts)
    grouping = group_chains(attempts)
    ends = [outcome(path) for path in grouping.chains]
    names = [name for name, _ in ends]
    numbers = sorted(number for name, number in ends if name == RECOVERED)
    failed = [attempt for attempt in attempts if attempt.failed]
    durations = [attempt.duration for attempt in failed if attempt.duration is not None]
    oldest = None if period.unordered else min(period.attempts, key=lambda attempt: attempt.counter, default=None)
    return {
        "project": project_id,
        "project_name": project_name,
        "days": int(days) if float(days).is_integer() else days,
        "since": _iso(since),
        "executions": len(period.attempts),
        "chains": len(grouping.chains),
        FIRST_ATTEMPT: names.count(FIRST_ATTEMPT),
        RECOVERED: {str(number): numbers.count(number) for number in dict.fromkeys(numbers)},
        **{name: names.count(name) for name in (GAVE_UP, NOT_RETRIED, RELAUNCH_FAILED, RUNNING, NO_VERDICT)},
        "stood_down": len(grouping.stood_down),
        "duplicates": len(grouping.duplicates),
        "failed_attempts": len(failed),
        "failed_seconds": round(sum(durations)),
        "failed_without_duration": len(failed) - len(durations),
        "causes": top_causes(failed),
        "whole_period": period.stopped is None,
        "stopped": period.stopped,
        "covers_since": _iso(oldest.created) if oldest is not None and oldest.created is not None else None,
        "oldest_counter": oldest.counter if oldest is not None else None,
    }


def format_report(report: Mapping[str, Any]) -> str:
    """The report as text: period, summary line, duplicates, failed machine time, top causes."""
    period = f"since {_when(report['since'])} (--days {report['days']:g})"
    lines = [f"Retry chains of {report['project_name']} {period}: {report['executions']} executions read"]
    if report["stopped"] and not report["executions"]:
        lines.append(f"Stopped early, at {report['stopped']}: no execution was read.")
    elif report["stopped"] and report["oldest_counter"] is None:
        stopped, read = report["stopped"], report["executions"]
        lines.append(
            f"Stopped early, at {stopped}: the server did not list the executions newest first, so this report covers the {read} it read, not the whole period."  # noqa: E501 - one line to grep
        )
    elif report["stopped"]:
        lines.append(
            f"Stopped early, at {report['stopped']}: this report covers executions since"
            f" {_when(report['covers_since'])} (#{report['oldest_counter']} and newer), not the whole period."
        )
    by_retry = ", ".join(f"retry {number}: {count}" for number, count in report[RECOVERED].items())
    lines.append(
        f"Chains: {report['chains']} | succeeded on the first attempt: {report[FIRST_ATTEMPT]}"
        f" | recovered: {sum(report[RECOVERED].values())}"
        + (f" ({by_retry})" if by_retry else "")
        + f" | gave up: {report[GAVE_UP]} | not retried (not transient): {report[NOT_RETRIED]}"
        f" | could not relaunch: {report[RELAUNCH_FAILED]} | still running: {report[RUNNING]}"
        f" | ended without a verdict: {report[NO_VERDICT]}"
    )
    lines.append(f"Duplicate retries: stood down: {report['stood_down']} | not stood down: {report['duplicates']}")
    machine = f"Machine time of failed attempts: {_duration_text(report['failed_seconds'])}"
    lines.append(machine + f" over {report['failed_attempts']} attempts")
    if report["failed_without_duration"]:
        lines[-1] += f" ({report['failed_without_duration']} without a duration)"
    causes = report["causes"]
    lines.append("Top causes of failed attempts:" if causes else "Top causes of failed attempts: none")
    for cause in causes[:TOP_CAUSES]:
        lines.append(f"  {cause['count']:>4}  {cause['cause']}")
        lines += [f"        e.g. {cause['example']}"] if cause["example"] else []
    if len(causes) > TOP_CAUSES:
        lines.append(f"  ... and {len(causes) - TOP_CAUSES} more causes (--json lists them all)")
    return "\n".join(retry.printable(line) for line in lines)


# --- chains and how they end -----------------------------------------------------------


def controller_verdicts(attempts: Sequence[Attempt]) -> list[Attempt]:
    """The attempts of chains: the retry controller's executions (``controller.py``) are left out,
    and the record of one that acted speaks for the failed execution it names, if that left none."""
    acted = sorted(  # a controller that started a retry speaks over one that did not; then the newest word
        (a for a in attempts if a.record and a.record.failed and a.record.outcome != "stood_down"),
        key=lambda attempt: (attempt.record is not None and attempt.record.outcome == "started", attempt.counter),
    )
    verdicts = {attempt.record.failed: attempt.record for attempt in acted if attempt.record}
    return [
        dataclasses.replace(attempt, record=verdicts[attempt.id], cause=verdicts[attempt.id].cause or attempt.cause)
        if attempt.record is None and attempt.id in verdicts
        else attempt
        for attempt in attempts
        if not (attempt.record and attempt.record.failed is not None)
    ]


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One execution of the period, as far as the report needs it."""

    id: str
    counter: int
    number: int  # its ``retry: N`` tag; 0 for a first attempt
    parent: str | None  # RETRY_PARENT, when it was read: the execution whose failure it retries
    status: str
    record: retry.Record | None  # how it ended, as retry.py recorded it
    cause: str  # the error its record names, else its status detail's words
    duration: float | None  # seconds, when the API gives it
    url: str
    created: float | None  # ctime, epoch seconds

    @property
    def running(self) -> bool:  # it has not ended yet
        return self.status in retry.INCOMPLETE_STATUSES

    @property
    def failed(self) -> bool:  # it ended other than complete (error, crashed, stopped, ...)
        return not self.running and self.status != "complete"

    @property
    def stood_down(self) -> bool:  # a copy of a retry that left the work to the one its parent named
        return self.record is not None and self.record.outcome == "stood_down"

    @property
    def heir(self) -> str | None:  # the retry its record names, if it started one
        return self.record.heir if self.record is not None and self.record.outcome == "started" else None


@dataclasses.dataclass
class Grouping:
    """Executions sorted into chains (oldest attempt first), stood-down copies and other duplicates."""

    chains: list[list[Attempt]] = dataclasses.field(default_factory=list)
    stood_down: list[Attempt] = dataclasses.field(default_factory=list)
    duplicates: list[Attempt] = dataclasses.field(default_factory=list)


def group_chains(attempts: Sequence[Attempt]) -> Grouping:
    """Sort ``attempts`` into chains, each attempt in one place: a retry follows the parent whose record
    names it, else its ``RETRY_PARENT`` (going on only if the parent named none, the lowest first);
    retries of a parent not read (older than the period) head a chain.  A parent must be older than
    its retry, so a tampered variable or record cannot make a loop."""
    grouping = Grouping(stood_down=[attempt for attempt in attempts if attempt.stood_down])
    live = sorted((attempt for attempt in attempts if not attempt.stood_down), key=lambda attempt: attempt.counter)
    by_id = {attempt.id: attempt for attempt in live}
    named_by = {attempt.heir: attempt.id for attempt in live if attempt.heir}
    children: dict[str, list[Attempt]] = {}  # parent id -> its retries, the one that goes on first
    heads: list[Attempt] = []
    for attempt in live:
        parent_id = named_by.get(attempt.id) or attempt.parent
        parent = by_id.get(parent_id) if parent_id else None
        if parent_id and (parent is None or parent.counter < attempt.counter):
            children.setdefault(parent_id, []).append(attempt)
        else:
            heads.append(attempt)
    for parent_id, retries in children.items():
        heir = by_id[parent_id].heir if parent_id in by_id else None
        retries.sort(key=lambda attempt: (heir is not None and attempt.id != heir, attempt.counter))
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
        number = max(last.number, len(path) - 1)  # the tag, unless the chain read shows more
        return (RECOVERED, number) if number else (FIRST_ATTEMPT, 0)
    return VERDICTS.get(last.record.outcome if last.record else "", NO_VERDICT), 0


# --- causes ----------------------------------------------------------------------------


def top_causes(failed: Sequence[Attempt]) -> list[dict[str, Any]]:
    """Causes of ``failed`` attempts, most frequent first, with their counts and newest examples."""
    counts: dict[str, int] = {}
    examples: dict[str, str] = {}
    for attempt in sorted(failed, key=lambda attempt: -attempt.counter):
        cause = normalize(attempt.cause) or NO_DETAIL
        counts[cause] = counts.get(cause, 0) + 1
        examples.setdefault(cause, attempt.url)
    ranked = sorted(counts, key=lambda cause: (-counts[cause], cause))
    return [{"cause": cause, "count": counts[cause], "example": examples[cause]} for cause in ranked]


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
_HEX_ID = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.IGNORECASE)
_COUNTER = re.compile(r"#[0-9]+")
# A number glued to a name (node12, v10, s3, ipv4, v1.2.3) is part of the name: kept whole; one
# with a unit (5003ms, 512MB, 30.5s) is a number, taken whole (never a part of its digits).
_NUMBER = re.compile(r"(?<![A-Za-z0-9_.])[0-9]+(?:\.[0-9]+)*(?![0-9]|\.[0-9])")


def normalize(message: str) -> str:
    """``message`` without what differs between occurrences of one error: UUIDs and hex ids become
    ``<id>``, execution counters ``#<n>``, other numbers ``<n>``; whitespace is collapsed."""
    text = _COUNTER.sub("#<n>", _HEX_ID.sub("<id>", _UUID.sub("<id>", message)))
    return " ".join(_NUMBER.sub("<n>", text).split())


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
    unordered: bool = False  # stopped in a list the server did not keep newest first: what was read has gaps


def read_period(
    api: retry.ValohaiAPI,
    project_id: str,
    since: float,
    *,
    bounds: Bounds | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Period:
    """The project's executions created from ``since`` (epoch seconds) on, newest first: the list page
    by page, then a detail read for each entry that lacks what the report needs.  At a bound, or an API
    failure after the first page, it stops before what it could not read: the newest part, without gaps
    (:attr:`Period.unordered` if the server ignored the order).  Executions deleted meanwhile are left out."""
    bounds = bounds or Bounds()
    period = Period()
    deadline, time_bound = clock() + bounds.seconds, f"the time bound of {bounds.seconds:g} s"
    entries: list[tuple[dict[str, Any], float | None]] = []
    last, ordered = None, True
    try:
        for page in retry.execution_pages(api, project_id, max_pages=bounds.pages):
            executions = [
                item for item in page if retry.counter_of(item) is not None and isinstance(item.get("id"), str)
            ]
            for item in executions:  # a server that does not keep the order asked is read to the end
                counter = retry.counter_of(item) or 0
                ordered, last = ordered and (last is None or counter < last), counter
            fresh = [(item, _instant(item.get("ctime"))) for item in executions]
            entries += [(item, created) for item, created in fresh if created is None or created >= since]
            if ordered and any(created is not None and created < since for _, created in fresh):
                break  # newest first: all that follows is older still
            if clock() >= deadline - bounds.seconds / 2:  # half the time at most: the details need the rest
                period.stopped = time_bound
                break
    except retry.APIError as exc:
        if not entries and not isinstance(exc, retry.ListTooLongError):
            raise
        period.stopped = (
            f"the bound of {bounds.pages} list pages"
            if isinstance(exc, retry.ListTooLongError)
            else f"an API failure ({exc})"
        )
    period.unordered = bool(period.stopped) and not ordered
    entries.sort(key=lambda entry: -(retry.counter_of(entry[0]) or 0))  # newest first, whatever the server did
    records = (retry.read_record(item) for item, _ in entries)
    named = {r.heir for r in records if r and r.outcome == "started" and r.heir and r.failed is None}  # retry.py's
    for item, created in entries:
        known: dict[str, Any] | None = item
        if _needs_detail(item, named):
            if period.details >= bounds.details or clock() >= deadline:
                details_bound = f"the bound of {bounds.details} execution detail reads"
                period.stopped = details_bound if period.details >= bounds.details else time_bound
                return period
            try:
                known = {**item, **_detail(api, str(item["id"]))}
            except _Deleted:  # deleted since the list was read: left out
                known = None
            except retry.APIError as exc:
                period.stopped = f"an API failure ({exc})"
                return period
            period.details += 1
        if known is not None:
            period.attempts.append(_attempt(known, created))
    return period


def _needs_detail(item: Mapping[str, Any], named: set[str]) -> bool:
    """Whether a list entry lacks what the report needs (list entries may be abridged): a
    status, an ended execution's status detail, or, for a retry no record names, its parent."""
    record = retry.read_record(item)
    placed = item.get("id") in named or (record is not None and record.outcome == "stood_down")
    unplaced = _retry_of(item) > 0 and not placed and "environment_variables" not in item
    ended = str(item.get("status")) not in retry.INCOMPLETE_STATUSES
    return unplaced or "status" not in item or (ended and "status_detail" not in item)


def _attempt(item: Mapping[str, Any], created: float | None) -> Attempt:
    record, status, duration = retry.read_record(item), item.get("status"), item.get("duration")
    if record and record.outcome == "waiting" and str(status) not in retry.INCOMPLETE_STATUSES:  # a controller that
        record = dataclasses.replace(record, outcome="not_started")  # ended in its wait started no retry
    if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not 0 <= duration < 1e12:
        duration = None  # missing, or not a length of time (NaN, infinite, negative, absurd)
    return Attempt(
        id=str(item["id"]),
        counter=retry.counter_of(item) or 0,
        number=_retry_of(item),
        parent=retry.parent_of(item),
        status=status if isinstance(status, str) else "unknown",
        record=record,
        cause=record.cause if record is not None and record.cause else _words(item.get("status_detail")),
        duration=float(duration) if duration is not None else None,
        url=retry.display_url(item),
        created=created,
    )


def _project_name(api: retry.ValohaiAPI, project_id: str) -> str:
    """The project's name; an unknown project ends the report before any list is read."""
    try:
        project = api.get(f"/api/v0/projects/{project_id}/")
    except retry.APIError as exc:
        unknown = f"no project {project_id} at {api.host}: check the id (Project settings shows it), VALOHAI_HOST, and that the token's user can see the project"  # noqa: E501 - one line to grep
        raise (retry.APIError(unknown, 404) if exc.status == 404 else exc) from None
    return project["name"] if isinstance(project.get("name"), str) and project["name"] else project_id


# --- plumbing: input, API client, time -------------------------------------------------


class _Deleted(retry.APIError):
    """An execution the API no longer has (404)."""


def _detail(api: retry.ValohaiAPI, key: str, missing: str = "") -> dict[str, Any]:
    """An execution's detail; a 404 is :class:`_Deleted`, said as ``missing`` when given."""
    try:
        return api.get(f"/api/v0/executions/{key}/", {"exclude": "metadata,events"})
    except retry.APIError as exc:
        raise (_Deleted(missing or str(exc), 404) if exc.status == 404 else exc) from None


def _retry_of(item: Mapping[str, Any]) -> int:
    return retry.retry_number(retry.tags_of(item))


def _words(status_detail: object) -> str:
    """The part of a status detail written for people (the record, if any, taken off)."""
    return status_detail.partition(retry.RECORD_MARK)[0].strip() if isinstance(status_detail, str) else ""


def _days(text: str) -> float:
    """``--days`` as a number of days, or :class:`retry.ConfigError` (exit 2)."""
    days = float(text) if re.fullmatch(r"\s*([0-9]+\.?[0-9]*|\.[0-9]+)\s*", text) else -1.0
    if not 0 < days <= MAX_DAYS:
        raise retry.ConfigError(
            f"--days must be a number of days above 0 and at most {MAX_DAYS:g}, got {retry.quote(text, 20)}"
        )
    return days


def _project(given: str | None) -> str:
    """The project id: ``--project``, else ``VH_PROJECT_ID``, else (in an execution) its project."""
    project = given or os.environ.get("VH_PROJECT_ID")
    if not project and os.environ.get("VH_JOB_ID"):  # a stray execution.json on a laptop is never read
        with contextlib.suppress(retry.RetryError):
            project = retry.read_execution().project_id
    if not project:
        raise retry.ConfigError("no project: pass --project <id> (Project settings shows it) or set VH_PROJECT_ID")
    return project


def _api(budget: float, clock: Callable[[], float], sleep: Callable[[float], None]) -> retry.ValohaiAPI:
    """An API client for a command on a laptop: an unreachable host ends it at once."""
    return retry.ValohaiAPI(
        retry.read_token(), timeout=retry.request_timeout(), budget=budget, clock=clock, sleep=sleep, patient=False
    )


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"[chains] {retry.printable(message)}\n")
    sys.exit(code)


def _instant(value: Any) -> float | None:
    """An API time (ISO 8601) as epoch seconds, or None when it is missing or garbled."""
    with contextlib.suppress(ValueError, OverflowError, OSError):  # one the report cannot print too
        return moment if isinstance(value, str) and _iso(moment := retry.parse_instant(value)) else None
    return None


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(iso: str | None) -> str:
    """An :func:`_iso` time as the text report shows it."""
    return f"{iso[:10]} {iso[11:16]} UTC" if iso else "an unknown time"


def _duration_text(seconds: float) -> str:
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


if __name__ == "__main__":
    sys.exit(main())
