"""The outbound worker: deliver queued mail to remote servers, retry, bounce.

Any number of smtpd instances run one each; the queue (:mod:`shards.model.outbound`)
hands an entry to one worker at a time through a lease.  For each recipient
domain the worker asks DNS for MX records in preference order, falls back to
the domain's own address records when there is no MX (RFC 5321 §5.1), and
tries each exchanger until one answers.  A 4xx answer, an unreachable server
or a DNS timeout means "later", with exponential backoff; a 5xx answer, a
domain that does not exist, a null MX (RFC 7505) or too many attempts means
a bounce: a delivery status notification, from the null sender, in the
sender's inbox.  Every message leaves DKIM-signed for its From domain
(:mod:`smtpd.dkimsign`); the keys are read before the worker claims anything.

The worker connects only to public addresses.  An exchanger on a loopback,
private, link-local, reserved, multicast or unspecified address would let
anyone who can send mail make us talk SMTP to our own hosts or network (an
SSRF to port 25), so such addresses are skipped like unreachable ones, and a
domain with no other exchanger bounces, saying why.  The cluster file's
``[smtpd] allow_private_exchangers = true`` lifts this, for a cluster whose
exchangers really are private (and for tests, whose "remote" servers are on
127.0.0.25 and up).
"""

from __future__ import annotations

import ipaddress
import logging
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING

import dns.exception
import dns.resolver

from raftkv.background import BackgroundLoop
from raftkv.errors import RaftKVError, Refused, UnavailableError
from shards.model import mailbox, outbound

from .authdns import make_resolver
from .metrics import DELIVERIES, QUEUE_DUE, SIGNED

if TYPE_CHECKING:
    from raftkv.interface import KeyValueStore

    from .dkimsign import Signer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboundConfig:
    """How the worker reaches the world (tests point every address at loopback)."""

    hostname: str                      # our EHLO name
    domains: tuple[str, ...]           # ours: their senders get bounces in their inbox
    resolver: str = ""                 # "host:port" of the DNS server; "" = the system's
    remote_port: int = 25              # the port remote exchangers listen on
    poll_interval: float = 5.0         # seconds between looks at the queue
    lease: float = 600.0               # how long one delivery attempt may hold an entry
    retry_base: float = 60.0           # first backoff; doubles per attempt
    retry_max: float = 3600.0
    max_attempts: int = 12             # then bounce (about a day with the defaults)
    greeting_timeout: float = 300.0    # RFC 5321 §4.5.3.2.1: 5 minutes for the greeting
    command_timeout: float = 300.0
    allow_private: bool = False        # exchangers on loopback/private addresses (tests)


def public_address(address: str) -> bool:
    """Whether ``address`` is one the worker may connect to without allow_private."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside (::ffff:127.0.0.1, 6to4 2002:7f00:1::, Teredo's client)
        # is where the packets end up: it must be public itself.
        teredo = ip.teredo[1] if ip.teredo is not None else None
        embedded = ip.ipv4_mapped or ip.sixtofour or teredo
        if embedded is not None and not public_address(str(embedded)):
            return False
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved
                or ip.is_multicast or ip.is_unspecified or not ip.is_global)


class TemporaryFailure(UnavailableError):
    """The recipients' exchangers cannot take the message now: try again later."""


class PermanentFailure(Refused):
    """The recipients' domain or exchanger refuses the message: give up on them and bounce."""


