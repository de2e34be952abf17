"""A WSGI app for the worker's tests: GET answers 6 MiB in 1 MiB pieces, as the drive's
downloads come out of the store."""

PIECE = 1024 * 1024
PIECES = 6


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", str(PIECE * PIECES)),
                              ("Content-Type", "application/octet-stream")])
    return [b"x" * PIECE] * PIECES
