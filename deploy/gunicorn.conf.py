# ruff: noqa: N999 - gunicorn finds its config by this file name, dots and all
"""gunicorn settings for the portal frontends (`raftcloud up` passes --bind, --workers, --threads).

gthread workers: keep-alive connections are held by threads, and a long upload
or download does not block the worker's heartbeat, so `timeout` only catches a
wedged worker.
"""

worker_class = "gthread"
threads = 8
keepalive = 5                # seconds an idle keep-alive connection stays open
timeout = 120                # a worker silent this long is restarted
graceful_timeout = 10
limit_request_line = 8190
limit_request_fields = 100
accesslog = "-"
errorlog = "-"
loglevel = "info"
forwarded_allow_ips = "127.0.0.1"
