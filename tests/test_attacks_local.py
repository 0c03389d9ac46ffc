"""Attacks on local use and adoption of retry.py, as a newcomer would make them.

Each test fails when a promise of README.md / docs/how-it-works.md / docs/reference.md /
docs/troubleshooting.md / docs/faults.md is broken.  Every process-level attack runs real
processes with a timeout; output goes to files (a leaked child holding a pipe cannot hang a
test), and every process a test leaves behind is found by a marker in its environment and
killed.  Self-contained: it needs only this repository's retry.py / train.py and the venv.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
SOURCE = (ROOT / "retry.py").read_text(encoding="utf-8")
PY = sys.executable

pytestmark = pytest.mark.timeout(120)


# --- helpers --------------------------------------------------------------------------


@dataclass
class Run:
    code: int | None
    out: str
    err: str
    seconds: float

    @property
    def both(self) -> str:
        return self.out + self.err

    def retry_lines(self) -> list[str]:
        return [line for line in self.both.splitlines() if line.startswith("[retry] ")]

    def last_retry_line(self) -> str:
        lines = self.retry_lines()
        return lines[-1] if lines else ""


def clean_environ(mark: str, **extra: str) -> dict[str, str]:
    """The shell of a newcomer: no Valohai, no chain variables; a marker to find leftovers by."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("RETRY_", "VH_", "VALOHAI_", "PYTEST_", "TRAIN_")) and name != "PYTHONPATH"
    }
    environ.update(ADVB_MARK=mark, PYTHONUNBUFFERED="1", **extra)
    return environ


def marked_pids(mark: str) -> list[int]:
    """Processes that carry this test's marker (its job and whatever the job left behind)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if f"ADVB_MARK={mark}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # zombies are already dead
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def mark() -> Iterator[str]:
    value = uuid.uuid4().hex
    yield value
    for pid in marked_pids(value):  # only processes this test started
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def project(folder: Path, **files: str) -> Path:
    """A fresh project of a newcomer: retry.py copied next to the scripts, as the README says."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "retry.py", folder / "retry.py")
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return folder


def run(
    argv: list[str],
    cwd: Path,
    mark: str,
    timeout: float = 60,
    stdin: bytes | None = None,
    **extra: str,
) -> Run:
    out_file, err_file = cwd / f".out-{uuid.uuid4().hex}", cwd / f".err-{uuid.uuid4().hex}"
    began = time.monotonic()
    with out_file.open("wb") as out, err_file.open("wb") as err:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=clean_environ(mark, **extra),
            stdout=out,
            stderr=err,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        )
        try:
            process.communicate(stdin, timeout=timeout)
            code: int | None = process.returncode
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            code = None
    took = time.monotonic() - began
    return Run(code, out_file.read_text(errors="replace"), err_file.read_text(errors="replace"), took)


def start(argv: list[str], cwd: Path, mark: str, **extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    """A job in a session of its own, as a terminal runs it (Ctrl-C reaches its process group)."""
    log = cwd / f".log-{uuid.uuid4().hex}"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=clean_environ(mark, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process, log


def wait_for(log: Path, text: str, seconds: float = 20) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if text in log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared:\n{log.read_text(errors='replace')[-3000:]}")


def finish(process: subprocess.Popen[bytes], seconds: float = 20) -> int | None:
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return None


#: A job in the README's three lines: fails with a transient error on its first attempt only.
FLAKY = """\
    import os, sys
    import retry

    def main():
        n = retry.current_retry()
        print(f"attempt={n} argv={sys.argv!r} cwd={os.getcwd()}", flush=True)
        if n == 0:
            raise ConnectionError("db.internal:5432 refused")
        return 42

    print("returned", retry.run(main, retries=3, delay=0))
"""


def greppable(message: str) -> bool:
    """``grep -F`` finds the line in retry.py by some piece of 12 characters of the message."""
    text = message[len("[retry] ") :] if message.startswith("[retry] ") else message
    text = text.strip()
    return any(text[i : i + 12] in SOURCE for i in range(max(1, len(text) - 11)))


# --- README: the quickstart and its commands -------------------------------------------


def readme_clone(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.py", "retry.py", "valohai.yaml"):
        shutil.copy(ROOT / name, folder / name)
    return folder


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["--failure_rate=1", "--retries=2", "--delay=1"], 1, "[retry] Gave up after 2 retries: ConnectionError: "),
        (["--failure_rate=1", "--failure_type=bug"], 1, "[retry] Not retried (not a transient error): ValueError: "),
        (["--help"], 0, "--failure_rate"),
    ],
)
def test_readme_commands_end_as_the_readme_says(
    tmp_path: Path, mark: str, args: list[str], code: int, line: str
) -> None:
    folder = readme_clone(tmp_path / "clone")
    result = run([PY, "train.py", *args], folder, mark, TRAIN_EPOCH_SECONDS="0.02")
    assert result.code == code, result.err[-2000:]
    assert line in result.both


