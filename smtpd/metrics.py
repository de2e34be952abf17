"""The SMTP server's metrics: sessions, messages received, the outbound queue and its
deliveries.  Labels are fixed words; never an address, a user or a domain."""

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
