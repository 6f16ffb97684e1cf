"""A TCP proxy that counts connections (the JWKS fetches of the trigger tests)."""
from __future__ import annotations

import socket
import threading

from tests.support.gunicorn import free_port


class CountingProxy:
    """A loopback TCP proxy in front of PostgreSQL that counts connections and bytes sent to the server."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.connections = 0
        self.bytes_to_server = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source, sink, counted):
        try:
            while data := source.recv(65536):
                if counted:
                    with self.lock:
                        self.bytes_to_server += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def snapshot(self) -> tuple[int, int]:
        with self.lock:
            return self.connections, self.bytes_to_server

    def close(self):
        self.closing = True
        self.listener.close()
