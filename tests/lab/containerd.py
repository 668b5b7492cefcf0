"""containerd's CRI plugin as a real CNI client: kubelet's path, without kubelet.

A private containerd 1.6 (Debian's package) with its own root, state, socket and CNI
directories, fully offline: its sandbox image is a pause binary built here with gcc -static
and imported as an OCI archive. Tests drive it over CRI (`runtime.v1.RuntimeService`) as
kubelet does, with the few messages in tests/lab/cri/cri.proto. It can run inside a lab
node's network namespace, so the plugins it execs (ecnet, loopback, portmap) act where that
node's OVS and agent are (netns mounts go to /var/run/netns, which propagates to every mount
namespace, as on a real node).

Facts this encodes, found on these machines: root lacks CAP_SYS_RESOURCE, so
`restrict_oom_score_adj = true` (else every sandbox fails with "can't get final child's PID
from pipe"); the cgroupfs driver (PID 1 is not systemd); `bin_dir` is ONE directory (ecnet,
loopback and chained plugins together); CRI reports NetworkReady only once a conflist is in
`conf_dir`, and DEL comes twice: on Stop (with the netns) and on Remove (CNI_NETNS="").
"""
from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc

PAUSE_IMAGE = "localhost/ecnet-lab-pause:1"
CGROUP_PARENT = "/ecnet-crilab"
_PAUSE_C = r"""
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
static void on_term(int s) { (void)s; _exit(0); }
static void on_chld(int s) { (void)s; while (waitpid(-1, 0, WNOHANG) > 0) {} }
int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_term; sigaction(SIGTERM, &sa, 0); sigaction(SIGINT, &sa, 0);
    sa.sa_handler = on_chld; sa.sa_flags = SA_NOCLDSTOP; sigaction(SIGCHLD, &sa, 0);
    for (;;) pause();
}
"""
_stubs: tuple[ModuleType, ModuleType] | None = None


def cri_stubs() -> tuple[ModuleType, ModuleType]:
    """cri_pb2 and cri_pb2_grpc, generated once per process from our own .proto."""
    global _stubs
    if _stubs is None:
        from grpc_tools import protoc  # a test dependency

        out = tempfile.mkdtemp(prefix="ecnet-cri-")
        src = Path(__file__).parent / "cri"
        rc = protoc.main(["protoc", f"-I{src}", f"--python_out={out}",
                          f"--grpc_python_out={out}", str(src / "cri.proto")])
        if rc != 0:
            raise RuntimeError("protoc failed on tests/lab/cri/cri.proto")
        sys.path.insert(0, out)
        _stubs = (importlib.import_module("cri_pb2"), importlib.import_module("cri_pb2_grpc"))
    return _stubs


