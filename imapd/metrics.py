"""The IMAP server's metrics: sessions, commands, logins, appended bytes.

Labels are fixed words or command names from the parser's fixed table; never an
address, a user or a mailbox name.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from raftkv.metrics import LATENCY_BUCKETS

SESSIONS = Counter("imapd_sessions", "IMAP connections, by what became of them at once "
                   "(accepted, or refused at a connection cap).", ["admission"])
OPEN = Gauge("imapd_sessions_open", "IMAP connections open now.")
COMMANDS = Counter("imapd_commands", "IMAP commands answered, by name and by answer "
                   "(ok, no, bad).", ["command", "result"])
COMMAND_SECONDS = Histogram("imapd_command_seconds", "Time from a parsed command to its "
                            "answer, IDLE excluded.", buckets=LATENCY_BUCKETS)
LOGIN_FAILURES = Counter("imapd_login_failures", "Refused LOGIN and AUTHENTICATE "
                         "attempts, by reason (wrong, limited, app_password_needed, "
                         "unavailable, read_only).", ["reason"])
APPEND_BYTES = Counter("imapd_append_bytes", "Bytes of messages stored by APPEND.")
CLOSED = Counter("imapd_closed_by_server", "Connections the server closed itself, by "
                 "reason (timeout, too_big, evicted, login_failures).", ["reason"])
