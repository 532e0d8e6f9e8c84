"""After a 10 s burst of 429s, how soon is dealscout back at the server's rate?

The emulator (in this process) has a per-model limit of 300 RPM and answers every request
with a per-minute quota 429 for the first 10 s of the run (`EmulatorConfig.storm`; the
storm's clock is restarted at the run's first request, so the run meets all 10 s of it).
`dealscout snap` runs as a subprocess with the adaptive limiter (no `--rpm`) on more items
than four minutes can take, and is stopped with SIGTERM after four minutes of calm.

    python benchmarks/storm.py           # ~4.5 minutes
    python benchmarks/storm.py --quick   # 100 RPM, two minutes: a smoke run

Printed: ok calls in each whole minute after the storm ended, per model, and their ratio to
the server's rate (the rule: back to >= 0.9 within two minutes, and staying there), the 429s
in and after the storm, and the items that failed (none should: not on the soft time limit,
not otherwise).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quota import MODELS, SHORT, Report, calls_by_model, emulator, small_photos, snap  # noqa: E402

from dealscout_cli.emulator import Emulator  # noqa: E402

STORM = 10.0
LATENCY = 0.1


def restart_storm_at_first_request(emu: Emulator, stop: threading.Event) -> None:
    """Reset the emulator (its storm clock, quota windows and stats) the moment the run's
    first request arrives, so the run meets the whole storm whatever its start-up took."""
    while not stop.is_set():
        if emu.stats().requests > 0:
            emu.reset()
            return
        time.sleep(0.002)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 RPM for two minutes")
    args = parser.parse_args(argv)
    limit, minutes = (100, 2) if args.quick else (300, 4)
    items = int(limit * (minutes + 1) * 1.1)  # more than the calm minutes can take
    photos = small_photos(items)
    report = Report()
    with tempfile.TemporaryDirectory(prefix="dealscout-storm-") as tmp:
        db = Path(tmp) / "storm.db"
        with emulator(rpm=limit, latency=LATENCY, storm=(0.0, STORM)) as emu:
            stop = threading.Event()
            watcher = threading.Thread(target=restart_storm_at_first_request, args=(emu, stop))
            watcher.start()
            run = snap(photos, emu.url, db, "--grace", "5", stop_after=STORM + 60 * minutes + 8)
            stop.set()
            watcher.join()
            stats = emu.stats()
        calls = calls_by_model(db)
    first = min(rows[0][0] for rows in calls.values() if rows)
    calm = first + STORM  # the storm ends 10 s after the first request
    name = f"storm {limit} RPM"
    for model in MODELS:
        rows = calls.get(model, [])
        per_minute = [
            sum(1 for t, o in rows if o == "ok" and calm + 60 * m <= t < calm + 60 * (m + 1))
            for m in range(minutes)
        ]
        ratios = [count / limit for count in per_minute]
        report.add(name, f"{SHORT[model]}: ok calls in minutes 1..{minutes}", str(per_minute))
        report.add(
            name, f"{SHORT[model]}: ÷ server rate", ", ".join(f"{ratio:.2f}" for ratio in ratios)
        )
        back = next((m for m, ratio in enumerate(ratios, start=1) if ratio >= 0.9), None)
        report.add(
            name,
            f"{SHORT[model]}: first minute at >= 0.9 of the server rate",
            "never" if back is None else f"minute {back}",
            "minute <= 2",
            back is not None and back <= 2,
        )
        settled = ratios[2:] if len(ratios) > 2 else ratios[-1:]
        report.add(
            name,
            f"{SHORT[model]}: lowest of minutes 3..{minutes}",
            f"{min(settled):.2f}",
            ">= 0.9",
            min(settled) >= 0.9,
        )
        during = sum(1 for t, o in rows if o == "rate_limited" and t < calm)
        after = sum(1 for t, o in rows if o == "rate_limited" and t >= calm)
        report.add(name, f"{SHORT[model]}: 429s in the storm / after it", f"{during} / {after}")
    payload = run.payload.get("run") or {}
    failures = run.payload.get("failed") or []
    timed_out = sum(1 for f in failures if "took longer than" in str(f.get("error", "")))
    report.add(
        name,
        "items done / failed (of which soft time limit)",
        f"{payload.get('done')} / {payload.get('failed')} ({timed_out})",
        "0 failed",
        payload.get("failed") == 0,
    )
    for model in MODELS:
        peak = stats.max_requests_per_window_by_model.get(model, 0)
        report.add(name, f"{SHORT[model]}: busiest 60 s at the server (429s included)", str(peak))
    report.add(name, "wall time of snap (start-up, storm, calm, stop)", f"{run.wall:.0f} s")
    print()
    print(report.table())
    return 0 if all(r.ok is not False for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
