"""balancer -- the HTTP entry point that spreads new clients over the frontends (layer: app).

It finds frontends in the node registry (:mod:`shards.model.registry`),
health-checks them and answers each request with a 307 to a live,
least-loaded one (:mod:`.choice` holds that policy as pure functions).  Run it
with ``raftcloud-balancer --config CLUSTER.toml`` (:func:`balancer.server.main`).
"""
