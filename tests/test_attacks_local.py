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

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


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
    [["-m", "cProfile", "-o", "profile.out"]],
    ids=["cProfile"],
)
def test_a_script_run_under_a_profiler_runs_again(tmp_path: Path, mark: str, wrapper: list[str]) -> None:
    """how-it-works.md: 'runs each retry as a fresh run of the same command line'. Under
    `python -m cProfile job.py` the retry must run job.py again, not cProfile.py as the script
    (before Python 3.10, without the profiler: no flags are kept there)."""
    folder = project(tmp_path / "p", **{"job.py": FLAKY})
    result = run([PY, *wrapper, "job.py"], folder, mark)
    assert "returned 42" in result.out, result.both[-1500:]
    assert result.code == 0


def one_job(tmp_path: Path, mark: str, body: str, **extra: str) -> Run:
    folder = project(tmp_path / "p", **{"job.py": body})
    return run([PY, "job.py"], folder, mark, **extra)


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


@pytest.mark.parametrize("method", ["fork"])
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


def test_the_newest_checkpoint_on_a_file_system_with_1_s_timestamps(tmp_path: Path, mark: str) -> None:
    """README: 'the retry is handed the newest checkpoint the failed attempt finished there';
    checkpoints.md: names sort by age. With 1 s timestamps (simulated with os.utime), checkpoints
    of the same second tie on mtime, and the retry gets whichever the folder lists first, or none
    at all when the second began before the process did."""
    folder = project(tmp_path / "p", **{"job.py": CHECKPOINT_JOB})
    result = run([PY, "job.py", "same-second"], folder, mark)
    assert "attempt 1 resumes from checkpoint-0008.json" in result.out, result.out


# --- every message greppable ------------------------------------------------------------
