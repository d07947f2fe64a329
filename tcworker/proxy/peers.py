"""Who may talk to a run's proxy: the task's own OS user (and root), or its container network.

generic-worker's proxy admits a connection on multiuser only when the *client* socket belongs to
the task user: the client's end of a loopback connection is a row of ``/proc/net/tcp`` whose
local address is our peer address, and that row carries the owning uid. A client in another
network namespace (a container) has no such row; it is admitted only when its address is in the
run's own docker network (a container of another task has an address of another network).
Each connection is checked once, on its first request; the answer is cached per transport.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Collection
from dataclasses import dataclass, field

PROC_NET_TCP = ("/proc/net/tcp", "/proc/net/tcp6")


def _hex_endpoint(ip: str, port: int) -> tuple[str, ...]:
    """The ``local_address`` spellings of ``ip:port`` in /proc/net/tcp and tcp6 (host byte order words)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    out: list[str] = []
    if isinstance(addr, ipaddress.IPv4Address):
        (word,) = struct.unpack("=I", addr.packed)
        out.append(f"{word:08X}:{port:04X}")
        mapped = ipaddress.IPv6Address("::ffff:" + str(addr)).packed
    else:
        mapped = addr.packed
    words = struct.unpack("=4I", mapped)
    out.append("".join(f"{w:08X}" for w in words) + f":{port:04X}")
    return tuple(out)


def peer_uid(peer_ip: str, peer_port: int) -> int | None:
    """The uid owning the client socket ``peer_ip:peer_port`` in our network namespace, or ``None``."""
    wanted = set(_hex_endpoint(peer_ip, peer_port))
    for path in PROC_NET_TCP:
        try:
            with open(path, encoding="ascii") as fh:
                next(fh, None)
                for line in fh:
                    fields = line.split()
                    if len(fields) > 7 and fields[1] in wanted:
                        return int(fields[7])
        except FileNotFoundError:
            continue
    return None


@dataclass
class PeerPolicy:
    """``allowed_uids`` empty = no uid rule; ``allowed_network`` = CIDR admitted for invisible peers."""

    allowed_uids: Collection[int] = ()
    allowed_network: str | None = None
    _network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.allowed_network:
            self._network = ipaddress.ip_network(self.allowed_network, strict=False)

    @property
    def restricted(self) -> bool:
        return bool(self.allowed_uids) or self._network is not None

    def refusal(self, peername: tuple[str, int] | None) -> str | None:
        """``None`` when the peer may connect, else a sentence saying why not."""
        if not self.restricted:
            return None
        if not peername:
            return "the connection has no peer address"
        ip, port = str(peername[0]), int(peername[1])
        uid = peer_uid(ip, port)
        if uid is not None:
            if uid == 0 or uid in self.allowed_uids:
                return None
            # A host process (visible in our namespace): only root and the task's own user.
            return f"connection from uid {uid} at {ip}:{port}: only this task's user may use this proxy"
        if self._network is not None and _in_network(ip, self._network):
            return None
        return f"connection from {ip}:{port} is not from this task"


def _in_network(ip: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr in network
