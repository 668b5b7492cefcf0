"""The CNI binary as a runtime execs it: env + stdin, against a fake agent socket."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cni.agent import wire
from cni.install import install_shim

CONF = {"cniVersion": "1.0.0", "name": "n", "type": "ecnet"}


@pytest.fixture
def binary(tmp_path: Path) -> Path:
    return install_shim(str(tmp_path / "bin"))


def run(binary: Path, env: dict[str, str], conf: dict[str, object]) -> tuple[int, str, str]:
    p = subprocess.run([str(binary)], input=json.dumps(conf).encode(), capture_output=True,
                       env={"PATH": os.environ["PATH"], **env}, timeout=30)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_version_answered_without_agent(binary: Path) -> None:
    code, out, err = run(binary, {"CNI_COMMAND": "VERSION"}, {"cniVersion": "1.1.0"})
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["cniVersion"] == "1.1.0" and "1.0.0" in doc["supportedVersions"]


def test_agent_unreachable_is_code_11(binary: Path, tmp_path: Path) -> None:
    conf = {**CONF, "agentSocket": str(tmp_path / "missing.sock")}
    code, out, err = run(binary, {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c"}, conf)
    assert code == 1 and err == ""
    doc = json.loads(out)
    assert doc["code"] == 11 and "try again" in doc["msg"] and doc["cniVersion"] == "1.0.0"


def test_forwards_verbatim_and_relays_answer(binary: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "a.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    seen: dict[str, object] = {}

    def agent() -> None:
        conn, _ = srv.accept()
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        seen["env"], seen["stdin"] = wire.parse(data)
        conn.sendall(wire.answer(1, '{"code":100,"msg":"full"}'))
        conn.close()

    t = threading.Thread(target=agent)
    t.start()
    conf = {**CONF, "agentSocket": path, "pool": "wéb"}
    code, out, _ = run(binary, {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1",
                                "CNI_IFNAME": "eth0", "OTHER": "x"}, conf)
    t.join(5)
    srv.close()
    assert code == 1 and json.loads(out) == {"code": 100, "msg": "full"}
    env = seen["env"]
    assert isinstance(env, dict)
    assert env["CNI_CONTAINERID"] == "c1" and "OTHER" not in env
    assert json.loads(str(seen["stdin"])) == conf


def test_agent_hangs_up_is_code_11(binary: Path, tmp_path: Path) -> None:
    path = str(tmp_path / "b.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)

    def agent() -> None:
        conn, _ = srv.accept()
        conn.close()

    t = threading.Thread(target=agent)
    t.start()
    code, out, _ = run(binary, {"CNI_COMMAND": "DEL"}, {**CONF, "agentSocket": path})
    t.join(5)
    srv.close()
    assert code == 1 and json.loads(out)["code"] == 11


def test_shim_imports_only_stdlib_basics() -> None:
    """The hot path must not pull in json, socket, re or anything of ours beyond itself."""
    shim = Path(__file__).resolve().parents[2] / "cni" / "shim.py"
    out = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", str(shim)],
                         input=b"{}", capture_output=True, env={"CNI_COMMAND": "VERSION"},
                         timeout=30)
    imported = {line.split("|")[-1].strip() for line in out.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert not imported & {"json", "socket", "re", "enum", "grpc", "cni"}, imported
