"""The client wire protocol: an authenticated handshake, then length-prefixed msgpack frames.

Connection set-up (both sides prove they know the cluster secret, before any
frame is read; a stranger gets the greeting and nothing else)::

    server -> client   b"RKV1" + server_nonce (32 bytes)
    client -> server   HMAC(secret, b"client" + server_nonce) + client_nonce (32 bytes)
    server -> client   HMAC(secret, b"server" + client_nonce)

Then each message is ``u32 big-endian length`` + ``msgpack map``.  A header
announcing more than :data:`MAX_FRAME` bytes is refused before anything is
buffered.  Requests carry ``id`` (per connection, to match pipelined answers),
``op`` and the op's fields; answers carry the same ``id`` and either ``ok`` or
the fields of :meth:`RaftKVError.to_wire`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import socket
import struct
from typing import Any

import msgpack

from .errors import AuthenticationFailed, ProtocolError, TooLarge

MAGIC = b"RKV1"
NONCE_SIZE = 32
MAC_SIZE = 32
MAX_FRAME = 4 * 1024 * 1024 + 64 * 1024  # one 4 MiB blob chunk plus headers
HANDSHAKE_TIMEOUT = 5.0
_HEADER = struct.Struct(">I")


def _mac(secret: bytes, role: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, role + nonce, hashlib.sha256).digest()


def encode(message: dict[str, Any]) -> bytes:
    """One frame: length prefix + msgpack body."""
    body = msgpack.packb(message, use_bin_type=True)
    if len(body) > MAX_FRAME:
        raise TooLarge(f"message of {len(body)} bytes exceeds the {MAX_FRAME}-byte frame cap")
    return _HEADER.pack(len(body)) + body


# Stands in for a large bytes field (a blob chunk) while the rest of a frame is
# packed; encode_parts then splices the real bytes in without copying them.
PAYLOAD = os.urandom(16)
_PACKED_PAYLOAD = b"\xc4\x10" + PAYLOAD


def encode_parts(message: dict[str, Any], payload: bytes) -> list[bytes]:
    """One frame as ``[head, payload, tail]``: ``message`` holds :data:`PAYLOAD` where
    ``payload`` goes.  Sending the parts sends what :func:`encode` would have made,
    without copying a megabyte-sized chunk twice per replica.  Empty parts are left
    out: asyncio 3.12's ``writelines`` spins for ever on an empty buffer."""
    body = msgpack.packb(message, use_bin_type=True)
    at = body.rfind(_PACKED_PAYLOAD)
    if at < 0:
        raise ValueError("the message does not hold PAYLOAD")
    n = len(payload)
    bin_header = (b"\xc4" + n.to_bytes(1, "big") if n < 1 << 8 else
                  b"\xc5" + n.to_bytes(2, "big") if n < 1 << 16 else
                  b"\xc6" + n.to_bytes(4, "big"))
    head, tail = body[:at] + bin_header, body[at + len(_PACKED_PAYLOAD):]
    length = len(head) + n + len(tail)
    if length > MAX_FRAME:
        raise TooLarge(f"message of {length} bytes exceeds the {MAX_FRAME}-byte frame cap")
    return [part for part in (_HEADER.pack(length) + head, payload, tail) if part]


def decode_body(body: bytes | bytearray) -> dict[str, Any]:
    """Parse a frame body; anything but a msgpack map is a ProtocolError."""
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise ProtocolError(f"undecodable frame: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame must hold a map")
    return message


def check_length(header: bytes) -> int:
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte cap")
    return length


# -- blocking side (clients) ------------------------------------------------

def _recv_exactly(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)  # received in place: a chunk is copied once, not twice
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if not n:
            raise ConnectionError("connection closed by peer")
        got += n
    view.release()
    return buffer


def client_handshake(sock: socket.socket, secret: bytes) -> None:
    """Authenticate to a server and check that it knows the secret too."""
    greeting = _recv_exactly(sock, len(MAGIC) + NONCE_SIZE)
    if greeting[:len(MAGIC)] != MAGIC:
        raise ProtocolError("not a raftkv server")
    client_nonce = os.urandom(NONCE_SIZE)
    sock.sendall(_mac(secret, b"client", greeting[len(MAGIC):]) + client_nonce)
    proof = _recv_exactly(sock, MAC_SIZE)
    if not hmac.compare_digest(proof, _mac(secret, b"server", client_nonce)):
        raise AuthenticationFailed("the server does not know the cluster secret")


def read_frame(sock: socket.socket) -> dict[str, Any]:
    length = check_length(_recv_exactly(sock, _HEADER.size))
    return decode_body(_recv_exactly(sock, length))


# -- asyncio side (servers) -------------------------------------------------

async def server_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           secret: bytes) -> None:
    """Greet a new connection and require proof of the secret; raises on failure."""
    server_nonce = os.urandom(NONCE_SIZE)
    writer.write(MAGIC + server_nonce)
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.readexactly(MAC_SIZE + NONCE_SIZE),
                                        HANDSHAKE_TIMEOUT)
    except (asyncio.IncompleteReadError, TimeoutError) as exc:
        raise AuthenticationFailed("no handshake") from exc
    if not hmac.compare_digest(answer[:MAC_SIZE], _mac(secret, b"client", server_nonce)):
        raise AuthenticationFailed("bad handshake")
    writer.write(_mac(secret, b"server", answer[MAC_SIZE:]))
    await writer.drain()


async def read_frame_async(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next frame, or None at a clean end of stream."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("truncated frame header") from None
        return None
    length = check_length(header)
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("truncated frame") from None
    return decode_body(body)
