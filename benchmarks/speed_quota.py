"""Short 429s and 5xx faults against a configured quota: how much of it does a run use?

The issue: with `--rpm 300`, 5% injected 429s whose RetryInfo says "1s" (plus 5% 503 and
2% 500) reached 0.69 of a 300 RPM quota, because each 429 paused every request to that
model and the lost slots were never made up. This script runs the same folder of small
photos five ways against the emulator (server limit 300 RPM per model, latency 1 s) and
prints, for each, ok calls per minute at the server divided by the limit:

  faults    --rpm 300, --error-rate 429=0.05,503=0.05,500=0.02 (injected 429: RetryInfo 1s)
  clean     --rpm 300, no faults
  503s      --rpm 300, 503=0.05 only
  adaptive  no --rpm, the same faults as `faults`
  bare      benchmarks/bare_script.py --rpm 300, the same faults

    python benchmarks/speed_quota.py                 # 600 items (1,200 calls), ~20 minutes
    python benchmarks/speed_quota.py --only faults   # some of them
    python benchmarks/speed_quota.py --items 200     # smaller: fits in one minute's quota

The ratio is measured at the server, the same way for every contender: the emulator's count
of 200 answers per model is sampled every 0.25 s, and the rate is the answers between the
first and the last sample that saw one more. A fault costs its share of the quota only if
the server counts it: the emulator (like Google for 429s) does not count refused or
injected requests, so the ceiling is 1.0 whatever the faults. "server quota 429s" are the
requests the server refused because its own 60 s window was full: more than a handful
means the client went past the quota.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quota import (  # noqa: E402
    MODELS,
    ROOT,
    SHORT,
    Report,
    calls_by_model,
    emulator,
    run_process,
    small_photos,
    snap,
    steady_rpm,
)

from dealscout_cli.emulator import Emulator  # noqa: E402

LIMIT = 300
FAULTS = {429: 0.05, 503: 0.05, 500: 0.02}
ONLY_503 = {503: 0.05}


@dataclass(frozen=True)
class Contender:
    name: str
    error_rates: dict[int, float]
    rpm: bool = True  # pass --rpm LIMIT
    bare: bool = False  # benchmarks/bare_script.py instead of dealscout


CONTENDERS = (
    Contender("faults", FAULTS),
    Contender("clean", {}),
    Contender("503s", ONLY_503),
    Contender("adaptive", FAULTS, rpm=False),
    Contender("bare", FAULTS, bare=True),
)


class OkSampler:
    """Samples the emulator's 200s per model every `every` seconds, on a thread."""

    def __init__(self, emu: Emulator, every: float = 0.25) -> None:
        self.emu = emu
        self.every = every
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OkSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def _sample(self) -> None:
        by_status = self.emu.stats().requests_by_model_status
        ok = {model: by_status.get(model, {}).get(200, 0) for model in MODELS}
        self.samples.append((time.monotonic(), ok))

    def ok_per_minute(self, model: str) -> tuple[float, int]:
        """(ok answers a minute from the first to the last, ok answers in all)."""
        changes = [
            (t, ok[model])
            for i, (t, ok) in enumerate(self.samples)
            if ok[model] != (self.samples[i - 1][1][model] if i else 0)
        ]
        if len(changes) < 2:
            return 0.0, changes[-1][1] if changes else 0
        (t0, n0), (t1, n1) = changes[0], changes[-1]
        return (n1 - n0) * 60.0 / (t1 - t0), n1


