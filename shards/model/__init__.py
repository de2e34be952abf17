"""shards.model -- the apps' data model on top of the store (layer: shards).

Each module owns one family of rows and is the only code that knows their
layout: :mod:`.registry` (the node registry), :mod:`.mailbox` (per-user mail),
:mod:`.accounts` (users).  Portal and smtpd call these functions with a
:class:`shards.Client`; they never build row or column names themselves.
Import the modules themselves (``from shards.model import mailbox``); this
package imports nothing so that loading one model does not load them all.
"""
