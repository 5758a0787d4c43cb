"""etcd v3 for Loris: a thin client over etcd's JSON gateway (client.py), its watch
(watch.py), the parts of a transaction (ops.py), the wire format (codec.py), the failover
rules (endpoints.py) and the errors callers act on (errors.py). See docs/ha.md."""

from controller.etcd.client import EtcdClient
from controller.etcd.codec import (
    DeleteResult,
    Event,
    KeyValue,
    Lease,
    LeaseInfo,
    Member,
    MemberStatus,
    PutResult,
    RangeResult,
    TxnResult,
    prefix_end,
)
from controller.etcd.errors import (
    AuthenticationFailed,
    Compacted,
    LeaseNotFound,
    OutcomeUnknown,
    RequestFailed,
    StoreError,
    StoreUnavailable,
    WatchCanceled,
)
from controller.etcd.ops import (
    Compare,
    Delete,
    Get,
    Put,
    create_revision_is,
    key_absent,
    key_exists,
    lease_is,
    mod_revision_is,
    value_is,
    version_is,
)
from controller.etcd.watch import WatchBatch, Watcher

__all__ = [
    "AuthenticationFailed", "Compacted", "Compare", "Delete", "DeleteResult", "EtcdClient",
    "Event", "Get", "KeyValue", "Lease", "LeaseInfo", "LeaseNotFound", "Member",
    "MemberStatus", "OutcomeUnknown", "Put", "PutResult", "RangeResult", "RequestFailed",
    "StoreError", "StoreUnavailable", "TxnResult", "WatchBatch", "WatchCanceled", "Watcher",
    "create_revision_is", "key_absent", "key_exists", "lease_is", "mod_revision_is",
    "prefix_end", "value_is", "version_is",
]
