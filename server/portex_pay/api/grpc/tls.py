"""TLS and mTLS for the gRPC server, its certificate reloaded from disk without a restart.

`server_credentials(files)` reads the PEM files (PORTEX_GRPC_TLS_CERT, _KEY and, for mTLS,
_CLIENT_CA), checks that they belong together, and returns gRPC's dynamic SSL credentials, whose
fetcher (`CertificateReloader`) gRPC calls before every TLS handshake. The fetcher is cheap on
that path: one `os.stat` a file, compared with what it saw last; the files are read only when
one changed, and a pair that does not hold together (a key that is not the certificate's, a file
half written by a renewal) keeps the previous pair serving and logs a warning, to be read again
at the next handshake. So a renewed certificate (certbot, cert-manager) is served to new
connections as soon as both files are in place; connections already open keep theirs.

`healthcheck_credentials(env)` is the other side, for `portex-pay healthcheck`, which runs next
to the server with its environment: it trusts PORTEX_GRPC_TLS_CA if set, else the server's own
certificate file, checks the name that certificate carries (so PORTEX_GRPC_ADDR may be 0.0.0.0),
and under mTLS presents the server's own pair as its client certificate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from portex_pay.config import GrpcSettings

log = structlog.get_logger(__name__)


class TlsError(ValueError):
    """The TLS files cannot be served (missing, not PEM, or a key that is not the cert's)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the server's certificate chain and key are, and the CA its clients' certificates
    must be signed by (None: no client certificate is asked for)."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @classmethod
    def configured(cls, settings: GrpcSettings) -> TlsFiles | None:
        """The files PORTEX_GRPC_TLS_* name; None without TLS."""
        if not settings.tls_cert:
            return None
        client_ca = Path(settings.tls_client_ca) if settings.tls_client_ca else None
        return cls(Path(settings.tls_cert), Path(settings.tls_key), client_ca)

    def paths(self) -> tuple[Path, ...]:
        return (
            (self.cert, self.key)
            if self.client_ca is None
            else (self.cert, self.key, self.client_ca)
        )


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """The files' contents, checked to belong together."""

    cert: bytes
    key: bytes
    client_ca: bytes | None
    serial: int  # the leaf certificate's, for the log line that says which one is served

    def configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(self.key, self.cert)], self.client_ca)


def read_material(files: TlsFiles) -> TlsMaterial:
    """The files' contents, or TlsError saying what is wrong (never quoting a key)."""
    try:
        cert, key = files.cert.read_bytes(), files.key.read_bytes()
        client_ca = None if files.client_ca is None else files.client_ca.read_bytes()
    except OSError as error:
        raise TlsError(f"cannot read {error.filename}: {error.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(cert)
    except ValueError:
        raise TlsError(f"{files.cert} holds no PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        # TypeError: an encrypted key, which the server has no passphrase for.
        raise TlsError(f"{files.key} holds no unencrypted PEM private key") from None
    if _public_bytes(private_key.public_key()) != _public_bytes(chain[0].public_key()):
        raise TlsError(f"{files.key} is not the key of the certificate in {files.cert}")
    if client_ca is not None:
        try:
            x509.load_pem_x509_certificates(client_ca)
        except ValueError:
            raise TlsError(f"{files.client_ca} holds no PEM certificate") from None
    return TlsMaterial(cert, key, client_ca, chain[0].serial_number)


def _public_bytes(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# What tells a file changed without reading it: a renewal replaces it (a new inode) or rewrites
# it (a new mtime and, mostly, size).
_Stamp = tuple[tuple[int, int, int], ...]


class CertificateReloader:
    """gRPC's certificate fetcher: None (keep the current pair) unless a file changed and the
    new pair holds together. gRPC calls it from its own threads, hence the lock."""

    def __init__(self, files: TlsFiles) -> None:
        self._files = files
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._material = read_material(files)  # at start, a bad pair stops the server
        self._warned: _Stamp | None = None

    @property
    def material(self) -> TlsMaterial:
        return self._material

    def _stat(self) -> _Stamp:
        stamps = []
        for path in self._files.paths():
            try:
                status = os.stat(path)
            except OSError:
                stamps.append((0, 0, 0))  # gone for now (mid-rename): compared like any change
            else:
                stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
        return tuple(stamps)

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            try:
                material = read_material(self._files)
            except TlsError as error:
                # The stamp is not recorded: the files are read again at the next handshake,
                # until the renewal has written both; the warning is logged once per state.
                if stamp != self._warned:
                    self._warned = stamp
                    log.warning(
                        "tls files not reloaded, still serving the previous pair",
                        problem=str(error),
                        serial=self._material.serial,
                    )
                return None
            self._stamp = stamp
            if material == self._material:
                return None  # touched, not changed
            self._material = material
            log.info("tls certificate reloaded", serial=material.serial)
            return material.configuration()


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """TLS credentials whose pair is reloaded when the files change; with a client CA, every
    client must present a certificate it signed (mTLS)."""
    reloader = CertificateReloader(files)
    return grpc.dynamic_ssl_server_credentials(
        reloader.material.configuration(),
        # The stubs omit it, but gRPC documents None as "no change" (the reloader's usual answer).
        reloader,  # type: ignore[arg-type]
        require_client_authentication=files.client_ca is not None,
    )


def healthcheck_credentials(
    env: Mapping[str, str],
) -> tuple[grpc.ChannelCredentials, list[tuple[str, str]]] | None:
    """`portex-pay healthcheck`'s channel credentials and options against a server with the
    TLS settings of `env` (None: the server listens without TLS)."""
    cert_path = env.get("PORTEX_GRPC_TLS_CERT")
    if not cert_path:
        return None
    files = TlsFiles(
        Path(cert_path),
        Path(env.get("PORTEX_GRPC_TLS_KEY", "")),
        Path(env["PORTEX_GRPC_TLS_CLIENT_CA"]) if env.get("PORTEX_GRPC_TLS_CLIENT_CA") else None,
    )
    material = read_material(files)
    trust = env.get("PORTEX_GRPC_TLS_CA")
    try:
        roots = Path(trust).read_bytes() if trust else material.cert
    except OSError as error:
        raise TlsError(f"cannot read {error.filename}: {error.strerror}") from None
    client_pair = (material.key, material.cert) if files.client_ca is not None else (None, None)
    credentials = grpc.ssl_channel_credentials(roots, *client_pair)
    name = certificate_name(x509.load_pem_x509_certificates(material.cert)[0])
    return credentials, ([("grpc.ssl_target_name_override", name)] if name else [])


def certificate_name(certificate: x509.Certificate) -> str | None:
    """The first name the certificate is for: a DNS name, else an IP address."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for kind in (x509.DNSName, x509.IPAddress):
        found = names.get_values_for_type(kind)
        if found:
            return str(found[0])
    return None