def test_adopting_it_in_a_fresh_folder_in_three_lines(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "my project", **{"job.py": FLAKY})
    result = run([PY, "job.py"], folder, mark)
    assert result.code == 0, result.both
    assert "returned 42" in result.out
    assert result.last_retry_line() == "[retry] the job succeeded on attempt 2"


def test_missing_packages_are_named_with_the_pip_command(tmp_path: Path, mark: str) -> None:
    """troubleshooting.md: 'retry.py needs the packages requests and valohai-utils (<package> is missing)' (exit 1)."""
    folder = project(tmp_path / "p", **{"job.py": FLAKY})
    result = run([PY, "-S", "job.py"], folder, mark)  # -S: no site-packages, as in a fresh environment
    assert result.code == 1
    assert "retry.py needs the packages requests and valohai-utils (requests is missing)" in result.err
    assert "pip install requests valohai-utils" in result.err


# --- scripts run from odd places --------------------------------------------------------


def test_a_relative_path_from_another_folder(tmp_path: Path, mark: str) -> None:
    project(tmp_path / "p", **{"job.py": FLAKY})
    (tmp_path / "elsewhere").mkdir()
    result = run([PY, "../p/job.py"], tmp_path / "elsewhere", mark)
    assert result.code == 0, result.both
    assert result.out.count(f"cwd={tmp_path / 'elsewhere'}") == 2


def test_a_symlinked_script(tmp_path: Path, mark: str) -> None:
    project(tmp_path / "p", **{"job.py": FLAKY})
    (tmp_path / "link.py").symlink_to(tmp_path / "p" / "job.py")
    shutil.copy(ROOT / "retry.py", tmp_path / "retry.py")
    result = run([PY, "link.py"], tmp_path, mark)
    assert result.code == 0, result.both


def test_a_path_with_spaces_and_unicode(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "dossier été 2024" / "naïve ✓", **{"job ü.py": FLAKY})
    result = run([PY, "job ü.py", "arg with space", "ü"], folder, mark)
    assert result.code == 0, result.both
    assert result.out.count("'arg with space', 'ü']") == 2


def test_the_retry_sees_the_same_sys_argv(tmp_path: Path, mark: str) -> None:
    """README: 'locally the retry is a fresh run of the same command'. sys.argv[0] changes from
    'job.py' to an absolute path in the retry."""
    folder = project(tmp_path / "p", **{"job.py": FLAKY})
    result = run([PY, "job.py", "x"], folder, mark)
    argvs = re.findall(r"argv=(\[.*?\])", result.out)
    assert len(argvs) == 2, result.both
    assert argvs[0] == argvs[1], argvs


def test_python_dash_m_package_module(tmp_path: Path, mark: str) -> None:
    job = FLAKY.replace("    import retry\n", "    from pkg import retry\n")
    folder = project(tmp_path / "p", **{"pkg/mod.py": job, "pkg/__init__.py": ""})
    shutil.move(str(folder / "retry.py"), str(folder / "pkg" / "retry.py"))
    result = run([PY, "-m", "pkg.mod", "a"], folder, mark)
    assert result.code == 0, result.both
    assert result.out.count("returned 42") == 1


def test_python_dash_c(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "p")
    result = run([PY, "-c", textwrap.dedent(FLAKY)], folder, mark)
    assert result.code == 0, result.both
    assert "returned 42" in result.out


def test_a_script_from_stdin_is_refused_in_one_line(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "p")
    result = run([PY, "-"], folder, mark, stdin=textwrap.dedent(FLAKY).encode())
    assert result.code == 3
    assert result.last_retry_line().endswith(
        "the script was read from standard input, so it cannot be run again: save it to a file"
    )


