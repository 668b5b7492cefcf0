"""packaging/kubernetes: schema-valid, and every flag, variable and key it passes exists.

The manifests cannot be applied here (no cluster), so what can be checked without one is:
the Kubernetes schemas (kubernetes-validate, strict: unknown fields fail); each container's
arguments parse with the daemon's own argument parser; every $(VAR) is defined; every
ConfigMap/Secret key referenced exists; the DaemonSet's install step, run against temporary
host directories, installs a working binary and conflist, atomically and idempotently.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cni import install
from cni.agent import main as agent_main
from cni.agent import probe
from ipcontroller import daemon

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "packaging" / "kubernetes").glob("*.yaml"))
K8S_VERSION = "1.30.0"
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# Variables kubelet injects for the Service ecnet-controller (enableServiceLinks).
SERVICE_LINKS = {"ECNET_CONTROLLER_SERVICE_HOST": "10.96.0.10",
                 "ECNET_CONTROLLER_SERVICE_PORT_GRPC": "7400"}


def docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, d) for path in MANIFESTS for d in yaml.safe_load_all(path.read_text()) if d]


def containers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _, d in docs():
        spec = d.get("spec", {}).get("template", {}).get("spec")
        if spec:
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                out.append((d["metadata"]["name"], c))
    return out


def config_data() -> dict[str, str]:
    return next(d["data"] for _, d in docs() if d["kind"] == "ConfigMap")


def secret_keys() -> dict[str, set[str]]:
    return {d["metadata"]["name"]: set(d["stringData"]) for _, d in docs()
            if d["kind"] == "Secret"}


def test_there_are_manifests_for_every_part() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for _, d in docs()}
    assert {("DaemonSet", "ecnet-agent"), ("Deployment", "ecnet-controller"),
            ("Service", "ecnet-controller"), ("PodDisruptionBudget", "ecnet-controller"),
            ("ConfigMap", "ecnet-config"), ("ServiceAccount", "ecnet-agent"),
            ("ServiceAccount", "ecnet-controller")} <= kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_against_the_kubernetes_schemas(path: Path) -> None:
    for d in yaml.safe_load_all(path.read_text()):
        if d:
            kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_schema_validation_really_rejects_a_bad_field() -> None:
    """The check above can fail: a misspelt field is refused."""
    ds = next(d for _, d in docs() if d["kind"] == "DaemonSet")
    bad = json.loads(json.dumps(ds))
    bad["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def _expand(c: dict[str, Any], words: list[str]) -> list[str]:
    defined = {e["name"]: "x" for e in c.get("env", [])}
    values = {**SERVICE_LINKS, **defined, "NODE_NAME": "node-1", "POD_IP": "10.0.0.5",
              "POD_NAME": "ecnet-controller-abc"}
    cfg = config_data()
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            values[e["name"]] = cfg[ref["key"]]
    out = []
    for w in words:
        for name in VAR.findall(w):
            assert name in values, f"$({name}) is used but never defined in {c['name']}"
        out.append(VAR.sub(lambda m: values[m.group(1)], w))
    return out


PARSERS = {
    "ecnet-agent": lambda argv: agent_main.parse_args(argv),
    "ecnet-ipcontroller": lambda argv: daemon.parse_args(argv),
    "cni.install": lambda argv: install.build_parser().parse_args(argv),
    "cni.agent.probe": lambda argv: probe.build_parser().parse_args(argv),
}


def _program(c: dict[str, Any], words: list[str]) -> tuple[str, list[str]]:
    if words[:2] == ["python3", "-c"]:
        return "-c", []
    if words[:2] == ["python3", "-m"]:
        return words[2], words[3:]
    if words and words[0] in PARSERS:
        return words[0], words[1:]
    image = c["image"]
    return ("ecnet-ipcontroller" if "controller" in image else "ecnet-agent"), words


@pytest.mark.parametrize("owner,c", containers(), ids=lambda v: v if isinstance(v, str)
                         else v["name"])
def test_every_flag_and_variable_a_container_passes_exists(owner: str,
                                                           c: dict[str, Any]) -> None:
    words = _expand(c, list(c.get("command", [])) + list(c.get("args", [])))
    prog, argv = _program(c, words)
    if prog == "-c":
        return  # the uninstall DaemonSet's idle container
    assert prog in PARSERS, f"{owner}/{c['name']} runs {prog!r}: no parser known"
    PARSERS[prog](argv)  # argparse exits (SystemExit) on an unknown or invalid flag


@pytest.mark.parametrize("owner,c", containers(), ids=lambda v: v if isinstance(v, str)
                         else v["name"])
def test_probes_run_existing_commands(owner: str, c: dict[str, Any]) -> None:
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        cmd = c.get(kind, {}).get("exec", {}).get("command")
        if cmd:
            prog, argv = _program(c, cmd)
            PARSERS[prog](argv)


def test_every_configmap_and_secret_key_referenced_exists() -> None:
    cfg, secrets = config_data(), secret_keys()
    for _, c in containers():
        for e in c.get("env", []):
            ref = e.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                assert ref["configMapKeyRef"]["key"] in cfg, e
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                assert r["key"] in secrets.get(r["name"], set()), e


def test_environment_the_daemons_read_is_what_the_manifests_set() -> None:
    """ECNET_* variables set in a container must be read by our code."""
    sources = "".join(p.read_text() for pkg in ("cni", "ipcontroller", "ipam")
                      for p in (ROOT / pkg).rglob("*.py"))
    for _, c in containers():
        for e in c.get("env", []):
            if e["name"].startswith("ECNET_"):
                assert f'"{e["name"]}"' in sources, f"{e['name']} is read by no daemon"


def test_secrets_never_appear_as_arguments() -> None:
    for _, c in containers():
        text = " ".join(c.get("command", []) + c.get("args", []))
        assert "password" not in text.lower() and "postgresql" not in text.lower(), text


def test_the_conflist_is_a_valid_ecnet_chain() -> None:
    doc = json.loads(config_data()["10-ecnet.conflist"])
    plugins = doc["plugins"]
    assert plugins[0]["type"] == "ecnet"
    assert plugins[0]["capabilities"]["io.kubernetes.cri.pod-annotations"] is True
    assert plugins[0]["agentSocket"] == "/run/ecnet/agent.sock"


# -- the DaemonSet's install step, against temporary host directories ---------------------

@pytest.fixture(scope="module")
def static_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("prefix")
    subprocess.run(["bash", str(ROOT / "packaging/build-shim.sh"), str(prefix)], check=True,
                   capture_output=True, timeout=120)
    binary = prefix / "libexec/ecnet/ecnet"
    if not binary.exists():
        if os.environ.get("ECNET_REQUIRE_ALL") == "1":
            pytest.fail("the static shim did not build")
        pytest.skip("no static build here")
    return binary


def _init_step_args(host: Path, conflist: Path) -> list[str]:
    """The install-cni init container's own arguments, with the host paths swapped in."""
    c = next(c for _, c in containers() if c["name"] == "install-cni")
    return [a.replace("/host/opt/cni/bin", str(host / "opt/cni/bin"))
             .replace("/host/etc/cni/net.d", str(host / "etc/cni/net.d"))
             .replace("/etc/ecnet/10-ecnet.conflist", str(conflist))
            for a in c["args"]]


