"""The layers keep to their side: workers need no database, the core needs no CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def modules_after_import(module: str) -> set[str]:
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_a_celery_worker_never_imports_the_store() -> None:
    loaded = modules_after_import("dealscout_cli.distributed.tasks")
    assert "dealscout_cli.store" not in loaded
    assert "sqlite3" not in loaded


@pytest.mark.parametrize(
    "module",
    [
        "dealscout_cli.snap",
        "dealscout_cli.jobs",
        "dealscout_cli.engines.local",
        "dealscout_cli.engines.batch",
        "dealscout_cli.distributed.coordinator",
    ],
)
def test_the_core_never_imports_the_cli(module: str) -> None:
    loaded = modules_after_import(module)
    assert not {name for name in loaded if name.startswith("dealscout_cli.cli")}
    assert "typer" not in loaded and "rich" not in loaded
