"""The client wire protocol: an authenticated handshake, then length-prefixed msgpack frames,
sealed (encrypted and authenticated) whenever they leave the host.

Connection set-up.  Both sides prove they know the cluster secret (through a key
derived from it for this purpose only) before any frame is read, and agree on
fresh frame keys; a stranger gets the greeting and nothing else::

    server -> client   greeting = b"RKV2" + mode (1 byte) + server_nonce (32) + server_x25519 (32)
    client -> server   HMAC(k, b"client" + greeting + mine) + mine,
                       where mine = client_nonce (32) + client_x25519 (32)
    server -> client   HMAC(k, b"server" + greeting + mine), or REFUSED (32 zero bytes)
                       when the client's MAC is wrong, so that a client with the wrong
                       secret learns it at once instead of retrying a closed connection

``k`` is ``derive_key(secret, "store-handshake")``.  The MACs cover the whole
transcript, so nobody on the path can change the mode or the ephemeral keys.
In mode :data:`SEALED` each direction then has its own AES-256-GCM key, from
HKDF over the X25519 shared secret (salt ``k``, info the transcript): without
the secret nobody can read or change a frame, and recorded traffic stays
private even if the secret leaks later.  Mode :data:`PLAIN` is for connections
that never leave the host (both ends on loopback): a client refuses it from a
non-loopback address.

Then each message is ``u32 big-endian length`` + ``msgpack map``; sealed, the
body is the map encrypted under a per-direction frame counter, with the length
header as associated data (so a replayed, reordered, dropped or altered frame
fails its tag).  A header announcing more than :data:`MAX_FRAME` bytes is
refused before anything is buffered.  Requests carry ``id`` (per connection, to
match pipelined answers), ``op`` and the op's fields; answers carry the same
``id`` and either ``ok`` or the fields of :meth:`RaftKVError.to_wire`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .cluster import derive_key
from .errors import AuthenticationFailed, ProtocolError, TooLarge

MAGIC = b"RKV2"
PLAIN, SEALED = 0, 1            # the greeting's mode byte
NONCE_SIZE = 32
PUBLIC_SIZE = 32                # an X25519 public key
MAC_SIZE = 32
# The server's answer to a client whose proof is wrong (a MAC is never all zeros
# in practice): the client says "wrong secret" instead of "connection lost".
REFUSED = bytes(MAC_SIZE)
TAG_SIZE = 16                   # AES-GCM's tag, added to every sealed frame
GREETING_SIZE = len(MAGIC) + 1 + NONCE_SIZE + PUBLIC_SIZE
ANSWER_SIZE = MAC_SIZE + NONCE_SIZE + PUBLIC_SIZE
HANDSHAKE_PURPOSE = "store-handshake"  # derive_key purpose of the handshake's MAC key
MAX_FRAME = 4 * 1024 * 1024 + 64 * 1024  # a 4 MiB export page (1 MiB chunks fit) plus headers
# A server drops a connection that has not completed its handshake this long
# after connecting, and one whose frame, once begun, is not whole this long
# after its first byte (4 MiB in 10 s: any link between a store and its clients).
HANDSHAKE_TIMEOUT = 5.0
FRAME_TIMEOUT = 10.0
_HEADER = struct.Struct(">I")


def _mac(key: bytes, role: bytes, transcript: bytes | bytearray) -> bytes:
    return hmac.new(key, role + transcript, hashlib.sha256).digest()


def handshake_key(secret: bytes) -> bytes:
    """The key both sides prove they hold: derived from the secret for the handshake alone."""
    return derive_key(secret, HANDSHAKE_PURPOSE)


def is_loopback(host: str) -> bool:
    """Is ``host`` (an IP address, as a socket reports it) this machine's loopback?"""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _ephemeral() -> tuple[X25519PrivateKey, bytes]:
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes(serialization.Encoding.Raw,
                                                      serialization.PublicFormat.Raw)


def _frame_keys(key: bytes, private: X25519PrivateKey, their_public: bytes | bytearray,
                transcript: bytes) -> tuple[bytes, bytes]:
    """(client -> server key, server -> client key) for one connection."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(bytes(their_public)))
    except ValueError as exc:  # a low-order point: no shared secret
        raise AuthenticationFailed("unusable key exchange") from exc
    keys = HKDF(algorithm=hashes.SHA256(), length=64, salt=key,
                info=b"raftkv frames\0" + transcript).derive(shared)
    return keys[:32], keys[32:]


def encode(message: dict[str, Any]) -> bytes:
    """One frame: length prefix + msgpack body (:meth:`Channel.seal` seals it)."""
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


class Channel:
    """How the frames of one connection travel: as they are, or sealed with AES-GCM.

    Sealed, each direction counts its frames; the count is the nonce, so each
    side must seal frames in the order it sends them, and open them in the
    order they arrive (both true of one TCP stream and one sender at a time).
    """

    def __init__(self, send_key: bytes | None = None, recv_key: bytes | None = None) -> None:
        self._seal = AESGCM(send_key) if send_key else None
        self._open = AESGCM(recv_key) if recv_key else None
        self.sealed = self._seal is not None
        self._sent = 0
        self._received = 0

    def seal(self, frame: Sequence[bytes]) -> Sequence[bytes]:
        """The parts of one frame made by :func:`encode` or :func:`encode_parts`, as
        they go on the wire: unchanged, or sealed as one part (the cipher needs the
        bytes together anyway)."""
        if self._seal is None:
            return frame
        body = memoryview(frame[0] if len(frame) == 1 else b"".join(frame))[_HEADER.size:]
        header = _HEADER.pack(len(body) + TAG_SIZE)
        nonce = self._sent.to_bytes(12, "big")
        self._sent += 1
        return (header + self._seal.encrypt(nonce, body, header),)

    def body_length(self, header: bytes | bytearray) -> int:
        """The body size a frame header announces; ProtocolError when out of bounds."""
        length: int = _HEADER.unpack(header)[0]
        extra = TAG_SIZE if self._open is not None else 0
        if length > MAX_FRAME + extra:
            raise ProtocolError(f"frame of {length} bytes exceeds the {MAX_FRAME}-byte cap")
        if length < extra:
            raise ProtocolError("frame too short to be sealed")
        return length

    def decode(self, header: bytes | bytearray, body: bytes | bytearray) -> dict[str, Any]:
        """The message of one frame (opened when sealed); ProtocolError on anything else."""
        if self._open is None:
            return decode_body(body)
        nonce = self._received.to_bytes(12, "big")
        self._received += 1
        try:
            plain = self._open.decrypt(nonce, body, bytes(header))
        except InvalidTag:
            raise ProtocolError("a frame failed its integrity check") from None
        return decode_body(plain)


PLAIN_CHANNEL = Channel()  # stateless: shared by every unsealed connection


def check_length(header: bytes) -> int:
    """The body size an unsealed frame's header announces (ProtocolError above the cap)."""
    return PLAIN_CHANNEL.body_length(header)


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