def _sh(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: rc={p.returncode} {p.stderr.strip()}")
    return p


def _has_cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool((int(line.split()[1], 16) >> 24) & 1)
    return False


def _overlay_works(root: Path) -> bool:
    probe = root / ".overlay-probe"
    for d in ("l", "u", "w", "m"):
        (probe / d).mkdir(parents=True, exist_ok=True)
    try:
        ok = _sh("mount", "-t", "overlay", "overlay", "-o",
                 f"lowerdir={probe}/l,upperdir={probe}/u,workdir={probe}/w", str(probe / "m"),
                 check=False).returncode == 0
        if ok:
            _sh("umount", str(probe / "m"), check=False)
        return ok
    finally:
        _sh("rm", "-rf", str(probe), check=False)


class PrivateContainerd:
    """One containerd, started and stopped by pid; every sandbox it made is removed on stop."""

    def __init__(self, workdir: Path, cni_conf_dir: Path, cni_bin_dir: Path,
                 netns: str | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock = str(self.dir / "containerd.sock")
        if len(self.sock) > 100:
            raise ValueError(f"socket path too long for sun_path: {self.sock}")
        self.cni_conf_dir, self.cni_bin_dir, self.netns = cni_conf_dir, cni_bin_dir, netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.snapshotter = ""
        self._channel: grpc.Channel | None = None

    # -- life cycle ------------------------------------------------------------------
    def start(self) -> PrivateContainerd:
        (self.dir / "root").mkdir(exist_ok=True)
        if not self.snapshotter:
            self.snapshotter = "overlayfs" if _overlay_works(self.dir / "root") else "native"
        self._write_config()
        for stale in (self.sock, self.sock + ".ttrpc"):
            if os.path.exists(stale):
                os.unlink(stale)
        # nsenter, not `ip netns exec`: only the network namespace changes. containerd's mounts
        # (sandbox netns under /var/run/netns) stay in the host's mount namespace, where the
        # agent and the tests see them.
        prefix = ["nsenter", f"--net=/var/run/netns/{self.netns}"] if self.netns else []
        log = open(self.dir / "containerd.log", "ab")
        self.proc = subprocess.Popen([*prefix, "containerd", "--config",
                                      str(self.dir / "config.toml")],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        self._wait(self._answers, 30, "containerd's CRI socket")
        self._import_pause()
        return self

    def restart(self) -> None:
        """Kill and start again: sandboxes and their shims survive, as on a real node."""
        self._kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            for sb in self.list():
                try:
                    self.stop_pod(sb.id)
                    self.remove_pod(sb.id)
                except grpc.RpcError as exc:
                    print(f"containerd lab: cleanup of {sb.id[:12]}: {exc}", file=sys.stderr)
        self._kill()
        self._kill_leftover_shims()
        mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text()
                  .splitlines() if line.split()[4].startswith(str(self.dir) + "/")]
        for mp in sorted(mounts, reverse=True):
            _sh("umount", "-l", mp, check=False)
        for base in Path("/sys/fs/cgroup").glob("**" + CGROUP_PARENT):
            _sh("find", str(base), "-depth", "-type", "d", "-exec", "rmdir", "{}", ";",
                check=False)

    def _kill(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def _kill_leftover_shims(self) -> None:
        """containerd-shim-runc-v2 outlives containerd by design; ours name our socket."""
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if not (proc / "comm").read_text().startswith("containerd-shim"):
                    continue
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if self.sock.encode() in argv:
                try:
                    os.kill(int(proc.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def _write_config(self) -> None:
        restrict = "false" if _has_cap_sys_resource() else "true"
        d = self.dir
        (d / "config.toml").write_text(f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  restrict_oom_score_adj = {restrict}
  disable_hugetlb_controller = true
  tolerate_missing_hugetlb_controller = true
  netns_mounts_under_state_dir = false
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{self.cni_bin_dir}"
    conf_dir = "{self.cni_conf_dir}"
    max_conf_num = 1
    conf_template = ""
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{self.snapshotter}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
""")

    # -- the pause image -------------------------------------------------------------
    def _import_pause(self) -> None:
        archive = self.dir / "pause.oci.tar"
        if not archive.exists():
            archive.write_bytes(build_pause_archive(self.dir / "pause-build"))
        listed = _sh("ctr", "--address", self.sock, "-n", "k8s.io", "images", "ls", "-q").stdout
        if PAUSE_IMAGE not in listed.split():
            _sh("ctr", "--address", self.sock, "-n", "k8s.io", "images", "import",
                "--base-name", PAUSE_IMAGE.rsplit(":", 1)[0], "--snapshotter", self.snapshotter,
                str(archive), timeout=120)

    # -- CRI -------------------------------------------------------------------------
    @property
    def runtime(self) -> Any:
        pb, pb_grpc = cri_stubs()
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"unix://{self.sock}")
        return pb_grpc.RuntimeServiceStub(self._channel)

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError("containerd exited: "
                               + (self.dir / "containerd.log").read_text()[-2000:])
        if not os.path.exists(self.sock):
            return False
        pb, _ = cri_stubs()
        try:
            self.runtime.Version(pb.VersionRequest(version="v1"), timeout=2)
            return True
        except grpc.RpcError:
            return False

    def network_ready(self) -> tuple[bool, str]:
        pb, _ = cri_stubs()
        st = self.runtime.Status(pb.StatusRequest(), timeout=10)
        for c in st.status.conditions:
            if c.type == "NetworkReady":
                return c.status, c.message
        return False, "no NetworkReady condition"

    def wait_network_ready(self, timeout: float = 30) -> None:
        """As kubelet does before it runs a pod sandbox."""
        self._wait(lambda: self.network_ready()[0], timeout, "CRI NetworkReady")

    def run_pod(self, name: str, namespace: str = "default", uid: str = "",
                annotations: dict[str, str] | None = None,
                port_mappings: list[tuple[int, int]] | None = None,
                timeout: float = 120) -> str:
        pb, _ = cri_stubs()
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace=namespace,
                                           uid=uid or hashlib.md5(name.encode()).hexdigest()),
            hostname=name, log_directory=str(self.dir / "pods" / name),
            annotations=annotations or {},
            port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=c, host_port=h)
                           for c, h in port_mappings or []],
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=CGROUP_PARENT))
        resp = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config),
                                          timeout=timeout)
        return str(resp.pod_sandbox_id)

    def status(self, sandbox_id: str) -> Any:
        pb, _ = cri_stubs()
        return self.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True), timeout=30)

    def netns_path(self, sandbox_id: str) -> str:
        """The sandbox's network namespace, a bind mount under /var/run/netns."""
        info = json.loads(self.status(sandbox_id).info["info"])
        spaces = info["runtimeSpec"]["linux"]["namespaces"]
        return next(str(n["path"]) for n in spaces if n["type"] == "network")

    def stop_pod(self, sandbox_id: str, timeout: float = 120) -> None:
        pb, _ = cri_stubs()
        self.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id),
                                    timeout=timeout)

    def remove_pod(self, sandbox_id: str, timeout: float = 120) -> None:
        pb, _ = cri_stubs()
        self.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
                                      timeout=timeout)

    def list(self) -> list[Any]:
        pb, _ = cri_stubs()
        return list(self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items)

    @staticmethod
    def _wait(pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def build_pause_archive(work: Path) -> bytes:
    """An OCI image archive holding one static pause binary, reproducibly (same bytes on
    every build), named PAUSE_IMAGE so CRI finds it and never tries to pull."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "pause.c").write_text(_PAUSE_C)
    _sh("gcc", "-static", "-Os", "-s", "-o", str(work / "pause"), str(work / "pause.c"))

    def tar_of(files: dict[str, tuple[bytes, int]]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for name, (data, mode) in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), mode, 0
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    layer = tar_of({"pause": ((work / "pause").read_bytes(), 0o755)})
    layer_gz = gzip.compress(layer, mtime=0)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"User": "65535:65535", "Entrypoint": ["/pause"], "WorkingDir": "/"},
        "rootfs": {"type": "layers",
                   "diff_ids": [f"sha256:{hashlib.sha256(layer).hexdigest()}"]}}).encode()
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        blobs[f"blobs/sha256/{digest}"] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    **blob(layer_gz)}]}).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       **blob(manifest),
                       "platform": {"architecture": "amd64", "os": "linux"},
                       # the full name: ctr keeps it, so CRI never tries to pull
                       "annotations": {"org.opencontainers.image.ref.name": PAUSE_IMAGE}}]})
    files = {k: (v, 0o644) for k, v in blobs.items()}
    files["oci-layout"] = (b'{"imageLayoutVersion":"1.0.0"}', 0o644)
    files["index.json"] = (index.encode(), 0o644)
    return tar_of(files)
