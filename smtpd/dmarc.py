"""DMARC (RFC 7489): the From domain's policy, and whether SPF or DKIM passed for it.

Written here rather than taken from a library: the evaluation is a page of
rules (find the record, parse its tags, compare domains), and the libraries
that offer it either resolve through their own global resolver or get the
record's syntax wrong (docs/security.md, "Mail authentication", says which
were read and why).  The one hard part, the organizational domain, comes from
the Public Suffix List of ``publicsuffixlist``.

Pure given a TXT lookup function, so the unit tests run it on records of their own.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from .authdns import DnsTemporary

POLICIES = ("none", "quarantine", "reject")
# A policy applied to the pct % of failing mail it samples; the rest gets the next
# milder one (RFC 7489 §6.6.4): reject becomes quarantine, quarantine none.
_MILDER = {"reject": "quarantine", "quarantine": "none", "none": "none"}

# From domains evaluated per message (each costs up to two lookups).  Real mail has one;
# a From naming more is refused evaluation and filed in Junk, since looking at only
# some would let a forger hide the domain whose policy rejects it among others.
MAX_FROM_DOMAINS = 3

TxtLookup = Callable[[str], list[bytes] | None]


@dataclass(frozen=True)
class Policy:
    """A DMARC record, parsed."""

    p: str                  # the domain's policy
    sp: str                 # for subdomains of the domain that published it
    adkim: str = "r"        # alignment: "r" relaxed (same organizational domain), "s" strict
    aspf: str = "r"
    pct: int = 100          # percent of failing mail the policy applies to


@dataclass(frozen=True)
class Verdict:
    """The DMARC result for one message."""

    result: str                 # pass, fail, none, temperror, permerror (RFC 8601 §2.7.1)
    from_domain: str = ""
    policy: str = ""            # the policy that applies to the From domain ("" with no record)
    disposition: str = "none"   # what to do: none, quarantine, reject (after pct sampling)

    @property
    def junk(self) -> bool:
        """Whether the message belongs in Junk: it failed, and its domain asks for that."""
        return self.result in ("fail", "permerror") and self.disposition in ("quarantine",
                                                                              "reject")


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    return PublicSuffixList()  # parses the list it ships, once


def organizational_domain(domain: str) -> str:
    """The registrable domain of ``domain`` (RFC 7489 §3.2): ``mail.example.co.uk`` ->
    ``example.co.uk``; a domain that is itself a public suffix is its own."""
    domain = domain.lower().rstrip(".")
    return _suffixes().privatesuffix(domain) or domain


def aligned(a: str, b: str, mode: str) -> bool:
    """Whether two domains align: the same (strict), or the same organizational domain."""
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    return a == b if mode == "s" else organizational_domain(a) == organizational_domain(b)


def parse_record(text: bytes) -> Policy | None:
    """A DMARC record's policy, or None if ``text`` is not a usable record.

    ``v=DMARC1`` must come first (§6.4); tags are ``name=value`` split on ``;``;
    unknown tags are ignored.  Without a valid ``p`` the record is discarded
    (§6.6.3 would keep one with a valid ``rua`` as ``p=none``: no different here).
    """
    try:
        decoded = text.decode("ascii")
    except UnicodeDecodeError:
        return None
    tags: dict[str, str] = {}
    for index, part in enumerate(decoded.split(";")):
        name, sep, value = part.partition("=")
        name, value = name.strip().lower(), value.strip()
        if index == 0 and (name != "v" or value != "DMARC1"):
            return None
        if sep and name not in tags:
            tags[name] = value.lower()
    p = tags.get("p", "")
    if p not in POLICIES:
        return None
    sp = tags.get("sp", p)
    pct = tags.get("pct", "100")
    return Policy(p=p, sp=sp if sp in POLICIES else p,
                  adkim="s" if tags.get("adkim") == "s" else "r",
                  aspf="s" if tags.get("aspf") == "s" else "r",
                  pct=min(int(pct), 100) if pct.isdigit() else 100)


def _record_at(domain: str, lookup: TxtLookup) -> Policy | None:
    """The one DMARC record at ``_dmarc.<domain>`` (none when two claim to be: §6.6.3)."""
    records = [r for r in lookup(f"_dmarc.{domain}") or ()
               if r.partition(b";")[0].replace(b" ", b"").replace(b"\t", b"") == b"v=DMARC1"]
    return parse_record(records[0]) if len(records) == 1 else None


def discover(from_domain: str, lookup: TxtLookup) -> tuple[Policy, str] | None:
    """The policy for ``from_domain`` and the policy to apply (§6.6.3): its own record,
    else its organizational domain's (whose ``sp`` then applies); None without either.

    :raises DnsTemporary: DNS did not answer.
    """
    policy = _record_at(from_domain, lookup)
    if policy is not None:
        return policy, policy.p
    org = organizational_domain(from_domain)
    if org == from_domain:
        return None
    policy = _record_at(org, lookup)
    return (policy, policy.sp) if policy is not None else None


def evaluate(from_domains: Iterable[str], spf_domain: str | None, dkim_domains: Iterable[str],
             lookup: TxtLookup, *, sample: Callable[[], float] = random.random) -> Verdict:
    """DMARC for a message whose From names ``from_domains``.

    :param spf_domain: the domain SPF passed for (MAIL FROM's, else HELO's), None unless pass.
    :param dkim_domains: the ``d=`` of every signature that passed.
    :param sample: a number in [0, 1) for the ``pct`` sampling (tests fix it).

    A message with several From domains gets the verdict of the strictest
    failing one (§6.6.1); one with none that can be read is a permerror, and one
    with more than :data:`MAX_FROM_DOMAINS` a permerror filed in Junk.
    """
    domains = sorted({d.lower().rstrip(".") for d in from_domains if d})
    if not domains:
        return Verdict("permerror")
    if len(domains) > MAX_FROM_DOMAINS:
        return Verdict("permerror", disposition="quarantine")
    passed = list(dkim_domains)
    verdicts = []
    for domain in domains:
        try:
            found = discover(domain, lookup)
        except DnsTemporary:
            verdicts.append(Verdict("temperror", domain))
            continue
        if found is None:
            verdicts.append(Verdict("none", domain))
            continue
        policy, applies = found
        if (spf_domain and aligned(spf_domain, domain, policy.aspf)) or \
                any(aligned(d, domain, policy.adkim) for d in passed):
            verdicts.append(Verdict("pass", domain, applies, "none"))
            continue
        disposition = applies if sample() * 100 < policy.pct else _MILDER[applies]
        verdicts.append(Verdict("fail", domain, applies, disposition))
    order = ("fail", "temperror", "none", "pass")
    strictness = {"reject": 0, "quarantine": 1, "none": 2}
    return min(verdicts, key=lambda v: (order.index(v.result), strictness[v.disposition]))
