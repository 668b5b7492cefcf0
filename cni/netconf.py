"""CNI request parsing: environment + network config into one validated dataclass.

Pure functions, no I/O: the agent calls `parse_request` on what the shim forwarded verbatim, and
every rejection is a CNI error with the code the spec assigns (4 env, 6 decode, 7 config,
1 version).
"""
from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import DecodeFailure, IncompatibleVersion, InvalidConfig, InvalidEnvironment

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
ANNOTATIONS_CAPABILITY = "io.kubernetes.cri.pod-annotations"
ANNOTATION_PREFIX = "ecnet.io/"
DEFAULT_AGENT_SOCKET = "/run/ecnet/agent.sock"

# Linux interface names: 1-15 bytes, no '/', no whitespace, not "." or "..".
_IFNAME = re.compile(r"^[^/\s:]{1,15}$")
# CNI spec: container ID is alphanumeric plus underscore, dot and hyphen, starting alnum.
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class NetConf:
    cni_version: str
    name: str
    type: str
    agent_socket: str = DEFAULT_AGENT_SOCKET
    pool: str = ""
    product_type: str = ""
    mtu: int = 0
    annotations: dict[str, str] = field(default_factory=dict)
    prev_result: dict[str, Any] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    runtime_ips: tuple[str, ...] = ()   # runtimeConfig "ips" (the `ips` capability)


@dataclass(frozen=True)
class CniArgs:
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CniRequest:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: CniArgs
    path: str
    conf: NetConf

    @property
    def pool(self) -> str:
        """The pod's own choice (annotation); the controller weighs it first."""
        return self.conf.annotations.get(ANNOTATION_PREFIX + "pool", "")

    @property
    def config_pool(self) -> str:
        """The network config's pool: after the pod's annotations, before the namespace
        default (the controller decides)."""
        return self.conf.pool

    @property
    def product_type(self) -> str:
        return (self.conf.annotations.get(ANNOTATION_PREFIX + "product-type", "")
                or self.conf.product_type)

    @property
    def requested_ip(self) -> str:
        """The pod's annotation, else the runtime's `ips` capability (its first address)."""
        ip = self.conf.annotations.get(ANNOTATION_PREFIX + "ip", "")
        if ip or not self.conf.runtime_ips:
            return ip
        return self.conf.runtime_ips[0].split("/")[0]

    @property
    def owner(self) -> str:
        return self.conf.annotations.get(ANNOTATION_PREFIX + "owner", "")

    @property
    def hostname(self) -> str:
        return self.conf.annotations.get(ANNOTATION_PREFIX + "hostname", "")


def parse_cni_args(text: str) -> CniArgs:
    """CNI_ARGS is "K=V;K=V"; a malformed pair is an environment error (code 4)."""
    values: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidEnvironment(f"CNI_ARGS: malformed pair {pair!r} (want KEY=VALUE)")
        values[key] = value
    return CniArgs(pod_namespace=values.pop("K8S_POD_NAMESPACE", ""),
                   pod_name=values.pop("K8S_POD_NAME", ""),
                   pod_uid=values.pop("K8S_POD_UID", ""), extra=values)


