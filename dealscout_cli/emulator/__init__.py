"""A Gemini API emulator that the real google-genai client accepts unchanged.

    from dealscout_cli.emulator import Emulator, EmulatorConfig

    with Emulator(EmulatorConfig(seed=1, rpm=60, error_rates={503: 0.05})) as emu:
        client = genai.Client(api_key="any", http_options=HttpOptions(base_url=emu.url))
        ...
        emu.stats().images_seen

It answers generateContent and countTokens on /v1 and /v1beta with seeded,
schema-valid content derived from the photos, enforces per-model RPM / TPM / RPD
quotas with Google's 429 bodies, and injects faults (errors, latency, drops, slow
bodies, malformed JSON, MAX_TOKENS, safety blocks). See the README, section "The Gemini API emulator".
Importing this package does not import google-genai or uvicorn.
"""

from .config import EmulatorConfig, parse_error_rates, parse_models, parse_storm
from .server import Emulator, EmulatorApp, serve
from .stats import StatsSnapshot

__all__ = [
    "Emulator",
    "EmulatorApp",
    "EmulatorConfig",
    "StatsSnapshot",
    "parse_error_rates",
    "parse_models",
    "parse_storm",
    "serve",
]
