"""Shared fixtures: labs of simulated hosts (see docs/lab.md), clusters (a lab running the
controller and host agents), and failure reports that carry the lab's logs, OVS state and
flows."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import pytest
from helpers import host_view, wait_meshed, wait_synced

from lab import Lab, live_labs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """When a test fails while labs are up, attach what is needed to understand it:
    controller and agent log tails, OVS logs, `ovs-vsctl show` and the flows of every
    bridge of every host. Collected before the fixtures tear the lab down."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for lab in live_labs():
        try:
            text = lab.diagnostics()
        except Exception as exc:  # the report must never hide the test's own failure
            text = f"(collecting diagnostics failed: {exc!r})"
        report.sections.append((f"lab {lab.prefix} ({report.when})", text))


@pytest.fixture
def make_lab() -> Iterator[Callable[..., Lab]]:
    """Factory: `make_lab(hosts=3, tunnel="vxlan", docker=True)` returns a lab that is up;
    every lab made is torn down when the test ends."""
    with contextlib.ExitStack() as labs:

        def make(hosts: int = 3, tunnel: str = "vxlan", docker: bool = True) -> Lab:
            return labs.enter_context(Lab(hosts=hosts, tunnel=tunnel, docker=docker))

        yield make


@pytest.fixture(scope="module")
def lab3(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A 3-host lab shared by the tests of a module, Docker enabled. VXLAN unless
    parametrized indirectly: `@pytest.mark.parametrize("lab3", ["gre"], indirect=True)`."""
    tunnel = getattr(request, "param", "vxlan")
    with Lab(hosts=3, tunnel=tunnel, docker=True) as lab:
        yield lab


@pytest.fixture(scope="module")
def make_cluster(request: pytest.FixtureRequest) -> Iterator[Callable[..., Lab]]:
    """Factory for a module's tests: `make_cluster(hosts=3, docker=True, ...)` returns a lab
    that is up, with the controller and agents running (see start_cluster). Every lab made
    is torn down when the module's tests are done. `host_dockerd=True` gives every host its
    own dockerd, served the `loris` plugin by its agent (lab/hostdocker.py). The tunnel is
    VXLAN unless given, or unless the factory is parametrized indirectly, e.g. on a class:
    `@pytest.mark.parametrize("make_cluster", ["vxlan", "gre"], indirect=True)`."""
    default_tunnel = getattr(request, "param", "vxlan")
    with contextlib.ExitStack() as labs:

        def make(hosts: int = 3, tunnel: str | None = None, docker: bool = True,
                 host_dockerd: bool = False, **loris: Any) -> Lab:
            lab = labs.enter_context(Lab(hosts=hosts, tunnel=tunnel or default_tunnel,
                                         docker=docker, host_dockerd=host_dockerd))
            return start_cluster(lab, **loris)

        yield make


def start_cluster(lab: Lab, agents: bool | Sequence[str] = True, tls: bool = False,
                  controller_env: Mapping[str, str] | None = None,
                  wait: Literal["synced", "meshed"] | None = "synced",
                  record_before: bool = False) -> Lab:
    """Start Loris on a lab that is up: the controller (over TLS only with `tls`, with
    `controller_env` added to its environment) and an agent on each host of `agents` (True:
    every host). Then wait until the agents' hosts are "synced" (registered, both bridges
    connected and reconciled), "meshed" (synced, every agent polling and every host with a
    tunnel to every other one; needs an agent on every host) or, None, not at all.
    `record_before`: first keep each host's view without Loris (helpers.host_view) in
    `lab.before`, keyed by host name."""
    if record_before:
        lab.before = {h.name: host_view(lab, h.name) for h in lab.hosts}
    names = [h.name for h in lab.hosts] if agents is True else list(agents or ())
    assert wait != "meshed" or len(names) == len(lab.hosts), "meshed needs every agent"
    lab.start_controller(extra_env=controller_env, tls=tls)
    for name in names:
        lab.start_agent(name)
    if wait == "synced":
        wait_synced(lab, hosts=names)
    elif wait == "meshed":
        wait_meshed(lab)
    return lab


# ---- the store's two backends (issue #13): SQLite and etcd ------------------------------

@pytest.fixture(scope="session")
def local_etcd() -> Iterator[Any]:
    """One local etcd member for the session (tests/etcd_local.py); fails without etcd."""
    from etcd_local import LocalEtcd

    etcd = LocalEtcd()
    yield etcd
    etcd.stop()


@pytest.fixture(params=["sqlite", "etcd"])
def store_backend(request: pytest.FixtureRequest) -> str:
    """Parametrizes a test over both backends; `open_test_store(backend, tmp_path, request)`
    makes the store."""
    return request.param


def open_test_store(backend: str, tmp_path: Any, request: pytest.FixtureRequest,
                    **sqlite_options: Any) -> Any:
    """A fresh Store (SQLite file under tmp_path) or EtcdStore (a new key prefix of the
    session's local etcd)."""
    if backend == "sqlite":
        from controller.store import Store

        return Store(str(tmp_path / "state" / "loris.db"), **sqlite_options)
    from controller.etcd_store import EtcdStore

    etcd = request.getfixturevalue("local_etcd")
    return EtcdStore(etcd.client(), prefix=etcd.new_prefix())


@pytest.fixture
def parts(store_backend: str, tmp_path: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """An in-process controller's parts (tests/inproc.py) on each backend."""
    from inproc import build_parts

    store = None if store_backend == "sqlite" else open_test_store("etcd", tmp_path, request)
    p = build_parts(tmp_path, store=store)
    yield p
    p.store.close()


@pytest.fixture
def api(parts: Any) -> Any:
    """A REST client of the `parts` controller, in process."""
    from inproc import ApiClient

    return ApiClient(parts)
