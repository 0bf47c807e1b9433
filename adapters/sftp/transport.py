"""Documents over SFTP (paramiko): upload under a temporary name then rename; fetch, then settle by moving aside.

* **Host key.** The server's key must be the one in ``host_key`` (an OpenSSH ``known_hosts`` line or
  ``"<type> <base64>"``); any other key is refused before authenticating, as is a server that has none.
* **Upload.** ``send`` writes ``.<name>.<id>.part`` in the outbox and renames it onto ``<name>`` (OpenSSH's
  atomic ``posix-rename``), so a partner polling the folder sees the whole file or nothing.
* **Fetch.** ``fetch`` lists the inbox (skipping hidden and ``*.part``/``*.tmp``/``*.filepart`` files and
  files modified in the last ``settle`` seconds, which the partner may still be writing), downloads each
  file, and checks that it did not change while it was read. ``settle`` moves a file into ``processed``; a
  file rewritten since it was read stays, and is fetched again as a new version.
* **Errors.** A network failure, a server that is down or closes the session is transient; a wrong host key,
  a refused login, a missing folder or a permission denied is permanent (retrying will not fix it).
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import socket
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import paramiko
import structlog

from adapters.b2b.pem import load_pem
from adapters.b2b.transport import InboundDocument, OutboundDocument, Receipt
from adapters.sftp.settings import SETTINGS_PROPERTIES, load_private_key, parse_host_key
from bus.errors import ConfigError, DeliveryError, PermanentError, TransientError

__all__ = ["SETTINGS_PROPERTIES", "SftpTransport", "parse_host_key"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

_IN_PROGRESS = (".*", "*.part", "*.tmp", "*.filepart", "*.partial")
_PERMANENT_SFTP = {errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EROFS}
def _join(folder: str, name: str) -> str:
    return name if name.startswith("/") else f"{folder.rstrip('/')}/{name}"


class SftpTransport:
    """One SFTP partner; thread-safe (one session, used under a lock, reopened after a failure)."""

    settings_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "additionalProperties": False,
        "required": ["kind", "host", "user", "host_key"],
        "anyOf": [{"required": ["password"]}, {"required": ["key"]}],
        "properties": {"kind": {"const": "sftp"}, **SETTINGS_PROPERTIES},
    }

    def __init__(self, settings: Mapping[str, Any], *, clock: Callable[[], float] = time.time) -> None:
        s = dict(settings)
        self.host = str(s["host"])
        self.port = int(s.get("port", 22))
        self.user = str(s["user"])
        self.label = f"sftp://{self.user}@{self.host}:{self.port}"
        self._password: str | None = s.get("password")
        self._key = load_private_key(load_pem(str(s["key"]), "settings/key"), s.get("key_password")) \
            if s.get("key") else None
        if self._key is None and self._password is None:
            raise ConfigError(f"{self.label}: set 'key' or 'password'")
        keys = s["host_key"] if isinstance(s["host_key"], list) else [s["host_key"]]
        self.host_keys = [parse_host_key(str(k)) for k in keys]
        self.outbox: str | None = s.get("outbox")
        self.inbox: str | None = s.get("inbox")
        self.processed = _join(self.inbox or "", str(s.get("processed", "processed"))) if self.inbox else None
        self.patterns = [str(p) for p in s.get("patterns") or ["*"]]
        self.settle_seconds = float(s.get("settle", 2))
        self.max_files = int(s.get("max_files", 100))
        self.max_size = int(s.get("max_size", 50 * 1024 * 1024))
        self.timeout = float(s.get("timeout", 30))
        self._clock = clock
        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None

    # -- session ------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Nothing to do up front: the session opens on first use (a partner that is down must not stop the bus)."""

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        sftp, client, self._sftp, self._client = self._sftp, self._client, None, None
        for thing in (sftp, client):
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing a broken session may fail; it is gone either way
                    pass

    def _connect(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._sftp
            self._drop()
        client = paramiko.SSHClient()
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        for key in self.host_keys:
            client.get_host_keys().add(name, key.get_name(), key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(self.host, self.port, username=self.user, password=self._password, pkey=self._key,
                           timeout=self.timeout, banner_timeout=self.timeout, auth_timeout=self.timeout,
                           channel_timeout=self.timeout, allow_agent=False, look_for_keys=False)
            sftp = client.open_sftp()
            channel = sftp.get_channel()
            if channel is not None:
                channel.settimeout(self.timeout)
        except BaseException:
            client.close()
            raise
        self._client, self._sftp = client, sftp
        return sftp

    def _run(self, what: str, action: Callable[[paramiko.SFTPClient], T]) -> T:
        """Run ``action`` on the session under the lock, translating every failure into a delivery error."""
        with self._lock:
            try:
                return action(self._connect())
            except DeliveryError:
                raise
            except paramiko.BadHostKeyException:
                self._drop()
                raise PermanentError(f"{self.label}: {what}: the server's host key is not the one in settings "
                                     "(host_key); refusing to connect") from None
            except paramiko.AuthenticationException as exc:
                self._drop()
                raise PermanentError(f"{self.label}: {what}: login refused ({type(exc).__name__}); check user, "
                                     "key or password") from None
            except paramiko.SSHException as exc:
                self._drop()
                text = str(exc)
                if "not found in known_hosts" in text or "host key" in text.lower():
                    raise PermanentError(f"{self.label}: {what}: the server's host key is unknown; refusing to "
                                         "connect (set host_key to the server's key)") from None
                raise TransientError(f"{self.label}: {what}: SSH failure: {text[:200]}") from None
            except TimeoutError as exc:
                self._drop()
                raise TransientError(f"{self.label}: {what}: timed out ({exc})") from None
            except OSError as exc:
                # SFTP status codes arrive as IOError with an errno; socket errors carry errno too.
                sftp_status = isinstance(exc, IOError) and not isinstance(exc, ConnectionError | socket.gaierror) \
                    and self._sftp is not None and exc.errno in _PERMANENT_SFTP
                if sftp_status:
                    raise PermanentError(f"{self.label}: {what}: {exc.strerror or exc}") from None
                self._drop()
                raise TransientError(f"{self.label}: {what}: {exc.strerror or exc}") from None
            except EOFError:
                self._drop()
                raise TransientError(f"{self.label}: {what}: the server closed the session") from None

    # -- send -----------------------------------------------------------------------------------------------
    def send(self, document: OutboundDocument) -> Receipt:
        if not self.outbox:
            raise PermanentError(f"{self.label}: 'outbox' is not set, so there is nowhere to upload to")
        name = document.filename
        if not name or "/" in name or name.startswith(".") or name in ("..",):
            raise PermanentError(f"document file name {name[:100]!r} is not a plain file name")
        final = _join(self.outbox, name)
        digest = hashlib.sha256(document.message_id.encode()).hexdigest()[:12]
        temporary = _join(self.outbox, f".{name}.{digest}.part")

        def upload(sftp: paramiko.SFTPClient) -> Receipt:
            if self._same_file(sftp, final, document.body):
                return Receipt(reference=final, detail="already delivered")  # a retry after a lost answer
            with sftp.open(temporary, "wb") as remote:
                remote.set_pipelined(True)
                remote.write(document.body)
            try:
                if sftp.stat(temporary).st_size != len(document.body):
                    raise TransientError(f"{self.label}: upload of {name} was cut short")
                _replace(sftp, temporary, final)
            except BaseException:
                try:
                    sftp.remove(temporary)
                except OSError:
                    pass
                raise
            return Receipt(reference=final, detail=f"{len(document.body)} bytes")

        receipt = self._run(f"upload {name}", upload)
        log.info("sftp document sent", partner=self.label, file=receipt.reference, bytes=len(document.body),
                 message_id=document.message_id)
        return receipt

    @staticmethod
    def _same_file(sftp: paramiko.SFTPClient, path: str, body: bytes) -> bool:
        try:
            if sftp.stat(path).st_size != len(body):
                return False
        except OSError:
            return False
        with sftp.open(path, "rb") as remote:
            return bool(remote.read(len(body) + 1) == body)

    # -- fetch / settle -------------------------------------------------------------------------------------
    def fetch(self, watermark: str | None) -> tuple[Sequence[InboundDocument], str | None]:
        """Documents in the inbox that were not returned before and are not yet settled.

        The watermark lists the references (``name@mtime:size``) returned but not yet settled; references of files
        that left the inbox drop out of it, so it stays as small as the inbox.
        """
        if not self.inbox:
            return [], watermark
        inbox = self.inbox
        seen = set(_references(watermark))

        def listing(sftp: paramiko.SFTPClient) -> tuple[list[InboundDocument], list[str]]:
            now = self._clock()
            entries = []
            for attrs in sftp.listdir_attr(inbox):
                name = attrs.filename
                if not stat.S_ISREG(attrs.st_mode or 0) or any(fnmatch.fnmatch(name, p) for p in _IN_PROGRESS):
                    continue
                if not any(fnmatch.fnmatch(name, p) for p in self.patterns):
                    continue
                entries.append(attrs)
            present = {_reference(a) for a in entries}
            docs: list[InboundDocument] = []
            for attrs in sorted(entries, key=lambda a: (a.st_mtime or 0, a.filename)):
                reference = _reference(attrs)
                if reference in seen or now - (attrs.st_mtime or 0) < self.settle_seconds:
                    continue
                if (attrs.st_size or 0) > self.max_size:
                    log.warning("sftp file too large; skipped", partner=self.label, file=attrs.filename,
                                bytes=attrs.st_size, limit=self.max_size)
                    continue
                body = self._download(sftp, _join(inbox, attrs.filename), attrs)
                if body is None:
                    continue  # changed while read: the next poll takes the finished file
                docs.append(InboundDocument(body=body, filename=attrs.filename, reference=reference,
                                            content_type=_content_type(attrs.filename), partner=self.label))
                if len(docs) >= self.max_files:
                    break
            kept = sorted((seen & present) | {d.reference for d in docs})
            return docs, kept

        docs, kept = self._run(f"list {inbox}", listing)
        return docs, json.dumps({"fetched": kept}, separators=(",", ":"))

    @staticmethod
    def _download(sftp: paramiko.SFTPClient, path: str, before: paramiko.SFTPAttributes) -> bytes | None:
        with sftp.open(path, "rb") as remote:
            remote.prefetch(before.st_size)
            body = bytes(remote.read())
        after = sftp.stat(path)
        if after.st_size != before.st_size or after.st_mtime != before.st_mtime or len(body) != after.st_size:
            return None
        return body

    def settle(self, document: InboundDocument) -> None:
        """Move a fetched document into ``processed`` (unless it was rewritten since it was read)."""
        if not self.inbox or not self.processed:
            return
        inbox, processed = self.inbox, self.processed
        name = document.reference.rpartition("@")[0]

        def move(sftp: paramiko.SFTPClient) -> None:
            source = _join(inbox, name)
            try:
                current = sftp.stat(source)
            except OSError:
                return  # already settled (by us before a crash, or by another process)
            if _reference(current, name) != document.reference:
                return  # rewritten since it was read: fetched again as a new version
            try:
                sftp.stat(processed)
            except OSError:
                sftp.mkdir(processed)
            target = _join(processed, name)
            try:
                sftp.stat(target)
                target = _join(processed, f"{name}.{time.time_ns()}")  # never overwrite an earlier one
            except OSError:
                pass
            _replace(sftp, source, target)

        self._run(f"settle {name}", move)

    def settle_references(self, watermark: str | None) -> None:
        """Settle every document a watermark lists (the poll trigger does this once the bus stored it)."""
        for reference in _references(watermark):
            name = reference.rpartition("@")[0]
            self.settle(InboundDocument(body=b"", filename=name, reference=reference))

    def health_check(self) -> str:
        def probe(sftp: paramiko.SFTPClient) -> str:
            for folder in (self.outbox, self.inbox):
                if folder:
                    sftp.stat(folder)
            return "connected; folders present"

        return self._run("health check", probe)


def _replace(sftp: paramiko.SFTPClient, source: str, target: str) -> None:
    """Rename ``source`` onto ``target`` atomically (OpenSSH's posix-rename); a server without that extension
    gets a plain rename, after removing an existing target (plain SFTP rename refuses to overwrite)."""
    try:
        sftp.posix_rename(source, target)
        return
    except OSError as exc:
        if exc.errno is not None:  # a real refusal (permission, missing folder), not "unsupported"
            raise
    try:
        sftp.remove(target)
    except OSError:
        pass
    sftp.rename(source, target)


def _reference(attrs: paramiko.SFTPAttributes, name: str | None = None) -> str:
    """A file version: name, modification time and size (SFTP times have whole seconds only)."""
    return f"{name or attrs.filename}@{attrs.st_mtime}:{attrs.st_size}"


def _references(watermark: str | None) -> list[str]:
    if not watermark:
        return []
    try:
        value = json.loads(watermark)
    except ValueError:
        log.warning("ignoring unreadable sftp watermark", watermark=watermark[:100])
        return []
    fetched = value.get("fetched") if isinstance(value, dict) else None
    return [str(r) for r in fetched] if isinstance(fetched, list) else []


_TYPES = {".edi": "application/edi-x12", ".x12": "application/edi-x12", ".edifact": "application/edifact",
          ".xml": "application/xml", ".cxml": "application/xml", ".json": "application/json", ".csv": "text/csv",
          ".txt": "text/plain"}


def _content_type(name: str) -> str:
    lower = name.lower()
    for suffix, media in _TYPES.items():
        if lower.endswith(suffix):
            return media
    return "application/octet-stream"
