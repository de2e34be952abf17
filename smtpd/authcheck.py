"""SPF, DKIM and DMARC for mail from strangers, and the Authentication-Results header.

:func:`authenticate` runs the three checks of RFC 7208 (pyspf), RFC 6376
(dkimpy) and RFC 7489 (:mod:`smtpd.dmarc`) on one message, every DNS question
through :mod:`smtpd.authdns` (our resolver, a bound per lookup).  It blocks, so
the handler runs it in a thread of its own pool.  Nothing in it raises for what
a sender or DNS does: a DNS failure is ``temperror``, a malformed message or
record ``permerror`` or ``fail``, and a library error on hostile input is caught
at the one call that met it.

Bounds.  Each lookup waits at most ``dns_timeout`` seconds; SPF's up to 10
mechanisms share ``spf_timeout`` (pyspf's ``querytime``, RFC 7208 §4.6.4); at
most :data:`MAX_SIGNATURES` DKIM signatures are verified, and only in messages
up to :data:`MAX_DKIM_BYTES` (each signature hashes the whole body, about
0.1 s per MiB in the worst case measured); DMARC asks at most two names per
From domain.  The handler also puts a deadline on the whole check.

:func:`results_header` writes the one header we prepend (RFC 8601), and
:func:`without_our_results` removes the ones a sender wrote in our name (§5).
"""

from __future__ import annotations

import email.policy
import email.utils
import logging
import re
from dataclasses import dataclass
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any

import dkim
import spf

from . import dmarc
from .authdns import DnsTemporary, Lookups, install_spf_lookup

if TYPE_CHECKING:
    import dns.resolver

log = logging.getLogger(__name__)

MAX_SIGNATURES = 3              # DKIM signatures verified per message; others are not looked at
MAX_DKIM_BYTES = 10 * 1024 * 1024  # larger messages get dkim=policy, unverified
_DOMAIN = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?")
_HEADER_NAME = b"authentication-results"


@dataclass(frozen=True)
class AuthSettings:
    """How inbound mail is checked (``[smtpd]`` keys: smtpd/settings.py)."""

    resolver: dns.resolver.Resolver
    dns_timeout: float = 5.0  # seconds per DNS question
    spf_timeout: float = 20.0  # seconds for all of SPF's questions together

    @property
    def deadline(self) -> float:
        """Seconds the whole check may take: every part's own bound, added up (so that a
        sender whose DNS is slow for SPF or DKIM cannot starve the DMARC lookup that
        follows), and a second to spare."""
        lookups = MAX_SIGNATURES + 2 * dmarc.MAX_FROM_DOMAINS
        return self.spf_timeout + self.dns_timeout * lookups + 1.0


@dataclass(frozen=True)
class MethodResult:
    """One line of the header: ``spf=pass smtp.mailfrom=example.org``."""

    method: str             # spf, dkim, dmarc
    result: str             # RFC 8601 §2.7 result values
    properties: tuple[tuple[str, str], ...] = ()  # (ptype.property, value)
    comment: str = ""       # our own fixed words, never text from the message


@dataclass(frozen=True)
class AuthResults:
    """The outcome of the three checks of one message."""

    spf: MethodResult
    dkim: tuple[MethodResult, ...]
    dmarc: dmarc.Verdict

    @property
    def junk(self) -> bool:
        return self.dmarc.junk

    def lines(self) -> list[MethodResult]:
        verdict = self.dmarc
        policy = f"p={verdict.policy} dis={verdict.disposition}" if verdict.policy else ""
        return [self.spf, *self.dkim, MethodResult(
            "dmarc", verdict.result, _props(("header.from", verdict.from_domain)), policy)]


