"""A lab PKI for tests, made by the shipped script (packaging/tls/make-certs.sh), and the
flags and credentials that use it."""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[2]
MAKE_CERTS = ROOT / "packaging" / "tls" / "make-certs.sh"


@dataclass(frozen=True)
class Pki:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    def pair(self, name: str) -> tuple[Path, Path]:
        """(certificate, key) of "controller", "admin" or "node-<name>"."""
        return self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"

    def controller_flags(self) -> list[str]:
        cert, key = self.pair("controller")
        return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-client-ca", str(self.ca)]

    def client_flags(self, name: str) -> list[str]:
        """ipctl's and the agent's --tls-* for the certificate `name`."""
        cert, key = self.pair(name)
        return ["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(self.ca)]

    def credentials(self, name: str | None) -> grpc.ChannelCredentials:
        """Channel credentials presenting `name`'s certificate (None: no client certificate)."""
        if name is None:
            return grpc.ssl_channel_credentials(self.ca.read_bytes())
        cert, key = self.pair(name)
        return grpc.ssl_channel_credentials(self.ca.read_bytes(), key.read_bytes(),
                                            cert.read_bytes())

    def issue(self, name: str, cn: str) -> None:
        """One more client certificate from this CA with any CN: the script makes only
        admin:lab and node:<name>, the tests also need identities the controller refuses."""
        cert, key = self.pair(name)
        csr = self.dir / f"{name}.csr"
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={cn}",
                        "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
        subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(self.ca),
                        "-CAkey", str(self.dir / "ca-key.pem"), "-CAcreateserial", "-days", "2",
                        "-out", str(cert)], check=True, capture_output=True)


def make_pki(directory: Path, *nodes: str, names: tuple[str, ...] = ()) -> Pki:
    extra = [arg for n in names for arg in ("--name", n)]
    subprocess.run(["bash", str(MAKE_CERTS), str(directory), *extra, *nodes], check=True,
                   capture_output=True, timeout=60)
    return Pki(directory)
