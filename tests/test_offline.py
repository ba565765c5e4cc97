"""The suite runs offline, and that is enforced, not assumed (tests/conftest.py, tests/netguard/):
the hub libraries are switched off before they are imported, and every non-loopback connection -- here or in a
Python subprocess (Snakemake, its jobs) -- is refused and logged, and a logged attempt fails the session."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import lp_netguard

TESTS = Path(__file__).resolve().parent
TEST_NET = "192.0.2.1"  # RFC 5737 TEST-NET-1: never routed, so a leak could not reach anyone either


@pytest.fixture
def own_log(tmp_path, monkeypatch):
    """Refusals provoked on purpose go to a file of this test, not to the session's log (which fails the run)."""
    log = tmp_path / "guard.log"
    monkeypatch.setenv(lp_netguard.LOG_ENV, str(log))
    return log


def test_hub_libraries_are_offline():
    import huggingface_hub.constants
    import transformers.utils.hub

    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True
    assert transformers.utils.hub.is_offline_mode()


@pytest.mark.parametrize("family, address", [(socket.AF_INET, (TEST_NET, 80)), (socket.AF_INET6, ("2001:db8::1", 80))])
def test_non_loopback_connect_is_refused(own_log, family, address):
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        with pytest.raises(lp_netguard.OutboundConnectionRefused, match="refused"):
            s.connect(address)
        with pytest.raises(lp_netguard.OutboundConnectionRefused):
            s.connect_ex(address)
    assert own_log.read_text().count(f"connect to {address!r} refused") == 2


def test_name_lookup_and_create_connection_are_refused(own_log):
    with pytest.raises(lp_netguard.OutboundConnectionRefused, match="name lookup"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    with pytest.raises(lp_netguard.OutboundConnectionRefused):
        socket.create_connection((TEST_NET, 443), timeout=1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(lp_netguard.OutboundConnectionRefused):
        s.sendto(b"x", (TEST_NET, 53))
    assert "huggingface.co" in own_log.read_text()


def test_loopback_and_unix_sockets_work(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        t = threading.Thread(target=lambda: srv.accept()[0].sendall(b"hi"))
        t.start()
        with socket.create_connection(("localhost", port), timeout=5) as c:
            assert c.recv(2) == b"hi"
        t.join()
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX) as srv:
        srv.bind(path)
        srv.listen()
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(path)
    for host in ("127.0.0.1", "127.3.4.5", "::1", "localhost", None):
        assert lp_netguard.is_loopback(host), host
    for host in (TEST_NET, "10.0.0.1", "2001:db8::1", "huggingface.co", "0.0.0.0"):
        assert not lp_netguard.is_loopback(host), host


def test_subprocesses_are_guarded_too(own_log):
    """Snakemake and its job scripts are Python subprocesses: tests/netguard/sitecustomize.py guards them."""
    code = f"import socket; socket.create_connection(({TEST_NET!r}, 80), timeout=1)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0 and "OutboundConnectionRefused" in proc.stderr, proc.stderr
    assert "pid " in own_log.read_text() and TEST_NET in own_log.read_text()
    env_code = "import os, huggingface_hub.constants as c; print(os.environ['HF_HUB_OFFLINE'], c.HF_HUB_OFFLINE)"
    out = subprocess.run([sys.executable, "-c", env_code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "True"]


def test_a_swallowed_attempt_still_fails_the_session(tmp_path):
    """A library that catches the refusal and carries on (an offline fallback) must not leave the run green."""
    (tmp_path / "test_swallow.py").write_text(textwrap.dedent(f"""
        import socket

        def test_quietly_online():
            try:
                socket.create_connection(({TEST_NET!r}, 80), timeout=1)
            except OSError:
                pass  # "no network? fine, use the cache"
    """))
    env = {k: v for k, v in os.environ.items() if k not in (lp_netguard.LOG_ENV, "PYTEST_XDIST_WORKER")}
    env["PYTHONPATH"] = str(TESTS)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-p", "conftest",
           "--rootdir", str(tmp_path), str(tmp_path / "test_swallow.py")]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert "1 passed" in out, out  # the test itself passed ...
    assert proc.returncode == pytest.ExitCode.TESTS_FAILED, out  # ... the session did not
    assert "non-loopback network access attempted" in out and TEST_NET in out, out
