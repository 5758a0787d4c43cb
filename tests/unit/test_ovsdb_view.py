"""The replica's view (hostagent/ovsdb_view.py), changed row by row, says what a view built
from every row at once says: through ports added, moved between bridges, renamed and
removed, in any order of the rows within a change."""

from __future__ import annotations

import random
import uuid

from hostagent.ovs import Interface
from hostagent.ovsdb_view import ReplicaView


def _iface(name: str, ofport: int | None = None) -> Interface:
    return Interface(name=name, type="", ofport=ofport, ofport_request=None,
                     external_ids={}, options={}, error=None)


class Db:
    """Rows as the replica converts them, with the changes since `take()`."""

    def __init__(self) -> None:
        self.rows: dict[str, dict] = {t: {} for t in ("Bridge", "Port", "Interface",
                                                       "Controller")}
        self.changed: set = set()

    def put(self, table: str, key, row) -> None:
        if row is None:
            self.rows[table].pop(key, None)
        else:
            self.rows[table][key] = row
        self.changed.add((table, key))

    def take(self, rng: random.Random) -> list:
        out = [(t, k, self.rows[t].get(k)) for t, k in self.changed]
        rng.shuffle(out)
        self.changed = set()
        return out

    def everything(self) -> list:
        return [(t, k, r) for t, rows in self.rows.items() for k, r in rows.items()]

    def bridge(self, name: str, ports: list, key=None):
        key = key or next((k for k, b in self.rows["Bridge"].items() if b[0] == name), None) \
            or uuid.uuid4()
        self.put("Bridge", key, (name, {"k": name}, list(ports), []))
        return key

    def ports_of(self, bridge: str) -> list:
        return next(b[2] for b in self.rows["Bridge"].values() if b[0] == bridge)


def _from_scratch(db: Db) -> ReplicaView:
    view = ReplicaView()
    view.update(db.everything())
    return view


def test_row_by_row_equals_from_scratch_through_random_changes():
    rng = random.Random(7)
    db, view = Db(), ReplicaView()
    db.bridge("br-int", [])
    db.bridge("br-tun", [])
    names = iter(f"lp{i}" for i in range(10_000))
    ports: dict = {}                   # port uuid -> (name, iface uuid)
    for step in range(400):
        action = rng.random()
        if action < 0.45 or not ports:                      # add a port to a bridge
            name, pu, iu = next(names), uuid.uuid4(), uuid.uuid4()
            bridge = rng.choice(["br-int", "br-tun"])
            db.put("Interface", iu, _iface(name))
            db.put("Port", pu, (name, [iu]))
            db.bridge(bridge, [*db.ports_of(bridge), pu])
            ports[pu] = (name, iu)
        elif action < 0.65:                                  # remove one
            pu = rng.choice(list(ports))
            name, iu = ports.pop(pu)
            for b in ("br-int", "br-tun"):
                if pu in db.ports_of(b):
                    db.bridge(b, [p for p in db.ports_of(b) if p != pu])
            db.put("Port", pu, None)
            db.put("Interface", iu, None)
        elif action < 0.8:                                   # move one to the other bridge
            pu = rng.choice(list(ports))
            src, dst = (("br-int", "br-tun") if pu in db.ports_of("br-int")
                        else ("br-tun", "br-int"))
            db.bridge(src, [p for p in db.ports_of(src) if p != pu])
            db.bridge(dst, [*db.ports_of(dst), pu])
        elif action < 0.9:                                   # numbered by ovs-vswitchd
            pu = rng.choice(list(ports))
            name, iu = ports[pu]
            db.put("Interface", iu, _iface(name, ofport=rng.randint(1, 9999)))
        else:                     # a name freed and taken by a new interface in one change
            pu = rng.choice(list(ports))
            name, old_iu = ports[pu]
            new_iu = uuid.uuid4()
            db.put("Interface", old_iu, None)
            db.put("Interface", new_iu, _iface(name, ofport=1))
            db.put("Port", pu, (name, [new_iu]))
            ports[pu] = (name, new_iu)
        before = view.snapshot()
        view.update(db.take(rng))
        got, want = view.snapshot(), _from_scratch(db).snapshot()
        assert got.interfaces == want.interfaces, step
        assert got.bridges == want.bridges, step
        assert before is not got or step == 0
        for name, iu in ports.values():
            assert view.uuid_named("Interface", name) == iu
        for pu, (name, _) in ports.items():
            assert view.uuid_named("Port", name) == pu
    assert len(view.snapshot().interfaces) == len(ports) > 50


def test_a_snapshot_handed_out_never_changes():
    db, view = Db(), ReplicaView()
    iu, pu = uuid.uuid4(), uuid.uuid4()
    db.put("Interface", iu, _iface("lp1"))
    db.put("Port", pu, ("lp1", [iu]))
    db.bridge("br-int", [pu])
    view.update(db.take(random.Random(1)))
    first = view.snapshot()
    assert first.interfaces["lp1"].bridge == "br-int"
    assert view.snapshot() is first                      # nothing changed: the same one
    db.put("Interface", iu, _iface("lp1", ofport=5))
    view.update(db.take(random.Random(1)))
    assert first.interfaces["lp1"].ofport is None
    assert view.snapshot().interfaces["lp1"].ofport == 5
    assert view.snapshot().interfaces["lp1"].bridge == "br-int"


def test_a_bridge_renamed_or_removed_takes_its_ports_along():
    db, view = Db(), ReplicaView()
    iu, pu = uuid.uuid4(), uuid.uuid4()
    db.put("Interface", iu, _iface("lp1"))
    db.put("Port", pu, ("lp1", [iu]))
    key = db.bridge("br-x", [pu])
    view.update(db.take(random.Random(1)))
    db.put("Bridge", key, ("br-y", {}, [pu], []))
    view.update(db.take(random.Random(1)))
    assert view.snapshot().interfaces["lp1"].bridge == "br-y"
    assert set(view.snapshot().bridges) == {"br-y"}
    db.put("Bridge", key, None)
    view.update(db.take(random.Random(1)))
    assert view.snapshot().interfaces["lp1"].bridge is None
    assert view.snapshot().bridges == {}
    assert view.uuid_named("Bridge", "br-y") is None