def exchangers(resolver: dns.resolver.Resolver, domain: str, *,
               allow_private: bool = False) -> list[str]:
    """Addresses to try for ``domain``, best first (IPv4 before IPv6 per exchanger).

    Without ``allow_private``, addresses that are not public are left out.

    :raises PermanentFailure: no such domain, a null MX, or only non-public exchangers.
    :raises TemporaryFailure: DNS did not answer.
    """
    try:
        try:
            answer = resolver.resolve(domain, "MX")
            records = sorted(answer, key=lambda r: (r.preference, str(r.exchange)))
            hosts = [str(r.exchange).rstrip(".") for r in records]
            if hosts == [""]:
                raise PermanentFailure(f"{domain} accepts no mail (null MX)")
        except dns.resolver.NoAnswer:
            hosts = [domain]  # RFC 5321 §5.1: the domain itself is the implicit MX
        addresses: list[str] = []
        for host in hosts:
            try:
                addresses += [str(r) for r in resolver.resolve(host, "A")]
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
                pass  # one broken MX record does not sink the others
            try:
                addresses += [str(r) for r in resolver.resolve(host, "AAAA")]
            except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN, dns.exception.Timeout,
                    dns.resolver.NoNameservers):
                pass  # IPv6 is a bonus: its failure must not hide the IPv4 addresses
        if not addresses:
            raise PermanentFailure(f"no address for any exchanger of {domain}")
        if allow_private:
            return addresses
        public = [a for a in addresses if public_address(a)]
        refused = [a for a in addresses if a not in public]
        if refused:
            log.warning("%s: not connecting to non-public exchanger address(es) %s",
                        domain, ", ".join(refused))
        if not public:
            raise PermanentFailure(
                f"the mail exchangers of {domain} are on non-public addresses "
                f"({', '.join(refused)}); this server does not connect to those")
        return public
    except dns.resolver.NXDOMAIN:
        raise PermanentFailure(f"domain {domain} does not exist") from None
    except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
        raise TemporaryFailure(f"DNS lookup for {domain} failed: {exc}") from None
    except (dns.exception.DNSException, UnicodeError) as exc:  # "a..b", a 64-byte label
        raise PermanentFailure(f"{domain!r} is not a valid domain: {exc}") from None


def send_to_domain(config: OutboundConfig, addresses: list[str], sender: str,
                   recipients: list[str], raw: bytes) -> dict[str, tuple[int, str]]:
    """Hand ``raw`` to the first exchanger that takes it; the refused recipients.

    :raises TemporaryFailure: no exchanger answered, or all of them said 4xx.
    :raises PermanentFailure: an exchanger refused the message itself (5xx).
    """
    last = "no exchanger tried"
    for address in addresses:
        try:
            with smtplib.SMTP(timeout=config.greeting_timeout,
                              local_hostname=config.hostname) as smtp:
                smtp.connect(address, config.remote_port)
                assert smtp.sock is not None  # connect() made it
                smtp.sock.settimeout(config.command_timeout)
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    # Opportunistic TLS between MTAs (RFC 3207): encrypt, do not authenticate.
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    smtp.starttls(context=context)
                    smtp.ehlo()
                return _texts(smtp.sendmail(sender, recipients, raw))
        except smtplib.SMTPRecipientsRefused as exc:
            return _texts(exc.recipients)
        except (smtplib.SMTPResponseException, smtplib.SMTPSenderRefused) as exc:
            text = f"{exc.smtp_code} {exc.smtp_error!r}"
            if 500 <= exc.smtp_code < 600:
                raise PermanentFailure(f"{address} said {text}") from None
            last = f"{address} said {text}"
        except (OSError, smtplib.SMTPException) as exc:
            last = f"{address}: {exc!r}"
        log.info("exchanger %s failed: %s", address, last)
    raise TemporaryFailure(last)


def _texts(refused: dict[str, tuple[int, bytes]]) -> dict[str, tuple[int, str]]:
    return {rcpt: (code, text.decode("utf-8", "replace")) for rcpt, (code, text) in refused.items()}


def bounce_message(config: OutboundConfig, entry: outbound.Entry, failed: dict[str, str],
                   original: bytes) -> bytes:
    """A delivery status notification for ``failed`` recipients (RFC 3464, simplified)."""
    message = EmailMessage()
    message["From"] = f"Mail Delivery System <MAILER-DAEMON@{config.hostname}>"
    message["To"] = entry.sender
    message["Subject"] = "Undelivered Mail Returned to Sender"
    message["Date"] = formatdate(localtime=True)
    # Fixed per attempt: a worker that dies after bouncing bounces again, into the same copy.
    message["Message-ID"] = f"<bounce.{entry.id}.{entry.attempts}@{config.hostname}>"
    message["Auto-Submitted"] = "auto-replied"
    subject = mailbox.parse_headers(original).subject
    lines = [f"Your message \"{subject}\" could not be delivered to "
             f"{len(failed)} recipient(s):", ""]
    lines += [f"  <{rcpt}>: {reason}" for rcpt, reason in failed.items()]
    message.set_content("\n".join(lines) + "\n")
    headers = original.partition(b"\r\n\r\n")[0][:64 * 1024]
    message.add_attachment(headers.decode("utf-8", "replace"), subtype="rfc822-headers",
                           filename="original-headers.txt")
    return message.as_bytes()


