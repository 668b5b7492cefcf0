"""Pure CNI logic: config parsing, results, error objects, the shim<->agent wire format."""
from __future__ import annotations

import json

import pytest

from cni import errors as ce
from cni.agent import wire
from cni.netconf import parse_cni_args, parse_netconf, parse_request
from cni.result import PortInfo, PortIP, build_result, host_ifname

CONF = {"cniVersion": "1.0.0", "name": "ecnet-net", "type": "ecnet",
        "agentSocket": "/run/ecnet/agent.sock"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/x",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin",
       "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0;K8S_POD_UID=u-1"}


def conf(**kw: object) -> str:
    return json.dumps({**CONF, **kw})


def test_parse_full_request() -> None:
    r = parse_request(ENV, conf(pool="web", runtimeConfig={
        "io.kubernetes.cri.pod-annotations": {"ecnet.io/product-type": "light-vm",
                                              "ecnet.io/ip": "10.0.0.9", "other": "x"}}))
    assert (r.command, r.container_id, r.ifname) == ("ADD", "abc123", "eth0")
    assert (r.args.pod_namespace, r.args.pod_name, r.args.pod_uid) == ("ns", "web-0", "u-1")
    assert r.args.extra == {"IgnoreUnknown": "1"}
    assert (r.pool, r.config_pool, r.product_type, r.requested_ip) == \
        ("", "web", "light-vm", "10.0.0.9")


def test_annotation_pool_and_netconf_pool_travel_apart() -> None:
    """The controller weighs them (annotation first); the agent only passes both on."""
    r = parse_request(ENV, conf(pool="a", runtimeConfig={
        "io.kubernetes.cri.pod-annotations": {"ecnet.io/pool": "b"}}))
    assert (r.pool, r.config_pool) == ("b", "a")
    r = parse_request(ENV, conf(ecnet={"productType": "stateless", "pool": "c"}))
    assert (r.pool, r.config_pool, r.product_type) == ("", "c", "stateless")


@pytest.mark.parametrize("stdin,cls,code", [
    ("{not json", ce.DecodeFailure, 6),
    ("[1,2]", ce.DecodeFailure, 6),
    (json.dumps({**CONF, "cniVersion": "9.9.9"}), ce.IncompatibleVersion, 1),
    (json.dumps({k: v for k, v in CONF.items() if k != "cniVersion"}), ce.InvalidConfig, 7),
    (json.dumps({**CONF, "type": "bridge"}), ce.InvalidConfig, 7),
    (json.dumps({**CONF, "name": ""}), ce.InvalidConfig, 7),
    (json.dumps({**CONF, "agentSocket": "relative.sock"}), ce.InvalidConfig, 7),
    (json.dumps({**CONF, "mtu": 70000}), ce.InvalidConfig, 7),
    (json.dumps({**CONF, "pool": 5}), ce.InvalidConfig, 7),
])
def test_bad_config(stdin: str, cls: type, code: int) -> None:
    with pytest.raises(cls) as ei:
        parse_netconf(stdin)
    assert ei.value.code == code


@pytest.mark.parametrize("env", [
    {**ENV, "CNI_COMMAND": "FROB"},
    {**ENV, "CNI_CONTAINERID": ""},
    {**ENV, "CNI_CONTAINERID": "../etc"},
    {**ENV, "CNI_IFNAME": "much-too-long-ifname"},
    {**ENV, "CNI_IFNAME": "a/b"},
    {**ENV, "CNI_NETNS": ""},
    {**ENV, "CNI_NETNS": "relative/path"},
    {**ENV, "CNI_ARGS": "K8S_POD_NAME"},
])
def test_bad_environment_is_code_4(env: dict[str, str]) -> None:
    with pytest.raises(ce.InvalidEnvironment) as ei:
        parse_request(env, conf())
    assert ei.value.code == 4


def test_del_without_netns_is_fine() -> None:
    r = parse_request({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, conf())
    assert r.netns == ""


def test_cni_args_parsing() -> None:
    a = parse_cni_args("K8S_POD_NAMESPACE=a;K8S_POD_NAME=b;;K8S_POD_UID=c;X=")
    assert (a.pod_namespace, a.pod_name, a.pod_uid, a.extra) == ("a", "b", "c", {"X": ""})


def test_result_shape_v1_and_legacy() -> None:
    port = PortInfo("0123456789abcdef", "0a:00:00:00:00:01",
                    (PortIP("10.0.0.5/24", "10.0.0.1"), PortIP("fd00::5/64", "fd00::1")))
    r = build_result("1.0.0", port, "tap0123456789a", "aa:bb:cc:dd:ee:ff", "eth0", "/ns")
    assert r["interfaces"][1] == {"name": "eth0", "mac": "0a:00:00:00:00:01", "sandbox": "/ns"}
    assert r["ips"][0] == {"address": "10.0.0.5/24", "gateway": "10.0.0.1", "interface": 1}
    assert {"dst": "0.0.0.0/0", "gw": "10.0.0.1"} in r["routes"]
    assert {"dst": "::/0", "gw": "fd00::1"} in r["routes"]
    legacy = build_result("0.4.0", port, "tap0123456789a", "aa:bb:cc:dd:ee:ff", "eth0", "/ns")
    assert [i["version"] for i in legacy["ips"]] == ["4", "6"]


def test_host_ifname_is_onos_binding_name() -> None:
    assert host_ifname("65c0ee9f-d634-4522-8954-51021b570b0d") == "tap65c0ee9f-d6"
    assert len(host_ifname("65c0ee9f-d634-4522-8954-51021b570b0d")) <= 15


def test_error_object() -> None:
    e = ce.PoolExhausted("pool web is full", "no IPv4")
    assert e.to_result("1.0.0") == {"cniVersion": "1.0.0", "code": 100,
                                    "msg": "pool web is full", "details": "no IPv4"}
    assert ce.TryAgainLater().code == 11 and ce.InvalidEnvironment().code == 4


def test_wire_roundtrip_and_garbage() -> None:
    raw = wire.encode_request({"CNI_COMMAND": "ADD", "CNI_ARGS": "A=b=c"}, b'{"x":1}')
    env, stdin = wire.parse(raw)
    assert env == {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=b=c"} and stdin == '{"x":1}'
    for bad in (b"", b"HELLO", b"ECNET1 x\n", b"ECNET1 99\nshort"):
        with pytest.raises(ce.DecodeFailure):
            wire.parse(bad)


def test_runtime_config_ips_and_mac() -> None:
    from cni.errors import InvalidConfig
    from cni.netconf import parse_netconf
    base = {"cniVersion": "1.1.0", "name": "n", "type": "ecnet"}
    conf = parse_netconf(json.dumps({**base, "runtimeConfig": {"ips": ["10.1.2.3/24"]}}))
    assert conf.runtime_ips == ("10.1.2.3/24",)
    for bad in ({"ips": "10.1.2.3"}, {"ips": ["x"]}, {"ips": ["10.0.0.1", "10.0.0.2"]},
                {"mac": "02:00:00:00:00:01"}):
        with pytest.raises(InvalidConfig):
            parse_netconf(json.dumps({**base, "runtimeConfig": bad}))
