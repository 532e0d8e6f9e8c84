"""`python -m dealscout_cli.emulator`: the emulator in the foreground, every knob a flag.

`dealscout emulator` offers the same flags through the CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from .config import (
    LATENCY_DISTRIBUTIONS,
    EmulatorConfig,
    parse_error_rates,
    parse_models,
    parse_storm,
)
from .server import serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dealscout_cli.emulator",
        description="A local Gemini API emulator with faults.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    add("--port", type=int, default=8089)
    add("--seed", type=int, default=1, help="seed for answers and faults")
    add("--rpm", type=int, help="requests per minute per model before 429s")
    add("--tpm", type=int, help="input tokens per minute per model before 429s")
    add("--rpd", type=int, help="requests per day per model before daily-quota 429s")
    add("--latency", type=float, default=0.0, help="seconds per answer (mean/median)")
    add("--latency-dist", choices=LATENCY_DISTRIBUTIONS, default="fixed")
    add("--error-rate", default="", help="injected errors, e.g. 429=0.1,503=0.02")
    for fault in ("drop", "trickle", "malformed", "max-tokens", "safety"):
        add(f"--{fault}-rate", type=float, default=0.0, help=f"share of requests with {fault}")
    add("--trickle-seconds", type=float, default=1.0, help="how long a trickled body takes")
    add("--storm", help="429 to every request from START to END s after start, e.g. 10 or 30-40")
    add("--window-seconds", type=float, default=60.0, help="length of the per-minute window")
    add("--api-key", help="accept only this key (default: any non-empty key)")
    add("--models", help="serve only these models, comma-separated (default: any name)")
    add("--log-level", default="warning")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = EmulatorConfig(
            seed=args.seed,
            rpm=args.rpm,
            tpm=args.tpm,
            rpd=args.rpd,
            latency=args.latency,
            latency_dist=args.latency_dist,
            error_rates=parse_error_rates(args.error_rate),
            drop_rate=args.drop_rate,
            trickle_rate=args.trickle_rate,
            trickle_seconds=args.trickle_seconds,
            malformed_rate=args.malformed_rate,
            max_tokens_rate=args.max_tokens_rate,
            safety_rate=args.safety_rate,
            api_key=args.api_key,
            window_seconds=args.window_seconds,
            models=parse_models(args.models) if args.models is not None else None,
            storm=parse_storm(args.storm) if args.storm is not None else None,
        )
    except ValueError as problem:
        parser.error(str(problem))

    def ready(url: str) -> None:
        print(
            f"Gemini API emulator on {url} (Ctrl-C stops; stats at {url}/_emulator/stats)",
            file=sys.stderr,
        )

    try:
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises Ctrl-C after shutdown
            serve(config, host=args.host, port=args.port, log_level=args.log_level, on_ready=ready)
    except OSError as exc:
        parser.exit(
            1,
            f"error: cannot listen on {args.host}:{args.port}: "
            f"{exc.strerror or exc}; pick another --port (0 picks a free one)\n",
        )


if __name__ == "__main__":
    main()
