"""smtpd -- the cluster's SMTP process (layer: app, beside portal and balancer).

Inbound mail for the cluster's domains is delivered straight into mailboxes
through :mod:`shards.model.mailbox`; submission and outbound delivery come
later.  Run it with ``raftcloud-smtpd --config CLUSTER.toml``
(:func:`smtpd.server.main`).
"""

from .handler import InboundConfig as InboundConfig
from .handler import InboundHandler as InboundHandler
