"""Shared fixtures: labs of simulated hosts (see docs/lab.md), and failure reports that
carry the lab's logs, OVS state and flows."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

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
    labs: list[Lab] = []

    def make(hosts: int = 3, tunnel: str = "vxlan", docker: bool = True) -> Lab:
        lab = Lab(hosts=hosts, tunnel=tunnel, docker=docker)
        labs.append(lab)
        return lab.up()

    yield make
    errors = []
    for lab in reversed(labs):
        try:
            lab.down()
        except Exception as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@pytest.fixture(scope="module")
def lab3(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A 3-host lab shared by the tests of a module, Docker enabled. VXLAN unless
    parametrized indirectly: `@pytest.mark.parametrize("lab3", ["gre"], indirect=True)`."""
    tunnel = getattr(request, "param", "vxlan")
    with Lab(hosts=3, tunnel=tunnel, docker=True) as lab:
        yield lab
