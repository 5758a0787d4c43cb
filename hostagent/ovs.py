"""ovs-vsctl plumbing: one OVS instance, chosen by its database socket and run directory."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


class OvsError(RuntimeError):
    """ovs-vsctl failed; the message carries its stderr."""


def _decode(value: object) -> object:
    """OVSDB JSON (`--data=json`) to plain Python: maps to dicts, sets to lists, uuids to str."""
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        kind, body = value
        if kind == "map":
            return {_decode(k): _decode(v) for k, v in body}
        if kind == "set":
            return [_decode(v) for v in body]
        if kind in ("uuid", "named-uuid"):
            return body
    return value


def _scalar(value: object) -> object:
    """An optional column (empty set when unset) as a value or None."""
    if isinstance(value, list):
        return value[0] if value else None
    return value


@dataclass
class Interface:
    name: str
    type: str
    ofport: int | None
    ofport_request: int | None
    external_ids: dict[str, str]
    options: dict[str, str]
    error: str | None
    bridge: str | None = None


@dataclass
class Snapshot:
    """What OVS holds, read in one ovs-vsctl call."""

    bridges: dict[str, dict] = field(default_factory=dict)  # name -> {"external_ids", "controller"}
    interfaces: dict[str, Interface] = field(default_factory=dict)
    controllers: dict[str, dict] = field(default_factory=dict)  # uuid -> row

    def on_bridge(self, bridge: str) -> list[Interface]:
        return [i for i in self.interfaces.values() if i.bridge == bridge]


@dataclass(frozen=True)
class Ovs:
    db: str | None = None  # e.g. "unix:/run/openvswitch/db.sock"; None = OVS's default
    rundir: str | None = None  # OVS_RUNDIR of the instance (where ovs-vswitchd's sockets live)
    timeout: int = 15

    @property
    def db_target(self) -> str | None:
        if self.db:
            return self.db
        if self.rundir:
            return f"unix:{self.rundir}/db.sock"
        return None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.rundir:
            env["OVS_RUNDIR"] = self.rundir
        return env

    def vsctl(
        self, commands: Sequence[Sequence[str]], *, fmt_json: bool = False, wait: bool = True
    ) -> str:
        """Run `commands` in ONE ovs-vsctl transaction; unless `wait` is false, returns once
        ovs-vswitchd has applied it (so ofports are known)."""
        argv = ["ovs-vsctl", f"--timeout={self.timeout}"]
        if not wait:
            argv.append("--no-wait")
        if self.db_target:
            argv.append(f"--db={self.db_target}")
        if fmt_json:
            argv += ["--format=json", "--data=json"]
        for cmd in commands:
            argv.append("--")
            argv += list(cmd)
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, env=self._env(), timeout=self.timeout + 5
            )
        except FileNotFoundError as e:
            raise OvsError("ovs-vsctl not found: install Open vSwitch") from e
        except subprocess.TimeoutExpired as e:
            raise OvsError(f"ovs-vsctl timed out talking to {self.db_target or 'OVS'}") from e
        if proc.returncode != 0:
            raise OvsError(proc.stderr.strip() or f"ovs-vsctl exited {proc.returncode}")
        return proc.stdout

    def appctl(self, *args: str, target: str = "ovs-vswitchd") -> str:
        """`ovs-appctl -t TARGET ARGS...` against this instance (its run directory)."""
        argv = ["ovs-appctl", f"--timeout={self.timeout}", "-t", target, *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, env=self._env(),
                                  timeout=self.timeout + 5)
        except FileNotFoundError as e:
            raise OvsError("ovs-appctl not found: install Open vSwitch") from e
        except subprocess.TimeoutExpired as e:
            raise OvsError(f"ovs-appctl {args[0] if args else ''} timed out") from e
        if proc.returncode != 0:
            raise OvsError(proc.stderr.strip() or f"ovs-appctl exited {proc.returncode}")
        return proc.stdout

    def reachable(self) -> bool:
        try:
            self.vsctl([["get", "Open_vSwitch", ".", "_uuid"]], wait=False)
            return True
        except OvsError:
            return False

    def snapshot(self) -> Snapshot:
        out = self.vsctl(
            [
                ["--columns=name,ports,external_ids,controller", "list", "Bridge"],
                ["--columns=_uuid,name,interfaces", "list", "Port"],
                [
                    "--columns=_uuid,name,type,ofport,ofport_request,external_ids,options,error",
                    "list",
                    "Interface",
                ],
                ["--columns=_uuid,target,is_connected,role", "list", "Controller"],
            ],
            fmt_json=True,
            wait=False,
        )
        tables = [_rows(json.loads(line)) for line in out.splitlines() if line.strip()]
        bridges, ports, ifaces, ctrls = tables
        snap = Snapshot()
        port_bridge: dict[str, str] = {}
        for b in bridges:
            snap.bridges[b["name"]] = {
                "external_ids": b["external_ids"],
                "controller": _as_list(b["controller"]),
            }
            for p in _as_list(b["ports"]):
                port_bridge[p] = b["name"]
        iface_bridge: dict[str, str] = {}
        for p in ports:
            for i in _as_list(p["interfaces"]):
                if p["_uuid"] in port_bridge:
                    iface_bridge[i] = port_bridge[p["_uuid"]]
        for i in ifaces:
            ofport = _scalar(i["ofport"])
            snap.interfaces[i["name"]] = Interface(
                name=i["name"],
                type=i["type"],
                ofport=ofport if isinstance(ofport, int) and ofport > 0 else None,
                ofport_request=_scalar(i["ofport_request"]),
                external_ids=i["external_ids"],
                options=i["options"],
                error=_scalar(i["error"]),
                bridge=iface_bridge.get(i["_uuid"]),
            )
        for c in ctrls:
            snap.controllers[c["_uuid"]] = c
        return snap

    def ofports(self, ifnames: Iterable[str]) -> dict[str, int | None]:
        snap = self.snapshot()
        return {n: (snap.interfaces[n].ofport if n in snap.interfaces else None) for n in ifnames}


def _rows(table: dict) -> list[dict]:
    heads = table["headings"]
    return [{h: _decode(v) for h, v in zip(heads, row, strict=True)} for row in table["data"]]


def _as_list(value: object) -> list:
    return value if isinstance(value, list) else [value]


def kv(column: str, mapping: dict[str, str]) -> list[str]:
    """`column:key=value` arguments for `ovs-vsctl set` (values quoted for OVSDB's syntax)."""
    return [f'{column}:{k}="{v}"' for k, v in mapping.items()]


class VsctlDb:
    """The reads and writes a reconcile pass makes, through `ovs-vsctl` (a fork each): what
    the agent uses when it has no OVSDB replica (`--apply`, or the replica could not start).
    Same methods as `hostagent.ovsdb.OvsdbReplica`."""

    def __init__(self, ovs: Ovs) -> None:
        self.ovs = ovs

    def snapshot(self) -> Snapshot:
        return self.ovs.snapshot()

    def interface(self, name: str) -> Interface | None:
        return self.ovs.snapshot().interfaces.get(name)

    def wait_until(self, predicate, timeout: float) -> bool:
        return predicate(self.ovs.snapshot())

    def add_port(self, bridge: str, name: str, port_ids: dict[str, str],
                 iface_ids: dict[str, str], ofport_request: int | None = None,
                 iface_type: str | None = None, options: dict[str, str] | None = None,
                 ) -> Interface | None:
        cmd = ["set", "Interface", name, *kv("external_ids", iface_ids)]
        if ofport_request:
            cmd.append(f"ofport_request={ofport_request}")
        if iface_type is not None:
            cmd.append(f"type={iface_type}")
        cmds = [["--may-exist", "add-port", bridge, name],
                ["set", "Port", name, *kv("external_ids", port_ids)]]
        if options is not None:   # replaced as a whole so a stale one never lingers
            cmds.append(["clear", "Interface", name, "options"])
            cmd += kv("options", options)
        self.ovs.vsctl([*cmds, cmd])
        return self.interface(name)

    def set_ofport_request(self, name: str, ofport: int) -> None:
        self.ovs.vsctl([["set", "Interface", name, f"ofport_request={ofport}"]])

    def del_ports(self, bridge: str, names: list[str]) -> None:
        if names:
            self.ovs.vsctl([["--if-exists", "del-port", bridge, n] for n in names])
