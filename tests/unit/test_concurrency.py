"""The concurrency rules of controller/concurrency.py: green thread primitives checked at
start-up, store commits off the hub, one waiting mechanism woken per key.

What needs eventlet's monkey-patching runs in a child process (hub_probe.py, or the real
osken-manager): this test process uses plain threads and must stay unpatched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from inproc import eventually

from controller.agents import AgentBoard
from controller.concurrency import NOT_GREEN, OneThread, Waiters, green_threads_problem
from controller.dhcp import RateLimiter

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("hub_probe.py")


def probe(*args: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, str(PROBE), *args], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


# ---- green thread primitives --------------------------------------------------------------

def test_green_primitives_pass_the_check():
    assert probe("green-check", "patched") == {"problem": None}


def test_unpatched_threading_is_refused_with_cause_and_fix():
    problem = probe("green-check", "thread-unpatched")["problem"]
    assert problem == NOT_GREEN
    assert "--enable-debugger" in problem and "Start it without --enable-debugger" in problem


def test_a_real_primitive_among_green_ones_is_found():
    problem = probe("green-check", "real-event")["problem"]
    assert problem.startswith("threading.Event blocks the hub")


def test_the_native_hub_needs_no_green_primitives():
    assert green_threads_problem("native") is None
    assert green_threads_problem("eventlet") == NOT_GREEN        # this process: unpatched


def test_osken_manager_with_enable_debugger_refuses_to_start(tmp_path):
    manager = Path(sys.executable).with_name("osken-manager")
    if not manager.exists():
        pytest.skip("osken-manager is not installed next to this Python")
    env = dict(os.environ, PYTHONPATH=str(ROOT), LORIS_DB=str(tmp_path / "loris.db"),
               LORIS_API_LISTEN="127.0.0.1:9")
    out = subprocess.run([str(manager), str(ROOT / "controller" / "loris_app.py"),
                          "--enable-debugger", "--ofp-tcp-listen-port", "9"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "loris controller refuses to start: thread primitives are not green" in out.stderr
    assert "Start it without --enable-debugger" in out.stderr
    assert not (tmp_path / "loris.db").exists()                  # it stopped before anything


# ---- store commits off the hub ------------------------------------------------------------

def test_a_health_request_is_answered_during_a_slow_commit(tmp_path):
    order = probe("slow-commit", str(tmp_path))["order"]
    assert order == ["commit starts", "health ok", "commit ends", "pod created"]


# ---- one waiting mechanism, woken per key ---------------------------------------------------

def test_notify_wakes_the_waiters_of_its_key_only():
    waiters = Waiters()
    done = threading.Event()
    checks = []

    def predicate():
        checks.append(1)
        return done.is_set()

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(waiters.wait_until, "h2", predicate, 60)
        eventually(lambda: checks, "the first check")
        assert waiters.notify(["h1", "h3"]) == 0 and waiters.waiting("h2") == 1
        done.set()
        assert waiters.notify(["h2"]) == 1
        assert waiting.result(timeout=30) is True
    assert waiters.waiting("h2") == 0


def test_a_notify_between_check_and_sleep_is_not_lost():
    waiters = Waiters()
    state = {"calls": 0, "ready": False}

    def predicate():
        state["calls"] += 1
        if state["calls"] == 1:          # the change and its notify land right after the check
            state["ready"] = True
            waiters.notify(["p"])
            return False
        return state["ready"]

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(waiters.wait_until, "p", predicate, 60).result(timeout=30) is True
    assert state["calls"] == 2


def test_a_wait_times_out_and_leaves_no_waiter():
    waiters = Waiters()
    assert waiters.wait_until("p", lambda: False, 0.01) is False
    assert waiters.waiting("p") == 0 and waiters.notify(["p"]) == 0


def test_a_publish_wakes_the_long_polls_of_changed_hosts_only():
    board = AgentBoard()
    board.publish({"h1": 1, "h2": 1})
    with ThreadPoolExecutor(2) as pool:
        h1 = pool.submit(board.wait, "h1", 1, 60)
        h2 = pool.submit(board.wait, "h2", 1, 60)
        eventually(lambda: board.polling("h1") and board.polling("h2"), "both long polls")
        board.publish({"h1": 2, "h2": 1})
        assert h1.result(timeout=30) == 2
        assert not h2.done() and board.polling("h2")
        board.publish({"h1": 2})                      # h2 removed: its poll returns None
        assert h2.result(timeout=30) is None
    assert not board.polling("h1") and board.last_seen("h2") is not None


# ---- state one thread owns ------------------------------------------------------------------

def test_state_owned_by_one_thread_refuses_a_second():
    limiter = RateLimiter(rate=1, burst=3)
    assert limiter.allow(("dp", 1))
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(RuntimeError, match="DHCP rate limiter is used by two threads"):
            pool.submit(limiter.allow, ("dp", 1)).result(timeout=30)
    assert limiter.allow(("dp", 1))                   # the owner goes on


def test_the_first_user_owns_it():
    owned = OneThread("x")
    with ThreadPoolExecutor(1) as pool:
        pool.submit(owned.check).result(timeout=30)
    with pytest.raises(RuntimeError, match="x is used by two threads"):
        owned.check()
