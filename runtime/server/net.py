"""Listening sockets, authentication tokens and TLS files shared by the HTTP and gRPC endpoints."""
from __future__ import annotations

import errno
import hmac
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path


class ListenError(OSError):
    """The server cannot listen on an address (in use, not available, not permitted); names host:port."""


def address(host: str, port: int) -> str:
    """host:port, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or name (only this machine can connect)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_socket(host: str, port: int, backlog: int, what: str = "HTTP") -> socket.socket:
    """A TCP socket bound to host:port and listening; ListenError naming the address when that fails.

    SO_REUSEADDR (restart while old connections linger) but never SO_REUSEPORT: a second server on a port in
    use is refused instead of sharing it.
    """
    where = address(host, port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(errno.EADDRNOTAVAIL, f"cannot listen on {where} ({what}): unknown host ({exc.strerror})") \
            from None
    family, type_, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = ("the address is already in use (is another server running?)" if exc.errno == errno.EADDRINUSE
                  else exc.strerror or str(exc))
        raise ListenError(exc.errno or errno.EADDRNOTAVAIL, f"cannot listen on {where} ({what}): {reason}") \
            from None
    return sock


@dataclass(frozen=True)
class Security:
    """Token authentication and TLS for both endpoints (None: off)."""

    token: str | None = None
    certfile: str | None = None
    keyfile: str | None = None

    def __post_init__(self):
        if self.token is not None:
            t = self.token.strip()
            if not t or any(c.isspace() for c in t) or not t.isprintable():
                raise ValueError("the access token must be printable text without spaces")
            object.__setattr__(self, "token", t)
        if (self.certfile is None) != (self.keyfile is None):
            raise ValueError("TLS needs both a certificate file and a key file")
        for f in (self.certfile, self.keyfile):
            if f is not None and not Path(f).is_file():
                raise ValueError(f"{f}: no such file")
        if self.certfile is not None:          # fail now, not in the endpoint's thread
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.certfile, self.keyfile)
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"cannot use the TLS certificate {self.certfile} with the key {self.keyfile}: "
                                 f"{exc}") from None

    @property
    def tls(self) -> bool:
        return self.certfile is not None

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` value carries the token (``Bearer <token>``); always, without a token."""
        if self.token is None:
            return True
        if not header:
            return False
        scheme, _, value = header.strip().partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())
