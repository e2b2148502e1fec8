"""A raw-socket WebSocket client: exact bytes on the wire, including malformed ones."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time

KEY_EXAMPLE = "dGhlIHNhbXBsZSBub25jZQ=="


def open_socket(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def upgrade_request(path: str, *, key: str | None = KEY_EXAMPLE, extra: str = "") -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def read_head(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """Read a response head; returns (status, head, bytes already read past it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, head, rest


def handshake(port: int, path: str) -> tuple[socket.socket, bytes]:
    sock = open_socket(port)
    sock.sendall(upgrade_request(path, key=base64.b64encode(os.urandom(16)).decode()))
    status, _, rest = read_head(sock)
    assert status == 101, status
    return sock, rest


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, key: bytes | None = None
) -> bytes:
    """Independent RFC 6455 encoder for test input (masked, as a client must)."""
    key = key if key is not None else os.urandom(4)
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return header + key + masked


def parse_server_frames(data: bytes) -> tuple[list[dict[str, object]], bytes]:
    """Independent parser of unmasked server frames: header fields, and leftover bytes."""
    frames = []
    offset = 0
    while len(data) - offset >= 2:
        b0, b1 = data[offset], data[offset + 1]
        length = b1 & 0x7F
        header = 2
        if length == 126:
            if len(data) - offset < 4:
                break
            (length,) = struct.unpack_from("!H", data, offset + 2)
            header = 4
        elif length == 127:
            if len(data) - offset < 10:
                break
            (length,) = struct.unpack_from("!Q", data, offset + 2)
            header = 10
        if len(data) - offset < header + length:
            break
        payload = data[offset + header : offset + header + length]
        frames.append(
            {
                "fin": bool(b0 & 0x80),
                "rsv": (b0 >> 4) & 0x7,
                "opcode": b0 & 0x0F,
                "masked": bool(b1 & 0x80),
                "payload_length": length,
                "header_length": header,
                "payload": payload,
            }
        )
        offset += header + length
    return frames, data[offset:]


def read_frames(
    sock: socket.socket, rest: bytes, count: int, timeout: float = 10
) -> tuple[list[dict], bytes]:
    """Read exactly ``count`` server frames; returns them and the bytes past them."""
    data = rest
    frames: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parsed, data = parse_server_frames(data)
        frames.extend(parsed)
        if len(frames) >= count:
            return frames, data
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    raise AssertionError(f"expected {count} frames, got {len(frames)}")


def read_frames_until_close(sock: socket.socket, rest: bytes, timeout: float = 10) -> list[dict]:
    data = rest
    deadline = time.monotonic() + timeout
    frames: list[dict] = []
    while time.monotonic() < deadline:
        parsed, data = parse_server_frames(data)
        frames.extend(parsed)
        if any(f["opcode"] == 8 for f in frames):
            return frames
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return frames


def finish_sending(sock: socket.socket, timeout: float = 10) -> bytes:
    """Half-close (FIN) and read until the server closes; returns what it sent meanwhile.

    Closing a socket that still has unread bytes makes the kernel send RST, and a server
    reading after an RST may lose data it had not read yet: the test would then depend on how
    fast the server read.  A half-close delivers every byte first, then the end of stream.
    """
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    sock.close()
    return received
