"""The store: schema, queue, leases and fencing, on real SQLite files, with an injected clock."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dealscout_cli.errors import LeaseLost, StoreError
from dealscout_cli.models import Condition, Identification, PriceEstimate
from dealscout_cli.records import JobState, Stage, iso_now
from dealscout_cli.scan import FoundItem, FoundPhoto
from dealscout_cli.store import Store
from dealscout_cli.store.schema import MIGRATIONS, MIGRATIONS_TABLE

LEASE = 30.0


def found_item(n: int) -> FoundItem:
    sha = f"{n:064x}"
    photo = FoundPhoto(path=Path(f"/photos/{n}.jpg"), sha256=sha, size_bytes=100, mtime_ns=0)
    return FoundItem(
        key=f"key{n:061x}", label=f"photo {n}", photos=(photo,), notes=None, source="/photos"
    )


IDENT = Identification(
    title="Blue ceramic mug",
    description="A mug.",
    category="Kitchen",
    condition=Condition.USED,
    confidence=0.9,
)
PRICE = PriceEstimate(low=5, suggested=8, high=12, currency="USD", rationale="Common mug.")


def complete(store: Store, lease, now: float) -> None:
    store.complete(
        lease,
        now=now,
        run_id=None,
        identification=IDENT,
        price=PRICE,
        prompt_version="t",
        vision_model="v",
        pricing_model="p",
        offline=False,
    )


@pytest.fixture
def store(db: Path):
    with Store.open(db) as opened:
        yield opened


def test_enqueue_twice_queues_once(store: Store) -> None:
    first = store.enqueue([found_item(1), found_item(2)], now=0)
    second = store.enqueue([found_item(1), found_item(2)], now=1)
    assert (first.new, second.new, second.already_queued) == (2, 0, 2)
    assert store.counts()["queued"] == 2


def test_done_item_is_not_queued_again(store: Store) -> None:
    store.enqueue([found_item(1)], now=0)
    complete(store, store.claim_next_job("a", now=0, lease_seconds=LEASE), now=1)
    report = store.enqueue([found_item(1)], now=2)
    assert report.already_done == 1 and store.counts()["queued"] == 0


def test_force_requeues_done_items(store: Store) -> None:
    store.enqueue([found_item(1)], now=0)
    complete(store, store.claim_next_job("a", now=0, lease_seconds=LEASE), now=1)
    assert store.enqueue([found_item(1)], now=2, force=True).requeued == 1
    assert store.counts()["queued"] == 1 and store.listings() == []


def test_two_claimers_never_get_the_same_job(store: Store, db: Path) -> None:
    store.enqueue([found_item(1)], now=0)
    with Store.open(db) as other:
        assert store.claim_next_job("a", now=0, lease_seconds=LEASE) is not None
        assert other.claim_next_job("b", now=0, lease_seconds=LEASE) is None


def test_expired_lease_is_claimed_again_and_old_holder_is_fenced(store: Store) -> None:
    store.enqueue([found_item(1)], now=0)
    old = store.claim_next_job("dead", now=0, lease_seconds=LEASE)
    new = store.claim_next_job("alive", now=LEASE + 1, lease_seconds=LEASE)
    assert new is not None and new.token == old.token + 1 and new.attempt == 2
    with pytest.raises(LeaseLost):
        complete(store, old, now=LEASE + 2)
    complete(store, new, now=LEASE + 3)
    assert len(store.listings()) == 1


def test_heartbeat_keeps_a_lease_alive(store: Store) -> None:
    store.enqueue([found_item(1)], now=0)
    lease = store.claim_next_job("a", now=0, lease_seconds=LEASE)
    assert store.heartbeat(lease, now=LEASE - 1, lease_seconds=LEASE)
    assert store.claim_next_job("b", now=LEASE + 1, lease_seconds=LEASE) is None


def test_retry_later_waits_for_its_delay(store: Store) -> None:
    store.enqueue([found_item(1)], now=0)
    lease = store.claim_next_job("a", now=0, lease_seconds=LEASE)
    store.retry_later(lease, now=1, delay=10, kind="rate_limited", error="429")
    assert store.claim_next_job("a", now=5, lease_seconds=LEASE) is None
    assert store.claim_next_job("a", now=12, lease_seconds=LEASE) is not None


def test_release_does_not_count_an_attempt(store: Store) -> None:
    store.enqueue([found_item(1)], now=0)
    store.release(store.claim_next_job("a", now=0, lease_seconds=LEASE), now=1)
    assert store.claim_next_job("a", now=2, lease_seconds=LEASE).attempt == 1


def test_saved_identification_survives_a_failed_price(store: Store) -> None:
    store.enqueue([found_item(1)], now=0)
    lease = store.claim_next_job("a", now=0, lease_seconds=LEASE)
    store.save_stage(
        lease,
        Stage.IDENTIFY,
        IDENT.model_dump_json(),
        model="v",
        prompt_version="t",
        offline=False,
        now=1,
    )
    store.fail(lease, now=2, kind="server_error", error="503", retryable=True)
    assert store.requeue_retryable(now=3) == 1
    assert store.saved_stage(lease.item_id, Stage.IDENTIFY)["output"]["title"] == IDENT.title


def test_requeue_stamps_a_new_queue_time(store: Store) -> None:
    store.enqueue([found_item(1)], now=0)
    lease = store.claim_next_job("a", now=0, lease_seconds=LEASE)
    first = store.job_queued_at(lease.job_id)
    store.fail(lease, now=1, kind="timeout", error="slow", retryable=True)
    store.requeue_retryable(now=60)
    assert first < store.job_queued_at(lease.job_id) == iso_now(60)


def test_skipped_file_is_kept_with_its_reason(store: Store) -> None:
    assert store.record_skipped("/p/x.tiff", "unsupported format (.tiff)", source="/p", now=0)
    assert not store.record_skipped("/p/x.tiff", "unsupported format (.tiff)", source="/p", now=1)
    assert store.counts()["skipped"] == 1
    assert store.failures()[0]["error"] == "unsupported format (.tiff)"


def test_non_utf8_file_name_round_trips(store: Store) -> None:
    path = Path(b"/photos/caf\xe9.jpg".decode("utf-8", "surrogateescape"))
    item = FoundItem(
        key="k" * 64,
        label="café",
        photos=(FoundPhoto(path, "a" * 64, 1, 0),),
        notes=None,
        source="/photos",
    )
    store.enqueue([item], now=0)
    lease = store.claim_next_job("a", now=0, lease_seconds=LEASE)
    assert store.item(lease.item_id).photos[0].path == str(path)


def test_database_opens_with_sqlite_utils(store: Store) -> None:
    store.enqueue([found_item(1)], now=0)
    tables = set(sqlite_utils.Database(store.path).table_names())
    assert {"items", "photos", "jobs", "stages", "calls", "listings", "runs"} <= tables


def test_database_from_an_older_release_is_migrated_on_open(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(f"CREATE TABLE {MIGRATIONS_TABLE} (name TEXT PRIMARY KEY, applied_at TEXT)")
    name, sql = MIGRATIONS[0]
    conn.executescript(sql)
    conn.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (?, ?)", [name, "2025-01-01T00:00:00Z"])
    conn.close()
    with Store.open(db) as store:
        applied = [row[0] for row in store.conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")]
        assert applied == [name for name, _ in MIGRATIONS]
        store.enqueue([found_item(1)], now=0)
        assert store.open_batches() == [] and store.counts()["queued"] == 1


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_text("this is not sqlite " * 100)
    with pytest.raises(StoreError, match="not a dealscout database"):
        Store.open(bogus)


def test_read_only_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    Store.open(path).close()
    uri = f"file:{path}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    read_only = Store(conn, path)
    with pytest.raises(StoreError, match="read-only"):
        read_only.enqueue([found_item(1)], now=0)
    conn.close()


def _open_together(path: Path, start: Any, errors: Any) -> None:
    """One process: wait for the others, open the file, report the error text (empty if none)."""
    start.wait()
    try:
        Store.open(path).close()
        errors.put("")
    except StoreError as exc:
        errors.put(str(exc))


def test_processes_opening_a_new_database_together_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL answers "database is locked" without waiting; before the
    # open retried it, about one round in four of this test had a process fail.
    ctx = multiprocessing.get_context("fork")
    failures = []
    for round_ in range(12):
        path, start, errors = tmp_path / f"{round_}.db", ctx.Barrier(6), ctx.Queue()
        procs = [ctx.Process(target=_open_together, args=(path, start, errors)) for _ in range(6)]
        for proc in procs:
            proc.start()
        failures += [errors.get(timeout=60) for _ in procs]
        for proc in procs:
            proc.join(timeout=60)
    assert [f for f in failures if f] == []
    assert len(failures) == 72


class JobMachine(RuleBasedStateMachine):
    """Random sequences of queue operations: every job stays in exactly one state, one live lease."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.store = Store.open(Path(self.dir.name) / "machine.db")
        self.now = 0.0
        self.leases: list = []
        self.done: set[int] = set()
        self.items = 0

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    @rule(n=st.integers(1, 3))
    def enqueue(self, n: int) -> None:
        self.store.enqueue([found_item(self.items + i) for i in range(n)], now=self.now)
        self.items += n

    @rule(owner=st.sampled_from(["a", "b"]))
    def claim(self, owner: str) -> None:
        lease = self.store.claim_next_job(owner, now=self.now, lease_seconds=LEASE)
        if lease is not None:
            assert lease.item_id not in self.done, "a done job was claimed again"
            self.leases.append(lease)

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def heartbeat(self, data) -> None:
        lease = data.draw(st.sampled_from(self.leases))
        self.store.heartbeat(lease, now=self.now, lease_seconds=LEASE)

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def complete(self, data) -> None:
        lease = data.draw(st.sampled_from(self.leases))
        self.leases.remove(lease)
        try:
            complete(self.store, lease, now=self.now)
            self.done.add(lease.item_id)
        except LeaseLost:
            pass

    @precondition(lambda self: self.leases)
    @rule(data=st.data(), retryable=st.booleans())
    def fail(self, data, retryable: bool) -> None:
        lease = data.draw(st.sampled_from(self.leases))
        self.leases.remove(lease)
        try:
            if retryable:
                self.store.retry_later(lease, now=self.now, delay=5, kind="timeout", error="slow")
            else:
                self.store.fail(lease, now=self.now, kind="bad_photo", error="bad", retryable=False)
        except LeaseLost:
            pass

    @precondition(lambda self: self.leases)
    @rule()
    def crash(self) -> None:
        self.leases.clear()  # the process died holding its leases

    @rule(seconds=st.sampled_from([1.0, 10.0, LEASE + 1]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @invariant()
    def every_job_in_exactly_one_known_state(self) -> None:
        rows = self.store.conn.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        assert {r[0] for r in rows} <= {s.value for s in JobState}
        assert sum(r[1] for r in rows) == self.items

    @invariant()
    def at_most_one_lease_holder_can_write(self) -> None:
        tokens = dict(
            self.store.conn.execute("SELECT id, lease_token FROM jobs WHERE state = 'running'")
        )
        writers = Counter(
            lease.job_id for lease in self.leases if tokens.get(lease.job_id) == lease.token
        )
        assert all(count == 1 for count in writers.values())

    @invariant()
    def done_jobs_have_one_listing(self) -> None:
        done = self.store.conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'done'").fetchone()[
            0
        ]
        listings = self.store.conn.execute("SELECT COUNT(*) FROM listings").fetchone()[0]
        assert done == listings == len(self.done)


TestJobMachine = JobMachine.TestCase
TestJobMachine.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
