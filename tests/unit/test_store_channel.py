"""The client port's handshake and sealed frames, over real loopback sockets, and the
keys derived from the cluster secret for each purpose."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from raftkv import protocol
from raftkv.cluster import derive_key
from raftkv.errors import AuthenticationFailed, ConfigError, ProtocolError
from raftkv.node import RAFT_PASSWORD_PURPOSE, ReplicaConfig
from raftkv.node.replica import _engine_conf
from raftkv.server import StoreSettings
from raftkv.store import Store
from shards.control import control_token

SECRET = b"unit-secret-0123456789abcdef"


@contextmanager
def echo_server(*, sealed: bool, secret: bytes = SECRET) -> Iterator[tuple[str, int]]:
    """A loopback server that runs the real server handshake, then answers each frame
    with ``{"echo": frame}``; errors go back as error frames, as raftkv-node does."""
    ready = threading.Event()
    where: dict[str, Any] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            channel = await protocol.server_handshake(reader, writer, secret, sealed=sealed)
        except (ProtocolError, OSError):
            writer.close()
            return
        try:
            while (frame := await protocol.read_frame_async(reader, channel, timeout=2)):
                for part in channel.seal((protocol.encode({"echo": frame}),)):
                    writer.write(part)
        except ProtocolError as exc:
            for part in channel.seal((protocol.encode({"id": None, **exc.to_wire()}),)):
                writer.write(part)
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        where["port"] = server.sockets[0].getsockname()[1]
        where["stop"] = stop = asyncio.Event()
        where["loop"] = asyncio.get_running_loop()
        ready.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(5)
    try:
        yield "127.0.0.1", where["port"]
    finally:
        where["loop"].call_soon_threadsafe(where["stop"].set)
        thread.join(5)


def _connect(addr: tuple[str, int]) -> socket.socket:
    return socket.create_connection(addr, timeout=5)


@pytest.mark.parametrize("sealed", [False, True])
def test_frames_round_trip_plain_on_loopback_and_sealed(sealed: bool) -> None:
    with echo_server(sealed=sealed) as addr, _connect(addr) as sock:
        channel = protocol.client_handshake(sock, SECRET)
        assert channel.sealed is sealed
        payload = b"\x00\xff" * 40_000
        for i in range(3):  # several frames: the counters move in step
            frame = protocol.encode_parts({"id": i, "data": protocol.PAYLOAD}, payload)
            for part in channel.seal(frame):
                sock.sendall(part)
            assert protocol.read_frame(sock, channel) == {"echo": {"id": i, "data": payload}}


def test_a_sealed_frame_hides_its_contents() -> None:
    channel = protocol.Channel(send_key=b"k" * 32, recv_key=b"k" * 32)
    plain = protocol.encode({"mail": "the secret plans"})
    (wire,) = channel.seal((plain,))
    assert b"secret plans" not in wire and len(wire) == len(plain) + protocol.TAG_SIZE


def test_a_client_with_the_wrong_secret_is_refused() -> None:
    with echo_server(sealed=True) as addr, _connect(addr) as sock:
        with pytest.raises((AuthenticationFailed, ConnectionError)):
            protocol.client_handshake(sock, b"wrong-secret-0123456789abcdef")


def test_a_server_with_the_wrong_secret_is_refused() -> None:
    """Both sides prove the secret: a server that does not know it learns nothing and
    the client stops before sending a frame."""
    with echo_server(sealed=True, secret=b"other-secret-0123456789abcdef") as addr, \
            _connect(addr) as sock:
        with pytest.raises((AuthenticationFailed, ConnectionError)):
            protocol.client_handshake(sock, SECRET)


def _sealed_session(addr: tuple[str, int]) -> tuple[socket.socket, protocol.Channel]:
    sock = _connect(addr)
    channel = protocol.client_handshake(sock, SECRET)
    assert channel.sealed
    return sock, channel


def _refused(sock: socket.socket) -> bool:
    """Did the server close the connection within 3 s (after whatever it still sent)?"""
    sock.settimeout(3)
    try:
        while sock.recv(65536):
            pass
    except ConnectionError:
        pass
    except TimeoutError:
        return False
    return True


def test_an_unsealed_frame_is_refused_on_a_sealed_connection() -> None:
    with echo_server(sealed=True) as addr:
        sock, channel = _sealed_session(addr)
        with sock:
            sock.sendall(protocol.encode({"id": 1, "op": "put", "value": b"x" * 100}))
            answer = protocol.read_frame(sock, channel)  # a sealed error frame, then the end
            assert answer["error"] == "ProtocolError" and "integrity" in answer["message"]
            assert _refused(sock)


@pytest.mark.parametrize("tamper", ["flip a bit", "replay", "drop one"])
def test_a_changed_replayed_or_dropped_frame_is_refused(tamper: str) -> None:
    with echo_server(sealed=True) as addr:
        sock, channel = _sealed_session(addr)
        with sock:
            first = channel.seal((protocol.encode({"id": 1}),))[0]
            second = channel.seal((protocol.encode({"id": 2}),))[0]
            if tamper == "flip a bit":
                sent = [first[:-5] + bytes([first[-5] ^ 1]) + first[-4:]]
            elif tamper == "replay":
                sent = [first, first]
            else:
                sent = [second]
            for frame in sent:
                sock.sendall(frame)
            answers = []
            try:
                while True:
                    answers.append(protocol.read_frame(sock, channel))
            except (ConnectionError, ProtocolError):
                pass
            assert answers[-1].get("error") == "ProtocolError", answers
            assert "integrity" in answers[-1]["message"]


def test_plain_frames_are_refused_from_a_server_off_loopback() -> None:
    """A client accepts unsealed frames only when the server is on loopback: a man in the
    middle cannot ask for them (the mode is in both MACs), and no server may offer them."""
    ours, theirs = socket.socketpair()  # not loopback TCP: as if across hosts
    with ours, theirs:
        theirs.sendall(protocol.MAGIC + bytes([protocol.PLAIN]) + b"\0" * 64)
        with pytest.raises(ProtocolError, match="unencrypted"):
            protocol.client_handshake(ours, SECRET)


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.168.1.5", False), ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False),
    ("", False), ("localhost", False),
])
def test_only_loopback_addresses_count_as_loopback(host: str, loopback: bool) -> None:
    assert protocol.is_loopback(host) is loopback


def test_a_silent_client_is_dropped_after_the_handshake_deadline(monkeypatch) -> None:
    monkeypatch.setattr(protocol, "HANDSHAKE_TIMEOUT", 0.3)
    with echo_server(sealed=True) as addr, _connect(addr) as sock:
        assert sock.recv(protocol.GREETING_SIZE)
        assert _refused(sock)


def test_a_frame_begun_must_be_whole_within_its_deadline() -> None:
    """The echo server gives a frame 2 s; half a frame then silence is an error frame and
    the end, while an idle connection between frames is fine."""
    with echo_server(sealed=False) as addr, _connect(addr) as sock:
        channel = protocol.client_handshake(sock, SECRET)
        frame = protocol.encode({"id": 1, "pad": b"x" * 1000})
        sock.sendall(frame)
        assert protocol.read_frame(sock, channel)["echo"]["id"] == 1
        sock.sendall(frame[:500])
        answer = protocol.read_frame(sock, channel)
        assert answer["error"] == "ProtocolError" and "within" in answer["message"]


# -- one key per purpose ----------------------------------------------------------

def test_each_purpose_gets_its_own_key() -> None:
    keys = {purpose: derive_key(SECRET, purpose)
            for purpose in (protocol.HANDSHAKE_PURPOSE, RAFT_PASSWORD_PURPOSE, "csrf", "control")}
    assert len(set(keys.values())) == len(keys)
    assert SECRET not in keys.values()
    assert protocol.handshake_key(SECRET) == keys[protocol.HANDSHAKE_PURPOSE]


def _raft_password(tmp_path) -> str:
    config = ReplicaConfig(raft_addr="127.0.0.1:1", peers=("127.0.0.1:2",),
                           data_dir=tmp_path, secret=SECRET)
    return _engine_conf(config, Store(4)).password


def test_the_raft_password_is_a_derived_key_not_the_secret(tmp_path) -> None:
    password = _raft_password(tmp_path)
    assert password == derive_key(SECRET, RAFT_PASSWORD_PURPOSE).hex()
    assert SECRET.decode() not in password


@pytest.mark.parametrize("purpose", ["raft password", "csrf key", "control token"])
def test_a_key_for_another_purpose_does_not_open_the_client_port(purpose: str, tmp_path) -> None:
    """Whoever learns the key of one use (the Raft engine's password, a CSRF key, the
    control API's token) cannot use it as the secret of the client port."""
    other = {"raft password": lambda: _raft_password(tmp_path).encode("latin-1"),
             "csrf key": lambda: derive_key(SECRET, "csrf"),
             "control token": lambda: control_token(SECRET).encode()}[purpose]()
    with echo_server(sealed=True) as addr, _connect(addr) as sock:
        with pytest.raises((AuthenticationFailed, ConnectionError)):
            protocol.client_handshake(sock, other)


# -- the [store] table ------------------------------------------------------------

def test_the_store_table_is_checked() -> None:
    assert StoreSettings.from_table({}) == StoreSettings("auto", 2048)
    assert StoreSettings.from_table({"encryption": "always", "max_connections": 10}) == \
        StoreSettings("always", 10)
    for bad in ({"encryption": "never"}, {"max_connections": 0}, {"max_connections": "9"},
                {"encrypt": "always"}):
        with pytest.raises(ConfigError):
            StoreSettings.from_table(bad)