def test_a_script_through_dev_stdin_is_refused_in_one_line(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "p")
    result = run([PY, "/dev/stdin"], folder, mark, stdin=textwrap.dedent(FLAKY).encode(), PYTHONPATH=str(folder))
    assert result.code == 3
    assert "is not a regular file (a pipe?), so it cannot be run again" in result.last_retry_line()


def test_a_zipapp_runs_again(tmp_path: Path, mark: str) -> None:
    """how-it-works.md 'Locally': only a script read from standard input or a pipe is refused.
    A zipapp (python app.pyz) is a regular file, but it is refused as 'not a regular file (a pipe?)'."""
    source = project(tmp_path / "src", **{"__main__.py": FLAKY})
    subprocess.run([PY, "-m", "zipapp", str(source), "-o", str(tmp_path / "app.pyz")], check=True)
    result = run([PY, str(tmp_path / "app.pyz")], tmp_path, mark)
    assert result.code == 0, result.last_retry_line()
    assert "returned 42" in result.out


@pytest.mark.parametrize(
    "wrapper",
    [["-m", "cProfile", "-o", "profile.out"], ["-m", "trace", "--count", "-C", "coverdir"]],
    ids=["cProfile", "trace"],
)
def test_a_script_run_under_a_profiler_runs_again(tmp_path: Path, mark: str, wrapper: list[str]) -> None:
    """how-it-works.md: 'runs each retry as a fresh run of the same command line'. Under
    `python -m cProfile job.py` the retry runs cProfile.py itself as the script; under
    `python -m trace ... job.py` the chain even ends with exit code 0 though the job never succeeded."""
    folder = project(tmp_path / "p", **{"job.py": FLAKY})
    result = run([PY, *wrapper, "job.py"], folder, mark)
    assert "returned 42" in result.out, result.both[-1500:]
    assert result.code == 0


def test_interpreter_flags_are_kept(tmp_path: Path, mark: str) -> None:
    job = """\
        import sys, retry
        def main():
            print("flags", sys.flags.dev_mode, sys.flags.optimize, sys.warnoptions, flush=True)
            if retry.current_retry() == 0:
                raise TimeoutError("t")
        retry.run(main, retries=1, delay=0)
    """
    folder = project(tmp_path / "p", **{"job.py": job})
    result = run([PY, "-X", "dev", "-W", "error", "-OO", "job.py"], folder, mark)
    assert result.code == 0, result.both
    assert result.out.count("flags True 2 ['default', 'error']") == 2


def test_a_job_that_changes_folder_runs_again_from_where_it_started(tmp_path: Path, mark: str) -> None:
    job = """\
        import os, retry, tempfile
        def main():
            print("cwd", os.getcwd(), flush=True)
            os.chdir(tempfile.gettempdir())
            if retry.current_retry() == 0:
                raise TimeoutError("t")
        retry.run(main, retries=1, delay=0)
    """
    folder = project(tmp_path / "p", **{"job.py": job})
    result = run([PY, "job.py"], folder, mark)
    assert result.code == 0, result.both
    assert result.out.count(f"cwd {folder}") == 2


# --- odd jobs ---------------------------------------------------------------------------


def one_job(tmp_path: Path, mark: str, body: str, **extra: str) -> Run:
    folder = project(tmp_path / "p", **{"job.py": body})
    return run([PY, "job.py"], folder, mark, **extra)


def test_sys_exit_75_is_not_a_started_retry(tmp_path: Path, mark: str) -> None:
    result = one_job(tmp_path, mark, "import retry, sys\nretry.run(lambda: sys.exit(75), retries=2, delay=0)\n")
    assert result.code == 1
    assert result.last_retry_line() == "[retry] Not retried: the job called sys.exit(75)"


def test_sys_exit_with_an_object_whose_repr_raises_still_gets_a_verdict(tmp_path: Path, mark: str) -> None:
    """README: 'The last [retry] line of the log (and the status detail) always says why'; reference:
    a non-zero sys.exit ends with 'Not retried: the job called sys.exit(N)' and exit 1. An exit
    value whose repr() raises crashes retry.run itself: no verdict line (on Valohai: no record)."""
    body = """\
        import retry, sys
        class Odd:
            def __repr__(self):
                raise RuntimeError("no repr")
        retry.run(lambda: sys.exit(Odd()), retries=2, delay=0)
    """
    result = one_job(tmp_path, mark, body)
    assert result.last_retry_line().startswith("[retry] Not retried: the job called sys.exit("), result.err[-800:]


