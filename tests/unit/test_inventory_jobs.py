"""A job as the API shows it: a result of any size fits in one answer."""

from __future__ import annotations

from services.inventory import jobs
from services.inventory.tables import Job


def test_a_result_with_a_long_list_shows_its_first_items_and_says_how_many_there_are() -> None:
    entries = [{"alias": f"svc-{i}", "serial": f"{i:x}"} for i in range(250)]
    store = {"machine": "m1", "store_path": "etc/ssl"}
    row = Job(job_id="j1", machine="m1", kind="inventory", status="completed",
              result={"store": store, "entries": entries})  # fmt: skip

    shown = jobs.to_json(row)

    assert shown["result"]["entries"] == entries[: jobs.RESULT_ITEMS_SHOWN]
    assert shown["result"]["store"] == store
    assert shown["result_truncated"] == {"entries": 250}
    assert row.result is not None and len(row.result["entries"]) == 250  # the record keeps all


def test_a_short_result_is_shown_whole() -> None:
    row = Job(job_id="j2", machine="m1", kind="create", status="completed",
              result={"created": True, "entries": [1, 2]})  # fmt: skip
    shown = jobs.to_json(row)
    assert shown["result"] == {"created": True, "entries": [1, 2]}
    assert shown["result_truncated"] is None
    assert jobs.to_json(Job(job_id="j3", machine="m1", kind="add"))["result"] is None
