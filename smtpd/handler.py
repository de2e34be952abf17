"""The inbound SMTP handler: accept mail for local accounts, refuse everything else.

An aiosmtpd handler object: one ``handle_<VERB>`` coroutine per protocol event,
each returning the reply line [aiosmtpd ``handlers.py``].  Recipients are
checked at RCPT time, so a sending MTA learns about an unknown user from its
own 550 (and bounces) instead of us having to generate a bounce later.

Store calls block, so they run in a thread pool; the event loop only ever
waits on them.  Every failure of a command becomes a reply through
:func:`smtpd.replies.smtp_reply`, the one table from our errors to SMTP codes.

**Our domains as senders.**  Mail from our own users leaves through the
submission port, with AUTH.  So mail arriving here whose envelope sender or
From header is in one of our domains is a forgery -- unless it comes from one
of the cluster's own hosts, whose local tools (cron, monitoring, scripts)
deliver through this port without logging in.  Such mail is refused with a
reply naming the submission port.  "Our own hosts" are the addresses of the
cluster file's ``[smtpd] trusted_relays`` (addresses or networks) when given;
otherwise 127.0.0.1, ::1 and the addresses of every host the cluster file
names (replicas, frontends, smtpd, balancer, control: every ``host:port``
value of its tables but our ``resolver``), resolved at start.
Other loopback addresses (127.0.0.2 ...) are not trusted by default, so a test
on one machine can play a stranger by binding its client socket to one.

**Mail authentication.**  Mail from a stranger (not one of our hosts, not
logged in) gets SPF, DKIM and DMARC evaluated (:mod:`smtpd.authcheck`) in a
thread pool of its own, under a deadline, and one ``Authentication-Results``
header with the verdict; headers of that name that claim our hostname are a
sender's forgery and are removed first.  A message that fails DMARC for a
domain whose policy is quarantine or reject is stored in Junk.

**Quota.**  A recipient whose mailbox is full (``[mail] mailbox_quota``) is
refused with 552 at RCPT when the client announced the size (``SIZE=``) or
the mailbox is already full, else at DATA.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import functools
import ipaddress
import logging
import re
import secrets
import socket
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import TYPE_CHECKING, Any, TypeVar

from raftkv.cluster import split_addr
from raftkv.errors import ConfigError
from shards.model import accounts, mailbox
from shards.model.errors import MailboxFull
from shards.model.sendlimit import SendLimits
from shards.readonly import observing
from shards.site import Site

from .authcheck import (
    AuthResults,
    AuthSettings,
    authenticate,
    results_header,
    unavailable,
    without_our_results,
)
from .metrics import AUTH_RESULTS, JUNKED, RECEIVED
from .replies import (
    BAD_ADDRESS,
    BAD_SENDER,
    HEADERS_TOO_BIG,
    NO_SUCH_USER,
    RELAY_DENIED,
    TOO_BIG,
    TOO_MANY_RECIPIENTS,
    Rejected,
    smtp_reply,
)

if TYPE_CHECKING:
    from aiosmtpd.smtp import SMTP, Envelope, Session

    from raftkv.cluster import ClusterConfig
    from raftkv.interface import KeyValueStore

    from .settings import SmtpdSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class InboundConfig:
    """What the inbound handler accepts."""

    domains: tuple[str, ...]              # mail domains we are the final destination for
    hostname: str = "localhost"           # our name in the greeting and Received headers
    max_message_size: int = 25 * 1024 * 1024  # bytes of DATA; above it, 552
    max_recipients: int = 100             # RFC 5321 §4.5.3.1.8: accept at least 100
    # Clients that may send as our domains without AUTH (see the module docstring).
    trusted_relays: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.1/32"),
                                           ipaddress.ip_network("::1/128"))
    submission_port: int = 2587           # named in the reply to a forged sender
    mailbox_quota: int = mailbox.DEFAULT_QUOTA
    send_limits: SendLimits = field(default_factory=SendLimits)

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig, settings: SmtpdSettings,
                     hostname: str) -> InboundConfig:
        mail_table = cluster.table("mail")
        config = cls(domains=tuple(d.lower().rstrip(".") for d in Site.of(cluster).domains),
                     hostname=hostname,
                     trusted_relays=trusted_relays(cluster, settings),
                     submission_port=split_addr(settings.submission)[1],
                     mailbox_quota=mailbox.quota_setting(mail_table),
                     send_limits=SendLimits.from_table(mail_table))
        config.validate()
        return config

    def trusted(self, peer: Any) -> bool:
        """Whether the client at ``peer`` (aiosmtpd's ``session.peer``) is one of our hosts."""
        host = peer[0] if isinstance(peer, tuple) and peer else str(peer)
        try:
            ip = ipaddress.ip_address(str(host).partition("%")[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.trusted_relays)

    def validate(self) -> None:
        if not self.domains:
            raise ConfigError("smtpd needs at least one mail domain (cluster.domains)")
        if any(d != d.lower() for d in self.domains):
            raise ConfigError("mail domains must be given in lowercase")
        if self.max_message_size < 1 or self.max_recipients < 1:
            raise ConfigError("smtpd size and recipient limits must be positive")


def trusted_relays(cluster: ClusterConfig, settings: SmtpdSettings) -> tuple[Network, ...]:
    """``[smtpd] trusted_relays``, or loopback plus every host the cluster file names."""
    if settings.trusted_relays is not None:
        return settings.trusted_relays
    hosts = {"127.0.0.1", "::1"}
    for addr in _cluster_addresses(cluster, settings):
        try:
            hosts.add(split_addr(addr)[0])
        except ConfigError:
            continue
    networks: set[Network] = set()
    for host in hosts:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError):
            log.warning("cluster host %r does not resolve; not trusted as a relay", host)
            continue
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).partition("%")[0])
            if not ip.is_unspecified:  # 0.0.0.0 is a bind address, not a host
                networks.add(ipaddress.ip_network(ip))
    return tuple(sorted(networks, key=str))