def test_a_base_exception_subclass_is_not_retried(tmp_path: Path, mark: str) -> None:
    body = """\
        import retry
        class Halt(BaseException):
            pass
        def main():
            raise Halt("stop")
        retry.run(main, retries=2, delay=0)
    """
    result = one_job(tmp_path, mark, body)
    assert result.code == 1
    assert result.last_retry_line() == "[retry] Not retried (not a transient error): Halt: stop"


def test_an_async_job_is_retried_and_returns(tmp_path: Path, mark: str) -> None:
    body = """\
        import asyncio, retry
        async def main():
            await asyncio.sleep(0)
            if retry.current_retry() == 0:
                raise TimeoutError("slow")
            return 7
        print("returned", retry.run(main, retries=1, delay=0))
    """
    result = one_job(tmp_path, mark, body)
    assert result.code == 0, result.both
    assert "returned 7" in result.out
    assert result.err.count("Traceback") == 1


def test_a_generator_job_is_refused(tmp_path: Path, mark: str) -> None:
    body = "import retry\ndef main():\n    yield 1\nretry.run(main)\n"
    result = one_job(tmp_path, mark, body)
    assert result.code == 2
    assert result.last_retry_line().startswith("[retry] invalid use of retry.run: the function is a generator")


def test_an_error_whose_str_raises_is_retried(tmp_path: Path, mark: str) -> None:
    body = """\
        import retry
        class Odd(ConnectionError):
            def __str__(self):
                raise RuntimeError("no str")
        def main():
            if retry.current_retry() == 0:
                raise Odd()
        retry.run(main, retries=1, delay=0)
    """
    result = one_job(tmp_path, mark, body)
    assert result.code == 0, result.both
    assert "[retry] Odd: (its message could not be shown) - starting retry 1/1" in result.err


def test_an_error_of_50_mb_gives_one_short_line(tmp_path: Path, mark: str) -> None:
    body = """\
        import retry
        def main():
            if retry.current_retry() == 0:
                raise ConnectionError("x" * 50_000_000)
        retry.run(main, retries=1, delay=0)
    """
    result = one_job(tmp_path, mark, body)
    assert result.code == 0, result.err[-500:]
    assert result.seconds < 20
    assert max(len(line) for line in result.retry_lines()) < 1000
    assert len(result.err) < 1_000_000


def test_an_error_message_cannot_forge_a_retry_line(tmp_path: Path, mark: str) -> None:
    """faults.md: 'a line break, control or bidi character in a path, name or answer that is printed
    -> shown escaped: a log line cannot be forged'. The traceback retry.py prints writes the job's
    message raw: a '[retry] the job succeeded on attempt 1' line appears, with an ANSI escape."""
    body = """\
        import retry
        def main():
            raise ValueError("bad row\\n[retry] the job succeeded on attempt 1\\x1b[2K")
        retry.run(main, retries=1, delay=0)
    """
    result = one_job(tmp_path, mark, body)
    assert result.code == 1
    assert not any(line.startswith("[retry] the job succeeded") for line in result.both.splitlines()), result.err
    assert "\x1b" not in result.err


def test_retry_run_in_a_worker_thread_with_a_heartbeat_left_running(tmp_path: Path, mark: str) -> None:
    body = """\
        import threading, time, retry
        def heartbeat():
            while True:
                time.sleep(0.2)
        def main():
            threading.Thread(target=heartbeat).start()  # not a daemon
            if retry.current_retry() == 0:
                raise TimeoutError("t")
            print("worked", flush=True)
        worker = threading.Thread(target=lambda: retry.run(main, retries=1, delay=0))
        worker.start()
        worker.join()
        import os
        os._exit(0)
    """
    result = one_job(tmp_path, mark, body)
    assert result.code == 0, result.both
    assert "worked" in result.out


