"""TLS to the log store as one ``ssl.SSLContext``: a private CA, a client certificate, a pinned fingerprint.

Each setting is PEM text (what a secret store hands a pod: no file to mount) or the path of a PEM file. The
context is built once, for this client only: a private CA does not have to go into the process-wide
``SSL_CERT_FILE``, where it would be trusted by every other client too. Python loads a certificate chain
only from files, so PEM text for the client certificate and key is written to a private temporary directory
(mode 0700), loaded, and deleted at once.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from pathlib import Path

PEM_MARK = "-----BEGIN"


class TlsSettingError(ValueError):
    """A TLS setting of the log store that cannot be used (one line naming the setting)."""


def is_pem(value: str) -> bool:
    """Whether ``value`` is PEM text rather than a path."""
    return PEM_MARK in value


def _readable(name: str, path: str) -> str:
    if not Path(path).expanduser().is_file():
        raise TlsSettingError(f"LogStore {name}: {path!r} is neither PEM text nor a readable file")
    return str(Path(path).expanduser())


def ssl_context(
    *,
    ca_certs: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    verify_certs: bool = True,
    pinned: bool = False,
) -> ssl.SSLContext:
    """The context for a TLS connection to the log store.

    ``ca_certs`` replaces the system's CAs (only the store's CA is trusted, as the clients' own ``ca_certs``
    does); without it the system's are used. ``client_cert``/``client_key`` are this worker's certificate for
    mutual TLS (the key may sit in the certificate's PEM). ``verify_certs=False`` or ``pinned`` (the caller
    checks a fingerprint instead) turns chain and host name checks off.
    """
    try:
        if ca_certs:
            if is_pem(ca_certs):
                context = ssl.create_default_context(cadata=ca_certs)
            else:
                context = ssl.create_default_context(cafile=_readable("ca_certs", ca_certs))
        else:
            context = ssl.create_default_context()
    except ssl.SSLError as exc:
        raise TlsSettingError(f"LogStore ca_certs: not a PEM CA certificate ({exc.reason or exc})") from None
    if not verify_certs or pinned:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert:
        _load_client_certificate(context, client_cert, client_key)
    elif client_key:
        raise TlsSettingError("LogStore client_key is set without client_cert")
    return context


def _load_client_certificate(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    """``context.load_cert_chain`` from PEM text or paths (text goes through a private temporary file)."""
    with tempfile.TemporaryDirectory(prefix="logstore-tls-") as tmp:

        def as_file(name: str, value: str) -> str:
            if not is_pem(value):
                return _readable(name, value)
            path = os.path.join(tmp, name)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(value)
            return path

        cert_file = as_file("client_cert", cert)
        key_file = as_file("client_key", key) if key else None
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise TlsSettingError(
                f"LogStore client_cert/client_key: not a matching PEM certificate and key ({exc.reason or exc})"
            ) from None
