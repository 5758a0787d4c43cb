"""OVN 23.03 on a lab of simulated hosts: the baseline the connect benchmark compares Loris
with (bench/bench_vs_ovn.py, docs/benchmarks.md).

The lab is an ordinary `lab.Lab` of its own (its own prefix, hosts and underlay), built and
torn down like Loris's, with OVN where a real deployment puts it:

- the control namespace runs the northbound and southbound `ovsdb-server`s and
  `ovn-northd` (SB also listens on `tcp:198.19.0.1:6642` for the hosts);
- every host's own OVS gets `external_ids:ovn-remote` (that SB address), `ovn-encap-type`
  (VXLAN by default, as Loris's lab; GENEVE works as well on the userspace datapath: both
  are tunnelled through `br-phy`),
  `ovn-encap-ip` (the host's tunnel IP) and the `system-id` the lab already set, and runs
  one `ovn-controller` against its own `db.sock`;
- OVN's integration bridge is `br-ovn` (`external_ids:ovn-bridge`), made by us with the
  lab's datapath type.

A separate lab rather than OVN beside Loris on the same one: Loris's agent looks at every
link of its host and ovn-controller at every OVS interface, so sharing hosts would charge
each system for the other's ports. Same machine, same minutes, same kind of hosts.

Pods are logical switches `pod<N>`; a port is a logical switch port plus a veth whose host
end is on `br-ovn` with `external_ids:iface-id` naming it. `bind()` is what the benchmark
times: `ovn-nbctl --wait=hv lsp-add` + `lsp-set-addresses`, then the same shell steps as the
script baseline (bench/baseline.py) to make the veth, then one `ovs-vsctl add-port`.
"""

from __future__ import annotations

import itertools
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import baseline
from bench.loris import BULK_POD0, BULK_POD_SIZE, cpu_seconds, pod_ip
from lab import Lab
from lab.command import LabError, run
from lab.naming import CONTROL_IP, random_mac
from lab.ovs import ovs_env, wait_for_unix_socket
from lab.procs import LabProcess

BRIDGE = "br-ovn"
ENCAPS = ("vxlan", "geneve")
SB_PORT = 6642
SCHEMAS = Path("/usr/share/ovn")
PACKAGES = ("ovn-central", "ovn-host")
TOOLS = ("ovn-northd", "ovn-controller", "ovn-nbctl", "ovn-sbctl")
READY_TIMEOUT = 60.0
UP_ATTEMPTS = 2


class NotReady(LabError):
    """The OVN lab's chassis did not all register and mesh in time."""


def missing_tools() -> list[str]:
    """The OVN programs this machine lacks (`./dev bench` installs them; `./dev test`
    does not)."""
    return [t for t in TOOLS if shutil.which(t) is None]


def pod_switch(pod: int) -> str:
    return f"pod{pod}"


def bulk_port_name(i: int) -> str:
    return f"b{i}"