# --- children and signals ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_pool_left_open_does_not_outlive_the_chain(tmp_path: Path, mark: str, method: str) -> None:
    """how-it-works.md: 'ends the job's multiprocessing children as Python's own exit would:
    daemonic ones at once'; faults.md: 'one at a time ... leaves nothing behind'. A Pool's
    workers are daemonic, but the Pool's own thread starts new workers as they are terminated,
    just before os.execve: those outlive the whole chain (forever with fork)."""
    body = f"""\
        import multiprocessing as mp, time, retry
        def main():
            if retry.current_retry() == 0:
                pool = mp.get_context("{method}").Pool(2)
                pool.map(abs, [1, 2, 3])
                raise TimeoutError("t")
        if __name__ == "__main__":
            retry.run(main, retries=1, delay=0)
    """
    result = one_job(tmp_path, mark, body)
    assert result.code == 0, result.both
    time.sleep(3)
    assert marked_pids(mark) == [], "processes of the chain still running after it ended"


def signal_report_job(ignore: str) -> str:
    return textwrap.dedent(f"""\
        import signal, threading, retry
        names = ["SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGALRM", "SIGCHLD"]
        ignored = {{n: int(signal.getsignal(getattr(signal, n)) == signal.SIG_IGN) for n in names}}
        print("attempt", retry.current_retry(), ignored,
              "blocked", sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])), flush=True)
        if retry.current_retry() == 0:
            for n in {ignore!r}.split():
                signal.signal(getattr(signal, n), signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGUSR2])
        def main():
            if retry.current_retry() == 0:
                raise TimeoutError("t")
    """)


def ignored_in_retry(result: Run) -> dict[str, int]:
    line = next(line for line in result.out.splitlines() if line.startswith("attempt 1 "))
    return eval(line[len("attempt 1 ") : line.index(" blocked")])  # our own output


def test_blocked_signals_are_unblocked_for_the_retry(tmp_path: Path, mark: str) -> None:
    body = signal_report_job("SIGTERM") + "retry.run(main, retries=1, delay=0)\n"
    result = one_job(tmp_path, mark, body)
    assert result.code == 0, result.both
    assert "attempt 1 " in result.out and result.out.split("attempt 1 ")[1].split("\n")[0].endswith("blocked []")


def test_every_signal_the_job_ignored_is_reset_for_the_retry(tmp_path: Path, mark: str) -> None:
    """how-it-works.md: 'the failed process unblocks and resets the signals the job blocked or
    ignored'. Only SIGINT, SIGTERM, SIGHUP and SIGQUIT are reset: SIGUSR1, SIGALRM (a job's own
    timeout) and SIGCHLD stay ignored in the retry."""
    body = signal_report_job("SIGUSR1 SIGALRM SIGCHLD SIGTERM") + "retry.run(main, retries=1, delay=0)\n"
    result = one_job(tmp_path, mark, body)
    assert result.code == 0, result.both
    assert ignored_in_retry(result) == {n: 0 for n in ["SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGALRM", "SIGCHLD"]}


def test_a_retry_under_nohup_keeps_ignoring_sighup(tmp_path: Path, mark: str) -> None:
    """README: 'locally the retry is a fresh run of the same command'. Under `nohup python job.py &`
    the first attempt ignores SIGHUP (nohup's doing, not the job's); the retry has SIGHUP reset to
    the default, so closing the terminal kills the retry, which a fresh run of the command survives."""
    folder = project(tmp_path / "p", **{"job.py": signal_report_job("") + "retry.run(main, retries=1, delay=0)\n"})
    result = run(["nohup", PY, "job.py"], folder, mark)
    assert result.code == 0, result.both
    assert "'SIGHUP': 1" in result.out.split("attempt 1 ")[0]  # the first attempt: nohup's ignore
    assert ignored_in_retry(result)["SIGHUP"] == 1, "the retry lost nohup's protection"


WAITING_JOB = """\
    import sys, time, retry
    def main():
        if retry.current_retry() == 0:
            raise TimeoutError("t")
        print("worked", flush=True)
    retry.run(main, retries=2, delay=8, wait_in=sys.argv[1])
"""


def test_ctrl_c_during_the_retrys_wait(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "p", **{"job.py": WAITING_JOB})
    process, log = start([PY, "job.py", "retry"], folder, mark)
    wait_for(log, "waits")
    os.killpg(process.pid, signal.SIGINT)
    code = finish(process)
    text = log.read_text()
    assert code == -signal.SIGINT, text[-1500:]
    lines = [line for line in text.splitlines() if line.startswith("[retry]")]
    assert lines[-1] == "[retry] Not retried: attempt 2 was interrupted (KeyboardInterrupt)"
    assert "worked" not in text


