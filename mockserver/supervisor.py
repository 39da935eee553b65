"""`Supervisor`: uvicorn's `--workers` supervisor, except that workers which cannot start stop it.

uvicorn replaces a dead worker at once and for ever; only a worker that exits with uvicorn's own
STARTUP_FAILURE code stops it, and then it exits as if all went well. A worker that dies for any other
reason while starting (a crash in an extension, a broken install, the OOM killer) would be restarted
twice a second until someone notices. Here a worker that dies before it ever reported ready is a
failed start; `max_failed_starts` of them in a row (no worker becoming ready in between), or one
STARTUP_FAILURE, stop the supervisor with `failure` saying why, and the command exits non-zero.
"""

from __future__ import annotations

import logging
import signal
from socket import socket

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process

log = logging.getLogger("mockserver")

# How long one readiness check of a starting worker may take; a worker still busy starting answers later.
_READY_CHECK_SECONDS = 0.5


class Supervisor(Multiprocess):
    def __init__(self, config: uvicorn.Config, sockets: list[socket], *, max_failed_starts: int = 3) -> None:
        super().__init__(config, sockets)
        self.max_failed_starts = max_failed_starts
        self.failed_starts = 0  # in a row
        self.failure: str | None = None
        self._ready: set[int] = set()  # pids of workers that have reported ready

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for index, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                self._note_ready(process)
                continue
            process.kill()  # dead already, or hung: it did not answer the health check
            process.join()
            if self.should_exit.is_set():
                return
            if process.pid not in self._ready and self._give_up(process):
                return
            self._ready.discard(process.pid or 0)
            log.warning("worker process [%s] %s; starting another", process.pid, _ending(process.exitcode))
            replacement = Process(self.config, self.sockets)
            replacement.start()
            self.processes[index] = replacement

    def _note_ready(self, process: Process) -> None:
        if process.pid in self._ready or not process.is_ready(timeout=_READY_CHECK_SECONDS):
            return
        self._ready.add(process.pid or 0)
        self.failed_starts = 0

    def _give_up(self, process: Process) -> bool:
        """Count a failed start; whether it is time to stop (then `failure` says why)."""
        self.failed_starts += 1
        ending = _ending(process.exitcode)
        if process.exitcode == STARTUP_FAILURE:
            self.failure = f"worker process [{process.pid}] {ending}: it cannot start (see its error above)"
        elif self.failed_starts >= self.max_failed_starts:
            self.failure = (
                f"{self.failed_starts} worker processes in a row died before they were ready; "
                f"the last, [{process.pid}], {ending}"
            )
        else:
            return False
        self.should_exit.set()
        return True


def _ending(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"
