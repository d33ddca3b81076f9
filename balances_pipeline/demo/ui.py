"""`./dev ui`: the simulator, the Dagster webserver and the daemon, on the demo practices.

Uses `$DAGSTER_HOME` when set, else `$BALANCES_HOME/dagster_home`, and copies the
repository's `dagster.yaml` there (Dagster reads it only from `$DAGSTER_HOME`). The
directory is private like `BALANCES_HOME` (0700, its `dagster.yaml` 0600): Dagster's run
storage keeps run config (override reasons) and logs (account ids), and Dagster creates its
own files under the default umask.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from balances_pipeline.demo.run import drop_demo_aging_file, use_demo_environment
from balances_pipeline.settings import layout_from_env as layout
from balances_pipeline.storage.layout import PRIVATE_DIR_MODE, PRIVATE_FILE_MODE

REPOSITORY = Path(__file__).resolve().parents[2]
SIMULATOR_PORT = 9100  # the demo practices file points there


def prepare_dagster_home() -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or layout().home / "dagster_home")
    home.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    os.chmod(home, PRIVATE_DIR_MODE)  # also an existing one (mkdir's mode obeys the umask)
    instance_file = REPOSITORY / "dagster.yaml"
    if instance_file.exists():
        target = home / "dagster.yaml"
        # Written 0600 from the start, never readable by others for a moment.
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(descriptor, "wb") as copy, instance_file.open("rb") as source:
            shutil.copyfileobj(source, copy)
        os.chmod(target, PRIVATE_FILE_MODE)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev ui", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=3000, help="Dagster UI port (default 3000)")
    args = parser.parse_args(argv)
    use_demo_environment()
    dagster_home = prepare_dagster_home()
    # The file-drop demo practice's export: the sensor starts its sync once it settles.
    print(f"aging export dropped: {drop_demo_aging_file()}", flush=True)
    bin_dir = Path(sys.executable).parent
    simulator = subprocess.Popen(
        [str(bin_dir / "balances"), "simulator", "serve", "--port", str(SIMULATOR_PORT)]
    )
    print(f"DAGSTER_HOME={dagster_home}", flush=True)
    print(f"Dagster UI: http://127.0.0.1:{args.port} (Ctrl-C stops everything)", flush=True)
    dagster = subprocess.Popen(
        [str(bin_dir / "dagster"), "dev", "-w", str(REPOSITORY / "workspace.yaml"),
         "-h", "127.0.0.1", "-p", str(args.port)],
        cwd=REPOSITORY,
    )
    try:
        return dagster.wait()
    except KeyboardInterrupt:
        dagster.send_signal(signal.SIGINT)
        return dagster.wait(timeout=60)
    finally:
        simulator.terminate()
        simulator.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
