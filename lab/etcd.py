"""A real etcd 3.4 cluster in a lab's control namespace, for tests of the etcd store.

    cluster = lab.start_etcd(members=3)          # EtcdLab, part of Lab (lab/core.py)
    client = EtcdClient(cluster.endpoints, socket_factory=cluster.socket_factory)
    leader = cluster.leader()                    # an EtcdMember
    cluster.kill(leader); cluster.restart(leader)
    cluster.pause(m); cluster.resume(m)          # SIGSTOP / SIGCONT: a hung member
    cluster.compact(revision)

Member *n* of cluster `name` is process `<name>-m<n>` (log `<lab dir>/logs/<name>-m<n>.log`,
record in `<lab dir>/procs/`, so `loris-lab down` ends it like any lab process), data in
`<lab dir>/<name>/m<n>/`, listening on its own address in the control namespace:
198.19.0.(first_ip + n - 1), client port 2379 (etcd's JSON gateway at /v3/), peer port 2380.
The default cluster uses 198.19.0.5-7; 198.19.0.2-4 stay free for more controllers, hosts
start at .11.

Test settings (docs/ha.md): heartbeat 50 ms, election timeout 500 ms, watch progress
notifications every 2 s; optional revision-based auto-compaction. With `tls=True` the
members serve https only and require a client certificate (a CA, one member certificate
for every member address and a client certificate, made under `<lab dir>/<name>/pki/`).

This module talks to the members through their gateway with its own few requests (status,
compaction, auth set-up); the client under test is controller/etcd.
"""

from __future__ import annotations

import json
import signal
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import requests

from controller.etcd.adapter import Transport
from hostagent.transport import SocketFactory
from lab.command import LabError
from lab.naming import MGMT_PREFIXLEN
from lab.netns import socket_in_netns
from lab.procs import LabProcess

CLIENT_PORT = 2379
PEER_PORT = 2380
MAX_MEMBERS = 5
CLIENT_CERT_NAME = "etcd-client"     # pki/<name>.pem and .key: the clients' certificate


def member_ip(first_ip: int, index: int) -> str:
    return f"198.19.0.{first_ip + index - 1}"


@dataclass
class EtcdMember:
    """One member: its name (m1), address, URLs, data directory and process."""

    cluster: str
    index: int
    ip: str
    scheme: str
    data_dir: Path
    process: LabProcess | None = None
    paused: bool = False

    @property
    def name(self) -> str:
        return f"m{self.index}"

    @property
    def process_name(self) -> str:
        return f"{self.cluster}-{self.name}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.ip}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:{PEER_PORT}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.alive

    def __str__(self) -> str:
        return f"{self.process_name} ({self.client_url})"


