"""TLS options of a client's channel: the CA to trust, a client certificate for mTLS, the name.

`TlsOptions` gathers what grpcurl takes as ``-cacert``, ``-cert``/``-key`` and ``-servername``;
a client given ``tls=TlsOptions(...)`` opens a secure channel with its credentials and options::

    client = PaymentClient(
        "pay.internal:50051", api_key,
        tls=TlsOptions(root_certificates="ca.pem", certificate="me.pem", private_key="me.key"),
    )

``TlsOptions()`` alone trusts the system's root certificates, as
``grpc.ssl_channel_credentials()`` does. Files are read when the client is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]

__all__ = ["TlsOptions"]

PemSource = str | PathLike[str] | bytes


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How a client's channel is secured.

    ``root_certificates``: the CA (PEM) the server's certificate must chain to; None: the
    system's roots. ``certificate`` and ``private_key`` (PEM, both or neither): the client's own,
    for a server that asks for one (mTLS). ``server_name``: the name the server's certificate
    must carry, when it is not the target's host (e.g. dialing an IP address). Each PEM source
    is a file path, or the PEM itself as bytes.
    """

    root_certificates: PemSource | None = None
    certificate: PemSource | None = None
    private_key: PemSource | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together: give both or neither")
        if self.server_name is not None and not self.server_name:
            raise ValueError("server_name must not be empty")

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials, with the files read now."""
        return grpc.ssl_channel_credentials(
            _pem(self.root_certificates), _pem(self.private_key), _pem(self.certificate)
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        """The channel options they need (the name the certificate is checked against)."""
        if self.server_name is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]


def _pem(source: PemSource | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()
