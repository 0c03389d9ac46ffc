"""docs/platform.md's checks are runnable as written, and it names what the code uses.

The lines meant for a real Valohai account run here against the local stand-in: those for
inside an execution as a stand-in execution's job (``/valohai/config`` and
``/valohai/inputs`` pointed at its folders), those for a laptop with ``HOST``, ``PROJECT``
and ``VH_API_TOKEN`` set to the stand-in's.  What they show about Valohai itself cannot be
tested here; that they parse, run and print what the page says can.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from standin import COMMIT, PROJECT_ID, ROOT, Platform

import chains
import controller
import retry

DOC = (ROOT / "docs" / "platform.md").read_text(encoding="utf-8")
#: The ``python3 -c "..."`` one-liners (their code holds no double quote).
ONE_LINERS = [code.replace('\\"', '"') for code in re.findall(r'python3 -c "((?:[^"\\]|\\.)*)"', DOC)]
#: The one-liners meant for inside an execution.
INSIDE = [code for code in ONE_LINERS if "/valohai/" in code or code.startswith("import retry")]
FLAT = " ".join(DOC.split())  # the text without its line breaks
SHELL_BLOCKS = re.findall(r"```sh\n(.*?)```", DOC, re.DOTALL)
LAPTOP_BLOCKS = [block for block in SHELL_BLOCKS if "$HOST" in block or "os.environ['HOST']" in block]

#: Runs each one-liner given in a JSON file as its own process, with Valohai's folders
#: pointed at the stand-in execution's.
JOB = """
import json, os, subprocess, sys
for code in json.load(open(os.environ["PLATFORM_CHECKS"])):
    code = code.replace("/valohai/config", os.environ["VH_CONFIG_DIR"])
    code = code.replace("/valohai/inputs", os.environ["VH_INPUTS_DIR"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    print("CHECK", done.returncode, done.stdout.strip(), done.stderr.strip()[-500:], flush=True)
"""


def test_every_one_liner_compiles() -> None:
    assert len(ONE_LINERS) >= 15
    for code in ONE_LINERS:
        compile(code, "docs/platform.md", "exec")


def test_every_shell_block_parses_once_its_placeholders_are_filled() -> None:
    assert len(SHELL_BLOCKS) >= 15
    for block in SHELL_BLOCKS:
        filled = re.sub(r"<[^<>\n]+>", "PLACEHOLDER", block)
        parsed = subprocess.run(["sh", "-n"], input=filled, capture_output=True, text=True, check=False)
        assert parsed.returncode == 0, f"{parsed.stderr}\n{block}"


def test_the_page_names_the_statuses_and_limits_the_code_uses() -> None:
    for status in sorted(retry.NOT_FAILED_STATUSES):
        assert f"`{status}`" in DOC, status
    not_ended = re.search(r"has not ended are (.*?) \(`INCOMPLETE_STATUSES`\)", FLAT)
    assert not_ended is not None
    assert set(re.findall(r"`([a-z_]+)`", not_ended.group(1))) == retry.INCOMPLETE_STATUSES
    assert retry.INCOMPLETE_STATUSES | {"complete"} == retry.NOT_FAILED_STATUSES
    assert retry.RECORD_MARK in DOC
    assert f"up to {retry.STATUS_DETAIL_LIMIT} characters, our cap (`STATUS_DETAIL_LIMIT`)" in FLAT
    assert f"`PARENT_WAIT` = {retry.PARENT_WAIT:g} s" in FLAT
    assert f"at most {retry.FALLBACK_PAGES} pages of {retry.PAGE_SIZE}" in FLAT
    assert f"up to {retry.FALLBACK_DETAILS} look-alikes" in FLAT
    assert FLAT.count(f"`MAX_CREATES` = {retry.MAX_CREATES}") >= 2
    assert f"`LOG_TAIL` = {controller.LOG_TAIL} messages" in FLAT


#: Names in backticks that are no code of this project: an input, environment variables, an API method.
NOT_CODE = {"_restart", "raise_for_status", *retry.CHAIN_VARIABLES}
#: Functions the page cites by their bare name (as it cites API fields too).
CITED_BARE = {
    "find_copy",
    "create_retry",
    "read_record",
    "write_record",
    "status_with_record",
    "read_execution",
    "counter_of",
    "Bounds",
}


def test_every_name_of_the_code_the_page_cites_exists() -> None:
    """A function cited as ``name()`` or ``Class.method``, a private ``_name``, a constant
    ``UPPER_CASE`` and the functions cited by bare name are in retry.py, controller.py or
    chains.py: none was renamed or removed since the page was written."""
    patterns = (
        r"`(_?[A-Z][A-Za-z]*\._?[a-z][a-z0-9_]*)`",  # Class.method
        r"`(_?[a-z][a-z0-9_]*)\(\)`",  # function()
        r"`(_[A-Za-z][A-Za-z0-9_]*)`",  # _private
        r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`",  # CONSTANT (or an environment variable)
    )
    names = {name for pattern in patterns for name in re.findall(pattern, DOC)}
    names = {name for name in names if not name.startswith(("VH_", "VALOHAI_"))} - NOT_CODE
    assert {"_Valohai.claim", "_integer", "NOT_FAILED_STATUSES", "checkpoint_path"} <= names
    assert all(f"`{name}`" in DOC for name in CITED_BARE)
    missing = []
    for name in sorted(names | CITED_BARE):
        found = False
        for module in (retry, controller, chains):
            value: object = module
            for part in name.split("."):
                value = getattr(value, part, None)
            found = found or value is not None
        missing += [] if found else [name]
    assert not missing, missing


@pytest.mark.e2e
@pytest.mark.timeout(150)
def test_the_checks_inside_an_execution_print_what_the_page_expects(tmp_path: Path) -> None:
    (tmp_path / "checks.json").write_text(json.dumps(INSIDE))
    (tmp_path / "job.py").write_text(JOB)
    environ = {"PLATFORM_CHECKS": str(tmp_path / "checks.json")}
    with Platform(tmp_path / "standin", script=str(tmp_path / "job.py"), extra_env=environ) as platform:
        execution = platform.start()
        platform.wait_until_idle(100)
        printed = [line for _, _, line in execution.log if line.startswith("CHECK ")]
        execution.status_details.clear()  # the checks' own texts, not messages of retry.py
    assert len(printed) == len(INSIDE) == 7
    assert all(line.startswith("CHECK 0 ") for line in printed), printed
    expected = [
        f"CHECK 0 {platform.host} 200",
        "CHECK 0 {'set_status_detail': ['headers', 'method', 'url']}",
        "CHECK 0 200 application/json",
        "CHECK 0 wrote 1000 True | read back 1000 True | Record(outcome='started', retry=1,",
        f"CHECK 0 {execution.id}",
        f"CHECK 0 {{'valohai.execution-id': '{execution.id}', 'valohai.execution-counter': {execution.counter},",
        "CHECK 0 _restart in inputs.json: False | folder: None | RETRY_PARENT: None",
    ]
    for line, start in zip(printed, expected):
        assert line.startswith(start), (line, start)


@pytest.mark.e2e
@pytest.mark.timeout(150)
@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
def test_the_checks_from_a_laptop_run_against_the_standin(tmp_path: Path) -> None:
    with Platform(tmp_path / "standin") as platform:
        platform.override(0, failure_rate=0.0)  # the check's create starts a first attempt: let it succeed
        execution = platform.start(failure_rate=0.0)
        platform.wait_until_idle(100)
        environ = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOST": platform.host,
            "PROJECT": PROJECT_ID,
            "VH_API_TOKEN": platform.token or "",
        }
        outputs = []
        for block in LAPTOP_BLOCKS:
            command = block.replace("<execution id>", execution.id).replace("<commit sha>", COMMIT)
            command = command.replace("/tmp/created.json", str(tmp_path / "created.json"))
            command = command.replace("platform-check", "train")  # the stand-in's one step
            done = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                env=environ,
                capture_output=True,
                text=True,
                timeout=100,
                check=False,
            )
            assert done.returncode == 0 and "Traceback" not in done.stderr, (command, done.stderr)
            outputs.append(done.stdout)
        platform.wait_until_idle(100)
    assert len(outputs) == 7
    statuses, entries, pages, data, created, headers, detail_and_log = outputs
    assert "'complete'" in statuses
    assert "same status_detail: True" in entries
    assert pages.splitlines()[0].endswith(f"[{execution.counter}]")
    assert "checkpoint-epoch-" in data and execution.id in data
    assert created.startswith("HTTP 201\n")
    assert headers.startswith("HTTP/1.1 200")
    shown, logged = detail_and_log.splitlines()
    assert shown == "status: 'complete' | step: 'train' | pipeline: None"
    assert logged.startswith("['events', 'total', 'truncated'] ") and " events, the last: " in logged
