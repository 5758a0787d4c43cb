"""One local etcd for the tests that run the store on both backends (tests/conftest.py's
`local_etcd` fixture, one per session): a single member on 127.0.0.1, free ports, data in
a temporary directory. Each test uses its own key prefix, so tests never see each other.

The lab's 3-member cluster (lab/etcd.py) is for the tests of failures; this one only has
to be an etcd. Fails the test when the `etcd` binary is missing (./dev installs it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from controller.etcd import EtcdClient, StoreError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalEtcd:
    def __init__(self) -> None:
        if shutil.which("etcd") is None:
            pytest.fail("etcd is not installed: run the tests through ./dev test, which "
                        "installs etcd-server (the etcd backend is tested, never skipped)")
        self.dir = Path(tempfile.mkdtemp(prefix="loris-etcd-"))
        client_port, peer_port = _free_port(), _free_port()
        self.endpoint = f"http://127.0.0.1:{client_port}"
        peer = f"http://127.0.0.1:{peer_port}"
        self.log = open(self.dir / "etcd.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            ["etcd", "--name", "test", "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"test={peer}", "--max-txn-ops", "1024",
             "--heartbeat-interval", "50", "--election-timeout", "500",
             "--logger", "zap", "--log-outputs", "stderr"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        with self.client() as client:
            while True:
                try:
                    client.range("/health-check")
                    break
                except StoreError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"etcd did not start; see {self.dir}/etcd.log") from None
                    time.sleep(0.1)

    def client(self, timeout: float = 5.0) -> EtcdClient:
        return EtcdClient([self.endpoint], timeout=timeout)

    @staticmethod
    def new_prefix() -> str:
        """A key prefix no other test uses."""
        return f"/loris-test/{uuid.uuid4().hex[:10]}/"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
