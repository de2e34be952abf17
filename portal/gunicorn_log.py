"""gunicorn's own logs (its errors, the access log) as every raftcloud process logs.

gunicorn writes ``gunicorn.error`` and ``gunicorn.access`` through handlers of its
own, in its own formats; this logger class drops them and lets both loggers
propagate to the root handler that ``portal/gunicorn_conf.py`` installs with
:func:`raftkv.logs.setup_logging`: one line per event, with the time, the level
and "portal <frontend>", JSON when asked (docs/operations.md, "Logs").
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

# The access line: no user (%(u)s comes from an Authorization header) and no
# referrer (a page's URL); the request line and its query string stay, and
# carry no secret: tokens travel in forms and cookies, never in URLs.
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'


class PortalLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in list(log.handlers):
                log.removeHandler(handler)
            log.propagate = True
