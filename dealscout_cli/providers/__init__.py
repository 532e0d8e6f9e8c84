"""Model providers: the Protocol in `base`, Google's Gemini API in `gemini`.

`open_provider(settings)` is the one place a provider is built, for `snap` and for a
Celery worker alike: the Gemini client with the settings' key, base URL (a proxy, the
emulator) and timeout. `--offline` is the same client pointed at the built-in emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dealscout_cli.config import NO_API_KEY, key_for
from dealscout_cli.errors import UsageError

if TYPE_CHECKING:
    from dealscout_cli.config import Settings
    from dealscout_cli.providers.gemini import GeminiProvider


def open_provider(settings: Settings, *, max_connections: int | None = None) -> GeminiProvider:
    """The provider a run calls (imports the SDK: ~1.4 s, so only when a run needs it)."""
    api_key = key_for(settings)
    if not api_key:
        raise UsageError(NO_API_KEY)
    from dealscout_cli.providers.gemini import GeminiProvider

    return GeminiProvider(
        api_key,
        base_url=settings.base_url,
        timeout=settings.call_timeout,
        max_connections=max_connections or max(8, settings.concurrency * 2),
    )
