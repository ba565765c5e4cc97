"""Refuse every network connection that does not stay on this machine.

Installed by tests/conftest.py in the pytest process and, through `sitecustomize.py` in this directory (put on
PYTHONPATH by the conftest), in every Python subprocess the tests start: Snakemake, its job scripts, SLURM jobs.
Allowed: unix sockets, and IPv4/IPv6 loopback (127.0.0.0/8, ::1, "localhost") -- the tests' own HTTP server and
the throw-away SLURM cluster. Anything else raises `OutboundConnectionRefused` before a packet leaves, and is also
appended to the file named by $LEVERPLUS_NETGUARD_LOG, so an attempt that some library swallows (and retries
offline) still fails the session (see conftest.pytest_sessionfinish).
"""
from __future__ import annotations

import ipaddress
import os
import socket
import traceback

LOG_ENV = "LEVERPLUS_NETGUARD_LOG"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class OutboundConnectionRefused(ConnectionRefusedError):
    """A test (or a process it started) tried to reach a non-loopback address."""


def is_loopback(host) -> bool:
    if host is None:  # getaddrinfo(None, port): the local wildcard/loopback address
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).split("%", 1)[0]  # IPv6 zone id
    if host.lower() in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _refuse(what: str, address) -> None:
    msg = f"lever-plus test network guard: {what} to {address!r} refused (tests run offline; only loopback)"
    path = os.environ.get(LOG_ENV)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(f"pid {os.getpid()}: {msg}\n{''.join(traceback.format_stack(limit=12))}\n")
        except OSError:
            pass
    raise OutboundConnectionRefused(msg)


def _check(sock, address, what: str) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0] if isinstance(address, tuple) and address else address
        if not is_loopback(host):
            _refuse(what, address)


_orig = {}


def install() -> None:
    """Patch socket.socket.connect/connect_ex/sendto and socket.getaddrinfo (idempotent)."""
    if _orig:
        return
    _orig.update(connect=socket.socket.connect, connect_ex=socket.socket.connect_ex, sendto=socket.socket.sendto,
                 getaddrinfo=socket.getaddrinfo)

    def connect(self, address):
        _check(self, address, "connect")
        return _orig["connect"](self, address)

    def connect_ex(self, address):
        _check(self, address, "connect")
        return _orig["connect_ex"](self, address)

    def sendto(self, data, *args):
        _check(self, args[-1], "sendto")
        return _orig["sendto"](self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        # a name lookup is the first packet a download sends: refuse it too (the machine's own name is fine)
        name = host.decode("ascii", "replace") if isinstance(host, bytes) else host
        if not is_loopback(name) and name != socket.gethostname():
            try:
                ipaddress.ip_address(str(name).split("%", 1)[0])  # a literal address: connect() decides
            except ValueError:
                _refuse("name lookup", host)
        return _orig["getaddrinfo"](host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.getaddrinfo = getaddrinfo