def test_sigterm_during_the_retrys_wait_leaves_nothing(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "p", **{"job.py": WAITING_JOB})
    process, log = start([PY, "job.py", "retry"], folder, mark)
    wait_for(log, "waits")
    process.send_signal(signal.SIGTERM)
    assert finish(process, 5) == -signal.SIGTERM
    time.sleep(0.3)
    assert marked_pids(mark) == []


def test_ctrl_c_while_the_failed_attempt_waits_gives_a_verdict(tmp_path: Path, mark: str) -> None:
    """faults.md: 'Ctrl-C during the job or its wait -> Not retried: attempt <N> was interrupted
    (KeyboardInterrupt)'; README: 'The last [retry] line of the log ... always says why'. With
    wait_in="failed", Ctrl-C during the wait ends with a second traceback and the last [retry]
    line is a countdown line."""
    folder = project(tmp_path / "p", **{"job.py": WAITING_JOB})
    process, log = start([PY, "job.py", "failed"], folder, mark)
    wait_for(log, "waiting 8 s in this execution")
    time.sleep(0.3)
    os.killpg(process.pid, signal.SIGINT)
    finish(process)
    lines = [line for line in log.read_text().splitlines() if line.startswith("[retry]")]
    assert lines[-1] == "[retry] Not retried: attempt 1 was interrupted (KeyboardInterrupt)", lines[-3:]


def test_ctrl_c_while_children_are_awaited_gives_a_verdict(tmp_path: Path, mark: str) -> None:
    """The same promise, Ctrl-C in the 10 s the failed attempt waits for its children: the last
    [retry] line says '... - starting retry 1/1: the same command, in this process', and none starts."""
    body = """\
        import multiprocessing as mp, time, retry
        def sleeper():
            time.sleep(30)
        def main():
            if retry.current_retry() == 0:
                mp.Process(target=sleeper).start()
                raise TimeoutError("t")
            print("worked", flush=True)
        if __name__ == "__main__":
            retry.run(main, retries=1, delay=0)
    """
    folder = project(tmp_path / "p", **{"job.py": body})
    process, log = start([PY, "job.py"], folder, mark)
    wait_for(log, "starting retry 1/1")
    time.sleep(1)
    os.killpg(process.pid, signal.SIGINT)
    finish(process)
    text = log.read_text()
    assert "worked" not in text
    lines = [line for line in text.splitlines() if line.startswith("[retry]")]
    assert "interrupted" in lines[-1], lines[-2:]


def test_the_failed_attempt_ends_like_a_python_process(tmp_path: Path, mark: str) -> None:
    """README: 'locally the retry is a fresh run of the same command in the same process'. The
    failed attempt is replaced by os.execve: its atexit handlers never run (a lock file it releases
    at exit stays, and the retry refuses to start) and its buffered file writes are lost."""
    body = """\
        import atexit, os, sys, retry
        if os.path.exists("run.lock"):
            sys.exit("another run holds run.lock")
        open("run.lock", "w").close()
        atexit.register(os.remove, "run.lock")
        log = open("train.log", "a")
        def main():
            log.write(f"attempt {retry.current_retry()} began\\n")
            if retry.current_retry() == 0:
                raise TimeoutError("t")
        retry.run(main, retries=1, delay=0)
    """
    folder = project(tmp_path / "p", **{"job.py": body})
    result = run([PY, "job.py"], folder, mark)
    assert "another run holds run.lock" not in result.err, "the failed attempt's atexit handler never ran"
    assert "attempt 0 began" in (folder / "train.log").read_text(), "the failed attempt's log line was lost"
    assert result.code == 0


def test_the_retry_starts_with_the_environment_of_the_command(tmp_path: Path, mark: str) -> None:
    """Same promise: a fresh run of the same command gets the shell's environment; the retry gets
    os.environ as the failed job left it (on Valohai a retry gets the execution's own variables)."""
    body = """\
        import os, retry
        print("MODE at start:", os.environ.get("MODE"), flush=True)
        def main():
            os.environ["MODE"] = "set-by-the-failed-attempt"
            if retry.current_retry() == 0:
                raise TimeoutError("t")
        retry.run(main, retries=1, delay=0)
    """
    result = one_job(tmp_path, mark, body, MODE="from-the-shell")
    assert result.code == 0, result.both
    assert result.out.count("MODE at start: from-the-shell") == 2, result.out


