"""The `balances` command line, paused for a test to SIGKILL it at a chosen point.

    python killpoint_process.py POINT N balances-arguments...

runs `balances balances-arguments...` in this process and, at the N-th time it reaches
POINT, prints "paused at POINT N" and sleeps (the test then kills it). The points are
steps every publish and every working-database transaction goes through, whatever calls
them:

- `commit`: inside a working-database transaction, after its statements, before COMMIT;
- `publish`: the start of a publish, before its transaction (`SnapshotStore.carry_over`);
- `swap`: a publish's transaction committed, its symlink not swapped yet
  (`SnapshotStore.point_to`).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager

from balances_pipeline import cli
from balances_pipeline.storage.snapshots import SnapshotStore
from balances_pipeline.storage.working_db import WorkingDatabase

POINT, TIMES = sys.argv[1], int(sys.argv[2])
reached = {"commit": 0, "publish": 0, "swap": 0}


def reach(point: str) -> None:
    reached[point] += 1
    if point == POINT and reached[point] == TIMES:
        print(f"paused at {point} {TIMES}", flush=True)
        time.sleep(600)


original_transaction = WorkingDatabase.transaction
original_carry_over = SnapshotStore.carry_over
original_point_to = SnapshotStore.point_to


@contextmanager
def transaction(self):
    with original_transaction(self) as con:
        yield con
        reach("commit")


def carry_over(self, *args, **kwargs):
    reach("publish")
    return original_carry_over(self, *args, **kwargs)


def point_to(self, *args, **kwargs):
    reach("swap")
    return original_point_to(self, *args, **kwargs)


WorkingDatabase.transaction = transaction
SnapshotStore.carry_over = carry_over
SnapshotStore.point_to = point_to
sys.exit(cli.main(sys.argv[3:]))
