"""Who may use the page: the ``Host`` it answers for and the POSTs it accepts.

The page listens on loopback, but a browser on this machine visits other sites
too. Two attacks are refused here:

- **DNS rebinding**: a site (``evil.example``) makes its name resolve to
  127.0.0.1; the browser then treats the page as ``evil.example``'s own and lets
  that site read it and post to it. The ``Host`` header still says
  ``evil.example``, so every request whose host name is not one this page
  listens under (127.0.0.1, localhost, [::1], the bound address, names given
  with ``--allowed-host``) gets 421.
- **Cross-site requests**: any site may send a "simple" POST (no preflight:
  ``text/plain``, form types) to 127.0.0.1. A POST needs the page's token in
  the ``X-Keras-Vit-Token`` header (a custom header, so a cross-origin
  ``fetch`` needs a CORS preflight, which this page never grants), an
  ``Origin`` equal to the page's own when there is one, a ``Sec-Fetch-Site``
  of ``same-origin`` when there is one, and an image or
  ``application/octet-stream`` body type.

The token is random per process and only in the page itself, which other
origins cannot read (the same-origin policy, once rebinding is refused).
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from http import HTTPStatus
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
TOKEN_HEADER = "X-Keras-Vit-Token"
# The body types a browser can only send after a CORS preflight (and the page sends).
ACCEPTED_BODY_TYPES = ("application/octet-stream", "image/")


def split_host(value: str) -> tuple[str, int | None] | None:
    """``"name:port"``, ``"[::1]:port"`` or ``"name"`` -> (lower-case name, port), or None.

    >>> split_host("LocalHost:7860"), split_host("[::1]:80"), split_host("127.0.0.1")
    (('localhost', 7860), ('::1', 80), ('127.0.0.1', None))
    >>> split_host("evil.example:x") is None, split_host("") is None
    (True, True)
    """
    value = value.strip().lower()
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        name, port_text = value.split(":")
    elif ":" in value:  # a bare IPv6 address is not a valid Host
        return None
    else:
        name, port_text = value, None
    if not name:
        return None
    if port_text is None:
        return name, None
    if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        return None
    return name, int(port_text)


class RequestGuard:
    """The ``Host``, ``Origin``, token and body-type checks for a page on ``host:port``.

    ``allowed_hosts``: more names this page answers under, ``NAME`` (any port: behind
    ``ssh -L`` or a proxy the port differs) or ``NAME:PORT`` (that port only). The
    loopback names and the bound host are allowed with the bound port only (or none
    when it is 80, as browsers leave the default port out).
    """

    def __init__(self, host: str, port: int, allowed_hosts: Iterable[str] = ()):
        self.port = port
        self.token = secrets.token_urlsafe(32)
        own_ports = {port, None} if port == 80 else {port}
        bound = host.strip("[]").lower()
        self.ports: dict[str, set[int | None]] = {
            name: set(own_ports) for name in (*LOOPBACK_NAMES, bound)
        }
        self.any_port: set[str] = set()
        for entry in allowed_hosts:
            parsed = split_host(entry)
            if parsed is None:
                raise ValueError(f"--allowed-host {entry!r} is not NAME or NAME:PORT")
            name, entry_port = parsed
            if entry_port is None:
                self.any_port.add(name)
            else:
                self.ports.setdefault(name, set()).add(entry_port)

    def host_allowed(self, host_header: str | None) -> bool:
        parsed = split_host(host_header or "")
        if parsed is None:
            return False
        name, port = parsed
        return name in self.any_port or port in self.ports.get(name, ())

    def host_error(self, host_header: str | None) -> str | None:
        """Why a request with this ``Host`` is refused (421), or None."""
        if self.host_allowed(host_header):
            return None
        names = ", ".join(sorted({*self.ports, *self.any_port}))
        return (
            f"this page answers only for its own address ({names}; port {self.port}), "
            f"not Host {host_header!r}: a page reached under another name could be a DNS "
            "rebinding attack. Start `keras-vit ui` with --allowed-host NAME to allow a name."
        )

    def post_error(
        self,
        host_header: str,
        origin: str | None,
        token: str | None,
        content_type: str | None,
        fetch_site: str | None = None,
    ) -> tuple[int, str] | None:
        """(status, why) a POST is refused, or None; ``host_header`` has passed ``host_error``.

        ``fetch_site``: the ``Sec-Fetch-Site`` header, which browsers set themselves.
        """
        if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
            return (
                HTTPStatus.FORBIDDEN,
                f"cross-origin request refused: Sec-Fetch-Site is {fetch_site!r}",
            )
        if origin is not None and not self._same_origin(origin, host_header):
            return (
                HTTPStatus.FORBIDDEN,
                f"cross-origin request refused: Origin {origin!r} is not this page's own "
                f"(http://{host_header})",
            )
        if not token or not hmac.compare_digest(token.encode(), self.token.encode()):
            return (
                HTTPStatus.FORBIDDEN,
                f"missing or wrong {TOKEN_HEADER} header: predictions are accepted only from "
                "this page (its token is in the page)",
            )
        media_type = (content_type or "").split(";")[0].strip().lower()
        if media_type and not media_type.startswith(ACCEPTED_BODY_TYPES):
            return (
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"Content-Type {media_type!r} refused: send the image file as "
                "application/octet-stream or image/*",
            )
        return None

    @staticmethod
    def _same_origin(origin: str, host_header: str) -> bool:
        try:
            parts = urlsplit(origin.strip())
        except ValueError:  # "http://[::1" and the like
            return False
        return parts.scheme == "http" and parts.netloc.lower() == host_header.strip().lower()
