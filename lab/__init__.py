"""Loris lab: simulated hosts (namespaces with their own Open vSwitch), an underlay, a
management network and containers, for tests, the demo and benchmarks. See docs/lab.md."""

from lab.cleanup import cleanup_all, cleanup_prefix
from lab.command import CommandError, LabError
from lab.core import Lab, live_labs

__all__ = ["Lab", "LabError", "CommandError", "cleanup_all", "cleanup_prefix", "live_labs"]
