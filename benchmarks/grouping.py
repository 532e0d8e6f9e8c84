"""How well `--group auto` splits a generated shoot into products, and what it costs.

    python benchmarks/grouping.py                 # seeds 1-5, 40 products each
    python benchmarks/grouping.py --seeds 20 21 22 23 24   # the second held-out set
    python benchmarks/grouping.py --seeds 7 8 --products 60

The constants of `dealscout_cli/grouping.py` were set on seeds 7-14: report others.

For each seed, `tests/shoot_factory.py` draws a shoot (40 products, 2-8 photos each, label
close-ups, pauses and quick switches, a few renamed files) into /tmp/dealscout-grouping/.
Then:

- auto: `scan(..., group="auto")`, CPU time per 1,000 photos (decode, signatures, scoring);
- auto+confirm: the unsure boundaries asked of the emulator (`confirm_groups`), which answers
  from the shoot's truth (`emulator.catalogue.shoot_truth`), then a rerun to show the cache
  answers everything (no second call).

Printed per seed and overall: adjusted Rand index against the truth, pairwise precision and
recall (of "these two photos are one item"), groups made vs products, boundaries unsure,
calls and tokens the confirmation used.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from math import comb
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from shoot_factory import make_shoot  # noqa: E402

from dealscout_cli.config import Settings  # noqa: E402
from dealscout_cli.emulator import Emulator, EmulatorConfig  # noqa: E402
from dealscout_cli.emulator.catalogue import shoot_truth  # noqa: E402
from dealscout_cli.grouping import confirm_groups  # noqa: E402
from dealscout_cli.scan import ScanResult, scan  # noqa: E402
from dealscout_cli.store import Store  # noqa: E402

CACHE = Path(tempfile.gettempdir()) / "dealscout-grouping"


def adjusted_rand_index(truth: list[object], found: list[object]) -> float:
    """Hubert and Arabie's ARI: 1 for the same partition, about 0 for a random one."""
    pairs = sum(comb(n, 2) for n in Counter(zip(truth, found, strict=True)).values())
    a = sum(comb(n, 2) for n in Counter(truth).values())
    b = sum(comb(n, 2) for n in Counter(found).values())
    expected = a * b / comb(len(truth), 2)
    best = (a + b) / 2
    return 1.0 if best == expected else (pairs - expected) / (best - expected)


def pairwise(truth: list[object], found: list[object]) -> tuple[float, float]:
    """Precision and recall of "same item" over all photo pairs."""
    both = sum(comb(n, 2) for n in Counter(zip(truth, found, strict=True)).values())
    said = sum(comb(n, 2) for n in Counter(found).values())
    true = sum(comb(n, 2) for n in Counter(truth).values())
    return (both / said if said else 1.0), (both / true if true else 1.0)


def labels(found: ScanResult, truth: dict[str, int]) -> tuple[list[object], list[object]]:
    by_name = {photo.path.name: n for n, item in enumerate(found.items) for photo in item.photos}
    names = sorted(truth)
    return [truth[n] for n in names], [by_name[n] for n in names]


def measure(seed: int, products: int) -> dict[str, object]:
    folder = CACHE / f"shoot-{products}-{seed}"
    if not folder.exists():
        shots = make_shoot(folder, products, seed=seed)
        (folder.parent / f"{folder.name}.json").write_text(
            json.dumps({s.name: s.product for s in shots})
        )
    truth = json.loads((folder.parent / f"{folder.name}.json").read_text())
    cpu = time.process_time()
    found = scan([folder], group="auto")
    cpu = time.process_time() - cpu
    t, f = labels(found, truth)
    row: dict[str, object] = {
        "seed": seed,
        "photos": len(t),
        "products": len(set(t)),
        "groups": len(found.items),
        "unsure": sum(len(g.unsure) for g in found.groupings),
        "ari": adjusted_rand_index(t, f),
        "precision_recall": pairwise(t, f),
        "cpu_s_per_1000": cpu / len(t) * 1000,
    }
    with (
        tempfile.TemporaryDirectory() as tmp,
        Emulator(EmulatorConfig(seed=1, group_truth=shoot_truth(folder))) as emulator,
    ):
        settings = Settings(db_path=Path(tmp) / "d.db", base_url=emulator.url, api_key="bench")
        with Store.open(settings.db_path) as store:
            done = confirm_groups(found, store, settings)
            t, f = labels(found, truth)
            again = scan([folder], group="auto")
            rerun = confirm_groups(again, store, settings)
            calls = store.call_totals(offline=False)
        row.update(
            {
                "ari_confirmed": adjusted_rand_index(t, f),
                "precision_recall_confirmed": pairwise(t, f),
                "groups_confirmed": len(found.items),
                "calls": done.calls,
                "rerun_calls": rerun.calls,
                "rerun_cached": rerun.cached,
                "input_tokens": calls.get("input_tokens"),
            }
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--products", type=int, default=40)
    args = parser.parse_args()
    rows = [measure(seed, args.products) for seed in args.seeds]
    print(
        f"{'seed':>4} {'photos':>6} {'prod':>4} {'groups':>6} {'unsure':>6} {'ARI':>6} "
        f"{'P':>5} {'R':>5} {'ARI+model':>9} {'P':>5} {'R':>5} {'calls':>5} {'rerun':>5} "
        f"{'cpu s/1000':>10}"
    )
    for r in rows:
        p, rc = r["precision_recall"]  # type: ignore[misc]
        pc, rcc = r["precision_recall_confirmed"]  # type: ignore[misc]
        print(
            f"{r['seed']:>4} {r['photos']:>6} {r['products']:>4} {r['groups']:>6} "
            f"{r['unsure']:>6} {r['ari']:>6.3f} {p:>5.3f} {rc:>5.3f} "
            f"{r['ari_confirmed']:>9.3f} {pc:>5.3f} {rcc:>5.3f} {r['calls']:>5} "
            f"{r['rerun_calls']:>5} {r['cpu_s_per_1000']:>10.1f}"
        )
    mean = {k: sum(float(r[k]) for r in rows) / len(rows) for k in ("ari", "ari_confirmed")}  # type: ignore[arg-type]
    cpu = sum(float(r["cpu_s_per_1000"]) for r in rows) / len(rows)  # type: ignore[arg-type]
    print(
        f"mean ARI {mean['ari']:.3f} without the model, {mean['ari_confirmed']:.3f} with "
        f"--confirm-groups; {cpu:.1f} s CPU per 1,000 photos (scan + grouping)"
    )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