def client_handshake(sock: socket.socket, secret: bytes) -> Channel:
    """Authenticate to a server, check that it knows the secret too, and agree on frame keys.

    A server that offers unsealed frames is refused unless it is on loopback.
    """
    greeting = bytes(_recv_exactly(sock, GREETING_SIZE))
    if greeting[:len(MAGIC)] != MAGIC:
        raise ProtocolError("not a raftkv server (or one speaking another protocol version)")
    mode = greeting[len(MAGIC)]
    if mode not in (PLAIN, SEALED):
        raise ProtocolError(f"unknown frame mode {mode}")
    peer = sock.getpeername()
    if mode == PLAIN and not (isinstance(peer, tuple) and is_loopback(peer[0])):
        raise ProtocolError("the server offers unencrypted frames across hosts")
    key = handshake_key(secret)
    private, public = _ephemeral()
    mine = os.urandom(NONCE_SIZE) + public
    transcript = greeting + mine
    sock.sendall(_mac(key, b"client", transcript) + mine)
    proof = bytes(_recv_exactly(sock, MAC_SIZE))
    if proof == REFUSED:
        raise AuthenticationFailed("this cluster does not know your secret")
    if not hmac.compare_digest(proof, _mac(key, b"server", transcript)):
        raise AuthenticationFailed("the server does not know your secret (its secret differs)")
    if mode == PLAIN:
        return PLAIN_CHANNEL
    to_server, to_client = _frame_keys(key, private, greeting[-PUBLIC_SIZE:], transcript)
    return Channel(send_key=to_server, recv_key=to_client)


def read_frame(sock: socket.socket, channel: Channel = PLAIN_CHANNEL) -> dict[str, Any]:
    header = _recv_exactly(sock, _HEADER.size)
    return channel.decode(header, _recv_exactly(sock, channel.body_length(header)))


# -- asyncio side (servers) -------------------------------------------------

async def server_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                           secret: bytes, *, sealed: bool) -> Channel:
    """Greet a new connection and require proof of the secret within
    :data:`HANDSHAKE_TIMEOUT`; the connection's channel, or raises."""
    key = handshake_key(secret)
    private, public = _ephemeral()
    greeting = MAGIC + bytes([SEALED if sealed else PLAIN]) + os.urandom(NONCE_SIZE) + public
    writer.write(greeting)
    try:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT):
            answer = await reader.readexactly(ANSWER_SIZE)
    except (asyncio.IncompleteReadError, TimeoutError) as exc:
        raise AuthenticationFailed("no handshake") from exc
    mine = answer[MAC_SIZE:]
    transcript = greeting + mine
    if not hmac.compare_digest(answer[:MAC_SIZE], _mac(key, b"client", transcript)):
        writer.write(REFUSED)  # flushed when the server closes the connection
        raise AuthenticationFailed("bad handshake")
    writer.write(_mac(key, b"server", transcript))
    if not sealed:
        return PLAIN_CHANNEL
    to_server, to_client = _frame_keys(key, private, mine[-PUBLIC_SIZE:], transcript)
    return Channel(send_key=to_client, recv_key=to_server)


async def read_frame_async(reader: asyncio.StreamReader, channel: Channel = PLAIN_CHANNEL,
                           timeout: float = FRAME_TIMEOUT) -> dict[str, Any] | None:
    """The next frame, or None at a clean end of stream.

    A connection may stay idle between frames for as long as it likes (clients
    keep theirs open), but once a frame's first byte is here the whole frame
    must follow within ``timeout`` seconds: a slow sender holds no server for long.
    """
    try:
        first = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        return None
    try:
        async with asyncio.timeout(timeout):
            header = first + await reader.readexactly(_HEADER.size - 1)
            body = await reader.readexactly(channel.body_length(header))
    except asyncio.IncompleteReadError:
        raise ProtocolError("truncated frame") from None
    except TimeoutError:
        raise ProtocolError(f"a frame did not arrive whole within {timeout:g} s") from None
    return channel.decode(header, body)
