"""Pods by name in the store: the migration that gives every pod a unique name, and the
queries that find a pod by name and choose a free id (mixed into store.Tx).

Every pod has a name (flows/contract.POD_NAME), unique across pods (a UNIQUE index: SQLite
cannot add a constraint to a table in place, and an index refuses a second use of a name
just as well). A pod made without a name is called `contract.default_pod_name(id)`
(`pod-7`); those names are reserved for the pod of that id, so a default never clashes.
"""

from __future__ import annotations

from flows.contract import GLOBAL_POD, MAX_POD_ID

# The upgrade to names (schema step "pod names" in rows.MIGRATIONS). Before it, a name was
# optional, not unique, and could hold spaces and colons. A pod keeps its name when the
# rule takes it and no pod with a lower id has it; every other pod gets its default name,
# `pod-<id>`. The first statement also renames a `pod-<digits>` that is not the pod's own
# default, so after it such a name is held only by the pod it names: the defaults given by
# the second statement cannot clash with anything. GLOB: `[^...]` is "not one of".
POD_NAMES_MIGRATION = """
UPDATE pods SET name = 'pod-' || id
 WHERE name IS NULL OR length(name) > 63 OR name NOT GLOB '[A-Za-z]*'
    OR name GLOB '*[^A-Za-z0-9_.-]*'
    OR (name GLOB 'pod-[0-9]*' AND substr(name, 5) NOT GLOB '*[^0-9]*'
        AND name != 'pod-' || id);
UPDATE pods SET name = 'pod-' || id
 WHERE EXISTS (SELECT 1 FROM pods AS other WHERE other.name = pods.name AND other.id < pods.id);
CREATE UNIQUE INDEX IF NOT EXISTS pods_name ON pods(name)
"""


class PodNameRows:
    """The pod-name queries of a transaction (store.Tx provides `_one`)."""

    def pod_id_by_name(self, name: str) -> int | None:
        row = self._one("SELECT id FROM pods WHERE name = ?", (name,))
        return row[0] if row else None

    def free_pod_id(self) -> int | None:
        """The lowest pod id no pod has, above the global pod; None when all are taken."""
        first = GLOBAL_POD + 1
        if self._one("SELECT 1 FROM pods WHERE id = ?", (first,)) is None:
            return first
        # the lowest taken id whose successor is free (within the range)
        row = self._one("SELECT MIN(id) + 1 FROM pods WHERE id >= ? AND id < ? "
                        "AND id + 1 NOT IN (SELECT id FROM pods)", (first, MAX_POD_ID))
        return row[0]
