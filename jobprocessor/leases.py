"""The heartbeat: one thread per process renews the leases of the jobs this process holds.

A call claims jobs with a short lease (JOBS_LEASE_S, about a minute) and holds them here until their outcome is
written. Every quarter lease the keeper renews every held lease in one statement (queries.EXTEND_LEASES), so:
- a job runs as long as its handler needs (up to its deadline), whatever the lease, and a handler that overruns its
  deadline keeps its job while its thread lives: no other call starts a second copy of a job that is still running;
- a process that dies stops renewing, and its jobs are back within about one lease (the next claim rescues them);
- a handler that never returns is let go JOBS_STUCK_HANDLER_S after its deadline: its lease then runs out and the
  job is rescued (the alert `stuck_handler` shows it before that).
The keeper holds no database connection between beats; a beat that fails (database down) is retried a second later.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import NamedTuple, Optional

from sqlalchemy.engine import Engine

from . import queries

log = logging.getLogger("jobprocessor.leases")

RETRY_S = 1.0


class _Hold(NamedTuple):
    worker: str
    until: float  # monotonic: renewed no later than this (the call's end, or the handler's deadline + the cap)


_new_hold = tuple.__new__


class LeaseKeeper:
    def __init__(self, engine: Engine, lease_s: float):
        self.engine, self.lease_s = engine, lease_s
        self.interval_s = max(0.5, lease_s / 4.0)
        self._holds: dict[int, _Hold] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.beats = 0
        self.renewed = 0

    def hold(self, job_ids, worker: str, until: float) -> None:
        """Keep these jobs' leases (held by `worker`) until `until` (monotonic) or until released."""
        hold = _Hold(worker, until)  # one (immutable) hold for the lot: a claim holds up to 1000 jobs at once
        with self._lock:
            self._holds.update(dict.fromkeys(job_ids, hold))
            self._ensure_thread()

    def hold_until(self, job_id: int, until: float) -> None:
        """Hold a job until another time: once its handler started, its deadline plus the stuck-handler cap."""
        with self._lock:
            hold = self._holds.get(job_id)
            if hold is not None:
                self._holds[job_id] = _new_hold(_Hold, (hold.worker, until))  # asked per job: no keyword parsing

    def release(self, job_ids) -> None:
        with self._lock:
            for job_id in job_ids:
                self._holds.pop(job_id, None)

    def held_until(self, job_id: int) -> Optional[float]:
        """Until when (monotonic) this job's lease is renewed; None: it is not held."""
        with self._lock:
            hold = self._holds.get(job_id)
        return None if hold is None else hold.until

    def held(self) -> int:
        with self._lock:
            return len(self._holds)

    def _ensure_thread(self) -> None:
        """Under self._lock."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="jobprocessor-leases", daemon=True)
            self._thread.start()

    def _due(self) -> list[tuple[int, str]]:
        now = time.monotonic()
        with self._lock:
            for job_id in [j for j, h in self._holds.items() if h.until < now]:
                hold = self._holds.pop(job_id)
                log.error("job %s (lease %s): its handler is still running past JOBS_STUCK_HANDLER_S; its lease "
                          "is no longer renewed and another call may run it again", job_id, hold.worker)
            return [(job_id, hold.worker) for job_id, hold in self._holds.items()]

    def beat(self) -> int:
        """Renew every held lease now; returns how many were renewed."""
        held = self._due()
        if not held:
            return 0
        with self.engine.begin() as conn:
            renewed = queries.extend_leases(conn, sorted(held), self.lease_s)
        self.beats += 1
        self.renewed += len(renewed)
        return len(renewed)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            with self._lock:
                if not self._holds:
                    self._thread = None  # a later hold() starts a new one
                    return
            try:
                self.beat()
            except Exception:  # retried soon; a lease is several beats long
                log.exception("could not renew %d leases; retrying in %.0f s", self.held(), RETRY_S)
                self._wake.wait(RETRY_S)


_keepers: dict[tuple[int, int, float], LeaseKeeper] = {}
_keepers_lock = threading.Lock()


def keeper_for(engine: Engine, lease_s: float) -> LeaseKeeper:
    """This process's keeper for `engine` (a forked gunicorn worker gets its own: threads do not survive fork)."""
    key = (os.getpid(), id(engine), lease_s)
    with _keepers_lock:
        keeper = _keepers.get(key)
        if keeper is None or keeper.engine is not engine:
            keeper = _keepers[key] = LeaseKeeper(engine, lease_s)
        return keeper