def _run_init_step(host: Path, conflist: Path, static: Path) -> None:
    subprocess.run([sys.executable, "-m", "cni.install", *_init_step_args(host, conflist)],
                   check=True, capture_output=True, cwd=ROOT, timeout=60,
                   env={**os.environ, "ECNET_CNI_BINARY": str(static)})


def test_install_step_installs_a_working_binary_and_conflist(tmp_path: Path,
                                                             static_binary: Path) -> None:
    conflist = tmp_path / "10-ecnet.conflist"
    conflist.write_text(config_data()["10-ecnet.conflist"])
    host = tmp_path / "host"
    _run_init_step(host, conflist, static_binary)
    binary = host / "opt/cni/bin/ecnet"
    out = subprocess.run([str(binary)], input=b'{"cniVersion":"1.1.0"}', capture_output=True,
                         env={"CNI_COMMAND": "VERSION"}, timeout=10)
    assert out.returncode == 0 and "1.1.0" in json.loads(out.stdout)["supportedVersions"]
    installed = host / "etc/cni/net.d/10-ecnet.conflist"
    assert json.loads(installed.read_text()) == json.loads(conflist.read_text())
    # nothing else left in the runtime's directories (no temp files a runtime might load)
    assert sorted(p.name for p in (host / "etc/cni/net.d").iterdir()) == ["10-ecnet.conflist"]
    assert sorted(p.name for p in (host / "opt/cni/bin").iterdir()) == ["ecnet"]


