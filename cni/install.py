"""Install the CNI binary where runtimes look for it (e.g. /opt/cni/bin/ecnet).

Start-up is most of an ADD (DESIGN.md), so the installed binary is built for it:
- the static C forwarder (packaging/shim/ecnet.c, built by packaging/build-shim.sh) when it
  was built: ~0.5 ms to start and no Python needed on the host; otherwise
- a three-line launcher under a `python3 -IS` shebang: no `site`, no venv `.pth` files (the
  shim needs only the standard library);
- the shim itself as a module in a hidden folder beside it, byte-compiled at install time, so
  no exec pays for compiling it (a script given to python is compiled on every run);
- the distribution's /usr/bin/python3 when there is one: Debian links it statically and it
  starts ~1.5 ms faster than a venv or pyenv interpreter.
Files are replaced atomically, since a runtime may exec the binary while we write it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import shim

SYSTEM_PYTHON = "/usr/bin/python3"
MODULE = "ecnet_shim"
STATIC_ENV = "ECNET_CNI_BINARY"
# Where packaging/build-shim.sh and the agent image put the static binary.
STATIC_PATHS = (os.path.join(sys.prefix, "libexec", "ecnet", "ecnet"), "/usr/lib/ecnet/ecnet")


def _atomic_write(target: Path, body: str | bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=str(target.parent), prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(body.encode() if isinstance(body, str) else body)
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise


def find_static() -> Path | None:
    """The built static binary: $ECNET_CNI_BINARY, else the first of STATIC_PATHS."""
    named = os.environ.get(STATIC_ENV)
    for candidate in ((named,) if named else STATIC_PATHS):
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def pick_python(python: str | None = None) -> str:
    if python:
        return python
    if os.access(SYSTEM_PYTHON, os.X_OK):
        return SYSTEM_PYTHON
    return sys.executable


def install_cni_binary(directory: str, name: str = "ecnet", kind: str = "auto",
                       python: str | None = None) -> Path:
    """kind: "static" (fail if it was not built), "python" (the launcher) or "auto"."""
    static = find_static() if kind in ("auto", "static") else None
    if static is not None:
        return install_static(directory, static, name)
    if kind == "static":
        raise FileNotFoundError(f"no static ecnet binary (${STATIC_ENV} or {STATIC_PATHS}); "
                                "build it with packaging/build-shim.sh")
    return install_shim(directory, name, python)


def install_static(directory: str, binary: Path, name: str = "ecnet") -> Path:
    target = Path(directory) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(target, binary.read_bytes(), 0o755)
    # The launcher's module folder is the Python variant's; it must not outlive it.
    shutil.rmtree(Path(directory) / f".{name}", ignore_errors=True)
    return target


def install_shim(directory: str, name: str = "ecnet", python: str | None = None) -> Path:
    """The Python launcher: works wherever Python 3 does, ~8 ms to start."""
    interp = pick_python(python)
    target = Path(directory) / name
    lib = Path(directory) / f".{name}"
    lib.mkdir(parents=True, exist_ok=True)
    module = lib / f"{MODULE}.py"
    _atomic_write(module, Path(shim.__file__).read_text(), 0o644)
    compiled = subprocess.run(
        [interp, "-IS", "-c", "import py_compile, sys; py_compile.compile(sys.argv[1], "
         "doraise=True)", str(module)], capture_output=True, text=True, check=False)
    if compiled.returncode != 0:
        # Still correct without the cached byte code, only slower to start.
        shutil.rmtree(lib / "__pycache__", ignore_errors=True)
    launcher = (f"#!{interp} -IS\n"  # one shebang argument: Linux passes the rest whole
                "import sys\n"
                f"sys.path.insert(0, {str(lib)!r})\n"
                f"from {MODULE} import main\n"
                "sys.exit(main())\n")
    _atomic_write(target, launcher, 0o755)
    return target


def install_conflist(conf_dir: str, source: str, name: str = "10-ecnet.conflist") -> Path:
    """The network config, validated first, written only when it changed (a rewrite makes
    the runtime reload it) and atomically: runtimes pick up a file renamed inside conf_dir,
    and never see half of one."""
    body = Path(source).read_text()
    try:
        doc = json.loads(body)  # a broken conflist must not reach the runtime
    except ValueError as exc:
        raise ValueError(f"{source}: not JSON: {exc}") from None
    if not isinstance(doc, dict) or not doc.get("plugins") or not doc.get("name"):
        raise ValueError(f"{source}: not a conflist (needs name and plugins)")
    target = Path(conf_dir) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target.exists() and target.read_text() == body):
        _atomic_write(target, body, 0o644)
    return target


def uninstall(directory: str, conf_dir: str, name: str = "ecnet",
              conflist: str = "10-ecnet.conflist") -> list[Path]:
    """Config first, so the runtime stops choosing ecnet before the binary goes."""
    removed = []
    targets = ([Path(conf_dir) / conflist] if conf_dir else []) + [Path(directory) / name]
    for path in targets:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    shutil.rmtree(Path(directory) / f".{name}", ignore_errors=True)
    return removed


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ecnet-install-cni",
                                description="install or remove the ecnet CNI binary and config")
    p.add_argument("--dir", default="/opt/cni/bin", help="the runtime's CNI bin_dir")
    p.add_argument("--kind", choices=("auto", "static", "python"), default="auto",
                   help="the static C binary when built (auto), or force one")
    p.add_argument("--python", default=None, help="interpreter for the launcher's shebang")
    p.add_argument("--conf-dir", default="", help="the runtime's CNI conf_dir (e.g. "
                   "/etc/cni/net.d); with --conflist, the config is installed there too")
    p.add_argument("--conflist", default="", help="the conflist file to install")
    p.add_argument("--uninstall", action="store_true",
                   help="remove what an install put in --dir and --conf-dir")
    return p


def main(argv: list[str] | None = None) -> None:
    """`python -m cni.install`: what a DaemonSet's init step runs against the host's dirs."""
    p = build_parser()
    a = p.parse_args(argv)
    if a.uninstall:
        for path in uninstall(a.dir, a.conf_dir):
            print(f"removed {path}")
        return
    if bool(a.conf_dir) != bool(a.conflist):
        p.error("--conf-dir and --conflist go together")
    print(install_cni_binary(a.dir, kind=a.kind, python=a.python))
    if a.conflist:
        try:
            print(install_conflist(a.conf_dir, a.conflist))
        except (OSError, ValueError) as exc:
            p.error(str(exc))


if __name__ == "__main__":
    main()
