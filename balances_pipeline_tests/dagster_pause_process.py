"""`dagster` in this process, paused at a chosen step of a sync for a test to SIGKILL it.

    python dagster_pause_process.py POINT dagster-arguments...

runs `dagster dagster-arguments...` (`asset materialize ...`: the run executes in this
process, the code location's executor being in-process) and, the first time the sync
reaches POINT, prints "paused at POINT" and sleeps. The points, in a sync's order:

- `extract`: extracting, the first page (or batch of pages) being written to the staging
  file (the practice's extract lock held, its `sync_runs` row `extracting`);
- `between`: the extract step done (the extract waiting in staging), the balances step
  started, before it takes the practice's publish lock;
- `publish`: the publish lock held, the new snapshot directory created, before its files;
- `swap`: the publish's transaction committed, its symlink not switched yet;
- `commit` (the DuckLake layout): inside the publish's lake transaction, the practice's
  rows replaced, before COMMIT.
"""

from __future__ import annotations

import sys
import time

from balances_pipeline.defs import assets
from balances_pipeline.storage import lake_published
from balances_pipeline.storage.snapshots import SnapshotStore
from balances_pipeline.storage.staging import StagingDatabase

POINT = sys.argv[1]


def reach(point: str) -> None:
    if point == POINT:
        print(f"paused at {point}", flush=True)
        time.sleep(3600)


original_append = StagingDatabase.append
original_append_json_bodies = StagingDatabase.append_json_bodies
original_publish_practice = assets.publish_practice
original_create = SnapshotStore.create
original_point_to = SnapshotStore.point_to
original_replace_practice_rows = lake_published.replace_practice_rows


def append(self, rows):
    if rows:
        reach("extract")
    return original_append(self, rows)


def append_json_bodies(self, sql, bodies):
    if bodies:
        reach("extract")
    return original_append_json_bodies(self, sql, bodies)


def publish_practice(*args, **kwargs):
    reach("between")
    return original_publish_practice(*args, **kwargs)


def create(self, practice_id):
    directory = original_create(self, practice_id)
    reach("publish")
    return directory


def point_to(self, practice_id, snapshot_dir):
    reach("swap")
    return original_point_to(self, practice_id, snapshot_dir)


def replace_practice_rows(*args, **kwargs):
    replaced = original_replace_practice_rows(*args, **kwargs)
    reach("commit")
    return replaced


StagingDatabase.append = append
lake_published.replace_practice_rows = replace_practice_rows
StagingDatabase.append_json_bodies = append_json_bodies
assets.publish_practice = publish_practice
SnapshotStore.create = create
SnapshotStore.point_to = point_to

if __name__ == "__main__":
    from dagster._cli import main

    sys.argv = ["dagster", *sys.argv[2:]]
    sys.exit(main())
