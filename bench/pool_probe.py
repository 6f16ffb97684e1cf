"""Connection-pool figures from inside gunicorn workers, for bench/load.py (never loaded by the product).

Loaded like a handler module (JOBPROCESSOR_HANDLERS=...,bench.pool_probe): it times every QueuePool checkout
(the wait for a free connection, plus the connect when the pool opens a new one) and records the most connections
checked out and in overflow at once. Each worker writes its figures to POOL_PROBE_DIR/pool-<pid>.json every second.
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.pool import Pool, QueuePool

_lock = threading.Lock()
_stats = {"pid": os.getpid(), "checkouts": 0, "connects": 0, "max_checked_out": 0, "max_overflow": 0,
          "pool_size": 0, "waits_ms": []}
_original_do_get = QueuePool._do_get


def _timed_do_get(self):
    started = time.perf_counter()
    try:
        return _original_do_get(self)
    finally:
        waited_ms = (time.perf_counter() - started) * 1000
        with _lock:
            _stats["checkouts"] += 1
            _stats["waits_ms"].append(round(waited_ms, 3))
            _stats["max_checked_out"] = max(_stats["max_checked_out"], self.checkedout())
            _stats["max_overflow"] = max(_stats["max_overflow"], self.overflow())
            _stats["pool_size"] = self.size()


def _on_connect(dbapi_connection, connection_record) -> None:
    with _lock:
        _stats["connects"] += 1  # new database connections: churn when overflow connections are closed on return


def _writer(directory: Path) -> None:
    while True:
        time.sleep(1)
        with _lock:
            document = json.dumps(_stats)
        (directory / f"pool-{os.getpid()}.json").write_text(document)


if os.environ.get("POOL_PROBE_DIR"):
    QueuePool._do_get = _timed_do_get
    event.listen(Pool, "connect", _on_connect)
    threading.Thread(target=_writer, args=(Path(os.environ["POOL_PROBE_DIR"]),), daemon=True,
                     name="pool-probe").start()
