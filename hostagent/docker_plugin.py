"""Serving the `loris` Docker plugin (hostagent/docker_driver.py) on a unix socket.

dockerd finds a legacy plugin by its socket, `/run/docker/plugins/loris.sock`, and calls
`POST /<Iface>.<Method>` with a JSON body (without a Content-Type: the body is parsed
whatever the headers say). The server is the standard library's threaded HTTP server on a
unix socket: one thread per connection, so a CreateEndpoint waiting for the controller holds
up no other call. Under systemd socket activation (docs/docker.md, `loris-docker.socket`)
the socket is inherited as fd 3 (LISTEN_FDS), so dockerd finds the plugin even before the
agent has started.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import socketserver
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from hostagent.client import ApiError, Client, ControllerUnreachable
from hostagent.docker_driver import CONNECT_TIMEOUT_S, Book, ControllerError, Driver

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_BODY = 1 << 20
SYSTEMD_FIRST_FD = 3


class RestController:
    """The driver's view of the controller: this host's calls through the agent's client."""

    def __init__(self, client: Client, host_id: str) -> None:
        self.client = client
        self.host_id = host_id

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except ApiError as e:
            raise ControllerError(e.message, e.status, e.code) from None
        except ControllerUnreachable as e:
            raise ControllerError(str(e)) from None

    def pods(self) -> list[dict]:
        return self._call(self.client.host_pods, self.host_id)

    def ensure_pod(self, name: str, subnet: str) -> dict:
        return self._call(self.client.ensure_docker_pod, self.host_id, name, subnet)

    def reserve(self, pod: int, ip: str | None) -> dict:
        return self._call(self.client.reserve_address, self.host_id, pod, ip)

    def release(self, pod: int, ip: str) -> None:
        self._call(self.client.release_address, self.host_id, pod, ip)

    def connect(self, body: dict) -> dict:
        return self._call(self.client.connect_on_host, self.host_id, body, CONNECT_TIMEOUT_S)

    def disconnect(self, port_id: int) -> None:
        try:
            self._call(self.client.delete_port, port_id)
        except ControllerError as e:
            if e.status != 404:
                raise


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: PluginServer

    def address_string(self) -> str:      # an AF_UNIX peer has no address (would raise)
        return "docker"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        log.debug("plugin: " + format, *args)

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(min(length, MAX_BODY)) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = None
        t0 = time.monotonic()
        if body is None:
            status, reply = 400, {"Err": "the body is not JSON"}
        else:
            status, reply = self.server.driver.handle(self.path, body)
        # the handler's time: bench/bench_docker.py's timeline of a `docker run` reads it
        log.info("plugin %s %s -> %s (%.1f ms)", self.path, _brief(body), _brief(reply),
                 (time.monotonic() - t0) * 1000)
        payload = json.dumps(reply).encode()
        self.send_response(status)
        self.send_header("Content-Type", MEDIA_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def _brief(value: object) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 400 else text[:400] + "..."


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, driver: Driver, path: str | None, sock: socket.socket | None = None
                 ) -> None:
        self.driver = driver
        if sock is not None:            # inherited (systemd): already bound and listening
            super().__init__(sock.getsockname() or "", _Handler, bind_and_activate=False)
            self.socket = sock
            return
        assert path is not None
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)           # a previous agent's socket
        except FileNotFoundError:
            pass
        super().__init__(path, _Handler)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="docker-plugin",
                                  daemon=True)
        thread.start()
        return thread


def inherited_socket() -> socket.socket | None:
    """The listening socket systemd passed (LISTEN_FDS=1 for this pid), if any."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or \
            os.environ.get("LISTEN_FDS") != "1":
        return None
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)    # not for our children
    return socket.socket(fileno=SYSTEMD_FIRST_FD)


@dataclass(frozen=True)
class DockerPluginConfig:
    socket_path: str | None          # None: the socket systemd passed (`inherited`)
    inherited: socket.socket | None
    state_file: str
    docker_url: str | None
    sync_networks: bool


def docker_plugin_config(args: argparse.Namespace) -> DockerPluginConfig | None:
    """The agent's plugin settings: from --plugin-socket, or a socket systemd passed."""
    inherited = inherited_socket()
    if inherited is None and not args.plugin_socket:
        return None
    return DockerPluginConfig(None if inherited else args.plugin_socket, inherited,
                              args.plugin_state, args.docker_url,
                              not args.no_docker_networks)


def serve_plugin(cfg: DockerPluginConfig, client: Client, host_id: str,
                 desired_port: Callable[[str], dict | None],
                 endpoint_ports: Callable[[], dict[str, int]],
                 stop: threading.Event) -> PluginServer:
    """Serve the plugin in a thread and, unless told not to, keep a Docker network per pod
    and name the endpoints' ports (hostagent/docker_networks.py) in another.
    `endpoint_ports()`: EndpointID -> port id of this host's Docker endpoint ports."""
    from hostagent.docker_networks import NetworkSync

    driver = Driver(RestController(client, host_id), Book(cfg.state_file), host_id,
                    desired_port)
    server = PluginServer(driver, cfg.socket_path, cfg.inherited)
    server.start()
    log.info("Docker plugin 'loris' serving on %s",
             cfg.socket_path or "the socket systemd passed")
    if cfg.sync_networks:
        sync = NetworkSync(lambda: client.host_pods(host_id), cfg.docker_url, stop,
                           endpoint_ports, lambda port, name: client.name_docker_port(
                               host_id, port, name), adopt=driver.pending.adopt,
                           hurry=driver.pending.waiting)
        driver.pending.kick = sync.kick.set
        sync.start()
    return server
