"""What people do to records in Zoho's UI, for tests to plant: create, edit and delete records.

These bypass the API (no credits, no unique checks on create, like an import or a record made
before the field was unique) and stamp ``Modified_By`` with a UI user other than the API user, so
a reader can tell an edit in Zoho from our own writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zohosim.state import State

UI_USER = {"name": "Ursula Interface", "id": "5725767000000225099",
           "email": "ursula.interface@zohosim.example"}


def user_edit(st: State, method: str, rest: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``POST /__sim/records/{module}`` {"record"}, ``PATCH .../{id}`` {"values"},
    ``DELETE .../{id}``."""
    from zohosim.state import now_iso

    module, _, rid = rest.strip("/").partition("/")
    if module not in st.stores:
        raise KeyError(f"unknown module {module!r}")
    store = st.stores[module]
    with st.lock:
        now = now_iso()
        if method == "POST" and not rid:
            values = payload.get("record")
            if not isinstance(values, dict):
                raise ValueError("body needs an object 'record'")
            rec = store.insert(st.new_id(), dict(values), now)
            rec["Modified_By"] = rec["Created_By"] = UI_USER
            st._save_records(module, [rec])
            return {"id": rec["id"]}
        if not rid or rid not in store.records:
            raise KeyError(f"no {module} record {rid!r}")
        if method == "PATCH":
            values = payload.get("values")
            if not isinstance(values, dict):
                raise ValueError("body needs an object 'values'")
            rec = store.update(rid, dict(values), now)
            rec["Modified_By"] = UI_USER
            st._save_records(module, [rec])
            return {"id": rid, "Modified_Time": rec["Modified_Time"]}
        if method == "DELETE":
            rec = store.records[rid]
            for f in store.indexed:
                store._unindex(f, rec)
            del store.records[rid]
            return {"id": rid, "deleted": True}
    raise ValueError(f"unsupported {method} on /__sim/records/{rest}")
