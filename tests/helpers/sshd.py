"""A real OpenSSH server for SFTP tests: Debian's sshd on free 127.0.0.1 ports, throwaway host and user keys.

The server serves SFTP only (``internal-sftp``; no chroot, since sshd refuses one below the world-writable
/tmp, so remote paths are absolute paths in a temporary folder), and on a second port read-only
(``internal-sftp -R``), which gives a genuine "permission denied" even for root. ``scripts/deps/sftp.sh``
installs openssh-server.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.helpers.services import skip_or_fail
from tests.helpers.wait import wait_until

SSHD = "/usr/sbin/sshd"

__all__ = ["SshServer", "keypair", "run_sshd"]


def keypair() -> tuple[str, str]:
    """A fresh ed25519 key: (OpenSSH private key text, ``ssh-ed25519 AAAA…`` public line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


@dataclass
class SshServer:
    port: int
    readonly_port: int
    host_key: str  # "ssh-ed25519 AAAA…"
    user: str
    user_key: str  # OpenSSH private key text
    root: Path  # the temporary folder holding in/ and out/
    remote_root: str  # the remote path of ``root``
    log: Path
    process: subprocess.Popen[bytes]

    def path(self, remote: str) -> Path:
        """The local path of a path relative to the root, such as ``in/a.edi``."""
        return self.root / remote.lstrip("/")

    def remote(self, name: str) -> str:
        return f"{self.remote_root}/{name.strip('/')}"

    def settings(self, **extra: object) -> dict[str, object]:
        return {"host": "127.0.0.1", "port": self.port, "user": self.user, "key": self.user_key,
                "host_key": self.host_key, "outbox": self.remote("out"), "inbox": self.remote("in"),
                "settle": 0, "timeout": 10, **extra}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _start(etc: Path, root: Path, host_public: str, user_private: str, log: Path) -> SshServer | None:
    port, readonly_port = _free_port(), _free_port()
    config = etc / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1:{port}\nListenAddress 127.0.0.1:{readonly_port}\n"
        f"HostKey {etc / 'host_key'}\nPidFile {etc / 'sshd.pid'}\nAuthorizedKeysFile {etc / 'authorized_keys'}\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication yes\n"
        "KbdInteractiveAuthentication no\nAllowTcpForwarding no\nX11Forwarding no\nPermitTTY no\n"
        "LogLevel VERBOSE\nSubsystem sftp internal-sftp\n"
        "ForceCommand internal-sftp\n"
        f"Match LocalPort {readonly_port}\n    ForceCommand internal-sftp -R\n")
    with log.open("ab") as out:
        process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    server = SshServer(port, readonly_port, host_public, getpass.getuser(), user_private, root, str(root), log,
                       process)
    try:
        wait_until(lambda: process.poll() is not None or (_accepts(port) and _accepts(readonly_port)), 10,
                   "sshd to accept connections")
    except AssertionError:
        pass
    if process.poll() is None and _accepts(port) and _accepts(readonly_port):
        return server
    server.stop()
    return None


def run_sshd(base: Path) -> Iterator[SshServer]:
    """Start sshd under ``base`` and yield it; skip (or fail under IRONBUS_REQUIRE_SERVICES=1) without sshd."""
    if not os.access(SSHD, os.X_OK):
        skip_or_fail(f"{SSHD} is not installed (scripts/deps/sftp.sh installs Debian's openssh-server)")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation folder
    etc = base / "etc"
    etc.mkdir(parents=True)
    root = base / "root"
    root.mkdir(mode=0o755)
    for folder in ("in", "out"):
        (root / folder).mkdir()
    host_private, host_public = keypair()
    user_private, user_public = keypair()
    (etc / "host_key").write_text(host_private)
    (etc / "host_key").chmod(0o600)
    (etc / "authorized_keys").write_text(user_public + "\n")
    server = None
    for _ in range(3):  # a port picked free can be taken before sshd binds it: then pick others
        server = _start(etc, root, host_public, user_private, base / "sshd.log")
        if server is not None:
            break
    if server is None:
        raise AssertionError(f"sshd did not start: {(base / 'sshd.log').read_text()[-2000:]}")
    try:
        yield server
    finally:
        server.stop()
