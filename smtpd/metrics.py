"""The SMTP server's metrics: sessions, messages received and how they authenticated,
the outbound queue and its deliveries.  Labels are fixed words; never an address, a
user or a domain."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SESSIONS = Counter("smtpd_sessions", "SMTP connections, by what became of them at once "
                   "(accepted, or refused at the connection cap).", ["admission"])
RECEIVED = Counter("smtpd_received_messages", "Messages whose DATA was answered by the "
                   "inbound listener, by outcome (stored, refused).", ["outcome"])
QUEUE_DUE = Gauge("smtpd_outbound_queue_due", "Outbound queue entries due for delivery at "
                  "the worker's last look (smtpd/outbound.py).")
DELIVERIES = Counter("smtpd_outbound_recipients", "Outbound recipients attempted, by outcome "
                     "(delivered, deferred, bounced).", ["outcome"])
AUTH_RESULTS = Counter("smtpd_auth_results", "Results of the checks of inbound mail from "
                       "strangers, by method (spf, dkim, dmarc) and result (pass, fail, none, "
                       "temperror, ...); one dkim result per signature.", ["method", "result"])
JUNKED = Counter("smtpd_junk_messages", "Inbound messages filed in Junk: they failed DMARC for "
                 "a domain whose policy is quarantine or reject.")
SIGNED = Counter("smtpd_dkim_signed_messages", "Outbound delivery attempts, by whether the "
                 "message was DKIM-signed (signed, unsigned: no key for its From domain).",
                 ["outcome"])
