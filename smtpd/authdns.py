"""DNS for the authentication checks of inbound mail: our resolver, with a bound per lookup.

SPF, DKIM and DMARC each ask DNS (:mod:`smtpd.authcheck`); every one of their
questions goes to the resolver of ``[smtpd] resolver`` (the one the outbound
worker uses, so tests answer from their own DNS server), and none waits longer
than ``per_lookup`` seconds.  A lookup that times out or that the resolver
fails (SERVFAIL, refused) raises :class:`DnsTemporary`, which the checks turn
into a ``temperror`` result.

The libraries take DNS in two ways.  dkimpy accepts a function per call
(``dnsfunc``); :meth:`Lookups.dkim_txt` is one.  pyspf calls a module global,
``spf.DNSLookup``; :func:`install_spf_lookup` replaces it once with a function
that asks the :class:`Lookups` of the check running in this thread (a context
variable set by :meth:`Lookups.for_spf`), and refuses to answer outside one,
so no SPF check ever reaches the system resolver behind our back.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import spf

from raftkv.cluster import split_addr


class DnsTemporary(Exception):
    """DNS did not answer (in time): the result is a temperror, not a failure."""


def make_resolver(address: str, lifetime: float) -> dns.resolver.Resolver:
    """A resolver for ``address`` (``"host:port"``; ``""`` = the system's), each
    question answered within ``lifetime`` seconds or given up."""
    if not address:
        resolver = dns.resolver.Resolver()
    else:
        host, port = split_addr(address)
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = lifetime
    return resolver


class Lookups:
    """The DNS questions of one message's checks.

    :param per_lookup: seconds one question may take, retries included.
    """

    def __init__(self, resolver: dns.resolver.Resolver, per_lookup: float) -> None:
        self._resolver = resolver
        self._per_lookup = per_lookup
        self.count = 0
        # dkimpy reports a DNS failure as an unverified signature: this says it was DNS.
        self.failed_temporarily = False

    def answer(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        """The records of ``rdtype`` at ``name``; None when there are none (NXDOMAIN, no data).

        :raises DnsTemporary: no answer in time, or the resolver failed.
        """
        self.count += 1
        try:
            return self._resolver.resolve(dns.name.from_text(name), rdtype, search=False,
                                          lifetime=self._per_lookup)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN):
            return None
        except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel):
            return None  # a name no zone can hold has no records
        except (dns.exception.DNSException, OSError, UnicodeError) as exc:
            self.failed_temporarily = True
            raise DnsTemporary(f"DNS {rdtype} {name}: {type(exc).__name__}") from None

    def txt(self, name: str) -> list[bytes] | None:
        """Each TXT record at ``name``, its strings joined (RFC 7208 §3.3, RFC 6376 §3.6.2.2)."""
        answer = self.answer(name, "TXT")
        return None if answer is None else [b"".join(r.strings) for r in answer]

    def dkim_txt(self, name: bytes, timeout: float = 5.0) -> bytes | None:
        """dkimpy's ``dnsfunc``: the key record at ``name``, or None.

        dkimpy turns its own ``DnsTimeoutError`` into "signature not verified"
        and nothing more, so the failure is kept in :attr:`failed_temporarily`.
        """
        try:
            records = self.txt(name.decode("ascii"))
        except UnicodeDecodeError:
            return None
        except DnsTemporary:
            return None
        return records[0] if records else None

    @contextmanager
    def for_spf(self) -> Iterator[None]:
        """Within: pyspf's questions in this thread are ours (:func:`install_spf_lookup`)."""
        token = _current.set(self)
        try:
            yield
        finally:
            _current.reset(token)

    def spf_records(self, name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        """pyspf's ``DNSLookup`` answer shape: ``[((name, type), value), ...]``."""
        try:
            answer = self.answer(name, qtype)
        except DnsTemporary as exc:
            raise spf.TempError(str(exc)) from None
        found: list[tuple[tuple[str, str], Any]] = []
        for rdata in answer or ():
            if qtype in ("A", "AAAA"):
                found.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                found.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                found.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                found.append(((name, qtype), rdata.strings))
        return found


_current: contextvars.ContextVar[Lookups | None] = contextvars.ContextVar(
    "smtpd_spf_lookups", default=None)
_installed = threading.Lock()


def _spf_lookup(name: str, qtype: str, strict: Any = True,
                timeout: float = 0.0) -> list[tuple[tuple[str, str], Any]]:
    lookups = _current.get()
    if lookups is None:
        raise spf.TempError("DNS: no resolver for this SPF check (smtpd.authdns)")
    return lookups.spf_records(name, qtype)


def install_spf_lookup() -> None:
    """Route every pyspf question through :meth:`Lookups.spf_records` (idempotent)."""
    with _installed:
        spf.DNSLookup = _spf_lookup
