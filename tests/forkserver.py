"""Start executions' processes fast: fork them from one process that imported the libraries once.

Every process the stand-in starts would otherwise spend a third of a second importing
``requests`` and ``valohai-utils`` (which imports ``valohai-yaml`` and ``jsonschema``); with
a hundred of them, that is most of the suite's time.  This server imports them once, and
for each request forks a fresh process that runs the script as ``python script args``
would: its own process id, environment, working folder, ``sys.argv``, standard streams,
signals and exit code, uncaught exceptions printed and turned into exit code 1, and
non-daemon threads and ``atexit`` handlers honoured on the way out.  The script itself,
``retry.py`` included, is imported fresh in each process: nothing of it is shared.

Protocol, over a Unix socket the stand-in passes as the first argument: a request is one
JSON object (``argv``, ``env``, ``cwd``) sent with three file descriptors: the write ends
of the process's stdout, stderr and status pipes.  On the status pipe the server writes the
process id, then, when the process ends, its exit code as ``subprocess`` reports it (minus
the signal number for a signal).
"""

from __future__ import annotations

import json
import os
import runpy
import socket
import sys
from typing import Any

# What every execution would import: imported here once, shared by every fork.
import requests  # noqa: F401
import valohai  # noqa: F401


def serve(server: socket.socket) -> dict[str, Any] | None:
    """Answer requests until the stand-in hangs up; in a forked job, return its request."""
    while True:
        message, fds, _, _ = socket.recv_fds(server, 1 << 20, 3)
        if not message:
            return None
        request = json.loads(message)
        if os.fork() == 0:  # the monitor: starts the job, waits for it, reports its exit code
            job = os.fork()
            if job == 0:
                server.close()
                _attach(request, fds)
                return request
            status = os.fdopen(fds[2], "w")
            status.write(f"{job}\n")
            status.flush()
            _, code = os.waitpid(job, 0)
            status.write(f"{os.waitstatus_to_exitcode(code)}\n")
            status.flush()
            os._exit(0)
        for fd in fds:
            os.close(fd)
        _reap()


def _attach(request: dict[str, Any], fds: list[int]) -> None:
    """Make this process the one ``request`` describes: streams, folder, environment, argv."""
    stdin = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((stdin, 0), (fds[0], 1), (fds[1], 2)):
        os.dup2(source, target)
    for fd in (stdin, *fds):
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script, *arguments = request["argv"][1:]
    sys.argv = [script, *arguments]
    sys.path[0] = os.path.dirname(os.path.abspath(script))


def _reap() -> None:
    """Collect monitors that have ended, so none is left a zombie."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


if __name__ == "__main__":
    job_request = serve(socket.socket(fileno=int(sys.argv[1])))
    if job_request is not None:
        # Run at the top level, so that the interpreter ends the job as it ends any script.
        # Line-buffered, as the stand-in reads lines as they come (its jobs run PYTHONUNBUFFERED).
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
        runpy.run_path(job_request["argv"][1], run_name="__main__")