class EtcdCluster:
    """An etcd cluster of `members` members in `lab`'s control namespace (see the module)."""

    def __init__(self, lab: Any, members: int = 3, *, name: str = "etcd", first_ip: int = 5,
                 heartbeat_ms: int = 50, election_ms: int = 500,
                 progress_notify: str = "2s", auto_compaction_retention: int | None = None,
                 tls: bool = False, extra_args: Sequence[str] = ()) -> None:
        if not 1 <= members <= MAX_MEMBERS:
            raise ValueError(f"members={members}: give 1 to {MAX_MEMBERS}")
        if first_ip < 2 or first_ip + members - 1 > 10:
            raise ValueError(f"first_ip={first_ip}: members must stay within 198.19.0.2-10")
        self.lab = lab
        self.name = name
        self.dir = Path(lab.dir) / name
        self.tls = tls
        scheme = "https" if tls else "http"
        self.members = [EtcdMember(name, i, member_ip(first_ip, i), scheme,
                                   self.dir / f"m{i}") for i in range(1, members + 1)]
        self.settings = {"heartbeat-interval": str(heartbeat_ms),
                         "election-timeout": str(election_ms),
                         "experimental-watch-progress-notify-interval": progress_notify}
        if auto_compaction_retention is not None:
            self.settings.update({"auto-compaction-mode": "revision",
                                  "auto-compaction-retention": str(auto_compaction_retention)})
        self.extra_args = [str(a) for a in extra_args]
        self.socket_factory: SocketFactory = partial(socket_in_netns, lab.netns_path("ctl"))
        self._session: requests.Session | None = None

    # ----- what a client needs -------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    def tls_options(self) -> dict[str, str]:
        """ca_cert, client_cert and client_key for a client of a TLS cluster ({} else)."""
        if not self.tls:
            return {}
        return {"ca_cert": str(self.pki_dir / "ca.pem"),
                "client_cert": str(self.pki_dir / f"{CLIENT_CERT_NAME}.pem"),
                "client_key": str(self.pki_dir / f"{CLIENT_CERT_NAME}.key")}

    def member(self, which: int | str | EtcdMember) -> EtcdMember:
        """A member by object, index (1), name ("m1") or client URL."""
        for m in self.members:
            if which is m or which in (m.index, m.name, m.client_url):
                return m
        raise LabError(f"etcd cluster {self.name} has no member {which!r}; its members are "
                       f"{', '.join(m.name for m in self.members)}")

    # ----- life cycle ----------------------------------------------------------------

    def start(self, timeout: float = 30) -> EtcdCluster:
        """Start every member (a new cluster) and wait until it has a leader."""
        if self.tls and not (self.pki_dir / "ca.pem").exists():
            self._make_pki()
        for m in self.members:
            self.lab.run("ctl", ["ip", "addr", "replace", f"{m.ip}/{MGMT_PREFIXLEN}",
                                 "dev", "br0"])
            m.data_dir.mkdir(parents=True, exist_ok=True)
        for m in self.members:
            self._spawn(m, "new")
        self.wait_healthy(timeout)
        return self

    def stop(self) -> None:
        """Stop every member (resumed first if paused, so SIGTERM is seen)."""
        for m in self.members:
            if m.paused:
                self.resume(m)
        for m in self.members:
            if m.process is not None:
                m.process.stop(timeout=5)
        if self._session is not None:
            self._session.close()
            self._session = None

    def _spawn(self, m: EtcdMember, state: str) -> None:
        cluster = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        argv = ["etcd", "--name", m.name, "--data-dir", m.data_dir,
                "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
                "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
                "--initial-cluster", cluster, "--initial-cluster-state", state,
                "--initial-cluster-token", f"{self.lab.prefix}-{self.name}",
                "--logger", "zap", "--log-outputs", "stderr"]
        argv += [a for k, v in self.settings.items() for a in (f"--{k}", v)]
        argv += self.extra_args
        if self.tls:
            pki = self.pki_dir
            argv += ["--cert-file", pki / "member.pem", "--key-file", pki / "member.key",
                     "--trusted-ca-file", pki / "ca.pem", "--client-cert-auth"]
        m.process = self.lab.start_process(m.process_name, argv, netns="ctl")
        m.paused = False

    def _make_pki(self) -> None:
        import ipaddress

        from hostagent import certs, pki

        ips = [m.ip for m in self.members]
        pki.init(self.pki_dir, ips, [], [])
        # Certificates without a CN, the members' and the clients': once authentication
        # is on, etcd 3.4's gateway refuses a request whose client certificate has a CN
        # ("CommonName of client sending a request against gateway will be ignored and
        # not used as expected"); the identity is the user name and password.
        ca_cert, ca_key = certs.load_ca(self.pki_dir / "ca.pem", self.pki_dir / "ca.key")
        for name, addresses in (("member", ips), (CLIENT_CERT_NAME, [])):
            key = certs.new_key()
            certs.write_key(self.pki_dir / f"{name}.key", key)
            certs.write_certificate(self.pki_dir / f"{name}.pem", certs.signed_certificate(
                key.public_key(), None, [ipaddress.ip_address(ip) for ip in addresses], [],
                ca_cert, ca_key, 30))

    # ----- faults --------------------------------------------------------------------

    def kill(self, which: int | str | EtcdMember) -> EtcdMember:
        """SIGKILL the member and wait for it to be gone."""
        m = self.member(which)
        if m.process is not None:
            m.process.kill()
        m.paused = False
        return m

    def pause(self, which: int | str | EtcdMember) -> EtcdMember:
        """SIGSTOP: the member hangs (its sockets stay open, nothing answers)."""
        m = self.member(which)
        self._signal(m, signal.SIGSTOP)
        m.paused = True
        return m

    def resume(self, which: int | str | EtcdMember) -> EtcdMember:
        m = self.member(which)
        self._signal(m, signal.SIGCONT)
        m.paused = False
        return m

    def restart(self, which: int | str | EtcdMember, timeout: float = 30) -> EtcdMember:
        """Start the member again on its data directory (killed first if it runs) and wait
        until it has a leader again."""
        m = self.member(which)
        if m.running:
            self.kill(m)
        self._spawn(m, "existing")
        self._wait(lambda: self._leader_of(m), timeout, f"{m} to rejoin the cluster")
        return m

    def _signal(self, m: EtcdMember, sig: int) -> None:
        if not m.running:
            raise LabError(f"etcd member {m} is not running; restart it first")
        m.process.signal(sig)  # type: ignore[union-attr]

    # ----- state ---------------------------------------------------------------------

    def status(self, which: int | str | EtcdMember, timeout: float = 1.0) -> dict | None:
        """The member's /v3/maintenance/status answer, or None if it does not answer."""
        m = self.member(which)
        if not m.running or m.paused:
            return None
        try:
            return self.post(m, "/v3/maintenance/status", {}, timeout=timeout)
        except (requests.RequestException, LabError):
            return None

    def _leader_of(self, m: EtcdMember) -> int:
        status = self.status(m)
        return int(status.get("leader") or 0) if status else 0

    def agreed_leader(self) -> EtcdMember | None:
        """The member that leads if every running member names it now, else None."""
        ids: dict[int, tuple[int, int]] = {}
        for m in self.members:
            if m.running and not m.paused:
                status = self.status(m)
                if status is None:
                    return None
                ids[m.index] = (int(status["header"]["member_id"]),
                                int(status.get("leader") or 0))
        leaders = {leader for _, leader in ids.values()}
        if len(leaders) != 1 or 0 in leaders:
            return None
        (leader,) = leaders
        return next((self.member(i) for i, (mid, _) in ids.items() if mid == leader), None)

    def leader(self, timeout: float = 10) -> EtcdMember:
        """The member that leads, once every running member agrees on it."""
        return self._wait(self.agreed_leader, timeout,
                          f"etcd cluster {self.name} to agree on a leader")

    def wait_healthy(self, timeout: float = 30) -> EtcdMember:
        """Wait until the running members agree on a leader and it answers a write."""
        def healthy() -> EtcdMember | None:
            leader = self.agreed_leader()
            if leader is None:
                return None
            key = f"/lab/health/{self.name}"
            try:
                self.post(leader, "/v3/kv/put", {"key": _b64(key), "value": _b64("ok")})
            except (requests.RequestException, LabError):
                return None
            return leader

        return self._wait(healthy, timeout, f"etcd cluster {self.name} to be healthy")

    def compact(self, revision: int) -> None:
        """Compact the history before `revision` (through any running member)."""
        self.post(self._any_running(), "/v3/kv/compaction",
                  {"revision": str(revision), "physical": True})

    def revision(self) -> int:
        """The store's current revision."""
        answer = self.post(self._any_running(), "/v3/kv/range", {"key": _b64("\0")})
        return int(answer["header"]["revision"])

    def enable_auth(self, user: str = "root", password: str = "lab-password") -> None:
        """Create `user` with the root role and turn authentication on."""
        m = self._any_running()
        self.post(m, "/v3/auth/user/add", {"name": user, "password": password})
        if user != "root":
            self.post(m, "/v3/auth/role/add", {"name": "root"})
        self.post(m, "/v3/auth/user/grant", {"user": user, "role": "root"})
        self.post(m, "/v3/auth/enable", {})

    def _any_running(self) -> EtcdMember:
        for m in self.members:
            if m.running and not m.paused:
                return m
        raise LabError(f"no member of etcd cluster {self.name} is running")

    def post(self, which: int | str | EtcdMember, path: str, body: dict,
             timeout: float = 5.0, token: str | None = None) -> dict:
        """POST JSON to one member's gateway; the answer, or LabError for an error."""
        m = self.member(which)
        headers = {"Authorization": token} if token else {}
        resp = self._http().post(m.client_url + path, data=json.dumps(body), headers=headers,
                                 timeout=timeout)
        if resp.status_code != 200:
            raise LabError(f"etcd member {m}: {path} answered {resp.status_code}: "
                           f"{resp.text.strip()[:300]}")
        return resp.json()

    def _http(self) -> requests.Session:
        if self._session is None:
            tls = None
            if self.tls:
                opts = self.tls_options()
                tls = ssl.create_default_context(cafile=opts["ca_cert"])
                tls.load_cert_chain(opts["client_cert"], opts["client_key"])
            session = requests.Session()
            session.trust_env = False
            transport = Transport(tls, self.socket_factory)
            session.mount("http://", transport)
            session.mount("https://", transport)
            self._session = session
        return self._session

    @staticmethod
    def _wait(fn: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = fn()
            if result:
                return result
            if time.monotonic() > deadline:
                raise LabError(f"timed out after {timeout:g}s waiting for {what}; see the "
                               "members' logs (<lab dir>/logs/<cluster>-m<n>.log)")
            time.sleep(0.05)


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


class EtcdLab:
    """Part of `Lab`: etcd clusters in the control namespace (this module)."""

    etcd: EtcdCluster | None = None

    def start_etcd(self, members: int = 3, **settings: Any) -> EtcdCluster:
        """Start an etcd cluster (EtcdCluster's settings) and wait until it is healthy.
        The first one started is `lab.etcd`."""
        cluster = EtcdCluster(self, members, **settings).start()
        if self.etcd is None:
            self.etcd = cluster
        return cluster
