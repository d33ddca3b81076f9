"""An analyst in a process of its own, for tests: `python analyst_process.py WAREHOUSE STOP OUT`.

Opens `warehouse.duckdb` read-only once, keeps it open, and queries every published sync
of every practice in a loop until the STOP file appears; then writes what each query saw
(rows of [practice_id, sync_id, accounts], as text) and every error to OUT as JSON. It
prints "connected" once the file is open.
"""

import json
import sys
import time

import duckdb

path, stop_file, out = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect(path, read_only=True)
seen, errors = [], []
print("connected", flush=True)
while True:
    try:
        rows = con.execute(
            "SELECT practice_id, sync_id, count(*) FROM account_balances"
            " GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        seen.append([list(map(str, row)) for row in rows])
    except Exception as error:  # noqa: BLE001 - every error is what the test looks for
        errors.append(repr(error))
    try:
        open(stop_file).close()
        break
    except FileNotFoundError:
        time.sleep(0.02)
with open(out, "w") as handle:
    json.dump({"seen": seen, "errors": errors}, handle)
