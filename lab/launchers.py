"""Loris in a lab: thin launchers for the controller, the agents and the `loris` CLI, the
credentials they share, and the lab's REST call to the controller (part of `Lab`, see
lab/core.py; flags per docs/design.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from hostagent.client import Client, ControllerUnreachable
from lab.command import LabError, run
from lab.naming import API_PORT, CONTROL_IP, OPENFLOW_PORT, Host
from lab.netns import socket_in_netns
from lab.procs import LabProcess

# what systemd does for a socket unit's service: the listening socket as fd 3, LISTEN_FDS=1,
# LISTEN_PID = the service's pid (this one: exec keeps it)
SOCKET_ACTIVATION = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
                     "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
                     "os.execv(sys.argv[2], sys.argv[2:])")

REPO_ROOT = Path(__file__).resolve().parents[1]


def venv_bin() -> Path:
    """The virtualenv whose console scripts (osken-manager, loris, loris-hostagent) the lab
    launches: $LORIS_VENV, else the repository's .venv, else the running interpreter's."""
    for candidate in (os.environ.get("LORIS_VENV"), REPO_ROOT / ".venv", sys.prefix):
        if candidate and (Path(candidate) / "bin").is_dir():
            return Path(candidate) / "bin"
    return Path(sys.prefix) / "bin"


class LorisLaunchers:
    """The controller, agents and CLI of a lab, and their credentials."""

    dir: Path
    hosts: list[Host]
    tunnel: str
    tls: bool

    @property
    def controller_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{CONTROL_IP}:{API_PORT}"

    # Credentials (docs/security.md): the controller makes them in <lab dir>/credentials on
    # its first start; the lab's helpers pass them on, so tests need not think about them.
    @property
    def credentials_dir(self) -> Path:
        return self.dir / "credentials"

    @property
    def operator_token_file(self) -> Path:
        return self.credentials_dir / "operator.token"

    @property
    def pki_dir(self) -> Path:
        """CA, controller and host certificates (`loris pki init`) of a TLS lab."""
        return self.dir / "pki"

    def operator_token(self) -> str | None:
        try:
            return self.operator_token_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def reissue_admin_token(self) -> str:
        """Issue operator admin a new token with the controller's admin command, as an
        operator locked out of the API would (the command rewrites operator.token)."""
        return self._admin_command("operator", "admin").stdout.strip()

    def _admin_command(self, *args: str):
        """`python -m controller.auth ARGS` on the lab's store: from the control namespace
        when the store is etcd (reached there), else here on the SQLite file."""
        argv = [venv_bin() / "python", "-m", "controller.auth", *args,
                "--db", self.dir / "loris.db", "--credentials", self.credentials_dir]
        env = getattr(self, "controller_env", {})
        if env.get("LORIS_STORE", "sqlite") != "sqlite":
            return self.run("ctl", argv, env=env)
        return run(argv, cwd=REPO_ROOT)

    def agent_token_file(self, host: Host | str | int) -> Path:
        """<lab dir>/tokens/<host>.token (0600): the host's agent token, issued once by the
        controller's own admin command into the lab's store (works before the controller
        first starts too). `write_agent_token` replaces it (a re-issued token)."""
        h = self.host(host)
        path = self.dir / "tokens" / f"{h.name}.token"
        if not path.exists():
            self.write_agent_token(h, self._admin_command("token", h.name).stdout)
        return path

    def write_agent_token(self, host: Host | str | int, token: str) -> Path:
        """Put `token` in the host's agent token file (0600), as an operator would."""
        h = self.host(host)
        path = self.dir / "tokens" / f"{h.name}.token"
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token.strip() + "\n")
        return path

    def _ensure_pki(self) -> None:
        if not (self.pki_dir / "ca.pem").exists():
            run([venv_bin() / "loris", "pki", "init", self.pki_dir, "--controller-ip",
                 CONTROL_IP, *[a for h in self.hosts for a in ("--host", h.name)]])

    def start_controller(self, extra_env: Mapping[str, str] | None = None, wait: bool = True,
                         timeout: float = 30, tls: bool | None = None) -> LabProcess:
        """osken-manager controller/loris_app.py in the control namespace (cwd: repo root),
        state in <lab dir>/loris.db; waits for the REST API unless wait=False. With
        `tls=True` REST and OpenFlow run over TLS only, with the certificates of
        `lab.pki_dir` (made on first use); None keeps the lab's mode (a restart)."""
        if tls is not None:
            self.tls = tls
        env = {"LORIS_DB": str(self.dir / "loris.db"),
               "LORIS_API_LISTEN": f"0.0.0.0:{API_PORT}"}
        argv = [venv_bin() / "osken-manager", REPO_ROOT / "controller" / "loris_app.py"]
        if self.tls:
            self._ensure_pki()
            pki = self.pki_dir
            env.update(LORIS_API_CERT=str(pki / "controller.pem"),
                       LORIS_API_KEY=str(pki / "controller.key"))
            argv += ["--ofp-ssl-listen-port", str(OPENFLOW_PORT),
                     "--ctl-privkey", pki / "controller.key", "--ctl-cert", pki / "controller.pem",
                     "--ca-certs", pki / "ca.pem"]
        else:
            argv += ["--ofp-tcp-listen-port", str(OPENFLOW_PORT)]
        env.update(extra_env or {})
        self.controller_env = dict(extra_env or {})   # the store's settings, for agent tokens
        proc = self.start_process("controller", argv, netns="ctl", env=env, cwd=REPO_ROOT)
        if wait:
            self.wait_api(timeout, proc)
        return proc

    def start_agent(self, host: Host | str | int, extra_args: Sequence[str] = (),
                    extra_env: Mapping[str, str] | None = None,
                    plugin_listener: Any = None) -> LabProcess:
        """loris-hostagent in the host's namespace, as process `agent-<host>`; in a lab with
        a dockerd per host it serves that dockerd the `loris` plugin (lab/hostdocker.py).
        `plugin_listener`: the plugin's listening socket, handed over as systemd's socket
        activation does (fd 3, LISTEN_FDS=1; HostDockerd.hold_plugin_socket)."""
        h = self.host(host)
        argv = [venv_bin() / "loris-hostagent", "--controller", self.controller_url,
                "--host-id", h.name, "--tunnel-ip", h.tunnel_ip, "--tunnel-type", self.tunnel,
                "--ovsdb", h.ovsdb, "--ovs-rundir", h.rundir,
                "--token-file", self.agent_token_file(h)]
        if self.tls:
            argv += ["--ca-cert", self.pki_dir / "ca.pem",
                     "--switch-cert", self.pki_dir / "hosts" / f"{h.name}.pem",
                     "--switch-key", self.pki_dir / "hosts" / f"{h.name}.key"]
        if getattr(self, "host_dockerd", False):   # its own dockerd: serve it the plugin
            d = self.dockerd(h)
            argv += ["--docker-url", d.url, "--plugin-socket", d.plugin_socket(),
                     "--plugin-state", h.rundir / "docker-plugin.json"]
        argv += extra_args
        if plugin_listener is not None:
            fd = plugin_listener.fileno()
            argv = [sys.executable, "-c", SOCKET_ACTIVATION, str(fd), *map(str, argv)]
            return self.start_process(f"agent-{h.name}", argv, netns=h, env=extra_env,
                                      pass_fds=(fd,))
        return self.start_process(f"agent-{h.name}", argv, netns=h, env=extra_env)

    def loris_env(self, host: Host | str | int) -> dict[str, str]:
        """What a user's shell on `host` would export for the `loris` CLI."""
        h = self.host(host)
        env = {"LORIS_CONTROLLER": self.controller_url, "LORIS_HOST": h.name,
               "LORIS_OVSDB": h.ovsdb, "LORIS_OVS_RUNDIR": str(h.rundir)}
        if self.operator_token_file.exists():     # once the controller has made it
            env["LORIS_TOKEN_FILE"] = str(self.operator_token_file)
        if self.tls:
            env["LORIS_CA_CERT"] = str(self.pki_dir / "ca.pem")
        return env

    def loris(self, host: Host | str | int, *args: str, check: bool = False,
              timeout: float = 120, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """The `loris` CLI in the host's namespace, configured through the environment."""
        h = self.host(host)
        return self.run(h, [venv_bin() / "loris", *args], check=check, timeout=timeout,
                        input=input, env=self.loris_env(h))

    def api(self, method: str, path: str, body: Any = None,
            timeout: float = 30, token: str | bool = True) -> tuple[int, Any]:
        """HTTP to the controller (198.19.0.1:8780) from inside the control namespace, as the
        operator (`token=True`: the controller's operator token, once it made one), without
        credentials (`token=False`) or with the given token; over TLS when `lab.tls`.

        Returns (status, parsed JSON body); a body that is not JSON comes back as text,
        an empty body as None."""
        if token is True:
            token = self.operator_token()
        return controller_request(self.netns_path("ctl"), method, path, body=body,
                                  token=token or None, timeout=timeout,
                                  ca_file=self.pki_dir / "ca.pem" if self.tls else None)

    def wait_api(self, timeout: float = 30, process: LabProcess | None = None) -> None:
        """Wait until the controller accepts TCP connections on 198.19.0.1:8780."""
        deadline = time.monotonic() + timeout
        ns = self.netns_path("ctl")
        while True:
            if process is not None and not process.alive:
                raise LabError(f"controller exited with {process.returncode} before serving "
                               f"its API; log tail:\n{process.log_tail(40)}")
            sock = socket_in_netns(ns)
            try:
                sock.settimeout(1)
                sock.connect((CONTROL_IP, API_PORT))
                return
            except OSError:
                pass
            finally:
                sock.close()
            if time.monotonic() > deadline:
                tail = process.log_tail(40) if process else ""
                raise LabError(f"controller API {CONTROL_IP}:{API_PORT} not reachable after "
                               f"{timeout:g}s; log tail:\n{tail}")
            time.sleep(0.1)


# ----- the REST call: Loris's own client, its sockets in the control namespace -------------

def controller_request(netns_path: str, method: str, path: str, *, body: Any = None,
                       token: str | None = None, timeout: float = 30,
                       ca_file: Path | None = None) -> tuple[int, Any]:
    """One request to the controller's REST API at 198.19.0.1:8780 through Loris's own REST
    client, its sockets made in the network namespace `netns_path`; TLS verified with
    `ca_file` when one is given.

    Returns (status, parsed JSON body); a body that is not JSON comes back as text, an
    empty body as None. A connection failure raises LabError."""
    scheme = "https" if ca_file else "http"
    client = Client(f"{scheme}://{CONTROL_IP}:{API_PORT}",
                    ca_cert=str(ca_file) if ca_file else None,
                    socket_factory=partial(socket_in_netns, netns_path))
    try:
        reply = client.send(method.upper(), path, body, timeout=timeout, token=token)
    except ControllerUnreachable as exc:
        raise LabError(f"{method} {path} to the controller at {CONTROL_IP}:{API_PORT} "
                       f"failed: {exc}") from exc
    finally:
        client.close()
    return reply.status, reply.body
