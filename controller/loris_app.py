"""The Loris controller as an os-ken app: `osken-manager controller/loris_app.py`.

Thin glue only. The parts (store, REST API, programmer, DHCP responder) are assembled in
wiring.py; this module turns os-ken events into calls on them. Event handlers never block:
they update in-memory state or enqueue work for the per-host programmer threads and the
DHCP worker. No os-ken 3.x-only call, so running on os-ken 4.x with OSKEN_HUB_TYPE=eventlet
is a packaging change. The app refuses to start on the eventlet hub without green thread
primitives (controller/concurrency.py).

Settings: LORIS_* environment variables, else a `[loris]` section of the os-ken
`--config-file` (one key per setting of config.py), else the defaults in config.py.
"""

from __future__ import annotations

import logging
import os
import sys

# osken-manager loads this file by path: make the repository root importable
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from os_ken import cfg  # noqa: E402
from os_ken.base import app_manager  # noqa: E402
from os_ken.controller import ofp_event  # noqa: E402
from os_ken.controller.handler import (  # noqa: E402
    CONFIG_DISPATCHER,
    DEAD_DISPATCHER,
    MAIN_DISPATCHER,
    set_ev_cls,
)
from os_ken.lib import hub  # noqa: E402
from os_ken.ofproto import ofproto_v1_3  # noqa: E402

from controller import auth, concurrency, config, recovery, wiring  # noqa: E402
from controller.roles import role_status  # noqa: E402
from controller.switch_guard import close_session, fingerprint  # noqa: E402

LOG = logging.getLogger("loris.app")
CONF = cfg.CONF

_OPTS = config.config_file_options()
CONF.register_opts(_OPTS, group="loris")
# Echo requests every 5 s, disconnect after 3 unanswered: a dead switch is noticed in ~15 s
# (and on the 4.x native hub this is what delivers DEAD events at all). A config file wins.
CONF.set_default("echo_request_interval", 5.0)
CONF.set_default("maximum_unreplied_echo_requests", 3)

DHCP_QUEUE = 1024      # packet-ins waiting for the DHCP worker; more are dropped
CREDENTIALS_SYNC_S = 3.0   # how soon a revocation made by the admin command bites
# eventlet's WSGI server logs every connection at INFO through os-ken's hub logger; with one
# long poll per agent that drowns the controller's own log. Errors still show.
logging.getLogger("os_ken.lib.hub").setLevel(logging.WARNING)


class LorisApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        concurrency.require_green_threads(hub.HUB_TYPE)
        section = {o.dest: getattr(CONF.loris, o.dest) for o in _OPTS}
        # os-ken serves OpenFlow over TLS (and then only over TLS) when given a key and cert
        tls = bool(getattr(CONF, "ctl_privkey", None) and getattr(CONF, "ctl_cert", None))
        if tls and not getattr(CONF, "ca_certs", None):
            raise ValueError("OpenFlow over TLS needs --ca-certs too: without it any switch "
                             "could connect")
        port = CONF.ofp_ssl_listen_port if tls else CONF.ofp_tcp_listen_port
        settings = config.load(section=section, openflow_port=port or
                               config.DEFAULT_OPENFLOW_PORT, openflow_tls=tls)
        credentials = auth.credentials_dir(settings.db, settings.credentials)
        self.parts = wiring.build(settings, hub.spawn, hub.Queue, hub.QueueEmpty,
                                  auth.load_or_create(credentials))
        LOG.info("credentials in %s", credentials)
        self.dhcp_queue = hub.Queue(DHCP_QUEUE)
        self.api_server = None

    def start(self):
        thread = super().start()
        parts = self.parts
        if parts.ha is not None:        # a lease first: connects record it as their owner's
            parts.ha.register()
        recovery.recover(parts.context)
        from controller.api import make_server, tls_context
        tls = (tls_context(parts.settings.api_cert, parts.settings.api_key)
               if parts.settings.api_cert else None)
        self.api_server = make_server(parts.api, parts.settings.api_host,
                                      parts.settings.api_port, tls)
        self.threads.append(hub.spawn(self._serve_api))
        if parts.settings.metrics_listen:
            from controller.config import split_listen
            from controller.observe import metrics_app
            host, port = split_listen(parts.settings.metrics_listen)
            self.metrics_server = make_server(metrics_app(parts.metrics.render), host, port)
            self.threads.append(hub.spawn(self._serve, self.metrics_server, "metrics"))
            LOG.info("metrics WITHOUT credentials on http://%s/metrics",
                     parts.settings.metrics_listen)
        self.threads.append(hub.spawn(self._dhcp_worker))
        self.threads.append(hub.spawn(self._credentials_sync))
        if parts.ha is not None:        # several controllers: registry, mastership (ha.py)
            self.threads.append(hub.spawn(parts.ha.keepalive_forever))
            self.threads.append(hub.spawn(parts.ha.run_forever))
            if parts.ha.marks is not None:
                self.threads.append(hub.spawn(parts.ha.marks.publish_forever))
            LOG.info("controller %s: mastership through %s", parts.ha.me.id,
                     parts.settings.etcd_endpoints)
        LOG.info("Loris controller up: REST %s, OpenFlow port %d, store %s",
                 parts.settings.api_listen, parts.settings.openflow_port, parts.settings.db)
        return thread

    def stop(self):
        if self.parts.ha is not None:   # a clean stop (os-ken's close): our hosts move now
            self.parts.ha.revoke()
        return super().stop()

    def _serve_api(self) -> None:
        self._serve(self.api_server, "REST")

    @staticmethod
    def _serve(server, what: str) -> None:
        try:
            server.serve_forever()
        except Exception:
            LOG.exception("the %s server stopped", what)

    def _credentials_sync(self) -> None:
        """Revocations made outside the API (`python -m controller.auth revoke`, another
        process) close the host's switches and end its long polls within seconds."""
        while True:
            hub.sleep(CREDENTIALS_SYNC_S)
            try:
                if self.parts.access is not None:
                    self.parts.access.sync()
            except Exception:
                LOG.exception("reading the credentials from the store failed")

    def _dhcp_worker(self) -> None:
        """Answers DHCP packet-ins outside the event loop (it reads the store)."""
        parts = self.parts
        while True:
            dpid, in_port, cookie, data = self.dhcp_queue.get()
            try:
                frame = parts.dhcp.handle(dpid, in_port, cookie, data)
                if frame is not None:
                    parts.switches.packet_out(dpid, in_port, frame)
            except Exception:
                LOG.exception("DHCP packet from %#x port %d", dpid, in_port)

    # ---- OpenFlow events (run in the app's event thread: never block) ------------------------
    @set_ev_cls(ofp_event.EventOFPStateChange, [MAIN_DISPATCHER, DEAD_DISPATCHER])
    def _state_change(self, ev) -> None:
        dp = ev.datapath
        if ev.state == MAIN_DISPATCHER:
            if not self._switch_admitted(dp):
                close_session(dp)
                return
            # unwritable until the switch confirms us MASTER (with mastership on); the
            # mastership loop sends the role request first thing
            self.parts.roles.connected(dp)
            self.parts.switches.connected(dp)
            self.parts.switch_events.connected(dp.id)
            if self.parts.ha is not None:
                self.parts.ha.wake()
        elif ev.state == DEAD_DISPATCHER and dp.id is not None:
            self.parts.roles.disconnected(dp)
            if self.parts.switches.disconnected(dp):
                self.parts.switch_events.disconnected(dp.id)

    def _switch_admitted(self, dp) -> bool:
        """Over TLS a switch is who its certificate says: a host's bridges only, with the
        certificate its agent declared; and no revoked host's switch (switch_guard.py)."""
        tls = self.parts.settings.openflow_tls
        cn = sha256 = None
        if tls:
            try:
                cn = auth.common_name(dp.socket.getpeercert())
                sha256 = fingerprint(dp.socket.getpeercert(binary_form=True))
            except (AttributeError, ValueError, OSError):
                cn = sha256 = None
        owner = (self.parts.context.dpid_owner(dp.id) or (None, None))[0]
        refusal = self.parts.switch_guard.refusal(dp.id, owner, tls, cn, sha256)
        if refusal is None:
            return True
        LOG.warning("datapath %#018x refused: %s", dp.id, refusal)
        return False

    @set_ev_cls([ofp_event.EventOFPBarrierReply, ofp_event.EventOFPFlowStatsReply,
                 ofp_event.EventOFPAggregateStatsReply,
                 ofp_event.EventONFBundleCtrlMsg, ofp_event.EventOFPRoleReply],
                MAIN_DISPATCHER)
    def _reply(self, ev) -> None:
        self.parts.switches.reply(ev.msg)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev) -> None:
        msg = ev.msg
        ofp = msg.datapath.ofproto
        if msg.type == ofp.OFPET_BAD_REQUEST and msg.code == ofp.OFPBRC_IS_SLAVE:
            self.parts.roles.demoted(msg.datapath)      # another controller is master
        self.parts.switches.error(msg)

    @set_ev_cls(ofp_event.EventOFPExperimenter, MAIN_DISPATCHER)
    def _experimenter(self, ev) -> None:
        """OVS tells a demoted master with an ONF role-status message (roles.py)."""
        status = role_status(ev.msg)
        if status is not None and status[0] == ev.msg.datapath.ofproto.OFPCR_ROLE_SLAVE:
            self.parts.roles.demoted(ev.msg.datapath, status[1])

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev) -> None:
        msg = ev.msg
        if not self.parts.roles.may_write(msg.datapath):
            return                      # only the host's master answers (docs/ha.md)
        dpid, in_port = msg.datapath.id, msg.match.get("in_port")
        if in_port is None or not self.parts.dhcp_limit.allow((dpid, in_port)):
            return
        # this handler is the only producer, so a free slot seen here is still free at put()
        if self.dhcp_queue.qsize() >= DHCP_QUEUE:
            LOG.warning("DHCP queue full: packet from %#x port %d dropped", dpid, in_port)
            return
        self.dhcp_queue.put((dpid, in_port, msg.cookie, bytes(msg.data)), block=False)
