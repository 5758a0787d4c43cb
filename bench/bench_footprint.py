"""Footprint: the controller's memory and CPU to reach 1,000 ports on 5 hosts, and the flows
each host carries per port.

    python -m bench footprint [--size smoke|full]

Read from the run's bulk lab (bench/runner.py): `connect` grows it to 1,000 ports through
the REST API and the real agents, 48 connects at a time; run alone, this benchmark grows it.
Baselines, same run:

- memory: the same controller idle (hosts registered, no port);
- CPU: what the hosts' Open vSwitch daemons (ovs-vswitchd + ovsdb-server, all hosts) spent
  over the same growth: the switches' own cost of those ports;
- flows: the original Loris's script installs 3 flows per port, on the port's host only
  (bench/baseline.py; it learns MACs instead of installing flows for remote ones).
"""

from __future__ import annotations

from bench.common import Figure, Result

SIZES = {"full": 1_000, "smoke": 6}
SCRIPT_FLOWS_PER_PORT = 3


def run(size: str = "full", session=None) -> Result:
    if session is None:
        from bench.runner import Session
        session, own = Session(size), True
    else:
        own = False
    result = Result("footprint", size)
    try:
        ll = session.bulk_lab()
        ll.grow(SIZES[size])
        steps = ll.growth.steps
        ports = steps[-1]["to"]
        hosts = len(ll.lab.hosts)
        flows = ll.flows_per_host()
        all_ports = _port_count(ll)
        cpu = sum(s["controller_cpu_s"] for s in steps)
        ovs = sum(s["ovs_cpu_s"] for s in steps)
        per_host_port = sum(flows.values()) / len(flows) / all_ports
        script = SCRIPT_FLOWS_PER_PORT / hosts        # 3 per port, on 1 host of `hosts`
        result.details.update(steps=steps, idle=ll.idle, flows_per_host=flows,
                              ports_in_network=all_ports)
        result.add(
            Figure(f"controller memory (RSS) at {ports:,} ports", steps[-1]["controller_rss_mib"],
                   "MiB", ll.idle["rss_mib"], "idle controller"),
            Figure(f"controller CPU to reach {ports:,} ports", cpu, "s", ovs,
                   "OVS daemons, same growth",
                   note=f"agents: {sum(s['agents_cpu_s'] for s in steps):.1f} s"),
            Figure("flows per host per port in the network", per_host_port, "",
                   script, "script: 3 per local port",
                   note=f"{sum(flows.values()) // len(flows):,} flows per host, "
                        f"{all_ports:,} ports on {hosts} hosts"))
    finally:
        if own:
            session.close()
    return result


def _port_count(ll) -> int:
    """Every port in the network (the bulk ones and the connect benchmark's pinger)."""
    status, ports = ll.api("GET", "/v1/ports")
    if status != 200:
        raise RuntimeError(f"GET /v1/ports: {status} {ports}")
    return len(ports)
