"""Helpers for tests and benchmarks that need a broker they may stop and restart.

:class:`MosquittoProcess` runs a private ``mosquitto`` on a free local port with
persistence in a temporary folder, so a persistent session (the centre's) and its queued
QoS 1 messages survive :meth:`MosquittoProcess.restart`. It is configured the way
``docs/edge.md`` asks a production broker to be: no cap on queued messages.

>>> with MosquittoProcess(tmp_path) as broker:
...     broker.stop(); broker.start()   # same port, same sessions

With ``certfile``/``keyfile`` it also runs a TLS listener (``tls_port``, ``tls_url``), and
with ``users`` every client must log in. :func:`make_tls_files` makes a throwaway CA and
the certificates for such a broker (needs ``cryptography``, in the ``dev`` extra):

>>> tls = make_tls_files(tmp_path / "pki")
>>> with MosquittoProcess(tmp_path / "broker", certfile=tls.cert_file,
...                       keyfile=tls.key_file, cafile=tls.ca_file,
...                       users={"st1": "s3cret"}) as broker:
...     broker.tls_url   # mqtts://127.0.0.1:PORT
"""

from __future__ import annotations

import getpass
import ipaddress
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    """A TCP port nobody listens on right now (127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MosquittoProcess:
    """A private Mosquitto broker (``/usr/sbin/mosquitto`` or ``$PATH``).

    Args:
        workdir: config, log, password file and persistence go here.
        port: the plain listener (``url``); a free one if not given.
        max_inflight_messages: the broker's per-client window.
        certfile: server certificate (PEM); with ``keyfile`` adds a TLS listener on
            ``tls_port`` (``tls_url``).
        keyfile: its private key (PEM).
        cafile: CA that signs client certificates (needed for ``require_certificate``).
        tls_port: the TLS listener's port; a free one if not given.
        require_certificate: TLS clients must present a certificate signed by ``cafile``.
        users: user name → password; then ``allow_anonymous false`` with a password
            file made by ``mosquitto_passwd``, on every listener.
        acl_file: a Mosquitto ACL file (``configs/mosquitto.acl``), applied to every
            listener.
        persistence: keep sessions and queued messages in a file across restarts.
        autosave_interval: seconds between saves of that file (``None``: Mosquitto's
            default, 1800 s, as a stock broker runs: a SIGKILL loses what came since).
    """

    def __init__(self, workdir: Path, *, port: int | None = None,
                 max_inflight_messages: int = 1000, certfile: Path | None = None,
                 keyfile: Path | None = None, cafile: Path | None = None,
                 tls_port: int | None = None, require_certificate: bool = False,
                 users: Mapping[str, str] | None = None,
                 acl_file: Path | None = None, persistence: bool = True,
                 autosave_interval: int | None = 1) -> None:
        binary = MOSQUITTO if Path(MOSQUITTO).exists() else shutil.which("mosquitto")
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        if (certfile is None) != (keyfile is None):
            raise ValueError(f"a TLS listener needs both certfile and keyfile, got "
                             f"certfile={certfile} keyfile={keyfile}")
        if require_certificate and (certfile is None or cafile is None):
            raise ValueError("require_certificate needs certfile, keyfile and cafile")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.tls_port: int | None = None
        self.tls_url: str | None = None
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        (self.workdir / "data").mkdir(exist_ok=True)
        if users:
            self.password_file: Path | None = self.workdir / "passwords"
            _write_password_file(self.password_file, users)
            access = f"allow_anonymous false\npassword_file {self.password_file}\n"
        else:
            self.password_file = None
            access = "allow_anonymous true\n"
        if acl_file is not None:
            access += f"acl_file {Path(acl_file).resolve()}\n"
        config = (
            f"listener {self.port} 127.0.0.1\n"
            # run as whoever started it: as root, mosquitto would otherwise switch to the
            # "mosquitto" user, which cannot write its persistence file here
            f"user {getpass.getuser()}\n"
            f"{access}"
            f"persistence {'true' if persistence else 'false'}\n"
            f"persistence_location {self.workdir / 'data'}/\n"
            + ("" if autosave_interval is None else f"autosave_interval {autosave_interval}\n")
            + "max_queued_messages 0\n"
            "max_queued_bytes 0\n"
            f"max_inflight_messages {max_inflight_messages}\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\n")
        if certfile is not None and keyfile is not None:
            self.tls_port = tls_port or free_port()
            self.tls_url = f"mqtts://127.0.0.1:{self.tls_port}"
            # listener options follow their listener line
            config += (f"listener {self.tls_port} 127.0.0.1\n"
                       f"certfile {Path(certfile).resolve()}\n"
                       f"keyfile {Path(keyfile).resolve()}\n")
            if cafile is not None:
                config += f"cafile {Path(cafile).resolve()}\n"
            config += f"require_certificate {'true' if require_certificate else 'false'}\n"
        self.config_path.write_text(config, encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart) on the same ports; returns once it accepts connections."""
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited at start ({self.proc.returncode}): "
                                   f"{err}{log[-2000:]}")
            while ports:
                try:
                    with socket.create_connection(("127.0.0.1", ports[0]), timeout=0.2):
                        ports.pop(0)
                except OSError:
                    break
            if not ports:
                return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {ports} within {timeout_s}s")

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (saves its persistence file) or, with ``kill``, SIGKILL."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> MosquittoProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """Mosquitto's hashed password file, made by ``mosquitto_passwd -b``."""
    tool = (MOSQUITTO_PASSWD if Path(MOSQUITTO_PASSWD).exists()
            else shutil.which("mosquitto_passwd"))
    if tool is None:
        raise RuntimeError("mosquitto_passwd is not installed (apt-get install mosquitto)")
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        done = subprocess.run([tool, "-b", *create, str(path), user, password],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mosquitto_passwd failed for user {user!r} "
                               f"({done.returncode}): {done.stderr or done.stdout}")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and the certificates it signed (tests only)."""

    ca_file: Path  # the CA certificate clients (and the broker, for client certs) trust
    cert_file: Path  # server certificate, SAN = the ``hosts`` given
    key_file: Path
    client_cert_file: Path  # a client certificate (CN ``client_name``) for mutual TLS
    client_key_file: Path


def make_tls_files(folder: Path, *, hosts: Sequence[str] = ("localhost", "127.0.0.1"),
                   client_name: str = "gridwatch-test-client", days: int = 2) -> TlsFiles:
    """A fresh CA, a server certificate for ``hosts`` and a client certificate, as PEM.

    Each call makes a new CA, so the ``ca_file`` of one call does not verify the
    certificates of another (a "wrong CA" in tests). Keys are P-256, unencrypted.
    Needs ``cryptography`` (the ``dev`` extra), imported here so that this module does not.

    Example:
        >>> tls = make_tls_files(tmp_path / "pki", hosts=["localhost", "127.0.0.1"])
        >>> TlsSettings(enabled=True, ca_file=tls.ca_file)
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)

    def name(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GridWatch tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def key_usage(*, ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                             key_encipherment=False, data_encipherment=False,
                             key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                             encipher_only=False, decipher_only=False)

    def save(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
        cert_path = folder / f"{stem}.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path = folder / f"{stem}.key"
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
        return cert_path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name(f"GridWatch test CA {x509.random_serial_number():x}"[:64])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    def issue(common_name: str, usage: x509.ObjectIdentifier,
              san: list[x509.GeneralName] | None) -> tuple[x509.Certificate,
                                                             ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common_name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(key_usage(ca=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
        )
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    san: list[x509.GeneralName] = []
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    server_cert, server_key = issue(hosts[0] if hosts else "server",
                                    ExtendedKeyUsageOID.SERVER_AUTH, san)
    client_cert, client_key = issue(client_name, ExtendedKeyUsageOID.CLIENT_AUTH, None)
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    return TlsFiles(ca_file=ca_file,
                    cert_file=save("server", server_cert, server_key),
                    key_file=folder / "server.key",
                    client_cert_file=save("client", client_cert, client_key),
                    client_key_file=folder / "client.key")
