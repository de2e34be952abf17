"""The frontend's metrics: HTTP requests by route and status, and their latency.

A route is named by its endpoint (``drive_folder``, ``mail_message``...): never
the path, which carries folder and file ids, message ids and user-chosen names.
Requests no route matched count as ``unmatched``.  The series are per gunicorn
worker and summed by the master (``raftkv/metrics.py``, ``portal/gunicorn_conf.py``).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from raftkv.metrics import LATENCY_BUCKETS

ROUTE_KEY = "raftcloud.route"  # the WSGI environ key the dispatcher puts the endpoint under
UNMATCHED = "unmatched"

HTTP_REQUESTS = Counter("portal_http_requests", "HTTP requests answered, by route (the "
                        "endpoint's name) and status code.", ["route", "status"])
HTTP_SECONDS = Histogram("portal_http_request_seconds", "From the request's head to its "
                         "answer's (a streamed body not included), by route.", ["route"],
                         buckets=LATENCY_BUCKETS)


def observe(route: str, status: int, seconds: float) -> None:
    HTTP_REQUESTS.labels(route, str(status)).inc()
    HTTP_SECONDS.labels(route).observe(seconds)

# The WebDAV door (portal.dav): by method (a fixed set; others count as "other") and status.
DAV_REQUESTS = Counter("portal_dav_requests", "WebDAV requests answered, by method and "
                       "status code.", ["method", "status"])
DAV_BYTES = Counter("portal_dav_bytes", "Bytes of WebDAV request bodies read (in) and "
                    "answers sent (out).", ["direction"])


def observe_dav(method: str, status: int, bytes_in: int, bytes_out: int, seconds: float) -> None:
    DAV_REQUESTS.labels(method, str(status)).inc()
    DAV_BYTES.labels("in").inc(bytes_in)
    DAV_BYTES.labels("out").inc(bytes_out)
    observe("dav", status, seconds)
