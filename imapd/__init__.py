"""imapd -- the cluster's IMAP server (layer: app, beside portal and smtpd).

pymap (a well-kept asyncio IMAP library) speaks the protocol; this package is
its backend on the shared mail model (:mod:`shards.model.mail`): folders,
UIDs, flags and the change log, in the same rows the webmail and smtpd use.
It adds what pymap lacks (NAMESPACE, SPECIAL-USE, ENABLE, bounded reads) from
outside pymap's code.  Run it with ``raftcloud-imapd --config CLUSTER.toml``
(:func:`imapd.server.main`); docs/imap.md describes it.
"""

from .settings import ImapdSettings as ImapdSettings

# imapd.server is not imported here: `python -m imapd.server` would find it
# imported already and warn (runpy).
