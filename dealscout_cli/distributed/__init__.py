"""Distributed mode: Celery workers over Redis call Gemini; the coordinator keeps the store.

    app.py          the Celery app and every setting it relies on
    tasks.py        the one task: prepared image bytes in, identification + price + calls out
    ratelimit.py    one GCRA rate limit per model for the whole fleet, in a Redis Lua script
    coordinator.py  `snap --engine celery`: leases, images, tasks out, results into the store
    status.py       `fleet_status(broker_url)`: workers, tasks in flight, queue depth
    heartbeat.py    workers beat and list what they hold; the coordinator finds lost ones

The `dealscout worker` command lives with the other commands, in `dealscout_cli.cli.worker`.
Importing this package imports nothing heavy: Celery loads when a module above is used.
The README's section "Distributed mode" says how to run it.
"""

QUEUE = "gemini"  # here, not in app.py, so `dealscout --help` can name it without importing Celery
INSTALL_HINT = "distributed mode needs Celery and redis-py: pip install 'dealscout[distributed]'"
