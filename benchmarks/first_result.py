"""How soon does the first listing come? dealscout `snap` against the bare script, and a rerun.

    python benchmarks/first_result.py                # 2,000 photos, 2 runs each; 20,000 rerun
    python benchmarks/first_result.py --photos 500 --rerun 2000   # a quick look

Part 1 runs `dealscout snap` and `benchmarks/bare_script.py` (asyncio + tenacity, no
database) over the same 2,000 small unique JPEGs (`quota.small_photos`), alternated, two
runs each, each against a fresh emulator in this process (fixed latency 0.5 s, no limit),
both at concurrency 32 (dealscout's default), both from `Popen` (interpreter start and
imports included). Each process is killed once its first result is in: only the start is
measured here, the whole run's speed is `quota.py`'s.

What is timed, the same way for both, from the moment the process was started:

* first request: the emulator receiving the first generateContent (its `arrival` hook,
  in this process, so both contenders are seen by the same clock);
* first answer: the emulator answering the first pricing call (its arrival + the fixed
  latency): the first moment either contender can have a whole item;
* first result: dealscout's first `listings` row (`created_at`, written after the answer
  was validated and the job finished in SQLite). The bare script writes no timestamps, so
  its first result is its first answer: that favours the bare script by its few
  milliseconds of writing a line.

The goal: dealscout's first result <= the bare script's + 0.5 s.

Part 2 times a rerun over 20,000 photos the database already has (every job done): the
scan, the queueing and a run with nothing to do. The database is seeded through the
store's own `enqueue`, then every job is marked done in SQL (processing 20,000 items
would take this machine tens of minutes and is not what is measured).

Prints one line per run and a table at the end. The machine has 2 cores shared with
other work: compare dealscout and the bare script within one run of this script.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quota import API_KEY, small_photos  # noqa: E402

from dealscout_cli.config import DEFAULT_CONCURRENCY, DEFAULT_PRICING_MODEL  # noqa: E402
from dealscout_cli.emulator import Emulator, EmulatorConfig  # noqa: E402

LATENCY = 0.5
BARE_PRICING = "gemini-3.5-flash-lite"  # bare_script.PRICING (not imported: it imports genai)


class Arrivals:
    """The emulator's generateContent arrivals, stamped with this process's wall clock."""

    def __init__(self, emulator: Emulator) -> None:
        self.first: float | None = None
        self.first_pricing: float | None = None
        self.count = 0
        self.lock = threading.Lock()
        stats = emulator.app.stats
        original = stats.arrival

        def arrival(model: str, now: float, *args: Any, **kwargs: Any) -> Any:
            stamp = time.time()
            with self.lock:
                self.count += 1
                self.first = self.first or stamp
                if model in (DEFAULT_PRICING_MODEL, BARE_PRICING):
                    self.first_pricing = self.first_pricing or stamp
            return original(model, now, *args, **kwargs)

        stats.arrival = arrival  # type: ignore[method-assign]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_API_KEY"}
    env.update({"GEMINI_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)})
    return env


def _first_listing(db: Path) -> float | None:
    """The epoch of the first listings row, or None (no database or no listing yet)."""
    if not db.exists():
        return None
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        try:
            row = conn.execute("SELECT MIN(created_at) FROM listings").fetchone()
        except sqlite3.OperationalError:
            return None  # the schema is not there yet
    if not row or row[0] is None:
        return None
    return dt.datetime.fromisoformat(row[0].replace("Z", "+00:00")).timestamp()


def _first_call(db: Path) -> float | None:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        row = conn.execute("SELECT MIN(started_epoch) FROM calls").fetchone()
    return row[0] if row else None


def run_once(contender: str, photos: Path, tmp: Path, n: int) -> dict[str, Any]:
    db = tmp / f"{contender}-{n}.db"
    with Emulator(EmulatorConfig(seed=1, latency=LATENCY)) as emu:
        arrivals = Arrivals(emu)
        if contender == "dealscout":
            cmd = [sys.executable, "-m", "dealscout_cli.cli", "snap", str(photos)]
            cmd += ["--base-url", emu.url, "--db", str(db), "--quiet", "--json"]
        else:
            cmd = [sys.executable, str(ROOT / "benchmarks" / "bare_script.py"), str(photos)]
            cmd += ["--base-url", emu.url, "--concurrency", str(DEFAULT_CONCURRENCY)]
        started = time.time()
        proc = subprocess.Popen(
            cmd, env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        listing = None
        deadline = started + 120
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            answered = arrivals.first_pricing is not None and (
                time.time() > arrivals.first_pricing + LATENCY + 0.2
            )
            if contender == "dealscout":
                listing = _first_listing(db)
                if listing is not None:
                    break
            elif answered:
                break
        proc.kill()
        _, stderr = proc.communicate()
        if arrivals.first is None:
            print(f"  {contender} made no request: {stderr.decode(errors='replace')[-1500:]}")
    result: dict[str, Any] = {"contender": contender, "run": n}
    result["first_request_s"] = _since(arrivals.first, started)
    answer = None if arrivals.first_pricing is None else arrivals.first_pricing + LATENCY
    result["first_answer_s"] = _since(answer, started)
    if contender == "dealscout":
        result["first_result_s"] = _since(listing, started)
        result["first_call_row_s"] = _since(_first_call(db), started)
    else:
        result["first_result_s"] = result["first_answer_s"]
    return result


def _since(moment: float | None, started: float) -> float | None:
    return None if moment is None else round(moment - started, 3)


def seed_known(photos: Path, db: Path) -> float:
    """Every photo in `photos` known and done in `db`, as after a finished run; seconds taken."""
    from dealscout_cli.scan import scan
    from dealscout_cli.store import Store

    began = time.perf_counter()
    found = scan([photos])
    with Store.open(db) as store:
        store.enqueue(found.items, now=time.time())
        with store.transaction() as conn:
            conn.execute("UPDATE jobs SET state = 'done', finished_at = queued_at")
    return time.perf_counter() - began


def rerun(photos: Path, tmp: Path) -> dict[str, Any]:
    db = tmp / "rerun.db"
    seeded = seed_known(photos, db)
    with Emulator(EmulatorConfig(seed=1)) as emu:
        runs = []
        for _ in range(2):
            cmd = [sys.executable, "-m", "dealscout_cli.cli", "snap", str(photos)]
            cmd += ["--base-url", emu.url, "--db", str(db), "--quiet", "--json"]
            began = time.perf_counter()
            proc = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, check=False)
            wall = time.perf_counter() - began
            usage = resource_usage_children()
            payload = json.loads(proc.stdout or b"{}")
            runs.append((wall, usage, proc.returncode, payload))
            requests = emu.stats().requests
    wall, cpu, code, payload = min(runs, key=lambda r: r[0])
    return {
        "photos": len(os.listdir(photos)),
        "seed_s": round(seeded, 2),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "exit": code,
        "already_done": payload.get("already_done"),
        "requests": requests,
    }


_last_children_cpu = 0.0


def resource_usage_children() -> float:
    """CPU seconds (user + system) of the child processes waited for since the last call."""
    import resource

    global _last_children_cpu
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = usage.ru_utime + usage.ru_stime
    spent, _last_children_cpu = total - _last_children_cpu, total
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rerun", type=int, default=20_000, help="photos for part 2 (0: skip)")
    args = parser.parse_args(argv)
    photos = small_photos(args.photos)
    results = []
    with tempfile.TemporaryDirectory(prefix="first-result-") as tmp_name:
        tmp = Path(tmp_name)
        for n in range(args.runs):
            for contender in ("dealscout", "bare"):
                result = run_once(contender, photos, tmp, n)
                print(json.dumps(result), flush=True)
                results.append(result)
        rerun_result = None
        if args.rerun:
            resource_usage_children()
            rerun_result = rerun(small_photos(args.rerun), tmp)
            print(json.dumps({"rerun": rerun_result}), flush=True)
    print()
    print(f"| {args.photos:,} photos, latency {LATENCY} s | dealscout (median) | bare (median) |")
    print("|---|---|---|")
    for metric in ("first_request_s", "first_answer_s", "first_result_s"):
        values = {
            who: [r[metric] for r in results if r["contender"] == who and r[metric] is not None]
            for who in ("dealscout", "bare")
        }
        cells = [
            f"{statistics.median(v):.2f} s ({', '.join(f'{x:.2f}' for x in v)})" if v else "-"
            for v in values.values()
        ]
        print(f"| {metric} | {cells[0]} | {cells[1]} |")
    ds = [r["first_result_s"] for r in results if r["contender"] == "dealscout"]
    bare = [r["first_result_s"] for r in results if r["contender"] == "bare"]
    if all(x is not None for x in ds + bare) and ds and bare:
        gap = statistics.median(ds) - statistics.median(bare)
        verdict = "pass" if gap <= 0.5 else "FAIL"
        print(f"| dealscout - bare, first result | {gap:+.2f} s (goal <= +0.5 s) | {verdict} |")
    if rerun_result:
        print(
            f"| rerun over {rerun_result['photos']:,} known photos | "
            f"{rerun_result['wall_s']:.2f} s wall, {rerun_result['cpu_s']:.2f} s CPU, "
            f"{rerun_result['requests']} requests | |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
