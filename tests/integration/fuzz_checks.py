"""schemathesis hooks (SCHEMATHESIS_HOOKS=<this file>) for tests/integration/test_fuzz_api.py.

The OpenAPI document states every format the server enforces (flows/contract.py), so a
request schemathesis generates as schema-valid may be refused only for what no schema can
say: the current state (an unregistered host, a pod without a subnet) or a rule across
fields and ranges (a subnet with host bits set, a reserved address). The server marks
refusals of a broken format with the code `invalid_format`; this check fails the run when a
schema-valid request gets one, or gets 400 (structurally malformed), which would mean the
document and the server disagree.
"""

from __future__ import annotations

import schemathesis


@schemathesis.check
def valid_data_is_refused_only_for_its_meaning(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    if response.status_code not in (400, 422):
        return None
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{response.status_code} without an error body") from None
    if response.status_code == 400 or error.get("code") == "invalid_format":
        raise AssertionError(
            f"a schema-valid request was refused as malformed ({response.status_code} "
            f"{error.get('code')}: {error.get('message')}): the document and the server "
            "disagree on a format")
    return None