def parse_netconf(stdin: str | bytes) -> NetConf:
    try:
        raw = json.loads(stdin)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeFailure(f"network config is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DecodeFailure("network config must be a JSON object")
    version = raw.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise InvalidConfig("network config: cniVersion is required")
    if version not in SUPPORTED_VERSIONS:
        raise IncompatibleVersion(
            f"CNI version {version} is not supported; supported: "
            f"{', '.join(SUPPORTED_VERSIONS)}")
    name, typ = raw.get("name"), raw.get("type")
    if not isinstance(name, str) or not name:
        raise InvalidConfig("network config: name is required")
    if typ != "ecnet":
        raise InvalidConfig(f"network config: type must be \"ecnet\", got {typ!r}")
    sock = raw.get("agentSocket", DEFAULT_AGENT_SOCKET)
    if not isinstance(sock, str) or not sock.startswith("/"):
        raise InvalidConfig("network config: agentSocket must be an absolute path")
    pool = raw.get("pool", "")
    section = raw.get("ecnet", {})
    if not isinstance(pool, str):
        raise InvalidConfig("network config: pool must be a string")
    if not isinstance(section, dict):
        raise InvalidConfig("network config: ecnet must be an object")
    mtu = raw.get("mtu", 0)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or (mtu and not 576 <= mtu <= 9000):
        raise InvalidConfig("network config: mtu must be an integer in 576..9000")
    product_type = section.get("productType", section.get("product-type", ""))
    pool = pool or section.get("pool", "")
    if not isinstance(product_type, str) or not isinstance(pool, str):
        raise InvalidConfig("network config: ecnet.productType and ecnet.pool are strings")
    annotations: dict[str, str] = {}
    rc = raw.get("runtimeConfig", {})
    if isinstance(rc, dict):
        ann = rc.get(ANNOTATIONS_CAPABILITY, {})
        if isinstance(ann, dict):
            annotations = {k: str(v) for k, v in ann.items()
                           if isinstance(k, str) and k.startswith(ANNOTATION_PREFIX)}
    prev = raw.get("prevResult")
    _refuse_runtime_mac(rc)
    return NetConf(cni_version=version, name=name, type=typ, agent_socket=sock, pool=pool,
                   product_type=product_type, mtu=mtu, annotations=annotations,
                   prev_result=prev if isinstance(prev, dict) else None, raw=raw,
                   runtime_ips=_runtime_ips(rc))


def _refuse_runtime_mac(rc: object) -> None:
    """A pod's MAC is the port's, chosen by the controller and recorded in ONOS: a MAC the
    runtime picks would be one ONOS never heard of. Refused rather than ignored."""
    if isinstance(rc, dict) and rc.get("mac"):
        raise InvalidConfig("runtimeConfig.mac is not supported: ecnet's controller assigns "
                            "each port's MAC (declare no `mac` capability)")


def _runtime_ips(rc: object) -> tuple[str, ...]:
    """runtimeConfig "ips": addresses (CIDR or bare) the runtime asks for. One per family at
    most is meaningful to a port; anything else is a config error, not a silent choice."""
    ips = rc.get("ips", []) if isinstance(rc, dict) else []
    if not isinstance(ips, list) or not all(isinstance(i, str) for i in ips):
        raise InvalidConfig("runtimeConfig.ips must be a list of addresses")
    out = []
    for ip in ips:
        try:
            ipaddress.ip_interface(ip)
        except ValueError:
            raise InvalidConfig(f"runtimeConfig.ips: {ip!r} is not an address") from None
        out.append(ip)
    if len(out) > 1:
        raise InvalidConfig("runtimeConfig.ips: ecnet gives a pod one address; ask for one")
    return tuple(out)


GC_ATTACHMENT_KEYS = ("cni.dev/valid-attachments", "cni.dev/attachments")


def valid_attachments(conf: NetConf) -> set[tuple[str, str]]:
    """GC's list of what the runtime still has: (container id, ifname) pairs. libcni sends
    `cni.dev/valid-attachments` (and `cni.dev/attachments` too). Without either, GC cannot
    know what is live, so it refuses rather than release everything."""
    for key in GC_ATTACHMENT_KEYS:
        if key in conf.raw:
            items = conf.raw[key]
            break
    else:
        raise InvalidConfig("GC needs cni.dev/valid-attachments in the network config")
    if not isinstance(items, list):
        raise InvalidConfig(f"{key} must be a list")
    out = set()
    for item in items:
        if not (isinstance(item, dict) and isinstance(item.get("containerID"), str)
                and isinstance(item.get("ifname"), str)):
            raise InvalidConfig(f"{key}: each entry needs containerID and ifname strings")
        out.add((item["containerID"], item["ifname"]))
    return out


def parse_request(env: dict[str, str], stdin: str) -> CniRequest:
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise InvalidEnvironment(f"CNI_COMMAND {command!r} is not one of {', '.join(COMMANDS)}")
    conf = parse_netconf(stdin)
    cid = env.get("CNI_CONTAINERID", "")
    netns = env.get("CNI_NETNS", "")
    ifname = env.get("CNI_IFNAME", "")
    if command in ("ADD", "DEL", "CHECK"):
        if not cid or not _CONTAINER_ID.match(cid):
            raise InvalidEnvironment(f"CNI_CONTAINERID {cid!r} is missing or malformed")
        if not ifname or not _IFNAME.match(ifname) or ifname in (".", ".."):
            raise InvalidEnvironment(f"CNI_IFNAME {ifname!r} is missing or not a valid "
                                     "interface name")
    if command in ("ADD", "CHECK") and not netns:
        raise InvalidEnvironment(f"CNI_NETNS is required for {command}")
    if netns and not netns.startswith("/"):
        raise InvalidEnvironment(f"CNI_NETNS {netns!r} must be an absolute path")
    return CniRequest(command=command, container_id=cid, netns=netns, ifname=ifname,
                      args=parse_cni_args(env.get("CNI_ARGS", "")),
                      path=env.get("CNI_PATH", ""), conf=conf)
