"""`loris trace` and `loris ports --stats` as text (pure)."""

from __future__ import annotations

from hostagent.cli.output import port_address
from hostagent.tables import table


def endpoint(p: dict | None) -> str:
    if not p:
        return "-"
    if "container" not in p:
        return p.get("ip") or "-"
    name = p["container"].removeprefix("netns:")
    return (f"{name} (port {p['port']}, pod {p['pod']}, {p['ip']} {p['mac']}, on {p['host']} "
            f"ofport {p['ofport']}, {p['state']})")


def trace_text(result: dict, switch: list[dict] | None = None) -> str:
    """The whole trace: who, every leg with its bridges and flows, the flows the switches
    lack or should not have, what ofproto/trace said, and the verdict (last line, or the
    line before the fix)."""
    dst = result.get("destination")
    lines = [f"trace {result['protocol']}: {endpoint(result['source'])}",
             f"   to {endpoint(dst) if dst else '(a DHCP server)'}", ""]
    for n, leg in enumerate(result["legs"], 1):
        lines.append(f"{n}. {leg['name']}: {leg['what']}")
        for hop in leg["hops"]:
            lines.append(f"   {hop['host']} {hop['bridge']}, in from {hop['from']}")
            for f in hop["flows"]:
                count = f" [{f['packets']} packets]" if "packets" in f else ""
                lines.append(f"     table {f['table']:<3} {f['role']}  ({f['owner']}; cookie "
                             f"{f['cookie']}){count}")
                lines.append(f"               {f['flow']}")
        if leg.get("error"):
            lines.append(f"   cannot follow: {leg['error']}")
        lines.append(f"   => {leg['text']}")
    lines.append("")
    lines.extend(flows_text(result.get("flows", [])))
    for check in switch or []:
        lines.append(check["text"])
    verdict = result["verdict"]
    lines.append(f"verdict: {verdict['text']}")
    if verdict.get("fix"):
        lines.append(f"fix: {verdict['fix']}")
    return "\n".join(lines)


def flows_text(bridges: list[dict]) -> list[str]:
    """Per bridge: as the controller wants it, or what is missing and what should not be
    there."""
    good = [f"{b['host']} {b['bridge']}" for b in bridges if not (b["missing"] or b["unwanted"])]
    out = []
    if good:
        out.append(f"flows as the controller wants them on {', '.join(good)}")
    for b in bridges:
        for what, rows in (("missing", b["missing"]), ("not wanted", b["unwanted"])):
            for f in rows:
                out.append(f"{b['host']} {b['bridge']}: {what}: {f['role']} ({f['owner']}; "
                           f"cookie {f['cookie']})")
    return out


def ports_stats_table(ports: list[dict]) -> str:
    rows = []
    for p in sorted(ports, key=lambda p: p["id"]):
        s = p.get("stats")
        counts = ([s["sent"]["packets"], s["sent"]["bytes"], s["received"]["packets"],
                   s["received"]["bytes"], s["dropped"]["packets"], s["dropped"]["bytes"]]
                  if s else ["-"] * 6)
        rows.append([p["id"], p.get("container"), p.get("pod"), port_address(p), p.get("host"),
                     p.get("state"), *counts])
    return table(["ID", "CONTAINER", "POD", "IP", "HOST", "STATE", "SENT PKTS", "SENT BYTES",
                  "RECV PKTS", "RECV BYTES", "DROPPED PKTS", "DROPPED BYTES"], rows)
