"""Which hosts a sync may fetch from: upstream pages choose file URLs, the operator chooses hosts.

A project page is data from the network; if any URL on it were followed, a hostile or compromised
upstream could point the mirror at ``http://127.0.0.1:6379/`` or a cloud metadata address and use
it to probe the private network (server-side request forgery). The sha256 check keeps the *bytes*
honest whatever the host, so this rule is about where requests go, not about what is stored.

The rule, applied to every request including each redirect hop:

- the upstream's own origin (scheme, host and port of ``upstream:``) is always allowed;
- without ``allowed_hosts:``, any other host only over ``https`` on the default port and only by
  DNS name: no IP address in any spelling the resolver accepts (``2130706433``, ``0x7f.1``,
  ``0177.0.0.1``, ``127.1``, ``[::ffff:127.0.0.1]``: labels that are all decimal or hex numbers,
  or a name whose last label is a number), no single-label or local name (``localhost``,
  ``*.localhost``, ``.local``, ``.internal``...), nothing but ASCII letters, digits, ``-`` and ``_``
  in dot-separated labels. That admits the usual split of an index and its file host
  (``pypi_simple.PYPI_SIMPLE_ENDPOINT`` pages point at a separate file host) and refuses the
  usual SSRF targets;
- with ``allowed_hosts:``, exactly the listed hosts: ``name`` (any port), ``name:port``,
  ``*.domain`` (any subdomain), or ``"*"`` for any host at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

_HOST_ENTRY = re.compile(  # fullmatch
    r"\*|(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?"
)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")  # fullmatch, on a lowercased name
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")  # a last label like this makes a name an IPv4 address
#: names that resolve inside this machine or network, never to a public file host (RFC 6761, 6762, 8375)
_LOCAL_ZONES = ("localhost", "localdomain", "local", "internal", "home.arpa", "lan")


class HostNotAllowed(ValueError):
    """A URL whose host this mirror's configuration does not allow."""


def check_entry(entry: object) -> str:
    """Validate one ``allowed_hosts`` entry (raises ValueError with the reason)."""
    if not isinstance(entry, str) or not _HOST_ENTRY.fullmatch(entry):
        raise ValueError(f"allowed_hosts entries are host names like 'files.example.org', got {entry!r}")
    return entry.lower()


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise HostNotAllowed(f"refusing non-HTTP URL {url!r}")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise HostNotAllowed(f"refusing URL with an invalid port {url!r}") from None
    host = parts.hostname.lower()
    return scheme, host[:-1] if host.endswith(".") else host, port  # "name." is the same name


def not_a_public_name(host: str) -> str | None:
    """Why ``host`` (lowercased, final dot removed) is no public DNS name, or None when it is one.

    The connection resolves it with ``getaddrinfo``, which reads every legacy IPv4 spelling
    (decimal, hex, octal, short forms): a name whose labels are all such numbers is an address.
    """
    if ":" in host or "[" in host:
        return "an IP address"  # IPv6, with or without a zone id (urlsplit drops the brackets)
    labels = host.split(".")
    if all(_NUMBER.fullmatch(label) for label in labels):
        return "an IP address"
    if not all(_LABEL.fullmatch(label) for label in labels):
        return "not a DNS host name"
    if _NUMBER.fullmatch(labels[-1]):
        return "a name ending in a number (an IPv4 address to URL parsers)"
    if len(labels) < 2 or any(host == zone or host.endswith("." + zone) for zone in _LOCAL_ZONES):
        return "a local name"
    return None


@dataclass(frozen=True)
class HostPolicy:
    upstream: str
    allowed: tuple[str, ...] | None = None

    @cached_property
    def _upstream_origin(self) -> tuple[str, str, int]:
        return _origin(self.upstream)  # once, not for each of a cold sync's thousands of requests

    @cached_property
    def _allowed_authorities(self) -> set[str]:
        return set()

    def check(self, url: str) -> None:
        """Raise HostNotAllowed unless ``url`` may be requested.

        A cold sync checks each file's URL twice (as it hands out the job, and before the request)
        and parsed each one both times. The answer depends only on the URL's text up to the end of
        its authority, so an authority allowed once is recognised by that text.
        """
        authority = _authority(url)
        if authority in self._allowed_authorities:
            return
        self._check(url)
        if authority is not None:
            self._allowed_authorities.add(authority)

    def _check(self, url: str) -> None:
        scheme, host, port = _origin(url)
        if (scheme, host, port) == self._upstream_origin:
            return
        if self.allowed is None:
            why = not_a_public_name(host)
            if scheme == "https" and port == 443 and why is None:
                return
            raise HostNotAllowed(
                f"refusing {url!r}: {f'{host} is {why}; ' if why else ''}only the upstream's own host and "
                "https host names are followed by default (list hosts under allowed_hosts: to allow more)"
            )
        for entry in self.allowed:
            if entry == "*" or _matches(entry, host, port):
                return
        raise HostNotAllowed(f"refusing {url!r}: host {host} is not in allowed_hosts")


def _authority(url: str) -> str | None:
    """``url`` up to the end of its authority (``scheme://host:port``, as written), where
    ``urlsplit`` ends it: the first ``/``, ``?`` or ``#`` after ``//``; None without one, or with
    white space or control characters in it (``urlsplit`` drops some of those before it parses)."""
    start = url.find("//")
    if start < 0:
        return None
    ends = [at for at in (url.find(mark, start + 2) for mark in "/?#") if at >= 0]
    authority = url[: min(ends)] if ends else url
    return authority if authority.isprintable() and " " not in authority else None


def _matches(entry: str, host: str, port: int) -> bool:
    name, _, entry_port = entry.rpartition(":") if not entry.endswith("]") and ":" in entry else (entry, "", "")
    if entry_port and int(entry_port) != port:
        return False
    name = name.strip("[]")
    if name.startswith("*."):
        return host.endswith(name[1:])
    return host == name


def needs_credentials(status: int) -> str:
    """What a 401 adds to its error line: where gitmirror reads credentials from (none for other statuses)."""
    if status != 401:
        return ""
    return ": credentials are read from $NETRC or ~/.netrc (machine HOST login ... password ...)"