# The other processes' listening addresses, by table and key.  Named one by one:
# a host is trusted to relay as our domains, so a new table that names some
# outside service (a resolver, a webhook) must never become trusted by accident.
_PEER_LISTENERS = (("frontend", "listen"), ("balancer", "listen"))


def _cluster_addresses(cluster: ClusterConfig, settings: SmtpdSettings) -> list[str]:
    """The addresses of the cloud's own processes: the replicas', ours (the listeners,
    not ``resolver``), the frontends', the balancer's and the host supervisors'."""
    addrs = [a for r in cluster.replicas() for a in (r.raft, r.client)]
    addrs += [settings.inbound, settings.submission]
    for table, key in _PEER_LISTENERS:
        addrs += [v for entry in cluster.entries(table) if isinstance(v := entry.get(key), str)]
    addrs += [v for v in cluster.table("control").values() if isinstance(v, str)]
    return addrs


def local_user(address: str, domains: tuple[str, ...]) -> str:
    """The account name that a recipient address delivers to.

    Pure syntax and domain checks; whether the account exists is asked of the
    store separately.  Names are lowercase, so the local part is matched
    case-insensitively.

    :raises Rejected: with 550 5.7.1 for a domain that is not ours (relaying),
        550 5.1.1 for a local part that cannot be an account name.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        # RFC 5321 §4.5.1: "postmaster" without a domain must be accepted.
        if address.lower() != "postmaster" or not domains:
            raise Rejected(BAD_ADDRESS)
        local, domain = address, domains[0]
    if not local or not domain:
        raise Rejected(BAD_ADDRESS)
    if domain.lower().rstrip(".") not in domains:
        raise Rejected(RELAY_DENIED)
    user = local.lower()
    if not accounts.valid_username(user):
        raise Rejected(NO_SUCH_USER)
    return user


def received_header(session: Session, config: InboundConfig, recipient: str) -> bytes:
    """The trace headers we prepend as the final delivery MTA (RFC 5321 §4.4)."""
    peer_ip = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
    helo = _printable(session.host_name or "unknown")
    protocol = "ESMTP" if session.extended_smtp else "SMTP"
    return (
        f"Received: from {helo} ([{peer_ip}])\r\n"
        f"\tby {config.hostname} (raftcloud-smtpd) with {protocol} id {secrets.token_hex(8)}\r\n"
        f"\tfor <{_printable(recipient)}>; {email.utils.formatdate(localtime=True)}\r\n"
    ).encode("utf-8", "replace")


# Headers that name a message's author, as the webmail and mailbox listing show it.
# Reply-To is not among them: a reply goes to the address written there, so naming
# one of our users does not impersonate anyone, and web forms and mailing lists
# set it to our users' addresses legitimately.
AUTHOR_HEADERS = ("From", "Sender")
# The header section is parsed whole (what the mailbox and webmail read is what we
# check), so it has a bound of its own, far above real mail (Postfix: 100 KiB) and
# above a one-MiB header line, which is stored and shown cut (tests/hostile/test_mime.py).
MAX_HEADER_SECTION = 4 * 1024 * 1024
_DOMAIN_AFTER_AT = re.compile(r"@\s*([a-z0-9](?:[a-z0-9.-]*[a-z0-9])?)", re.IGNORECASE)


def header_section(content: bytes) -> bytes:
    """The header section of ``content`` (all of it when there is no blank line)."""
    ends = [i for sep in (b"\r\n\r\n", b"\n\n") if (i := content.find(sep)) >= 0]
    if content.startswith((b"\r\n", b"\n")):
        return b""
    return content[:min(ends)] if ends else content


def claimed_domains(head: bytes) -> set[str]:
    """Every domain the author headers of ``head`` name or show, lowercase.

    Parsed with ``email.policy.default``, as :func:`shards.model.mailbox.parse_headers`
    and the webmail do, and read three ways so that no spelling slips through: the
    parsed addresses, the decoded text (RFC 2047 words, display names), and the
    raw text (an address the parser drops from a malformed header).  Never raises.
    """
    message = BytesParser(policy=email.policy.default).parsebytes(head + b"\r\n\r\n",
                                                                headersonly=True)
    texts: list[str] = []
    wanted = {name.lower() for name in AUTHOR_HEADERS}
    for name, raw in message.raw_items():
        if name.lower() not in wanted:
            continue
        texts.append(str(raw))
        try:
            value = message.policy.header_fetch_parse(name, raw)
            texts.append(str(value))
            texts += [f"{a.display_name} @{a.domain}" for a in getattr(value, "addresses", ())]
        except Exception:  # noqa: BLE001 - the email package raises assorted errors on bad input
            continue
    return {match.group(1).lower() for text in texts for match in _DOMAIN_AFTER_AT.finditer(text)}


def _printable(text: str, limit: int = 255) -> str:
    # Client-supplied names go into a header: no control characters, no endless lines.
    return "".join(ch for ch in text if ch.isprintable())[:limit]


def forged_sender_reply(domain: str, config: InboundConfig) -> str:
    return (f"550 5.7.1 Mail from {domain} must be sent through submission on port "
            f"{config.submission_port} with AUTH")


def _our_domain(address: str, domains: tuple[str, ...]) -> str | None:
    """The domain of ``address`` if it is one of ours."""
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    return domain if "@" in address and domain in domains else None


def size_option(options: list[str]) -> int:
    """The SIZE= a client announced in MAIL FROM (RFC 1870), 0 when none."""
    for option in options:
        name, _, value = option.partition("=")
        if name.upper() == "SIZE" and value.isdigit():
            return int(value)
    return 0


def deliver_filed(client: KeyValueStore, user: str, raw: bytes, *, junk: bool,
                  quota: int) -> str:
    """Store one copy for ``user``: in Junk when its authentication says so, else the Inbox.
    The one place inbound mail names a folder."""
    return mailbox.deliver(client, user, raw, folder="junk" if junk else "inbox", quota=quota)


def _observed[R](call: Callable[[], R]) -> R:
    """``call`` as one request of :mod:`shards.readonly`: while the group it reads has lost
    its majority it reads stale, and its writes are refused at once (a 451, not a 10 s wait)."""
    with observing():
        return call()


class InboundHandler:
    """aiosmtpd handler for port 2525: local delivery only, no relaying.

    :param executor: runs the blocking store calls; None means the loop's default.
    :param auth: how mail from strangers is authenticated; None: it is not.
    :param auth_executor: runs those checks, which wait on DNS (apart from the store
        calls, so that slow DNS never holds up a delivery); None: the loop's default.
    """

    def __init__(self, config: InboundConfig, client: KeyValueStore, *,
                 executor: Executor | None = None, auth: AuthSettings | None = None,
                 auth_executor: Executor | None = None) -> None:
        self.config = config
        self._client = client
        self._executor = executor
        self._auth = auth
        self._auth_executor = auth_executor

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, _observed, functools.partial(fn, *args))

    async def handle_exception(self, error: Exception) -> str:
        """A bug of ours: log it, and tell the client only to try again later."""
        log.error("internal error in an SMTP session", exc_info=error)
        return "451 4.3.0 Internal error, try again later"

    def _forged(self, session: Session, address: str) -> str | None:
        """The refusal for a sender address in our domains from a stranger, else None."""
        domain = _our_domain(address, self.config.domains)
        if domain is None or session.authenticated or self.config.trusted(session.peer):
            return None
        log.info("sender %r from %s refused: our domain, not a trusted host",
                 address, session.peer)
        return forged_sender_reply(domain, self.config)

    async def _forged_headers(self, session: Session, content: bytes) -> str | None:
        """The refusal for author headers that claim our domains, or a header section too big."""
        head = header_section(content)
        if len(head) > MAX_HEADER_SECTION:
            log.info("message from %s refused: header section of %d bytes", session.peer, len(head))
            return HEADERS_TOO_BIG
        if session.authenticated or self.config.trusted(session.peer):
            return None
        loop = asyncio.get_running_loop()  # parsing a MiB of headers takes a while: not here
        claimed = await loop.run_in_executor(self._executor, claimed_domains, head)
        ours = sorted(claimed & set(self.config.domains))
        if not ours:
            return None
        log.info("message from %s refused: its author headers claim %s", session.peer, ours[0])
        return forged_sender_reply(ours[0], self.config)

    async def _authenticate(self, session: Session, envelope: Envelope,
                            content: bytes) -> AuthResults | None:
        """SPF, DKIM and DMARC of a stranger's message; None for our own hosts and users."""
        settings = self._auth
        if settings is None or session.authenticated or self.config.trusted(session.peer):
            return None
        peer = session.peer
        ip = str(peer[0] if isinstance(peer, tuple) and peer else peer).partition("%")[0]
        loop = asyncio.get_running_loop()
        check = loop.run_in_executor(self._auth_executor, authenticate, content, ip,
                                     session.host_name or "", envelope.mail_from or "", settings)
        try:
            results = await asyncio.wait_for(check, settings.deadline)
        except TimeoutError:
            log.warning("authentication of a message from %s took over %.0f s", peer,
                        settings.deadline)
            results = unavailable("timed out")
        for line in results.lines():
            AUTH_RESULTS.labels(line.method, line.result).inc()
        return results

    async def handle_MAIL(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Session, envelope: Envelope,
            address: str, mail_options: list[str]) -> str:
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in address):
            return BAD_SENDER  # a NUL or line break would end up in Return-Path
        refusal = self._forged(session, address)
        if refusal is not None:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def _check_room(self, user: str, size: int) -> None:
        """MailboxFull (552) when ``size`` more bytes do not fit in ``user``'s mailbox."""
        # size 0 (not announced): refuse only a mailbox that is full already.
        if not await self._run(mailbox.has_room, self._client, user, max(size, 1),
                               self.config.mailbox_quota):
            raise MailboxFull(user)

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Session, envelope: Envelope,
            address: str, rcpt_options: list[str]) -> str:
        if len(envelope.rcpt_tos) >= self.config.max_recipients:
            return TOO_MANY_RECIPIENTS
        try:
            user = local_user(address, self.config.domains)
            if not await self._run(accounts.user_exists, self._client, user):
                raise Rejected(NO_SUCH_USER)
            await self._check_room(user, size_option(envelope.mail_options))
        except Exception as exc:  # noqa: BLE001 - every failure is a reply, never a dropped session
            reply = smtp_reply(exc)
            log.info("RCPT %r from %s refused: %s", address, session.peer, reply)
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(  # noqa: N802 - aiosmtpd's hook name
            self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        if len(content) > self.config.max_message_size:
            return TOO_BIG  # aiosmtpd enforces its own limit too; this guards a misconfiguration
        refusal = await self._forged_headers(session, content)
        if refusal is not None:
            return refusal
        # Several addresses may name one account (Bob@ and bob@): deliver once per account.
        recipients: dict[str, str] = {}
        for address in envelope.rcpt_tos:
            recipients.setdefault(local_user(address, self.config.domains), address)
        return_path = f"Return-Path: <{_printable(envelope.mail_from or '')}>\r\n".encode()
        results = await self._authenticate(session, envelope, content)
        junk = results is not None and results.junk
        if results is not None:
            return_path += results_header(self.config.hostname, results)
            content = without_our_results(content, self.config.hostname)
        ids = []
        deliver = functools.partial(deliver_filed, junk=junk, quota=self.config.mailbox_quota)
        try:
            for user in recipients:  # all or none: a full mailbox refuses the whole message
                await self._check_room(user, len(content))
            for user, address in recipients.items():
                raw = return_path + received_header(session, self.config, address) + content
                ids.append(await self._run(deliver, self._client, user, raw))
        except Exception as exc:  # noqa: BLE001 - every failure is a reply, never a dropped session
            # Copies already stored stay; the sender's retry is deduplicated by Message-ID.
            reply = smtp_reply(exc)
            log.info("DATA from %s for %d recipient(s) refused after %d: %s",
                     session.peer, len(recipients), len(ids), reply)
            RECEIVED.labels("refused").inc()
            return reply
        RECEIVED.labels("stored").inc()
        if junk:
            JUNKED.inc()
        log.info("delivered %d bytes from <%s> to %s as %s%s", len(content),
                 envelope.mail_from, ", ".join(recipients), ", ".join(ids),
                 " (Junk: DMARC)" if junk else "")
        return "250 2.0.0 OK: delivered"
