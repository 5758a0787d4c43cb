"""Loris flows: desired state in, OpenFlow 1.3 flows out. Pure: stdlib only, no I/O.

The contract is in docs/design.md; the pipeline, tables and cookie layout in docs/pipeline.md.
"""

# `diff` is imported here: the function must shadow the submodule of the same name, which
# a later `import flows.diff` would otherwise leave as the package's attribute.
from .diff import FlowDiff, diff, flatten
from .flow import (
    LORIS_COOKIE,
    LORIS_COOKIE_MASK,
    OBJECT_COOKIE_MASK,
    Flow,
    Kind,
    parse_cookie,
)

# The names below are loaded on first use (PEP 562), so `from flows import contract` (the
# CLI, the agent) does not pay for the pipeline, the model and the renderer.
_EXPORTS = {
    "BRIDGES": "contract",
    "HostSpec": "model", "PodSpec": "model", "PortSpec": "model", "Topology": "model",
    "TopologyError": "model",
    "HostFlows": "pipeline", "host_flows": "pipeline",
    "delete_by_cookie": "render", "to_flowmod": "render", "to_ofctl": "render",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flows' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"flows.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BRIDGES", "Flow", "FlowDiff", "HostFlows", "HostSpec", "Kind", "LORIS_COOKIE",
    "LORIS_COOKIE_MASK", "OBJECT_COOKIE_MASK", "PodSpec", "PortSpec", "Topology",
    "TopologyError", "delete_by_cookie", "diff", "flatten", "host_flows", "parse_cookie",
    "to_flowmod", "to_ofctl",
]
