# ruff: noqa: N999 - gunicorn finds its config by this file name, dots and all
"""gunicorn settings for the portal frontends (`raftcloud up` passes --bind, --workers, --threads).

gthread workers: keep-alive connections are held by threads, and a long upload
or download does not block the worker's heartbeat, so `timeout` only catches a
wedged worker.
"""

import contextlib
import os
import shutil
import tempfile

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


# The frontend's load is every worker's requests in flight (portal/load.py):
# each worker publishes its count in a file of one shared directory, made here
# in the master before the first fork and inherited through the environment.
LOAD_DIR_ENV = "RAFTCLOUD_LOAD_DIR"


def on_starting(server):
    os.environ[LOAD_DIR_ENV] = tempfile.mkdtemp(prefix="raftcloud-load-")


def child_exit(server, worker):
    with contextlib.suppress(KeyError, OSError):
        os.unlink(os.path.join(os.environ[LOAD_DIR_ENV], str(worker.pid)))


def on_exit(server):
    if os.environ.get(LOAD_DIR_ENV):
        shutil.rmtree(os.environ[LOAD_DIR_ENV], ignore_errors=True)
