"""Certificates for a first deployment (``tradeloop certs DIR``): a CA of the deployment's
own and the broker's certificate signed by it, made with the ``openssl`` command.

The broker (docs/mosquitto.conf) serves its 8883 listener with ``broker.crt`` and
``broker.key``; every client (the daemon's ``[mqtt] ca_file``, the OMS, the feed, the
operator) checks the broker against ``ca.crt``. ``ca.key`` signs; keep it off the broker
and off the daemon's machine once the certificates are made.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path

from engine.errors import AdapterError, ConfigError

# the compose service name, and this machine for tools run beside the broker
DEFAULT_HOSTS = ("mosquitto", "localhost", "127.0.0.1")
# a first deployment's certificates: renew within this (browsers' cap for server certs)
DEFAULT_DAYS = 825


@dataclass(frozen=True)
class CertificateFiles:
    """Where ``make_certificates`` wrote its files."""

    ca_cert: Path
    ca_key: Path
    broker_cert: Path
    broker_key: Path


def _subject_alt_names(hosts: Sequence[str]) -> str:
    names = []
    for host in hosts:
        try:
            names.append(f"IP:{ip_address(host)}")
        except ValueError:
            names.append(f"DNS:{host}")
    return ",".join(names)


def make_certificates(
    directory: Path, hosts: Sequence[str] = DEFAULT_HOSTS, *, days: int = DEFAULT_DAYS
) -> CertificateFiles:
    """Make ``ca.crt``/``ca.key`` and ``broker.crt``/``broker.key`` (for ``hosts``) in
    ``directory``; keys are readable by their owner only.

    Raises:
        ConfigError: no host, or ``directory`` already holds a CA (never overwritten).
        AdapterError: ``openssl`` is missing or failed.
    """
    if not hosts:
        raise ConfigError("certs", "name at least one host the broker is reached by")
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AdapterError("the openssl command is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    files = CertificateFiles(
        directory / "ca.crt",
        directory / "ca.key",
        directory / "broker.crt",
        directory / "broker.key",
    )
    for path in (files.ca_cert, files.ca_key, files.broker_cert, files.broker_key):
        if path.exists():
            raise ConfigError("certs", f"{path} exists: certificates are never overwritten")
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        csr, ext = Path(scratch) / "broker.csr", Path(scratch) / "ext"
        ext.write_text(
            f"subjectAltName={_subject_alt_names(hosts)}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
        )
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        steps = (
            ["req", "-x509", *ec, "-days", str(days), "-subj", "/CN=tradeloop deployment CA"]
            + ["-addext", "basicConstraints=critical,CA:TRUE"]
            + ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
            + ["-keyout", str(files.ca_key), "-out", str(files.ca_cert)],
            ["req", *ec, "-subj", f"/CN={hosts[0]}", "-keyout", str(files.broker_key)]
            + ["-out", str(csr)],
            ["x509", "-req", "-in", str(csr), "-CA", str(files.ca_cert)]
            + ["-CAkey", str(files.ca_key), "-set_serial", "0x" + secrets.token_hex(16)]
            + ["-days", str(days), "-extfile", str(ext), "-out", str(files.broker_cert)],
        )
        for argv in steps:
            try:
                subprocess.run([openssl, *argv], check=True, capture_output=True)
            except subprocess.CalledProcessError as exc:
                error = exc.stderr.decode(errors="replace").strip()
                raise AdapterError(f"openssl {argv[0]} failed: {error}") from exc
    for key in (files.ca_key, files.broker_key):
        key.chmod(0o600)
    for cert in (files.ca_cert, files.broker_cert):
        cert.chmod(0o644)
    return files


__all__ = ["DEFAULT_DAYS", "DEFAULT_HOSTS", "CertificateFiles", "make_certificates"]
