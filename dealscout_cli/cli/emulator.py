"""`dealscout emulator`: serve the built-in Gemini API stand-in in the foreground."""

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from dealscout_cli.cli.options import EXIT_USAGE, err, fail

if TYPE_CHECKING:  # the emulator imports uvicorn and pydantic: only when the command runs
    from dealscout_cli.emulator import EmulatorConfig

PortOption = Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")]
HostOption = Annotated[str, typer.Option(help="Address to bind (keep it on loopback).")]
RpmOption = Annotated[int | None, typer.Option(help="Requests per minute per model before 429s.")]
TpmOption = Annotated[
    int | None, typer.Option(help="Input tokens per minute per model before 429s.")
]
RpdOption = Annotated[
    int | None, typer.Option(help="Requests per day per model before daily-quota 429s.")
]
LatencyOption = Annotated[float, typer.Option(help="Seconds each answer takes (mean).")]


class LatencyDist(StrEnum):
    FIXED = "fixed"
    UNIFORM = "uniform"
    LOGNORMAL = "lognormal"


LatencyDistOption = Annotated[
    LatencyDist, typer.Option(case_sensitive=False, help="How answer latency varies.")
]
ErrorRateOption = Annotated[
    str | None, typer.Option(help="Injected errors, e.g. 429=0.1,503=0.02.")
]
DropRateOption = Annotated[
    float, typer.Option(help="Share of requests whose connection is dropped.")
]
MalformedRateOption = Annotated[float, typer.Option(help="Share of 200s with malformed JSON text.")]
MaxTokensRateOption = Annotated[
    float, typer.Option(help="Share of 200s cut off with finishReason MAX_TOKENS.")
]
SafetyRateOption = Annotated[float, typer.Option(help="Share of requests blocked for SAFETY.")]
TrickleRateOption = Annotated[
    float, typer.Option(help="Share of responses sent slowly, byte by byte.")
]
SeedOption = Annotated[
    int, typer.Option(help="Seed for every random choice (same seed, same answers).")
]
ApiKeyOption = Annotated[
    str | None, typer.Option(help="Accept only this key (default: any non-empty key).")
]
StormOption = Annotated[
    str | None,
    typer.Option(help="429 to every request from START to END s after start, e.g. 10 or 30-40."),
]
ModelsOption = Annotated[
    str | None,
    typer.Option(
        help="Serve only these models (comma-separated); others get Google's 404, as an "
        "unknown or retired model name does. Default: any name."
    ),
]


def emulator(
    port: PortOption = 8089,
    host: HostOption = "127.0.0.1",
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    rpd: RpdOption = None,
    latency: LatencyOption = 0.0,
    latency_dist: LatencyDistOption = LatencyDist.FIXED,
    error_rate: ErrorRateOption = None,
    drop_rate: DropRateOption = 0.0,
    malformed_rate: MalformedRateOption = 0.0,
    max_tokens_rate: MaxTokensRateOption = 0.0,
    safety_rate: SafetyRateOption = 0.0,
    trickle_rate: TrickleRateOption = 0.0,
    seed: SeedOption = 1,
    api_key: ApiKeyOption = None,
    models: ModelsOption = None,
    storm: StormOption = None,
) -> None:
    """Run a local stand-in for the Gemini API, with rate limits and fault injection.

    Point dealscout (or any google-genai client) at it with
    --base-url http://127.0.0.1:PORT. Stats: GET /_emulator/stats.

    Example: dealscout emulator --port 8089 --rpm 60 --latency 0.8 --error-rate 429=0.1,503=0.02
    """
    from dealscout_cli.emulator import EmulatorConfig, parse_error_rates, parse_models, parse_storm

    try:
        cfg = EmulatorConfig(
            seed=seed,
            rpm=rpm,
            tpm=tpm,
            rpd=rpd,
            latency=latency,
            latency_dist=latency_dist.value,
            error_rates=parse_error_rates(error_rate) if error_rate else {},
            drop_rate=drop_rate,
            trickle_rate=trickle_rate,
            malformed_rate=malformed_rate,
            max_tokens_rate=max_tokens_rate,
            safety_rate=safety_rate,
            api_key=api_key,
            models=parse_models(models) if models is not None else None,
            storm=parse_storm(storm) if storm is not None else None,
        )
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    _serve(cfg, host=host, port=port)


def _serve(cfg: "EmulatorConfig", *, host: str, port: int) -> None:
    """Serve until Ctrl-C; an address that cannot be bound is one line, not a traceback."""
    from dealscout_cli.emulator import serve

    def ready(url: str) -> None:
        err.print(f"Gemini API emulator on {url}  (Ctrl-C stops; stats at {url}/_emulator/stats)")

    try:
        serve(cfg, host=host, port=port, on_ready=ready)
    except OSError as exc:
        fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "pick another --port (0 picks a free one)"
        )