class OutboundWorker(BackgroundLoop):
    """A thread that works the queue until stopped."""

    def __init__(self, config: OutboundConfig, client: KeyValueStore, *, name: str,
                 signer: Signer | None = None) -> None:
        self.config = config
        self._client = client
        self._owner = f"{name}@{socket.gethostname()}"
        self._resolver = make_resolver(config.resolver, lifetime=10.0)
        self._signer = signer  # None: mail leaves unsigned (tests of the queue alone)
        super().__init__("smtpd-outbound", config.poll_interval)

    def step(self) -> None:
        try:
            self.run_once()
        except RaftKVError as exc:
            log.warning("outbound queue unavailable: %s", exc)

    def run_once(self) -> int:
        """Try every due entry once; how many were handled."""
        handled = 0
        due = outbound.due(self._client)
        QUEUE_DUE.set(len(due))
        if due and self._signer is not None:
            self._signer.load_keys()  # before any claim: without keys, nothing is held
        for entry in due:
            if self.stopping:
                break
            mine = outbound.claim(self._client, entry, self._owner, self.config.lease)
            if mine is not None:
                self._attempt(mine)
                handled += 1
        return handled

    def _attempt(self, entry: outbound.Entry) -> None:
        raw = outbound.raw_message(self._client, entry)
        if raw is None:
            log.error("queue entry %s lost its message; dropping it", entry.id)
            outbound.finish(self._client, entry)
            return
        signed = self._signer.sign(raw) if self._signer is not None else None
        SIGNED.labels("signed" if signed is not None else "unsigned").inc()
        original, raw = raw, signed if signed is not None else raw
        later: dict[str, str] = {}
        failed: dict[str, str] = {}
        by_domain: dict[str, list[str]] = {}
        for rcpt in entry.recipients:
            by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
        for domain, rcpts in by_domain.items():
            # Renew the lease before each domain: one attempt may outlast a lease
            # (slow greetings), and a second worker must not deliver it again.
            renewed = outbound.claim(self._client, entry, self._owner, self.config.lease)
            if renewed is None:
                log.warning("entry %s: lost its lease mid-attempt; leaving it", entry.id)
                return
            entry = renewed
            try:
                addresses = exchangers(self._resolver, domain,
                                       allow_private=self.config.allow_private)
                refused = send_to_domain(self.config, addresses, entry.sender, rcpts, raw)
            except TemporaryFailure as exc:
                later.update(dict.fromkeys(rcpts, str(exc)))
                continue
            except PermanentFailure as exc:
                failed.update(dict.fromkeys(rcpts, str(exc)))
                continue
            for rcpt, (code, text) in refused.items():
                (failed if 500 <= code < 600 else later)[rcpt] = f"{code} {text}"
        if later and entry.attempts + 1 >= self.config.max_attempts:
            failed.update({r: f"gave up after {entry.attempts + 1} attempts: {why}"
                           for r, why in later.items()})
            later = {}
        delivered = len(entry.recipients) - len(later) - len(failed)
        for outcome, count in (("delivered", delivered), ("deferred", len(later)),
                               ("bounced", len(failed))):
            if count > 0:
                DELIVERIES.labels(outcome).inc(count)
        if failed:
            outbound.note_bounce(self._client, entry, failed)  # for the admin console's list
            self._bounce(entry, failed, original)
        if later:
            delay = min(self.config.retry_base * 2 ** entry.attempts, self.config.retry_max)
            outbound.postpone(self._client, entry, list(later), "; ".join(later.values()), delay)
            log.info("entry %s: %d recipient(s) deferred %.0fs", entry.id, len(later), delay)
        else:
            outbound.finish(self._client, entry)
            log.info("entry %s done: %d bounced", entry.id, len(failed))

    def _bounce(self, entry: outbound.Entry, failed: dict[str, str], raw: bytes) -> None:
        name, _, domain = entry.sender.rpartition("@")
        if not entry.sender or domain.lower() not in self.config.domains:
            log.warning("entry %s: %d recipient(s) failed, nobody to tell", entry.id, len(failed))
            return  # never bounce a bounce (null sender), nor to a stranger
        mailbox.deliver(self._client, name.lower(), bounce_message(self.config, entry, failed, raw))