# --- settings and environment variables -------------------------------------------------


def test_a_misspelled_setting(tmp_path: Path, mark: str) -> None:
    result = one_job(tmp_path, mark, "import retry\nretry.run(lambda: 1, retires=3)\n")
    assert result.code == 2
    assert "retry.run got an unknown setting 'retires' (did you mean retries" in result.last_retry_line()


@pytest.mark.parametrize(
    "setting",
    [
        "retries=101",
        "retries=-1",
        "retries=True",
        "retries=2.5",
        "delay=float('nan')",
        "delay=float('inf')",
        "delay='60'",
        "backoff=0.5",
        "jitter=-1",
        "delay=7200",
        "wait_in='Failed'",
        "retry_on=42",
        "checkpoint=True",
        "checkpoint='../x'",
        "checkpoint_pattern=' '",
        "max_delay=10**5000",
        "policy=3",
    ],
)
def test_an_out_of_range_setting_is_one_line_and_exit_2(tmp_path: Path, mark: str, setting: str) -> None:
    result = one_job(tmp_path, mark, f"import retry\nretry.run(lambda: print('ran'), {setting})\n")
    assert result.code == 2, result.both
    assert "ran" not in result.out
    assert result.last_retry_line().startswith("[retry] invalid retry settings: ")


@pytest.mark.parametrize("value", ["abc", "²", "-1", "101", "9" * 5000, "1e2"])
def test_a_garbled_retry_local_number(tmp_path: Path, mark: str, value: str) -> None:
    result = one_job(tmp_path, mark, FLAKY, RETRY_LOCAL_NUMBER=value)
    assert result.code == 2
    assert "RETRY_LOCAL_NUMBER must be a retry number from 0 to 100" in result.last_retry_line()


def test_valohai_variables_do_not_reach_the_network_locally(tmp_path: Path, mark: str) -> None:
    result = one_job(
        tmp_path,
        mark,
        FLAKY,
        VALOHAI_HOST="http://user:pw@10.255.255.1 bad",
        VH_API_TOKEN="x y",
        RETRY_API_TIMEOUT="-1",
    )
    assert result.code == 0, result.both
    assert result.seconds < 15


def test_the_chain_variables_do_not_reach_programs_the_job_starts(tmp_path: Path, mark: str) -> None:
    body = """\
        import os, retry, subprocess, sys
        def main():
            if retry.current_retry() == 0:
                raise TimeoutError("t")
            print("child sees", subprocess.run([sys.executable, "-c",
                "import os; print(sorted(k for k in os.environ if k.startswith('RETRY_')))"],
                capture_output=True, text=True).stdout.strip(), flush=True)
        retry.run(main, retries=1, delay=1)
    """
    result = one_job(tmp_path, mark, body)
    assert "child sees []" in result.out, result.both


def test_a_zero_delay_is_said_without_a_minus_sign(tmp_path: Path, mark: str) -> None:
    """troubleshooting.md: 'retry <N>/<R> will wait <S> s before it starts work'. With delay=0 (allowed:
    0 to 86400) it prints 'will wait -0 s'."""
    result = one_job(tmp_path, mark, FLAKY)
    wait_lines = [line for line in result.retry_lines() if " will wait " in line]
    assert wait_lines, result.err
    assert all(re.search(r"will wait [0-9][0-9.]* s before", line) for line in wait_lines), wait_lines


# --- checkpoints locally ----------------------------------------------------------------


CHECKPOINT_JOB = """\
    import os, sys, time, valohai, retry
    MODE = sys.argv[1]

    def save(epoch, finished=True, where=None):
        name = f"checkpoint-{epoch:04d}.json"
        path = os.path.join(where, name) if where else valohai.outputs().path(name)
        with open(path, "w") as f:
            f.write(str(epoch))
        if MODE == "same-second":  # a file system with 1 s timestamps (HFS+, FAT, SMB shares)
            os.utime(path, (int(START), int(START)))
        if finished and not where:
            valohai.outputs().live_upload(name)

    def main():
        path = retry.checkpoint_path()
        print("attempt", retry.current_retry(), "resumes from", path and os.path.basename(path), flush=True)
        if retry.current_retry() > 0:
            return
        if MODE == "unfinished":
            save(1); save(2, finished=False)
        elif MODE == "outside":
            os.makedirs("elsewhere", exist_ok=True); save(5, where="elsewhere")
        elif MODE == "same-second":
            for epoch in range(1, 9):
                save(epoch)
        else:
            save(1); save(2)
        raise ConnectionError("db down")

    time.sleep(1.2)
    START = time.time()
    retry.run(main, retries=1, delay=0, checkpoint="checkpoint")
"""