class OvnLab:
    """A lab running OVN: central daemons in the control namespace, ovn-controller on every
    host; ports bound one at a time (`bind`) or in bulk (`grow`)."""

    def __init__(self, hosts: int = 5, docker: bool = True, encap: str = "vxlan") -> None:
        if encap not in ENCAPS:
            raise ValueError(f"encap={encap!r}: use one of {', '.join(ENCAPS)}")
        self.encap = encap
        self._lab_args = {"hosts": hosts, "docker": docker}
        self.lab = Lab(**self._lab_args)
        self.dir = self.lab.dir / "ovn"
        self.bulk: list[str] = []           # logical port names of the bulk ports
        self._numbers = itertools.count(1)      # names of bound ports: p<n>, vo<n>

    # ---- life cycle ---------------------------------------------------------------------
    def up(self) -> OvnLab:
        """Build the lab; one that does not get ready (`NotReady`, with its logs) is torn
        down and built once more, on new namespaces: it is the baseline, not what is
        measured, and a second failure is raised."""
        missing = missing_tools()
        if missing:
            raise LabError(f"OVN tools {missing} are missing: install the Debian packages "
                           f"{' '.join(PACKAGES)} (./dev bench does)")
        attempt = 1
        while True:
            try:
                return self._up_once()
            except NotReady as e:
                if attempt >= UP_ATTEMPTS:
                    raise
                attempt += 1
                print(f"{e}\nOVN lab {self.lab.prefix} torn down; building it again",
                      file=sys.stderr, flush=True)
                self.lab = Lab(**self._lab_args)
                self.dir = self.lab.dir / "ovn"

    def _up_once(self) -> OvnLab:
        self.lab.up()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._start_central()
            with ThreadPoolExecutor(min(8, len(self.lab.hosts))) as pool:
                list(pool.map(self._start_chassis, self.lab.hosts))
            self.wait_ready()
        except BaseException:
            self.lab.down(check=False)
            raise
        return self

    def down(self) -> None:
        self.lab.down()

    def __enter__(self) -> OvnLab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _start_central(self) -> None:
        d, lab = self.dir, self.lab
        for db, remotes in (("nb", []), ("sb", [f"--remote=ptcp:{SB_PORT}:{CONTROL_IP}"])):
            run(["ovsdb-tool", "create", d / f"ovn{db}_db.db", SCHEMAS / f"ovn-{db}.ovsschema"])
            server = lab.start_process(
                f"ovn-{db}-ovsdb", ["ovsdb-server", d / f"ovn{db}_db.db",
                                    f"--remote=punix:{d}/ovn{db}_db.sock", *remotes,
                                    f"--pidfile={d}/ovn{db}_db.pid",
                                    f"--unixctl={d}/ovn{db}_db.ctl",
                                    f"--log-file={d}/ovn{db}_db.log", "-vconsole:off",
                                    "--no-chdir"], netns="ctl", env=self._env())
            wait_for_unix_socket(d / f"ovn{db}_db.sock", lambda s=server: s.alive,
                                 f"OVN {db.upper()} ovsdb-server")
        self.nbctl("init")
        lab.start_process("ovn-northd", [
            "ovn-northd", f"--ovnnb-db=unix:{d}/ovnnb_db.sock",
            f"--ovnsb-db=unix:{d}/ovnsb_db.sock", f"--pidfile={d}/ovn-northd.pid",
            f"--unixctl={d}/ovn-northd.ctl", f"--log-file={d}/ovn-northd.log",
            "-vconsole:off", "--no-chdir"], netns="ctl", env=self._env())

    def _start_chassis(self, host: Any) -> None:
        ovs = self.lab.ovs(host)
        ovs.vsctl("add-br", BRIDGE, "--", "set", "bridge", BRIDGE,
                  f"datapath_type={self.lab.datapath_type}", "fail_mode=secure",
                  "other-config:disable-in-band=true",
                  "--", "set", "Open_vSwitch", ".",
                  f"external_ids:ovn-remote=tcp:{CONTROL_IP}:{SB_PORT}",
                  f"external_ids:ovn-encap-type={self.encap}",
                  f"external_ids:ovn-encap-ip={host.tunnel_ip}",
                  f"external_ids:ovn-bridge={BRIDGE}",
                  f"external_ids:ovn-bridge-datapath-type={self.lab.datapath_type}")
        r = host.rundir
        self.lab.start_process(f"{host.name}-ovn-controller", [
            "ovn-controller", f"unix:{r}/db.sock", f"--pidfile={r}/ovn-controller.pid",
            f"--log-file={r}/ovn-controller.log",
            "-vconsole:off", "--no-chdir"], netns=host, env={**ovs_env(host), "OVN_RUNDIR": str(r)})

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Every host registered as a chassis and meshed: a tunnel port to every peer.

        A host still short of tunnels halfway through gets one forced recompute of its
        ovn-controller (`inc-engine/recompute`, what ovn-kubernetes does on a failed
        readiness check). Seen once in CI: one ovn-controller of two never made its tunnel
        in 60 s, although both chassis were registered."""
        want = len(self.lab.hosts)
        start = time.monotonic()
        kicked: list[str] = []
        while True:
            dead = [h.name for h in self.lab.hosts if not self._controller(h).alive]
            if dead:
                raise NotReady(f"OVN lab {self.lab.prefix}: ovn-controller exited on {dead}; "
                               f"{self.log_tails()}")
            chassis = self.sbctl("--bare", "--columns=name", "list", "Chassis").split()
            tunnels = {h.name: len([p for p in self.lab.ovs(h).vsctl("list-ports", BRIDGE).split()
                                    if p.startswith("ovn-")]) for h in self.lab.hosts}
            if len(chassis) == want and all(t == want - 1 for t in tunnels.values()):
                self.nbctl("--wait=hv", "sync", timeout=timeout)
                return
            waited = time.monotonic() - start
            if waited > timeout:
                raise NotReady(f"OVN lab {self.lab.prefix} not ready after {timeout:g} s: "
                               f"chassis {chassis}, tunnel ports per host {tunnels}, "
                               f"recompute forced on {kicked or 'none'}; {self.log_tails()}")
            if waited > timeout / 2 and not kicked and len(chassis) == want:
                kicked = [name for name, t in tunnels.items() if t != want - 1]
                for name in kicked:
                    self.appctl(name, "inc-engine/recompute")
            time.sleep(0.1)

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of ovn-northd's log and of every host's ovn-controller (its own
        log, and its output), with the southbound chassis and encapsulations."""
        paths = [self.dir / "ovn-northd.log"]
        for h in self.lab.hosts:
            paths += [self.lab.dir / "logs" / f"{h.name}-ovn-controller.log",
                      h.rundir / "ovn-controller.log"]
        out = []
        for path in paths:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                tail = ["(no log)"]
            out.append(f"--- {path}\n" + "\n".join(tail))
        try:
            out.append("--- southbound\n" + self.sbctl("show", timeout=5))
        except LabError as e:
            out.append(f"--- southbound: {e}")
        return "\n".join(out)

    # ---- tools --------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return {"OVN_RUNDIR": str(self.dir)}

    def nbctl(self, *args: str, timeout: float = 60) -> str:
        return run(["ovn-nbctl", f"--db=unix:{self.dir}/ovnnb_db.sock",
                    f"--timeout={int(timeout)}", *args], timeout=timeout + 5).stdout

    def sbctl(self, *args: str, timeout: float = 60) -> str:
        return run(["ovn-sbctl", f"--db=unix:{self.dir}/ovnsb_db.sock",
                    f"--timeout={int(timeout)}", *args], timeout=timeout + 5).stdout

    def appctl(self, host: Any, *args: str) -> str:
        """`ovn-appctl` to the host's ovn-controller (its control socket is in the host's
        run directory)."""
        h = self.lab.host(host)
        return run(["ovn-appctl", "-t", f"{h.rundir}/ovn-controller.{self.controller_pid(h)}.ctl",
                    *args], timeout=10).stdout

    def _controller(self, host: Any) -> LabProcess:
        return self.lab.processes[f"{self.lab.host(host).name}-ovn-controller"]

    def controller_pid(self, host: Any) -> int:
        return self._controller(host).pid

    def controller_cpu(self, host: Any) -> float:
        return cpu_seconds(self.controller_pid(host))

    def central_cpu(self) -> float:
        return sum(cpu_seconds(self.lab.processes[n].pid)
                   for n in ("ovn-northd", "ovn-nb-ovsdb", "ovn-sb-ovsdb"))

    # ---- ports --------------------------------------------------------------------------
    def ensure_pod(self, pod: int) -> None:
        self.nbctl("--may-exist", "ls-add", pod_switch(pod))

    def bind(self, container: Any, ip_cidr: str, pod: int, mac: str | None = None,
             wait: bool = True) -> tuple[str, str]:
        """Bind `container` to the pod's logical switch as a user of OVN would: the logical
        port (`--wait=hv`: until every chassis has its flows), then the veth and the OVS
        port naming it. Returns (logical port, host-side port)."""
        mac = mac or random_mac()
        n = next(self._numbers)
        lsp, host_port = f"p{n}", f"vo{n}"
        self.nbctl(*(["--wait=hv"] if wait else []), "lsp-add", pod_switch(pod), lsp,
                   "--", "lsp-set-addresses", lsp, f"{mac} {ip_cidr.split('/')[0]}")
        script = baseline.veth_script(container, host_port, ip_cidr, mac, self.lab.inner_mtu)
        script += (f"ovs-vsctl add-port {BRIDGE} {host_port} -- set Interface {host_port} "
                   f"external_ids:iface-id={shlex.quote(lsp)}\n")
        self.lab.run(container.host, ["bash", "-c", script], env=self.lab.ovs(container.host).env,
                     timeout=60)
        return lsp, host_port

    def unbind(self, container: Any, lsp: str, host_port: str) -> None:
        self.nbctl("--if-exists", "lsp-del", lsp)
        self.lab.ovs(container.host).vsctl("--if-exists", "del-port", BRIDGE, host_port)
        self.lab.run(container.host, ["ip", "link", "del", host_port], check=False)

    def grow(self, total: int) -> dict:
        """Add bare-namespace ports until `total` bulk ports exist, round-robin over the
        hosts, in pods of BULK_POD_SIZE (as LorisLab.grow): one batched `ovn-nbctl`, the
        veths by `ip -batch`, one `ovs-vsctl` transaction per host; then wait until OVN
        reports every port up. Returns the step's record."""
        start_n = len(self.bulk)
        if total <= start_n:
            return {}
        lab, hosts = self.lab, self.lab.hosts
        t0 = time.monotonic()
        new = range(start_n, total)

        def make(i: int):
            return lab.add_container(hosts[i % len(hosts)], f"b{i}", kind="netns")

        with ThreadPoolExecutor(8) as pool:
            containers = dict(zip(new, pool.map(make, new), strict=True))
        t_netns = time.monotonic() - t0

        t1 = time.monotonic()
        cpu0 = self._all_cpu()
        macs = {i: random_mac() for i in new}
        ips = {i: pod_ip(2 + i % BULK_POD_SIZE) for i in new}
        nb: list[str] = []
        for i in new:
            switch = pod_switch(BULK_POD0 + i // BULK_POD_SIZE)
            nb += ["--", "--may-exist", "ls-add", switch,
                   "--", "lsp-add", switch, bulk_port_name(i),
                   "--", "lsp-set-addresses", bulk_port_name(i),
                   f"{macs[i]} {ips[i].split('/')[0]}"]
        self.nbctl(*nb[1:], timeout=300)

        def wire(host: Any) -> None:
            mine = [i for i in new if containers[i].host is host]
            mtu = lab.inner_mtu
            run(["ip", "-batch", "-"], input="".join(
                f"link add ob{i} netns {host.netns} type veth peer name eth1 "
                f"netns {containers[i].netns_ref}\n" for i in mine))
            run(["ip", "-n", host.netns, "-batch", "-"],
                input="".join(f"link set ob{i} mtu {mtu} up\n" for i in mine))
            for i in mine:
                run(["ip", "-n", containers[i].netns_ref, "-batch", "-"],
                    input=f"link set eth1 address {macs[i]} mtu {mtu} up\n"
                          f"addr add {ips[i]} dev eth1\n")
            args: list[str] = []
            for i in mine:
                args += ["--", "add-port", BRIDGE, f"ob{i}", "--", "set", "Interface", f"ob{i}",
                         f"external_ids:iface-id={bulk_port_name(i)}"]
            lab.ovs(host).vsctl(*args[1:], timeout=300)

        with ThreadPoolExecutor(len(hosts)) as pool:
            list(pool.map(wire, hosts))
        self.bulk.extend(bulk_port_name(i) for i in new)
        self.wait_up(len(self.bulk))
        step = {"from": start_n, "to": total, "netns_s": t_netns,
                "connect_s": time.monotonic() - t1, "ovn_cpu_s": self._all_cpu() - cpu0}
        return step

    def _all_cpu(self) -> float:
        return self.central_cpu() + sum(self.controller_cpu(h) for h in self.lab.hosts)

    def wait_up(self, at_least: int, timeout: float = 600) -> None:
        """Wait until at least `at_least` logical ports are up (bound and claimed) and
        every chassis has caught up with the northbound database."""
        deadline = time.monotonic() + timeout
        while True:
            up = self.nbctl("--bare", "--columns=up", "list", "Logical_Switch_Port").split()
            if up.count("true") >= at_least:
                break
            if time.monotonic() > deadline:
                raise LabError(f"OVN lab {self.lab.prefix}: only {up.count('true')} of "
                               f"{at_least} ports up after {timeout:g} s")
            time.sleep(0.2)
        self.nbctl("--wait=hv", "sync", timeout=timeout)

    def flows_per_host(self) -> dict[str, int]:
        """OpenFlow flows on each host's OVN bridge."""
        out = {}
        for h in self.lab.hosts:
            text = self.lab.ovs(h).ofctl("-O", "OpenFlow15", "dump-aggregate", BRIDGE)
            out[h.name] = int(text.split("flow_count=")[1].split()[0])
        return out

