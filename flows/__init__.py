"""Loris flows: desired state in, OpenFlow 1.3 flows out. Pure: stdlib only, no I/O.

The contract is in docs/design.md; the pipeline, tables and cookie layout in docs/pipeline.md.
"""

import sys
import types

# Every name below is loaded on first use (PEP 562), so `from flows import contract` (the
# CLI, the agent) pays for neither the flows, their diff (and `dataclasses`), the pipeline,
# the model nor the renderer.
_EXPORTS = {
    "BRIDGES": "contract",
    "FlowDiff": "diff", "diff": "diff", "flatten": "diff",
    "LORIS_COOKIE": "flow", "LORIS_COOKIE_MASK": "flow", "OBJECT_COOKIE_MASK": "flow",
    "Flow": "flow", "Kind": "flow", "parse_cookie": "flow",
    "HostSpec": "model", "PodSpec": "model", "PortSpec": "model", "Topology": "model",
    "TopologyError": "model",
    "HostFlows": "pipeline", "host_flows": "pipeline",
    "delete_by_cookie": "render", "to_flowmod": "render", "to_ofctl": "render",
}


class _Package(types.ModuleType):
    """`flows.diff` is the function flows.diff.diff, whenever its submodule is imported: the
    import system sets a submodule as its package's attribute once it is loaded, which would
    otherwise replace the function by the module (`from flows import diff` would then give
    the module, depending on import order)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "diff" and isinstance(value, types.ModuleType):
            value = value.diff
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


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
