"""A real PgBouncer (Debian's `pgbouncer`) in transaction pooling mode in front of a PostgreSQL reached over TCP:
for tests/e2e/test_pgbouncer.py and bench/scale_out.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg2
from sqlalchemy.engine import make_url


class PgBouncer:
    def __init__(self, executable: str, database_url: str, port: int, pool_size: int = 8):
        self.executable, self.server, self.port, self.pool_size = executable, make_url(database_url), port, pool_size
        self.url = self.server.set(port=port).render_as_string(hide_password=False)
        self.proc: subprocess.Popen | None = None
        self.folder: Path | None = None

    def __enter__(self) -> "PgBouncer":
        # a folder the unprivileged user pgbouncer runs as (it refuses root) may read and write
        self.folder = folder = Path(tempfile.mkdtemp(prefix="jobprocessor-pgbouncer-"))
        os.chmod(folder, 0o777)
        (folder / "userlist.txt").write_text(f'"{self.server.username}" ""\n')
        (folder / "pgbouncer.ini").write_text(f"""
[databases]
* = host={self.server.host} port={self.server.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / 'userlist.txt'}
admin_users = {self.server.username}
pool_mode = transaction
default_pool_size = {self.pool_size}
max_client_conn = 1000
logfile = {folder / 'pgbouncer.log'}
pidfile = {folder / 'pgbouncer.pid'}
""")
        for name in ("userlist.txt", "pgbouncer.ini"):
            os.chmod(folder / name, 0o644)
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen([self.executable, *user, str(folder / "pgbouncer.ini")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        libpq = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)
        for _ in range(100):
            try:
                psycopg2.connect(libpq, connect_timeout=2).close()
                return self
            except psycopg2.OperationalError:
                if self.proc.poll() is not None:
                    raise RuntimeError("pgbouncer did not start: " + self.proc.stderr.read().decode())
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("pgbouncer did not start")

    def transactions(self, database: str) -> int:
        """Transactions PgBouncer has carried for `database` (its admin console, SHOW STATS)."""
        admin = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.server.username, dbname="pgbouncer")
        admin.autocommit = True
        try:
            with admin.cursor() as cur:
                cur.execute("SHOW STATS")
                columns = [c.name for c in cur.description]
                rows = [dict(zip(columns, row)) for row in cur.fetchall()]
        finally:
            admin.close()
        return sum(int(row["total_xact_count"]) for row in rows if row["database"] == database)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
