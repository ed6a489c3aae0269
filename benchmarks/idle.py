"""What an idle worker and its broker cost: cores busy with no traffic at all.

One real worker of ``pipeline.app`` (both lanes, every agent) against a
fresh embedded broker and the emulators; once the worker is ready and has
settled, the CPU of the worker and of the broker is read from ``/proc`` over
a window with no traffic. Bounded in time; everything stops by itself.

    python -m benchmarks.idle [--settle 10] [--window 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks.send import Stack
from benchmarks.workload import process_cpu_seconds
from pipeline.broker import free_port
from pipeline.devstack import healthy


def measure(settle: float, window: float) -> dict[str, float]:
    """Cores the idle worker and the broker keep busy over ``window`` seconds."""
    with tempfile.TemporaryDirectory() as workdir, Stack(Path(workdir), "idle") as s:
        port = free_port()
        worker = s.start_worker(NOTIFY_WEB_PORT=str(port))
        deadline = time.monotonic() + 120
        while not healthy(port):
            s.alive()
            if time.monotonic() > deadline:
                raise RuntimeError("the worker was not ready within 120 s")
            time.sleep(0.2)
        time.sleep(settle)  # start-up work (recovery, first fetches) is not idling
        broker = s.broker.pid
        assert broker is not None
        before = (process_cpu_seconds(worker), process_cpu_seconds(broker))
        started = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - started
        after = (process_cpu_seconds(worker), process_cpu_seconds(broker))
        s.alive()
    return {
        "worker_cores": (after[0] - before[0]) / elapsed,
        "broker_cores": (after[1] - before[1]) / elapsed,
        "window_s": elapsed,
    }


def main() -> None:
    """Print the idle worker's and the broker's CPU, in cores."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    figures = measure(args.settle, args.window)
    print(
        f"idle over {figures['window_s']:.0f} s: worker "
        f"{figures['worker_cores']:.3f} of a core, broker "
        f"{figures['broker_cores']:.3f} of a core"
    )


if __name__ == "__main__":
    main()
