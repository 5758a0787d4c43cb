"""Loris flows: desired state in, OpenFlow 1.3 flows out. Pure: stdlib only, no I/O.

The contract is in docs/design.md; the pipeline, tables and cookie layout in docs/pipeline.md.
"""

from .contract import BRIDGES
from .diff import FlowDiff, diff, flatten
from .flow import (
    LORIS_COOKIE,
    LORIS_COOKIE_MASK,
    OBJECT_COOKIE_MASK,
    Flow,
    Kind,
    parse_cookie,
)
from .model import HostSpec, PodSpec, PortSpec, Topology, TopologyError
from .pipeline import HostFlows, host_flows
from .render import delete_by_cookie, to_flowmod, to_ofctl

__all__ = [
    "BRIDGES", "Flow", "FlowDiff", "HostFlows", "HostSpec", "Kind", "LORIS_COOKIE",
    "LORIS_COOKIE_MASK", "OBJECT_COOKIE_MASK", "PodSpec", "PortSpec", "Topology",
    "TopologyError", "delete_by_cookie", "diff", "flatten", "host_flows", "parse_cookie",
    "to_flowmod", "to_ofctl",
]