def run_contender(contender: Contender, photos: Path, items: int, tmp: Path) -> dict[str, object]:
    config = {"rpm": LIMIT, "latency": 1.0, "error_rates": contender.error_rates}
    with emulator(**config) as emu, OkSampler(emu) as sampler:
        db = tmp / f"{contender.name}.db"
        if contender.bare:
            cmd = [sys.executable, str(ROOT / "benchmarks" / "bare_script.py"), str(photos)]
            cmd += ["--base-url", emu.url, "--rpm", str(LIMIT)]
            run = run_process(cmd)
            payload = run.payload
            done, failed = payload.get("ok", 0), payload.get("failed", -1)
        else:
            extra = ["--rpm", str(LIMIT)] if contender.rpm else []
            run = snap(photos, emu.url, db, *extra)
            summary = run.payload.get("run") or {}
            done, failed = summary.get("done", 0), summary.get("failed", -1)
        stats = emu.stats()
    result: dict[str, object] = {"done": done, "failed": failed, "wall": run.wall, "cpu": run.cpu}
    for model in MODELS:
        rate, ok = sampler.ok_per_minute(model)
        result[f"{SHORT[model]}_ratio"] = rate / LIMIT
        result[f"{SHORT[model]}_ok"] = ok
        if not contender.bare:  # the run's own calls table, as benchmarks/quota.py reads it
            starts = [t for t, outcome in calls_by_model(db).get(model, []) if outcome == "ok"]
            result[f"{SHORT[model]}_client_ratio"] = (steady_rpm(starts) or 0) / LIMIT
    result["requests"] = stats.requests
    result["429s"] = stats.requests_by_status.get(429, 0)
    result["quota_429s"] = sum(stats.rate_limited.values())
    result["busiest"] = max(stats.max_requests_per_window_by_model.values(), default=0)
    return result


def report_rows(report: Report, contender: Contender, result: dict[str, object]) -> None:
    name = contender.name
    goal = contender.name == "faults"
    ratios = []
    for model in MODELS:
        ratio = float(result[f"{SHORT[model]}_ratio"])  # type: ignore[arg-type]
        ratios.append(ratio)
        value = f"{ratio:.3f} ({result[f'{SHORT[model]}_ok']} ok)"
        if f"{SHORT[model]}_client_ratio" in result:
            value += f", client {float(result[f'{SHORT[model]}_client_ratio']):.3f}"  # type: ignore[arg-type]
        report.add(
            name,
            f"{SHORT[model]}: ok calls/min / limit",
            value,
            ">= 0.9" if goal else "",
            ratio >= 0.9 if goal else None,
        )
    failed = result["failed"]
    report.add(
        name,
        "items done / failed",
        f"{result['done']} / {failed}",
        "0 failed" if goal else "",
        failed == 0 if goal else None,
    )
    requests = int(result["requests"])  # type: ignore[call-overload]
    rejected = int(result["429s"])  # type: ignore[call-overload]
    pct = 100.0 * rejected / max(1, requests)
    report.add(
        name,
        "429s, % of requests",
        f"{pct:.1f}% ({rejected}/{requests})",
        "<= 5%" if goal else "",
        pct <= 5 if goal else None,
    )
    report.add(name, "server quota 429s (its window was full)", f"{result['quota_429s']}")
    report.add(name, "busiest 60 s at the server (all answers)", f"{result['busiest']}")
    report.add(name, "wall / CPU of the client", f"{result['wall']:.1f} s / {result['cpu']:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    names = [c.name for c in CONTENDERS]
    parser.add_argument("--only", default="", help=f"comma-separated, of: {', '.join(names)}")
    parser.add_argument("--items", type=int, default=600, help="small photos, one item each")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    chosen = [c for c in CONTENDERS if not args.only or c.name in args.only.split(",")]
    photos = small_photos(args.items)
    report = Report()
    results = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dealscout-speed-") as tmp:
        for contender in chosen:
            print(f"\n== {contender.name}", flush=True)
            result = run_contender(contender, photos, args.items, Path(tmp))
            results[contender.name] = result
            report_rows(report, contender, result)
    print(
        f"\n## speed_quota, {args.items} items, server {LIMIT} RPM, latency 1 s, "
        f"{time.perf_counter() - started:.0f} s, {os.cpu_count()} cores\n"
    )
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r.ok is not False for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
