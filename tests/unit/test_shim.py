"""The CNI binary as a runtime execs it: env + stdin, against an agent socket.

Every test runs against both binaries the agent can install, the static C forwarder and the
Python launcher, and the parity tests hold them to the same bytes for the same input.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cni.agent import wire
from cni.agent.server import AgentServer
from cni.install import install_shim, install_static

ROOT = Path(__file__).resolve().parents[2]
CONF = {"cniVersion": "1.0.0", "name": "n", "type": "ecnet"}
KINDS = ("static", "python")


@pytest.fixture(scope="module")
def built_static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """packaging/build-shim.sh into a private prefix: the test proves the build too."""
    prefix = tmp_path_factory.mktemp("prefix")
    p = subprocess.run(["bash", str(ROOT / "packaging" / "build-shim.sh"), str(prefix)],
                       capture_output=True, text=True, timeout=120)
    binary = prefix / "libexec" / "ecnet" / "ecnet"
    if not binary.exists():
        if os.environ.get("ECNET_REQUIRE_ALL") == "1":
            pytest.fail(f"static shim did not build: {p.stderr}")
        pytest.skip(f"no static build here: {p.stderr.strip()}")
    return binary


def _install(kind: str, directory: Path, static: Callable[[], Path]) -> Path:
    if kind == "static":
        return install_static(str(directory), static())
    return install_shim(str(directory))


@pytest.fixture(params=KINDS)
def binary(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return _install(request.param, tmp_path / "bin",
                    lambda: request.getfixturevalue("built_static"))


@pytest.fixture
def both(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Path]:
    static = request.getfixturevalue("built_static")
    return {k: _install(k, tmp_path / k, lambda: static) for k in KINDS}


def run(binary: Path, env: dict[str, str], stdin: bytes | dict[str, object],
        timeout: float = 30) -> tuple[int, str, str]:
    data = json.dumps(stdin).encode() if isinstance(stdin, dict) else stdin
    p = subprocess.run([str(binary)], input=data, capture_output=True,
                       env={"PATH": os.environ["PATH"], **env}, timeout=timeout)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode()


class FakeAgent:
    """One listening socket; `behave(conn)` decides what the agent does with each request."""

    def __init__(self, path: str, behave: Callable[[socket.socket], None]) -> None:
        self.path, self.behave = path, behave
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.behave(conn)

    def read_all(self, conn: socket.socket) -> bytes:
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
        self.requests.append(data)
        return data

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() in the thread
        self.sock.close()
        self.thread.join(5)


MakeAgent = Callable[[Callable[[FakeAgent, socket.socket], None]], FakeAgent]


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator[MakeAgent]:
    agents: list[FakeAgent] = []

    def make(behave: Callable[[FakeAgent, socket.socket], None]) -> FakeAgent:
        holder: list[FakeAgent] = []
        agent = FakeAgent(str(tmp_path / f"a{len(agents)}.sock"),
                          lambda conn: behave(holder[0], conn))
        holder.append(agent)
        agents.append(agent)
        return agent

    yield make
    for a in agents:
        a.close()


def test_version_answered_without_agent(binary: Path) -> None:
    for asked in ("0.3.0", "0.4.0", "1.0.0", "1.1.0"):
        code, out, err = run(binary, {"CNI_COMMAND": "VERSION"}, {"cniVersion": asked})
        assert code == 0 and err == ""
        doc = json.loads(out)
        assert doc["cniVersion"] == asked
        assert doc["supportedVersions"] == ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def test_agent_unreachable_is_code_11(binary: Path, tmp_path: Path) -> None:
    conf = {**CONF, "agentSocket": str(tmp_path / "missing.sock")}
    code, out, err = run(binary, {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c"}, conf)
    assert code == 1 and err == ""
    doc = json.loads(out)
    assert doc["code"] == 11 and "try again" in doc["msg"] and doc["cniVersion"] == "1.0.0"
    assert doc["details"] == f"{tmp_path / 'missing.sock'}: No such file or directory"


@pytest.mark.parametrize("stdin", [b"not json", b"", b'{"cniVersion": "1.0.0",',
                                   b'{"a": NaN}', b'{"name": "caf\xe9"}', b"[1,]"])
def test_undecodable_config_is_code_6_not_try_again(binary: Path, tmp_path: Path,
                                                     stdin: bytes) -> None:
    """Without a config there is no agentSocket: the default socket is not there, and a
    broken config must not be told to try again."""
    env = {"CNI_COMMAND": "ADD", "ECNET_AGENT_SOCKET": str(tmp_path / "none.sock")}
    code, out, _ = run(binary, env, stdin)
    assert code == 1
    assert json.loads(out)["code"] == 6


def test_forwards_verbatim_and_relays_answer(binary: Path, fake_agent: MakeAgent) -> None:
    def behave(agent: FakeAgent, conn: socket.socket) -> None:
        agent.read_all(conn)
        conn.sendall(wire.answer(1, '{"code":100,"msg":"full"}'))

    agent = fake_agent(behave)
    conf = {**CONF, "agentSocket": agent.path, "pool": "wéb"}
    code, out, _ = run(binary, {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1",
                                "CNI_IFNAME": "eth0", "OTHER": "x"}, conf)
    assert code == 1 and json.loads(out) == {"code": 100, "msg": "full"}
    env, stdin = wire.parse(agent.requests[0])
    assert env["CNI_CONTAINERID"] == "c1" and env["CNI_COMMAND"] == "ADD" and "OTHER" not in env
    assert json.loads(stdin) == conf


def test_not_utf8_stdin_is_forwarded_byte_for_byte(binary: Path, fake_agent: MakeAgent) -> None:
    def behave(agent: FakeAgent, conn: socket.socket) -> None:
        agent.read_all(conn)
        conn.sendall(wire.answer(0, '{"ok":1}'))

    agent = fake_agent(behave)
    raw = b'{"agentSocket": "' + agent.path.encode() + b'", "x": "\xff\xfe"}'
    code, out, _ = run(binary, {"CNI_COMMAND": "CHECK"}, raw)
    assert (code, out) == (0, '{"ok":1}')
    assert agent.requests[0].endswith(raw)


@pytest.mark.parametrize("exit_code", [0, 1, 7, 130])
def test_exit_code_is_the_agents(binary: Path, fake_agent: MakeAgent, exit_code: int) -> None:
    def behave(agent: FakeAgent, conn: socket.socket) -> None:
        agent.read_all(conn)
        conn.sendall(wire.answer(exit_code, "body"))

    agent = fake_agent(behave)
    code, out, _ = run(binary, {"CNI_COMMAND": "DEL"}, {**CONF, "agentSocket": agent.path})
    assert (code, out) == (exit_code, "body")


def test_agent_hangs_up_is_code_11(binary: Path, fake_agent: MakeAgent) -> None:
    agent = fake_agent(lambda agent, conn: None)
    code, out, _ = run(binary, {"CNI_COMMAND": "DEL"}, {**CONF, "agentSocket": agent.path})
    doc = json.loads(out)
    assert code == 1 and doc["code"] == 11 and "gave no answer" in doc["msg"]


def test_garbled_answer_is_code_11(binary: Path, fake_agent: MakeAgent) -> None:
    def behave(agent: FakeAgent, conn: socket.socket) -> None:
        agent.read_all(conn)
        conn.sendall(b"x1\n{}")

    agent = fake_agent(behave)
    code, out, _ = run(binary, {"CNI_COMMAND": "ADD"}, {**CONF, "agentSocket": agent.path})
    assert code == 1 and json.loads(out)["code"] == 11


def test_silent_agent_times_out_with_code_11(binary: Path, fake_agent: MakeAgent) -> None:
    released = threading.Event()

    def behave(agent: FakeAgent, conn: socket.socket) -> None:
        agent.read_all(conn)
        released.wait(30)  # never answers while the shim waits

    agent = fake_agent(behave)
    try:
        code, out, _ = run(binary, {"CNI_COMMAND": "ADD", "ECNET_SHIM_TIMEOUT": "0.3"},
                           {**CONF, "agentSocket": agent.path}, timeout=20)
    finally:
        released.set()
    doc = json.loads(out)
    assert code == 1 and doc["code"] == 11 and doc["details"].endswith(": timed out")


class _NoHandler:
    """The request never reaches a handler: the size limit answers first."""

    def handle(self, req: object) -> None:
        raise AssertionError("a too-large request reached the handler")


def test_huge_stdin_gets_the_agents_answer(binary: Path, tmp_path: Path) -> None:
    """Over the agent's request limit the agent answers 6 and stops reading; the shim must
    relay that answer, not turn the broken pipe into 'try again'."""
    path = str(tmp_path / "agent.sock")
    server = AgentServer(path, _NoHandler(), workers=2)  # type: ignore[arg-type]
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        conf = {**CONF, "agentSocket": path, "pad": "x" * (wire.MAX_REQUEST + 1024)}
        code, out, _ = run(binary, {"CNI_COMMAND": "ADD"}, conf)
    finally:
        server.shutdown_and_remove()
    doc = json.loads(out)
    assert code == 1 and doc["code"] == 6 and "too large" in doc["msg"]


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stdin=st.one_of(st.binary(max_size=64),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                                    lambda c: st.lists(c) | st.dictionaries(st.text(), c),
                                    max_leaves=8).map(lambda v: json.dumps(v).encode()),
                       st.sampled_from([b'{"cniVersion":"1.1.0"}', b'{"cniVersion":"..."}',
                                        b'{"cniVersion" : "0.4.0", "agentSocket": 1}'])),
       command=st.sampled_from(["ADD", "DEL", "VERSION", "STATUS", ""]))
def test_both_binaries_give_the_same_answer_with_the_agent_down(
        both: dict[str, Path], tmp_path: Path, stdin: bytes, command: str) -> None:
    env = {"CNI_COMMAND": command, "ECNET_AGENT_SOCKET": str(tmp_path / "down.sock")}
    answers = {k: run(b, env, stdin) for k, b in both.items()}
    assert answers["static"] == answers["python"], stdin


def test_python_shim_imports_only_stdlib_basics() -> None:
    """The hot path must not pull in json, socket, re or anything of ours beyond itself."""
    shim = ROOT / "cni" / "shim.py"
    out = subprocess.run([sys.executable, "-I", "-S", "-X", "importtime", str(shim)],
                         input=b"{}", capture_output=True, env={"CNI_COMMAND": "VERSION"},
                         timeout=30)
    imported = {line.split("|")[-1].strip() for line in out.stderr.decode().splitlines()
                if line.startswith("import time:")}
    assert not imported & {"json", "socket", "re", "enum", "grpc", "cni"}, imported


def test_static_binary_is_static_and_small(built_static: Path) -> None:
    """It runs on hosts without our libc: no dynamic section, no interpreter."""
    head = built_static.read_bytes()
    assert head[:4] == b"\x7fELF"
    p = subprocess.run(["ldd", str(built_static)], capture_output=True, text=True)
    assert "not a dynamic executable" in (p.stdout + p.stderr) or p.returncode != 0
    assert len(ROOT.joinpath("packaging/shim/ecnet.c").read_text().splitlines()) < 300
