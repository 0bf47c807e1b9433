"""A PostgreSQL cluster and a RabbitMQ node of the test's own, to stop and start on purpose.

Fault tests stop the database and the broker in the middle of a run. The machine's shared PostgreSQL and
RabbitMQ serve every other test and developer, so these tests never touch them: they create a private cluster
(``pg_createcluster`` on a free port, trust auth, stopped and started with ``pg_ctlcluster``) and a private
RabbitMQ node (its own node name, ports and data folder; ``rabbitmqctl stop_app`` / ``start_app``), and remove
both afterwards, whatever happened. Needs root and the Debian packages ``postgresql`` and ``rabbitmq-server``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.services import skip_or_fail

__all__ = ["PrivatePostgres", "PrivateRabbit", "private_postgres", "private_rabbitmq"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.1)


def _run(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


def _require(*tools: str) -> None:
    if os.geteuid() != 0:
        skip_or_fail("fault tests create a private PostgreSQL cluster and RabbitMQ node, which needs root")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        skip_or_fail(f"fault tests need {', '.join(missing)} (Debian packages postgresql, rabbitmq-server)")


@dataclass
class PrivatePostgres:
    version: str
    name: str
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _ctl(self, action: str, *extra: str) -> None:
        _run("pg_ctlcluster", "--skip-systemctl-redirect", self.version, self.name, action, *extra)

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def start(self) -> None:
        self._ctl("start")
        _wait(lambda: _port_open(self.port, self.host), 30, "the private PostgreSQL to accept connections")

    def running(self) -> bool:
        return _port_open(self.port, self.host)


@contextmanager
def private_postgres(host: str = "127.0.0.1", clients: str | None = None) -> Iterator[PrivatePostgres]:
    """A private cluster listening on 127.0.0.1 and ``host``; ``clients`` (a CIDR such as ``10.1.2.0/24``)
    may connect from other addresses too (trust auth, as on loopback)."""
    _require("pg_createcluster", "pg_ctlcluster", "pg_dropcluster")
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    pg = PrivatePostgres(version, f"ibfault{uuid.uuid4().hex[:8]}", _free_port(), host)
    # off loopback it listens on both (a list, which pg_createcluster quotes); on loopback, its default
    listen = [] if host == "127.0.0.1" else ["-o", f"listen_addresses=127.0.0.1,{host}"]
    try:
        _run("pg_createcluster", version, pg.name, "-p", str(pg.port), *listen, "--start", "--", "--auth=trust",
             timeout=120)
        if clients:
            with open(f"/etc/postgresql/{version}/{pg.name}/pg_hba.conf", "a") as hba:
                hba.write(f"host all all {clients} trust\n")
            pg._ctl("reload")
        _wait(lambda: _port_open(pg.port, host), 30, "the private PostgreSQL to start")
        yield pg
    finally:
        subprocess.run(["pg_dropcluster", version, pg.name, "--stop"], capture_output=True, timeout=60, check=False)


@dataclass
class PrivateRabbit:
    node: str
    port: int
    env: dict[str, str]
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}//"

    def _ctl(self, *argv: str, timeout: float = 60) -> None:
        _run("rabbitmqctl", "-n", self.node, *argv, env=self.env, timeout=timeout)

    def stop_app(self) -> None:
        self._ctl("stop_app")

    def start_app(self) -> None:
        self._ctl("start_app")
        _wait(lambda: _port_open(self.port, self.host), 30, "the private RabbitMQ to accept connections")

    def running(self) -> bool:
        return _port_open(self.port, self.host)


@contextmanager
def private_rabbitmq(host: str = "127.0.0.1") -> Iterator[PrivateRabbit]:
    """A private node listening on ``host``; off loopback, guest may log in from anywhere (a test network)."""
    _require("rabbitmq-server", "rabbitmqctl")
    # the node runs as the rabbitmq user, who cannot enter pytest's private temporary folders
    folder = Path(tempfile.mkdtemp(prefix="ironbus-rabbit-"))
    (folder / "enabled_plugins").write_text("")  # no management plugin: it would want the shared node's port
    (folder / "rabbitmq.conf").write_text("" if host == "127.0.0.1" else "loopback_users = none\n")
    shutil.chown(folder, "rabbitmq", "rabbitmq")
    for path in folder.iterdir():
        shutil.chown(path, "rabbitmq", "rabbitmq")
    port = _free_port()
    node = f"ibfault{uuid.uuid4().hex[:8]}@localhost"
    env = {**os.environ, "RABBITMQ_NODENAME": node, "RABBITMQ_NODE_PORT": str(port),
           "RABBITMQ_NODE_IP_ADDRESS": host, "RABBITMQ_DIST_PORT": str(_free_port()),
           "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"), "RABBITMQ_LOG_BASE": str(folder / "log"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
           "RABBITMQ_PID_FILE": str(folder / "node.pid"), "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq.conf")}
    rabbit = PrivateRabbit(node, port, env, host)
    try:
        _run("rabbitmq-server", "-detached", env=env)
        _wait(lambda: _port_open(port, host), 90, "the private RabbitMQ node to start")
        yield rabbit
    finally:
        subprocess.run(["rabbitmqctl", "-n", node, "stop"], env=env, capture_output=True, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)
