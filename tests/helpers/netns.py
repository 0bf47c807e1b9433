"""Several "hosts" on this machine: network namespaces on a private /24, linked to a bridge in the root namespace.

Each host is a namespace with its own loopback and one veth interface; the other end of the veth is a port of
a bridge in the root namespace, which holds the network's first address (``gateway``), where the test's own
servers listen. A host reaches the gateway and nothing else of the machine; cutting the root end of its veth
(``ip link set … down``) is a network partition: its TCP connections hang, as when a cable is pulled.

Names carry the test process's id and a random part, so parallel runs (xdist, other checkouts) never clash;
everything is removed afterwards - processes left in the namespaces, namespaces, veths, the bridge - whatever
happened. Needs root and iproute2's ``ip``.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.helpers.services import skip_or_fail

__all__ = ["Hosts", "namespace_hosts"]


def _ip(*argv: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def require_namespaces() -> None:
    """Skip (or fail under IRONBUS_REQUIRE_SERVICES=1) when hosts cannot be made here."""
    if os.geteuid() != 0:
        skip_or_fail("the several-hosts test makes network namespaces and veth pairs, which needs root")
    if shutil.which("ip") is None:
        skip_or_fail("the several-hosts test needs the ip command (Debian package iproute2)")


def _free_network() -> str:
    """A 10.x.y.0/24 that no interface of this machine uses yet (the first three octets)."""
    used = _ip("-o", "-4", "addr", "show")
    for _ in range(100):
        prefix = f"10.{random.randint(200, 250)}.{random.randint(0, 255)}"
        if f" {prefix}." not in used:
            return prefix
    raise RuntimeError("no free 10.x.y.0/24 for the test hosts")


@dataclass
class Hosts:
    """The hosts made by :func:`namespace_hosts`."""

    gateway: str  # the bridge's address in the root namespace: where the test's servers listen
    network: str  # the /24, as CIDR
    namespaces: list[str]
    addresses: list[str]
    links: list[str]  # the root namespace's end of each host's veth
    bridge: str
    cut_off: set[int] = field(default_factory=set)

    def command(self, host: int, argv: list[str]) -> list[str]:
        """``argv`` run inside host ``host`` (``ip netns exec`` execs it, so the pid is the command's own)."""
        return ["ip", "netns", "exec", self.namespaces[host], *argv]

    def cut(self, host: int) -> None:
        """Partition ``host`` from the network: its link goes down, its connections hang."""
        _ip("link", "set", self.links[host], "down")
        self.cut_off.add(host)

    def mend(self, host: int) -> None:
        _ip("link", "set", self.links[host], "up")
        self.cut_off.discard(host)

    def pids(self, host: int) -> list[int]:
        return [int(p) for p in _ip("netns", "pids", self.namespaces[host], check=False).split()]


@contextmanager
def namespace_hosts(count: int) -> Iterator[Hosts]:
    require_namespaces()
    tag = f"{os.getpid() % 100000:05d}{random.randrange(16 ** 2):02x}"  # interface names: 15 characters at most
    prefix = _free_network()
    hosts = Hosts(gateway=f"{prefix}.1", network=f"{prefix}.0/24",
                  namespaces=[f"ib{tag}h{i}" for i in range(count)],
                  addresses=[f"{prefix}.{10 + i}" for i in range(count)],
                  links=[f"ib{tag}v{i}" for i in range(count)], bridge=f"ib{tag}br")
    try:
        _ip("link", "add", hosts.bridge, "type", "bridge")
        _ip("addr", "add", f"{hosts.gateway}/24", "dev", hosts.bridge)
        _ip("link", "set", hosts.bridge, "up")
        for ns, address, link in zip(hosts.namespaces, hosts.addresses, hosts.links, strict=True):
            inner = f"{link}i"
            _ip("netns", "add", ns)
            _ip("link", "add", link, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", link, "master", hosts.bridge, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
        yield hosts
    finally:
        for i, ns in enumerate(hosts.namespaces):
            for pid in hosts.pids(i):  # only processes this test started live in its namespaces
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _ip("netns", "del", ns, check=False)  # takes the namespace's end of the veth, and so the pair
        for link in hosts.links:
            _ip("link", "del", link, check=False)
        _ip("link", "del", hosts.bridge, check=False)
