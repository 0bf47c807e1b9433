"""A local Tryton ERP for tests and demos: cached database templates and one trytond process.

Building a Tryton database takes 35–60 s, so it happens once and is cached under
``.cache/tryton/<trytond-version>-<module-hash>/`` (``IRONBUS_TRYTON_CACHE`` overrides the root):

* ``tpl.sqlite`` — modules ``sale_supply stock_supply sale_amendment purchase_amendment`` and their
  dependencies activated, admin password set;
* ``seeded-<hash>.sqlite`` — the same plus company, currency, chart of accounts and an accounting product
  category (:func:`adapters.tryton.seed.provision`), so every test database is a file copy.

:func:`start` copies the seeded template to one SQLite file per database name and runs ONE
``trytond -c tryton/trytond.conf -d <every db>`` (trytond 8.2.1 cannot serve a database it did not preload),
with the port and the database directory passed by environment (values in the conf file would override
them). It returns once a login to every database works.

Command line: ``python -m tryton.tryton_env build|start|stop|reset [--dir DIR] [--port N] [DB …]``.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

__all__ = [
    "ADMIN_PASSWORD",
    "ADMIN_USER",
    "MODULES",
    "TrytonNotInstalled",
    "TrytonServer",
    "build_seeded",
    "build_template",
    "cache_dir",
    "installed",
    "start",
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONF = HERE / "trytond.conf"
# The cache key hashes this list: adding a module rebuilds the template on the next run of a fresh clone.
MODULES = ("sale_supply", "stock_supply", "sale_amendment", "purchase_amendment")
ADMIN_USER = "admin"
ADMIN_PASSWORD = "ironbus-admin"
DEFAULT_DBS = ("crm", "scm", "srm")
START_TIMEOUT = 90.0


class TrytonNotInstalled(RuntimeError):
    """trytond (pip extra ``tryton``) is not installed in this environment."""


def installed() -> bool:
    """Is trytond importable and its server script present?"""
    try:
        metadata.version("trytond")
    except metadata.PackageNotFoundError:
        return False
    return _script("trytond", required=False) is not None


def _script(name: str, *, required: bool = True) -> str | None:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None and required:
        raise TrytonNotInstalled(f"{name} not found: install the extra with pip install -e '.[tryton]'")
    return found


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:12]


def cache_dir() -> Path:
    """The cache folder for this trytond version and module list (created on demand)."""
    try:
        version = metadata.version("trytond")
    except metadata.PackageNotFoundError:
        raise TrytonNotInstalled("trytond is not installed: pip install -e '.[tryton]'") from None
    root = Path(os.environ.get("IRONBUS_TRYTON_CACHE", REPO / ".cache" / "tryton"))
    key = _digest(" ".join(MODULES).encode(), CONF.read_bytes(), ADMIN_PASSWORD.encode())
    path = root / f"{version}-{key}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    # Several pytest sessions (parallel engineers, CI shards) may build at once: one builds, the others wait.
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _env(db_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["TRYTOND_DATABASE__PATH"] = str(db_dir)
    env.update(extra)
    return env


def _settle(db_file: Path) -> None:
    """Fold any WAL into the main file so a plain copy is complete."""
    con = sqlite3.connect(db_file)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)


def build_template(*, force: bool = False) -> Path:
    """``tpl.sqlite`` with the modules activated (35–60 s the first time, then cached)."""
    folder = cache_dir()
    target = folder / "tpl.sqlite"
    with _locked(folder):
        if target.exists() and not force:
            return target
        admin = _script("trytond-admin")
        assert admin is not None
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            work = Path(tmp)
            passfile = work / "admin.pass"
            passfile.write_text(ADMIN_PASSWORD + "\n")
            (work / "tpl.sqlite").touch()  # trytond-admin refuses a database file that does not exist
            cmd = [admin, "-c", str(CONF), "-d", "tpl", "-u", *MODULES, "--activate-dependencies",
                   "--email", "admin@example.com"]
            proc = subprocess.run(cmd, env=_env(work, TRYTONPASSFILE=str(passfile)), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"trytond-admin failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
            _settle(work / "tpl.sqlite")
            os.replace(work / "tpl.sqlite", target)
    return target


def _seed_key() -> str:
    from adapters.tryton import seed

    return _digest(Path(seed.__file__).read_bytes())


def build_seeded(*, force: bool = False) -> Path:
    """The provisioned template (company, currency, chart, account category), cached."""
    from adapters.tryton.client import TrytonClient
    from adapters.tryton.seed import provision

    template = build_template()
    folder = template.parent
    target = folder / f"seeded-{_seed_key()}.sqlite"
    with _locked(folder):
        if target.exists() and not force:
            return target
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            work = Path(tmp)
            server = start(dbs=("seed",), run_dir=work, template=template)
            try:
                client = TrytonClient(server.url, "seed", ADMIN_USER, ADMIN_PASSWORD)
                try:
                    provision(client)
                finally:
                    client.close()
            finally:
                server.stop()
            _settle(work / "seed.sqlite")
            os.replace(work / "seed.sqlite", target)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class TrytonServer:
    """One running trytond serving ``dbs`` from ``run_dir``; ``url`` is the server base URL."""

    dbs: tuple[str, ...]
    port: int
    run_dir: Path
    template: Path
    process: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0
    _log: Path = field(init=False)

    def __post_init__(self) -> None:
        self._log = self.run_dir / "trytond.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def db_url(self, db: str) -> str:
        return f"{self.url}/{db}/rpc/"

    @property
    def log_path(self) -> Path:
        return self._log

    def copy_databases(self) -> None:
        for db in self.dbs:
            target = self.run_dir / f"{db}.sqlite"
            for suffix in ("-wal", "-shm"):
                Path(f"{target}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(self.template, target)

    def launch(self) -> None:
        """Start trytond and wait until a login to every database succeeds."""
        trytond = _script("trytond")
        assert trytond is not None
        started = time.monotonic()
        env = _env(self.run_dir, TRYTOND_WEB__LISTEN=f"127.0.0.1:{self.port}")
        with open(self._log, "ab") as log_file:
            self.process = subprocess.Popen([trytond, "-c", str(CONF), "-d", *self.dbs], env=env,
                                            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        (self.run_dir / "trytond.pid").write_text(str(self.process.pid))
        try:
            self._wait_ready(started + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - started

    def _wait_ready(self, deadline: float) -> None:
        import httpx

        pending = list(self.dbs)
        body = {"id": 1, "method": "common.db.login", "params": [ADMIN_USER, {"password": ADMIN_PASSWORD}, "en"]}
        with httpx.Client(timeout=5.0) as http:
            while pending:
                assert self.process is not None
                if self.process.poll() is not None:
                    tail = self._log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"trytond exited with {self.process.returncode}:\n{tail}")
                try:
                    response = http.post(self.db_url(pending[0]), json=body)
                    if response.status_code == 200 and "result" in response.json():
                        pending.pop(0)
                        continue
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"trytond on port {self.port} not ready for {pending} after "
                                       f"{START_TIMEOUT:.0f} s; see {self._log}")
                time.sleep(0.1)  # polling interval of a condition with a deadline, not a wait for luck

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait (SIGKILL after ``timeout``). Safe to call twice."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self.process = None
        (self.run_dir / "trytond.pid").unlink(missing_ok=True)

    def reset(self) -> None:
        """Back to a pristine seeded state: stop, re-copy every database, start on the same port."""
        self.stop()
        self.copy_databases()
        self.launch()

    def __enter__(self) -> TrytonServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(dbs: Sequence[str] = DEFAULT_DBS, *, port: int = 0, run_dir: Path | None = None,
          template: Path | None = None) -> TrytonServer:
    """Copy the (seeded) template to each of ``dbs`` in ``run_dir`` and start one trytond serving them all.

    ``port=0`` picks a free port. Blocks until every database accepts a login (or raises with the log tail).
    """
    if not dbs:
        raise ValueError("start() needs at least one database name")
    source = template if template is not None else build_seeded()
    folder = Path(run_dir) if run_dir is not None else Path(tempfile.mkdtemp(prefix="ironbus-tryton-"))
    folder.mkdir(parents=True, exist_ok=True)
    attempts = 3 if port == 0 else 1
    for attempt in range(1, attempts + 1):
        server = TrytonServer(tuple(dbs), port or free_port(), folder, source)
        server.copy_databases()
        try:
            server.launch()
            return server
        except RuntimeError:
            # A free port can be taken between our probe and trytond's bind; try another one.
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tryton.tryton_env", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "start", "stop", "reset"])
    parser.add_argument("dbs", nargs="*", default=list(DEFAULT_DBS))
    parser.add_argument("--dir", type=Path, default=REPO / "var" / "tryton", help="run directory")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_intermixed_args(argv)
    run_dir: Path = args.dir
    pid_file = run_dir / "trytond.pid"
    if args.command == "build":
        started = time.monotonic()
        path = build_seeded()
        sys.stdout.write(f"{path} ({time.monotonic() - started:.1f} s)\n")
        return 0
    if args.command in ("stop", "reset") and pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:
            pass
        pid_file.unlink(missing_ok=True)
    if args.command == "stop":
        return 0
    server = start(args.dbs, port=args.port, run_dir=run_dir)
    # Detach: the server outlives this command; `stop` finds it through trytond.pid.
    server.process = None
    sys.stdout.write(f"trytond ready at {server.url} with {', '.join(server.dbs)} "
                     f"(user {ADMIN_USER}, password {ADMIN_PASSWORD}); log {server.log_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
