"""gunicorn settings for the portal frontends: ``gunicorn -c python:portal.gunicorn_conf``.

`raftcloud up` passes --bind, --workers and --threads.  The settings live in the
portal, beside the worker class they name, so they read ``[web]`` through the
portal's own parser (:func:`portal.config.web_settings`), the one that refuses
unknown keys.

gthread workers, with request heads read by the event loop under a deadline
(portal/worker.py says why): a slow client holds a thread only once its head
is in, and a long upload or download does not block the worker's heartbeat, so
`timeout` only catches a wedged worker.  The worker's limits and the trusted
proxies come from the cluster file's [web] table.
"""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import multiprocess

from portal.config import web_settings
from portal.gunicorn_log import ACCESS_FORMAT
from portal.load import LOAD_DIR_ENV
from raftkv.cluster import CONFIG_ENV, load_cluster
from raftkv.logs import setup_logging
from raftkv.metrics import MULTIPROC_DIR_ENV, serve_from_env

worker_class = "portal.worker.HeadReadingWorker"
threads = 8
keepalive = 5                # seconds an idle keep-alive connection stays open
timeout = 120                # a worker silent this long is restarted
graceful_timeout = 10
limit_request_line = 8190
limit_request_fields = 100
accesslog = "-"
errorlog = "-"
loglevel = "info"
# One line per event, "portal <frontend>", for gunicorn's lines and the portal's
# alike: the root handler, installed here in the master and inherited by every
# forked worker (portal/gunicorn_log.py).
logger_class = "portal.gunicorn_log.PortalLogger"
access_log_format = ACCESS_FORMAT
setup_logging(f"portal {os.environ.get('RAFTCLOUD_FRONTEND', '')}".strip())


def _trusted_proxies() -> str:
    # Only the proxies the cluster file names may set X-Forwarded-Proto (which
    # gunicorn turns into wsgi.url_scheme); by default nobody, loopback included.
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return ""
    proxies = web_settings(load_cluster(path).table("web")).get("trusted_proxies", ())
    return ",".join(proxies)


forwarded_allow_ips = _trusted_proxies()


# The frontend's load is every worker's requests in flight (portal/load.py):
# each worker publishes its count in a file of one shared directory, made here
# in the master before the first fork and inherited through the environment.

# Metrics (raftkv/metrics.py), when the launcher turned them on: every worker writes
# its samples to files of the directory it named (prometheus_client's multiprocess
# mode, set in the environment before this process started, so before any import
# of prometheus_client), emptied here before the first fork; the master serves
# their sum.

_metrics_server = None


def on_starting(server):
    os.environ[LOAD_DIR_ENV] = tempfile.mkdtemp(prefix="raftcloud-load-")
    samples = os.environ.get(MULTIPROC_DIR_ENV)
    if samples:
        shutil.rmtree(samples, ignore_errors=True)  # the last run's workers' files
        Path(samples).mkdir(parents=True, mode=0o700)


def when_ready(server):
    global _metrics_server
    _metrics_server = serve_from_env()


def child_exit(server, worker):
    with contextlib.suppress(KeyError, OSError):
        os.unlink(os.path.join(os.environ[LOAD_DIR_ENV], str(worker.pid)))
    if os.environ.get(MULTIPROC_DIR_ENV):
        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if os.environ.get(LOAD_DIR_ENV):
        shutil.rmtree(os.environ[LOAD_DIR_ENV], ignore_errors=True)
    if _metrics_server is not None:
        _metrics_server.shutdown()
