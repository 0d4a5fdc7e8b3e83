"""Throwaway redis-server / memcached processes for tests (querystash's and plugins').

Each server runs as a child process on a free loopback port with nothing persisted, so tests
can stop, kill, pause or restart it freely. The system Redis on 6379 is never touched.

    with RedisServer() as redis:
        redis.url        # "redis://127.0.0.1:PORT/0"
        redis.pause()    # SIGSTOP: connections hang, as with a stuck server
        redis.resume()
        redis.restart()  # same port, empty data
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

READY_TIMEOUT = 10.0  # seconds to wait for a server to accept connections
RESERVED_PORTS = {6379, 11211}  # system redis / memcached: never ours


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    pass


class _Server:
    """Common process handling; subclasses say how to start and how to ping."""

    binary: str
    host = "127.0.0.1"

    def __init__(self, port: int | None = None):
        if port in RESERVED_PORTS:
            raise ValueError(f"port {port} belongs to a system service; use a free port")
        self.port = port or free_port()
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"querystash-{self.binary}-"))
        self.log_path = self.tmpdir / "server.log"
        self.process: subprocess.Popen | None = None
        self._paused = False
        atexit.register(self._cleanup)  # safety net if a test run aborts

    # -- to be provided by subclasses --------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def ping_request(self) -> tuple[bytes, bytes]:
        """(bytes to send, expected reply prefix) proving the server answers."""
        raise NotImplementedError

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> _Server:
        if self.running:
            return self
        if shutil.which(self.binary) is None:
            raise ServerError(f"{self.binary} is not installed")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C on pytest must not kill it mid-test
            )
        self._paused = False
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(
                    f"{self.binary} exited with code {self.process.returncode}:\n{self.log()}"
                )
            if self.ping():
                return
            time.sleep(0.05)
        self.kill()
        raise ServerError(
            f"{self.binary} did not accept connections on port {self.port} "
            f"within {READY_TIMEOUT:.0f}s:\n{self.log()}"
        )

    def ping(self, timeout: float = 0.5) -> bool:
        """True if the server answers its ping right now."""
        request, reply = self.ping_request()
        try:
            with socket.create_connection(self.address, timeout=timeout) as sock:
                sock.sendall(request)
                return sock.recv(64).startswith(reply)
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Graceful shutdown (SIGTERM), SIGKILL if it takes longer than ``timeout``."""
        if not self.running:
            return
        if self._paused:
            self.resume()  # a stopped process cannot handle SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as in a crash."""
        if self.running:
            self.process.kill()
            self.process.wait()
        self._paused = False

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): the port stays open but nothing answers."""
        if self.running:
            self.process.send_signal(signal.SIGSTOP)
            self._paused = True
            self._wait_all_threads_stopped()

    def _wait_all_threads_stopped(self, timeout: float = 2.0) -> None:
        # kill() returns before every thread has actually stopped; a request sent in that
        # gap would still be answered. Linux shows each thread's state in /proc.
        tasks = Path(f"/proc/{self.process.pid}/task")
        if not tasks.is_dir():
            time.sleep(0.1)  # no /proc: best effort
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = {
                    (t / "stat").read_text().rsplit(")", 1)[1].split()[0] for t in tasks.iterdir()
                }
            except OSError:  # a thread came or went while we looked
                continue
            if states <= {"T", "t"}:
                return
            time.sleep(0.005)
        raise ServerError(f"{self.binary} did not stop within {timeout}s after SIGSTOP")

    def resume(self) -> None:
        """Undo pause() (SIGCONT)."""
        if self.running:
            self.process.send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> _Server:
        """Stop and start again on the same port (data is gone: nothing is persisted)."""
        self.stop()
        return self.start()

    def ensure_running(self) -> _Server:
        """Undo whatever a previous test did (pause, stop, kill)."""
        if self._paused:
            self.resume()
        return self.start()

    def _cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "paused" if self._paused else "running" if self.running else "stopped"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"


class RedisServer(_Server):
    binary = "redis-server"

    def __init__(self, port: int | None = None, extra_args: list[str] | None = None):
        """``extra_args`` go to redis-server, e.g. ["--maxmemory", "1mb"]."""
        super().__init__(port)
        self.extra_args = list(extra_args or [])

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.tmpdir),
            *self.extra_args,
        ]  # fmt: skip

    def ping_request(self) -> tuple[bytes, bytes]:
        return b"PING\r\n", b"+PONG"


class MemcachedServer(_Server):
    binary = "memcached"

    def __init__(self, port: int | None = None, memory_mb: int = 64, extra_args=None):
        super().__init__(port)
        self.memory_mb = memory_mb
        self.extra_args = list(extra_args or [])

    @property
    def url(self) -> str:
        """Django's memcached LOCATION format."""
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            self.binary,
            "-l", self.host,
            "-p", str(self.port),
            "-U", "0",  # no UDP
            "-m", str(self.memory_mb),
        ]  # fmt: skip
        if os.geteuid() == 0:
            cmd += ["-u", "root"]  # memcached refuses to run as root without it
        return [*cmd, *self.extra_args]

    def ping_request(self) -> tuple[bytes, bytes]:
        return b"version\r\n", b"VERSION"
