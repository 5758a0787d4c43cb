"""The OpenAPI part of several controllers (controller/ha_views.py, docs/ha.md): the
controllers' registry, a host's master and each bridge's role per controller; added to
openapi.py's document by `extend()` (called from there, once its helpers exist)."""

from __future__ import annotations


def extend(SCHEMAS: dict, PATHS: dict) -> None:  # noqa: N803 (openapi.py's names)
    from controller.openapi import _errors, _nullable_str, _obj, _ref, _resp

    hosts = {"type": "array", "items": {"type": "string"}}
    SCHEMAS.update({
        "Controller": _obj({
            "id": {"type": "string"},
            "api_url": _nullable_str, "openflow": _nullable_str,
            "healthy": {"type": "boolean", "description": "its etcd lease is alive (its "
                        "registry entry exists) and, for this controller, not fenced"},
            "self": {"type": "boolean", "description": "the controller that answered"},
            "connected": {**hosts, "description": "hosts whose switches it has connected"},
            "masters": {**hosts, "description": "hosts it is the OpenFlow master of"}}),
        "Controllers": _obj({
            "mastership": {"type": "boolean", "description": "false: one controller without "
                           "etcd, master of every switch connected to it"},
            "self": {"type": "string"},
            "fenced": {"type": "boolean", "description": "this controller's lease may have "
                       "expired: it programs nothing until etcd confirms it again"},
            "error": {**_nullable_str, "description": "the last etcd error of this "
                      "controller's mastership loop"},
            "controllers": {"type": "array", "items": _ref("Controller")}}),
    })
    SCHEMAS["OpenFlowBridge"]["properties"]["roles"] = {
        "type": "object", "additionalProperties": _nullable_str,
        "description": "controller id -> its OpenFlow role on this bridge (master, slave; "
                       "equal without mastership or before one was given)"}
    SCHEMAS["Host"]["properties"]["openflow"]["properties"]["master"] = {
        **_nullable_str, "description": "the controller that programs this host's switches"}
    PATHS["/v1/controllers"] = {
        "get": {"summary": "the controllers, their health and the hosts each masters "
                           "(agents read it to point their bridges at every controller)",
                "responses": {"200": _resp("the controllers", _ref("Controllers")),
                              **_errors(400)}},
    }
