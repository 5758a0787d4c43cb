"""Bundles against a real OVS: an add the switch rejects on arrival discards the whole bundle.

OVS validates each BundleAdd when it arrives and would still COMMIT the rest, so
`Switches.bundle` must collect the add errors (barrier) and DISCARD. The Loris pipeline
never produces such a flow, so a small os-ken app (written below, run by osken-manager like
the controller) drives `controller.switches.Switches` with the same event wiring as
loris_app.py and a deliberately bad flow on a bridge of its own.
"""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from lab import Lab
from lab.core import REPO_ROOT, venv_bin

pytestmark = [pytest.mark.integration]

PROBE_PORT = 6654

PROBE_APP = textwrap.dedent('''
    import json, os, sys
    sys.path.insert(0, os.environ["PROBE_ROOT"])
    from os_ken.base import app_manager
    from os_ken.controller import ofp_event
    from os_ken.controller.handler import CONFIG_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
    from os_ken.lib import hub
    from os_ken.ofproto import ofproto_v1_3
    from controller.switches import OpenFlowError, Switches
    from flows import Kind, LORIS_COOKIE, to_flowmod, to_ofctl
    from flows.flow import make_flow

    class Probe(app_manager.OSKenApp):
        OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.switches = Switches(timeout=5)

        @set_ev_cls(ofp_event.EventOFPStateChange, MAIN_DISPATCHER)
        def state(self, ev):
            self.switches.connected(ev.datapath)
            hub.spawn(self.run, ev.datapath)

        @set_ev_cls([ofp_event.EventOFPBarrierReply, ofp_event.EventOFPFlowStatsReply,
                     ofp_event.EventOFPAggregateStatsReply,
                     ofp_event.EventONFBundleCtrlMsg], MAIN_DISPATCHER)
        def reply(self, ev):
            self.switches.reply(ev.msg)

        @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
        def error(self, ev):
            self.switches.error(ev.msg)

        def run(self, dp):
            out = {}
            p = dp.ofproto_parser
            good1 = make_flow(20, 5, {"eth_dst": "02:00:00:00:00:01"}, [], Kind.BASE, 0)
            good2 = make_flow(20, 5, {"eth_dst": "02:00:00:00:00:02"}, [], Kind.BASE, 0)
            bad = p.OFPFlowMod(dp, cookie=LORIS_COOKIE | 1, table_id=20, priority=6,
                               match=p.OFPMatch(eth_dst="02:00:00:00:00:03"),
                               instructions=[p.OFPInstructionGotoTable(10)])
            try:
                self.switches.bundle(dp, [(to_flowmod(good1, dp), to_ofctl(good1)),
                                          (bad, "bad: goto_table:10 from table 20")])
                out["first"] = "committed"
            except OpenFlowError as e:
                out["first"] = str(e)
            self.switches.bundle(dp, [(to_flowmod(good2, dp), to_ofctl(good2))])
            out["cookies"] = sorted(s.cookie for s in self.switches.dump_loris_flows(dp))
            out["good"] = [good1.cookie, good2.cookie]
            out["errors"] = list(self.switches.status[dp.id].errors)
            with open(os.environ["PROBE_OUT"] + ".tmp", "w") as f:
                json.dump(out, f)
            os.rename(os.environ["PROBE_OUT"] + ".tmp", os.environ["PROBE_OUT"])
''')


def test_a_rejected_add_discards_the_whole_bundle(tmp_path):
    app = tmp_path / "probe_app.py"
    app.write_text(PROBE_APP)
    result = tmp_path / "result.json"
    with Lab(hosts=1, docker=False) as lab:
        proc = lab.start_process(
            "probe", [venv_bin() / "osken-manager", app, "--ofp-tcp-listen-port",
                      str(PROBE_PORT)], netns="ctl", cwd=REPO_ROOT,
            env={"PROBE_ROOT": str(REPO_ROOT), "PROBE_OUT": str(result)})
        ovs = lab.ovs("h1")
        ovs.vsctl("add-br", "br-probe", "--", "set", "bridge", "br-probe",
                  f"datapath_type={lab.datapath_type}", "fail_mode=secure",
                  "protocols=OpenFlow13", "other-config:disable-in-band=true",
                  "--", "set-controller", "br-probe", f"tcp:198.19.0.1:{PROBE_PORT}")
        deadline = time.monotonic() + 30
        while not result.exists():
            assert proc.alive and time.monotonic() < deadline, proc.log_tail(40)
            time.sleep(0.2)
        out = json.loads(result.read_text())
        flows = ovs.dump_flows("br-probe", stats=False)
        proc.stop()
    assert "rejected 1 of 2 flow-mods" in out["first"], out
    assert "OFPBIC_BAD_TABLE_ID" in out["first"] and "goto_table:10" in out["first"]
    good1, good2 = out["good"]
    assert out["cookies"] == [good2], "the good add of the rejected bundle must not be committed"
    assert not any("02:00:00:00:00:01" in f for f in flows) and \
        any("02:00:00:00:00:02" in f for f in flows), flows
    assert [(e["message"].split(" ")[0], e["flow"]) for e in out["errors"]] == [
        ("OFPET_BAD_INSTRUCTION/OFPBIC_BAD_TABLE_ID", "bad: goto_table:10 from table 20")]