def test_a_stale_checkpoint_from_yesterday_is_not_handed_on(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "p", **{"job.py": CHECKPOINT_JOB})
    outputs = folder / "outputs"
    outputs.mkdir()
    stale = outputs / "checkpoint-0099.json"
    stale.write_text("99")
    stale.chmod(0o444)
    yesterday = time.time() - 86_400
    os.utime(stale, (yesterday, yesterday))
    result = run([PY, "job.py", "normal"], folder, mark, VH_OUTPUTS_DIR=str(outputs))
    assert "attempt 1 resumes from checkpoint-0002.json" in result.out, result.both


def test_an_unfinished_checkpoint_is_not_handed_on(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "p", **{"job.py": CHECKPOINT_JOB})
    result = run([PY, "job.py", "unfinished"], folder, mark)
    assert "attempt 1 resumes from checkpoint-0001.json" in result.out, result.both


def test_a_checkpoint_outside_the_outputs_folder_is_not_handed_on(tmp_path: Path, mark: str) -> None:
    folder = project(tmp_path / "p", **{"job.py": CHECKPOINT_JOB})
    result = run([PY, "job.py", "outside"], folder, mark)
    assert "attempt 1 resumes from None" in result.out, result.both
    assert re.search(
        r"no finished checkpoint matching '\*checkpoint\*' in .*: the retry starts from the beginning", result.err
    )


def test_the_newest_checkpoint_on_a_file_system_with_1_s_timestamps(tmp_path: Path, mark: str) -> None:
    """README: 'the retry is handed the newest checkpoint the failed attempt finished there';
    checkpoints.md: names sort by age. With 1 s timestamps (simulated with os.utime), checkpoints
    of the same second tie on mtime, and the retry gets whichever the folder lists first, or none
    at all when the second began before the process did."""
    folder = project(tmp_path / "p", **{"job.py": CHECKPOINT_JOB})
    result = run([PY, "job.py", "same-second"], folder, mark)
    assert "attempt 1 resumes from checkpoint-0008.json" in result.out, result.out


# --- every message greppable ------------------------------------------------------------


def test_every_retry_line_of_odd_runs_is_greppable(tmp_path: Path, mark: str) -> None:
    """troubleshooting.md: '`grep -F` on any other piece finds the line of code that prints it'."""
    runs = [
        one_job(tmp_path / "a", mark, FLAKY),
        one_job(tmp_path / "b", mark, "import retry,sys\nretry.run(lambda: sys.exit(3))\n"),
        one_job(tmp_path / "c", mark, "import retry\nretry.run(lambda: 1, delays=3)\n"),
        one_job(tmp_path / "d", mark, FLAKY.replace("delay=0", "delay=1, wait_in='failed'")),
        one_job(
            tmp_path / "e",
            mark,
            FLAKY.replace("delay=0", "delay=0, max_delay=1"),
            RETRY_NOT_BEFORE="soon",
            RETRY_LOCAL_NUMBER="1",
        ),
    ]
    lines = [line for result in runs for line in result.retry_lines()]
    assert len(lines) > 10
    assert [line for line in lines if not greppable(line)] == []


def test_each_message_the_troubleshooting_page_quotes_is_found_by_grep_f(tmp_path: Path) -> None:
    """troubleshooting.md: 'grep -F on any other piece finds the line of code that prints it'. Messages
    wrapped across implicitly concatenated literals are not: e.g. grep -F 'secret project environment
    variable' or '); not starting another retry for' finds nothing (tests/test_docs_messages.py joins the
    literals with the ast module, which grep does not)."""
    from test_docs_messages import TROUBLESHOOTING_MESSAGES, pieces

    sources = "".join(
        (ROOT / name).read_text(encoding="utf-8") for name in ("retry.py", "chains.py", "controller.py", "train.py")
    )
    assert len(TROUBLESHOOTING_MESSAGES) > 50
    missing = [piece for message in TROUBLESHOOTING_MESSAGES for piece in pieces(message) if piece not in sources]
    assert missing == []