def _props(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in pairs if value)


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def check_spf(ip: str, mail_from: str, helo: str, lookups: Lookups,
              spf_timeout: float) -> tuple[MethodResult, str | None]:
    """SPF of the client at ``ip`` for MAIL FROM, or HELO for the null sender (RFC 7208 §2.4);
    the result, and the domain it passed for (None unless pass)."""
    scope = "smtp.mailfrom" if mail_from else "smtp.helo"
    domain = _domain_of(mail_from) if mail_from else helo.lower().rstrip(".")
    try:
        with lookups.for_spf():
            query = spf.query(i=ip, s=mail_from, h=helo, timeout=spf_timeout,
                              querytime=spf_timeout)
            result = str(query.check()[0])
    except Exception as exc:  # noqa: BLE001 - pyspf raises assorted errors on hostile input
        log.info("SPF check of %s failed: %s", ip, type(exc).__name__)
        result = "permerror"
    if result not in ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror"):
        result = "permerror"
    return (MethodResult("spf", result, _props((scope, domain))),
            domain if result == "pass" else None)


class _AtDebug(logging.LoggerAdapter):
    """dkimpy logs a stranger's bad signature as an error of ours, and with debug_content
    the headers it hashed: everything it says goes to DEBUG."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


DKIM_LOG = _AtDebug(logging.getLogger("smtpd.dkimpy"), {})


def check_dkim(content: bytes, resolver: dns.resolver.Resolver,
               dns_timeout: float) -> tuple[tuple[MethodResult, ...], list[str]]:
    """Each DKIM signature's result (``dkim=none`` when there is none), and the ``d=`` of
    those that passed."""
    if b"dkim-signature" not in content[:_head_end(content)].lower():
        return (MethodResult("dkim", "none"),), []
    if len(content) > MAX_DKIM_BYTES:
        return (MethodResult("dkim", "policy", comment="message too large to verify"),), []
    try:
        verifier = dkim.DKIM(content, logger=DKIM_LOG, minkey=1024, timeout=dns_timeout)
        count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    except Exception:  # noqa: BLE001 - dkimpy's parser raises IndexError and others on bad input
        return (MethodResult("dkim", "permerror", comment="unparsable message"),), []
    results, passed = [], []
    for index in range(min(count, MAX_SIGNATURES)):
        lookups = Lookups(resolver, dns_timeout)
        verifier.signature_fields = {}
        try:
            ok = bool(verifier.verify(idx=index, dnsfunc=lookups.dkim_txt))
            result = "pass" if ok else "temperror" if lookups.failed_temporarily else "fail"
        except dkim.DKIMException:
            result = "fail"  # a bad body hash, an expired or malformed signature
        except Exception:  # noqa: BLE001 - a library error on hostile input is no crash of ours
            result = "permerror"
        fields = verifier.signature_fields or {}
        domain = _ascii(fields.get(b"d", b"")).lower()
        results.append(MethodResult("dkim", result, _props(
            ("header.d", domain), ("header.s", _ascii(fields.get(b"s", b""))))))
        if result == "pass":
            passed.append(domain)
    return tuple(results), passed


def _ascii(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else ""


def author_domains(head: bytes) -> set[str]:
    """The domains of the From header's addresses (RFC 7489 §6.6.1: RFC5322.From).

    A From the parser cannot read (an unclosed ``<``) is searched for an address
    as text, so that breaking the header does not escape the policy.
    """
    message = BytesParser(policy=email.policy.default).parsebytes(head + b"\r\n\r\n",
                                                                headersonly=True)
    domains: set[str] = set()
    for name, raw in message.raw_items():
        if name.lower() != "from":
            continue
        try:
            value = message.policy.header_fetch_parse(name, raw)
            found = {_domain_of(a.addr_spec) for a in getattr(value, "addresses", ())
                     if "@" in a.addr_spec}
        except Exception:  # noqa: BLE001 - the email package raises assorted errors on bad input
            found = set()
        if not found:
            found = {m.lower().rstrip(".") for m in re.findall(
                r"@\s*([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)", str(raw))}
        domains |= {d for d in found if _DOMAIN.fullmatch(d)}
    return domains


def authenticate(content: bytes, ip: str, helo: str, mail_from: str,
                 settings: AuthSettings) -> AuthResults:
    """SPF, DKIM and DMARC of ``content``, received from ``ip`` (which said ``helo``)
    with envelope sender ``mail_from``.  Blocks on DNS; never raises for what the
    message or DNS holds."""
    install_spf_lookup()
    spf_result, spf_domain = check_spf(ip, mail_from, helo,
                                       Lookups(settings.resolver, settings.dns_timeout),
                                       settings.spf_timeout)
    dkim_results, dkim_domains = check_dkim(content, settings.resolver, settings.dns_timeout)
    lookups = Lookups(settings.resolver, settings.dns_timeout)
    verdict = dmarc.evaluate(author_domains(content[:_head_end(content)]), spf_domain,
                             dkim_domains, lookups.txt)
    return AuthResults(spf_result, dkim_results, verdict)


def unavailable(reason: str) -> AuthResults:
    """The results of a check that did not finish in time: temperror throughout."""
    return AuthResults(MethodResult("spf", "temperror", comment=reason),
                       (MethodResult("dkim", "temperror", comment=reason),),
                       dmarc.Verdict("temperror"))


def results_header(authserv_id: str, results: AuthResults) -> bytes:
    """The ``Authentication-Results`` field (RFC 8601 §2.2), one method per folded line."""
    parts = []
    for line in results.lines():
        text = f"{line.method}={line.result}"
        if line.comment:
            text += f" ({line.comment})"
        # Values come from senders: only a plain domain name is written, checked here
        # where the header is made, whatever built the result.
        text += "".join(f" {name}={value}" for name, value in line.properties
                        if _DOMAIN.fullmatch(value))
        parts.append(text)
    return f"Authentication-Results: {authserv_id};\r\n\t{';\r\n\t'.join(parts)}\r\n".encode()


def _head_end(content: bytes) -> int:
    """Where the header section ends: after its last line's line break, before the blank
    line (the length of ``content`` if there is none)."""
    if content.startswith((b"\r\n", b"\n")):
        return 0
    ends = [i + len(sep) // 2 for sep in (b"\r\n\r\n", b"\n\n") if (i := content.find(sep)) >= 0]
    return min(ends) if ends else len(content)


def authserv_id_of(value: bytes) -> str:
    """The authserv-id an Authentication-Results value starts with (RFC 8601 §2.2), lowercase."""
    text = value.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ").strip()
    while text.startswith("("):  # a leading comment (CFWS); nested ones too
        depth, end = 0, len(text)
        for i, ch in enumerate(text):
            depth += (ch == "(") - (ch == ")")
            if depth == 0:
                end = i + 1
                break
        text = text[end:].lstrip()
    if text.startswith('"'):
        return text[1:].partition('"')[0].strip().lower().rstrip(".")
    return re.split(r"[\s;(]", text, maxsplit=1)[0].lower().rstrip(".")


def without_our_results(content: bytes, authserv_id: str) -> bytes:
    """``content`` without the Authentication-Results fields that claim ``authserv_id``:
    a sender's forgery of our verdict (RFC 8601 §5).  Others' results stay."""
    end = _head_end(content)
    head, rest = content[:end], content[end:]
    if _HEADER_NAME not in head.lower():
        return content
    ours = authserv_id.lower().rstrip(".")
    fields: list[list[bytes]] = []
    for line in re.split(rb"(?<=\n)", head):  # lines end at LF only: a lone CR is no break
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = []
    for field in fields:
        name, colon, value = b"".join(field).partition(b":")
        if colon and name.strip().lower() == _HEADER_NAME and authserv_id_of(value) == ours:
            continue
        kept.append(b"".join(field))
    return b"".join(kept) + rest


__all__ = ["MAX_DKIM_BYTES", "MAX_SIGNATURES", "AuthResults", "AuthSettings", "DnsTemporary",
           "MethodResult", "authenticate", "results_header", "unavailable",
           "without_our_results"]
