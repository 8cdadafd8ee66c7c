"""Network namespaces for one run: one per node plus one for the client
(workload and check), each joined by a veth to a bridge that lives in a
namespace of its own. Nothing is connected to the host's network, so nothing
a run does can reach host traffic.

Namespaces are created in-process (setns on this thread, then back) rather
than through pyroute2's forking helper: a 5-node sandbox then costs tens of
milliseconds, not hundreds.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

from pyroute2 import IPRoute, netns

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")  # `ip netns exec` bind-mounts these over /etc
# RFC 2544's benchmarking range: reserved for exactly this kind of test
# network, never routed, and disjoint from the private ranges hosts use.
SUPERNET = ipaddress.ip_network("198.18.0.0/15")
# IPv6: a unique local /48 of our own (RFC 4193; "ldfi" in the global ID), a
# /64 per run slot. Host numbers are the IPv4 ones.
SUPERNET6 = ipaddress.ip_network("fd00:6c64:6669::/48")
IFA_F_NODAD = 0x02  # usable at once: no duplicate address detection on a private bridge
HAS_IPV6 = Path("/proc/sys/net/ipv6").is_dir()  # absent when booted with ipv6.disable=1
CLIENT_HOST = 2
FIRST_NODE_HOST = 10
BRIDGE_IF = "ldfi-br"


def subnet_for_slot(slot: int) -> ipaddress.IPv4Network:
    return list(SUPERNET.subnets(new_prefix=24))[slot]


def subnet6_for_slot(slot: int) -> ipaddress.IPv6Network:
    return ipaddress.IPv6Network((int(SUPERNET6.network_address) + (slot << 64), 64))


@dataclass
class Endpoint:
    """One namespace on the run's network: a node's or the client's."""

    name: str  # node name, or "client"
    netns: str  # namespace name under /run/netns
    address: str  # IPv4 address on the run's /24
    address6: str = ""  # IPv6 address on the run's /64
    ipr: IPRoute | None = field(default=None, repr=False)

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns


def _create_netns(name: str) -> IPRoute:
    """Create namespace `name` and return a netlink socket bound inside it."""
    netns.pushns()
    try:
        netns.setns(name, flags=os.O_CREAT | os.O_EXCL, fork=False)
        return IPRoute()
    finally:
        netns.popns()


def remove_netns(name: str) -> None:
    with suppress(FileNotFoundError):
        netns.remove(name)
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(NETNS_DIR / name).st_ino
    except FileNotFoundError:
        return None


class RunNetwork:
    """The namespaces, bridge and veths of one run slot."""

    def __init__(self, slot: int, prefix: str, names: Iterable[str]) -> None:
        self.subnet = subnet_for_slot(slot)
        self.subnet6 = subnet6_for_slot(slot)
        self.prefix = prefix
        self.bridge_netns = f"{prefix}-bridge"
        self.endpoints: dict[str, Endpoint] = {
            "client": self._endpoint("client", f"{prefix}-client", CLIENT_HOST)
        }
        for i, name in enumerate(names):
            self.endpoints[name] = self._endpoint(name, f"{prefix}-node-{name}",
                                                  FIRST_NODE_HOST + i)
        self._bridge_ipr: IPRoute | None = None

    def _endpoint(self, name: str, netns_name: str, host: int) -> Endpoint:
        six = str(self.subnet6.network_address + host) if HAS_IPV6 else ""
        return Endpoint(name, netns_name, str(self.subnet.network_address + host), six)

    @property
    def addresses(self) -> dict[str, str]:
        return {name: ep.address for name, ep in self.endpoints.items()}

    @property
    def addresses6(self) -> dict[str, str]:
        """Empty on a host without IPv6."""
        return {name: ep.address6 for name, ep in self.endpoints.items() if ep.address6}

    def build(self) -> None:
        """Create everything; on failure, undo what was done and re-raise."""
        try:
            self._bridge_ipr = _create_netns(self.bridge_netns)
            bridge = self._make_bridge()
            for i, ep in enumerate(self.endpoints.values()):
                ep.ipr = _create_netns(ep.netns)
                self._wire(ep, i, bridge)
                self._write_hosts(ep)
        except BaseException:
            self.destroy()
            raise

    def _make_bridge(self) -> int:
        ipr = self._bridge_ipr
        assert ipr is not None
        ipr.link("add", ifname=BRIDGE_IF, kind="bridge")
        index = ipr.link_lookup(ifname=BRIDGE_IF)[0]
        ipr.link("set", index=index, state="up")
        return index

    def _wire(self, ep: Endpoint, i: int, bridge: int) -> None:
        """A veth from the bridge namespace into `ep`'s namespace, eth0 there."""
        assert self._bridge_ipr is not None and ep.ipr is not None
        port = f"ldfi-p{i}"
        fd = os.open(ep.netns_path, os.O_RDONLY)
        try:
            self._bridge_ipr.link(
                "add", ifname=port, kind="veth", peer={"ifname": "eth0", "net_ns_fd": fd}
            )
        finally:
            os.close(fd)
        port_index = self._bridge_ipr.link_lookup(ifname=port)[0]
        self._bridge_ipr.link("set", index=port_index, master=bridge, state="up")
        eth0 = ep.ipr.link_lookup(ifname="eth0")[0]
        ep.ipr.addr("add", index=eth0, address=ep.address, prefixlen=24)
        if HAS_IPV6:
            ep.ipr.addr("add", index=eth0, address=ep.address6, prefixlen=64,
                        flags=IFA_F_NODAD)
        ep.ipr.link("set", index=eth0, state="up")
        ep.ipr.link("set", index=ep.ipr.link_lookup(ifname="lo")[0], state="up")

    def _write_hosts(self, ep: Endpoint) -> None:
        """Node names resolve as host names inside every namespace."""
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost"]
        lines += [f"{other.address}\t{other.name}" for other in self.endpoints.values()]
        directory = ETC_NETNS / ep.netns
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts").write_text("\n".join(lines) + "\n")

    def destroy(self) -> None:
        for ep in self.endpoints.values():
            if ep.ipr is not None:
                ep.ipr.close()
                ep.ipr = None
            remove_netns(ep.netns)
        if self._bridge_ipr is not None:
            self._bridge_ipr.close()
            self._bridge_ipr = None
        remove_netns(self.bridge_netns)
