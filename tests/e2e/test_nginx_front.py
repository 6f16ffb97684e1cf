"""The buffering front shipped in deploy/nginx.conf, run in front of a real gunicorn, against the slow-client
attack of the hostile probe: 50 unauthenticated connections that send their headers a byte at a time. Straight at
gunicorn the attack holds every thread (/healthz does not answer within 3 s); through nginx the cron's call and
/healthz answer at once. nginx's own refusals are JSON like the app's.

Slow-marked (about 10 s): a gunicorn, an nginx and two short attacks."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time

import pytest
import requests

from tests.support.db import insert_jobs
from tests.support.gunicorn import Gunicorn, free_port
from tests.support.settings import AUTH, ROOT
from tests.support.system_packages import binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SLOW_CLIENTS = 50
FAST_S = 1.5  # what "answers at once" means on a loaded 2-core machine


class SlowClients:
    """SLOW_CLIENTS connections, each sending a request's headers one byte every 0.2 s, never finishing them."""

    def __init__(self, port: int):
        self.port, self.sockets, self.stop = port, [], threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)

    def __enter__(self):
        for _ in range(SLOW_CLIENTS):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            self.sockets.append(sock)
        self.thread.start()
        time.sleep(0.5)  # every connection has been accepted and is being read
        return self

    def _drip(self):
        while not self.stop.wait(0.2):
            for sock in self.sockets:
                try:
                    sock.sendall(b"X")
                except OSError:
                    pass

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()


def timed(call) -> tuple[float, requests.Response | None]:
    started = time.monotonic()
    try:
        response = call()
    except requests.RequestException:
        response = None
    return time.monotonic() - started, response


@pytest.fixture
def nginx(tmp_path):
    """deploy/nginx.conf as shipped, with its two addresses pointed here, inside a minimal main configuration."""
    executable = binary("nginx", "nginx")

    def start(upstream_port: int) -> tuple[int, subprocess.Popen]:
        port = free_port()
        shipped = (ROOT / "deploy" / "nginx.conf").read_text()
        site = shipped.replace("listen 80;", f"listen 127.0.0.1:{port};") \
                      .replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};") \
                      .replace("/var/log/nginx/jobprocessor.access.log", str(tmp_path / "access.log"))
        assert site.count(str(port)) == 1 and site.count(str(upstream_port)) == 1, "deploy/nginx.conf changed shape"
        (tmp_path / "jobprocessor.conf").write_text(site)
        for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp_path / name).mkdir()
            os.chmod(tmp_path / name, 0o777)  # nginx's workers drop to nobody when the master is root
        os.chmod(tmp_path, 0o755)
        temp_paths = "".join(f"    {name}_temp_path {tmp_path / name};\n" for name in ("fastcgi", "uwsgi", "scgi"))
        (tmp_path / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\n"
            f"events {{ worker_connections 1024; }}\n"
            f"http {{\n    client_body_temp_path {tmp_path / 'body'};\n    proxy_temp_path {tmp_path / 'proxy'};\n"
            f"{temp_paths}    access_log off;\n    include {tmp_path / 'jobprocessor.conf'};\n}}\n")
        proc = subprocess.Popen([executable, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port, proc
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("nginx did not start: " + proc.stderr.read().decode())
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    procs = []

    def started(upstream_port: int) -> int:
        port, proc = start(upstream_port)
        procs.append(proc)
        return port

    yield started
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_the_front_keeps_the_cron_and_healthz_fast_under_slow_clients(database_url, clean_db, nginx, tmp_path):
    insert_jobs(clean_db, 20)
    with Gunicorn(database_url, workers=1, threads=4) as server:
        front_port = nginx(server.port)
        front = f"http://127.0.0.1:{front_port}"
        # the attack is real: straight at gunicorn, the slow clients hold every thread
        with SlowClients(server.port):
            waited, answer = timed(lambda: requests.get(server.base + "/healthz", timeout=2.5))
        assert answer is None, f"gunicorn answered in {waited:.2f} s despite the slow clients"
        # through the front, the same attack costs nothing
        with SlowClients(front_port):
            health_s, health = timed(lambda: requests.get(front + "/healthz", timeout=10))
            cron_s, cron = timed(lambda: requests.post(front + "/process-pending?budget_s=5", headers=AUTH,
                                                       timeout=10))
        assert health is not None and health.status_code == 200 and health_s < FAST_S, health_s
        assert cron is not None and cron.status_code == 200 and cron_s < FAST_S + 1, cron_s
        assert cron.json()["succeeded"] == 20

        # nginx's own refusals are JSON like every error of the API, and its log holds no query string
        too_large = requests.post(front + "/jobs", data=b" " * (4 * 1024 * 1024 + 10), headers=AUTH, timeout=30)
        assert too_large.status_code == 413 and too_large.json()["error"] == "request_entity_too_large"
        big_header = requests.get(front + "/healthz", headers={"X-Big": "x" * 9000}, timeout=10)
        assert big_header.status_code == 431 and big_header.json()["error"] == "request_header_fields_too_large"
        assert requests.get(front + "/jobs?secret=in-the-query-0000", headers=AUTH, timeout=10).status_code == 400
    down = requests.get(front + "/healthz", timeout=10)  # gunicorn stopped: the front says so, as JSON
    assert down.status_code == 502 and down.json()["error"] == "bad_gateway"
    log = (tmp_path / "access.log").read_text()
    assert '"GET /jobs HTTP/1.1" 400' in log and "in-the-query-0000" not in log