def test_install_step_is_idempotent(tmp_path: Path, static_binary: Path) -> None:
    """A second run (every agent restart) must not touch an unchanged conflist: a rewrite
    makes the runtime reload its network config."""
    conflist = tmp_path / "c.conflist"
    conflist.write_text(config_data()["10-ecnet.conflist"])
    host = tmp_path / "host"
    _run_init_step(host, conflist, static_binary)
    conf = host / "etc/cni/net.d/10-ecnet.conflist"
    before = conf.stat()
    _run_init_step(host, conflist, static_binary)
    after = conf.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # a changed config does get replaced
    conflist.write_text(conflist.read_text().replace('"pool": "default"', '"pool": "other"'))
    _run_init_step(host, conflist, static_binary)
    assert '"pool": "other"' in conf.read_text()


def test_install_step_is_atomic(tmp_path: Path, static_binary: Path) -> None:
    """A runtime exec'ing the binary or reading the conflist while the step runs never sees
    half a file."""
    conflist = tmp_path / "c.conflist"
    host = tmp_path / "host"
    texts = [config_data()["10-ecnet.conflist"],
             config_data()["10-ecnet.conflist"].replace('"default"', '"other-pool"')]
    conflist.write_text(texts[0])
    _run_init_step(host, conflist, static_binary)
    conf, binary = host / "etc/cni/net.d/10-ecnet.conflist", host / "opt/cni/bin/ecnet"
    stop, seen_bad = threading.Event(), []

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(conf.read_text())
                p = subprocess.run([str(binary)], input=b"{}", capture_output=True,
                                   env={"CNI_COMMAND": "VERSION"}, timeout=10)
                if p.returncode != 0:
                    seen_bad.append(p.stderr)
            except (ValueError, OSError) as exc:
                seen_bad.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(12):
            conflist.write_text(texts[i % 2])
            _run_init_step(host, conflist, static_binary)
    finally:
        stop.set()
        t.join(30)
    assert seen_bad == []


def test_a_broken_conflist_is_refused_and_the_old_one_kept(tmp_path: Path,
                                                          static_binary: Path) -> None:
    conflist = tmp_path / "c.conflist"
    conflist.write_text(config_data()["10-ecnet.conflist"])
    host = tmp_path / "host"
    _run_init_step(host, conflist, static_binary)
    conflist.write_text('{"cniVersion": "1.0.0", "plugins": [')
    with pytest.raises(subprocess.CalledProcessError) as err:
        _run_init_step(host, conflist, static_binary)
    assert b"c.conflist" in err.value.stderr
    assert json.loads((host / "etc/cni/net.d/10-ecnet.conflist").read_text())["name"] == "ecnet"


def test_uninstall_removes_what_install_put(tmp_path: Path, static_binary: Path) -> None:
    conflist = tmp_path / "c.conflist"
    conflist.write_text(config_data()["10-ecnet.conflist"])
    host = tmp_path / "host"
    _run_init_step(host, conflist, static_binary)
    (host / "opt/cni/bin/loopback").write_text("not ours")
    c = next(c for _, c in containers() if c["name"] == "remove-cni")
    args = [a.replace("/host/opt/cni/bin", str(host / "opt/cni/bin"))
             .replace("/host/etc/cni/net.d", str(host / "etc/cni/net.d")) for a in c["args"]]
    subprocess.run([sys.executable, "-m", "cni.install", *args], check=True, cwd=ROOT,
                   capture_output=True, timeout=60)
    assert list((host / "etc/cni/net.d").iterdir()) == []
    assert [p.name for p in (host / "opt/cni/bin").iterdir()] == ["loopback"]
