# Put on PYTHONPATH by tests/conftest.py: every Python process the tests start refuses non-loopback connections.
import lp_netguard

lp_netguard.install()
