"""Raw Kafka protocol requests to a running broker, synchronous and free of client-library
state: the readiness probe (a Metadata request, `metadata_ready`) and CreateAcls
(`create_acls`, a version aiokafka does not speak).
"""

from __future__ import annotations

import socket
import struct
from typing import Final

from switchboard.brokers import (
    LOOPBACK,
    BrokerError,
)

__all__ = [
    "create_acls",
    "metadata_ready",
]


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            raise ConnectionError("connection closed mid-response")
        buf += chunk
    return bytes(buf)


def metadata_ready(port: int, host: str = LOOPBACK, timeout: float = 2.0) -> bool:
    """True when the broker answers a Metadata request listing at least one live broker.

    An accepting port is not enough: KRaft binds its listeners before the broker has
    registered with the controller and been unfenced, and until then clients see no
    brokers. Raw Metadata v4 (the oldest version Kafka 4 still serves) keeps this
    synchronous and free of client-library state.
    """
    client_id = b"switchboard-ready"
    correlation_id = 7
    request = (
        struct.pack(">hhih", 3, 4, correlation_id, len(client_id))  # Metadata v4, header v1
        + client_id
        + struct.pack(">i?", 0, False)  # topics: none; allow_auto_topic_creation: false
    )
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            response = _recv_exact(sock, size)
        got_id, _throttle_ms, broker_count = struct.unpack_from(">iii", response, 0)
    except (OSError, struct.error):
        return False
    return bool(got_id == correlation_id and broker_count > 0)


_RESOURCE_TYPES: Final = {"topic": 2, "group": 3, "cluster": 4}
_OPERATIONS: Final = {"All": 2, "Read": 3, "Write": 4, "Create": 5, "Delete": 6, "Alter": 7,
                      "Describe": 8, "ClusterAction": 9, "DescribeConfigs": 10,
                      "AlterConfigs": 11, "IdempotentWrite": 12}


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_uvarint(buf: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _compact(text: str) -> bytes:
    raw = text.encode()
    return _uvarint(len(raw) + 1) + raw


def create_acls(port: int, principal: str, acls: list[tuple[str, str, str]],
                host: str = LOOPBACK, timeout: float = 10.0) -> None:
    """Allow ``principal`` (``User:name``) each (resource type, literal name, operation).

    Sent as a raw CreateAcls v3 request to the PLAINTEXT listener, whose anonymous
    principal a :class:`SecureListener` with ``authorize`` makes a super user: aiokafka
    speaks only versions 0-1, which Kafka 4 no longer serves.
    """
    body = bytearray(_uvarint(len(acls) + 1))
    for resource, name, operation in acls:
        body += struct.pack(">b", _RESOURCE_TYPES[resource]) + _compact(name)
        body += struct.pack(">b", 3)  # pattern: LITERAL
        body += _compact(principal) + _compact("*")
        body += struct.pack(">bb", _OPERATIONS[operation], 3) + b"\x00"  # ALLOW; no tags
    body += b"\x00"
    client_id = b"switchboard-acls"
    request = (struct.pack(">hhih", 30, 3, 11, len(client_id)) + client_id + b"\x00"
               + bytes(body))
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        response = _recv_exact(sock, size)
    (correlation_id,) = struct.unpack_from(">i", response, 0)
    _, at = _read_uvarint(response, 4)  # header tags
    at += 4  # throttle_time_ms
    count, at = _read_uvarint(response, at)
    errors = []
    for i in range(count - 1):
        (code,) = struct.unpack_from(">h", response, at)
        length, at = _read_uvarint(response, at + 2)
        message = response[at:at + length - 1].decode() if length else ""
        at += max(length - 1, 0)
        _, at = _read_uvarint(response, at)  # tags
        if code:
            errors.append(f"{acls[i]}: error {code} {message}")
    if correlation_id != 11 or errors:
        raise BrokerError("CreateAcls failed: " + "; ".join(errors))
