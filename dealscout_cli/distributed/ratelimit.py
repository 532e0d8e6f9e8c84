"""One rate limit for the whole fleet, held in Redis.

Celery's own ``rate_limit`` is per worker: three workers at "100/m" send 300 a minute.
Here every worker asks one Redis key per model instead. The arithmetic is
`dealscout_cli.limits`' GCRA (``gcra_ready_at``, ``gcra_charge``, ``emission_interval``)
run as a Lua script, so check-and-commit is one atomic step no matter how many workers
ask at once, and time is the Redis server's clock (``TIME``), so machines with skewed
clocks still space their starts correctly.

A pause is fleet-wide too: when Gemini answers 429 with ``RetryInfo.retryDelay``, the
worker that got it sets ``dealscout:pause:<model>`` and every worker's next `acquire`
waits until it has passed, instead of each discovering the 429 on its own.

With ``--tpm`` a second key per model holds the token budget, by the same rule as the
local limiter (a start waits until the tokens sent before it are paid for).

`RedisLimits` meets the same small interface the pipeline uses for local limits
(``for_model(model).acquire(tokens)`` and ``.record(permit, ...)``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from dealscout_cli.limits import emission_interval, gcra_ready_at

KEY_PREFIX = "dealscout:rate:"
TOKEN_PREFIX = "dealscout:tokens:"
PAUSE_PREFIX = "dealscout:pause:"
MAX_SLEEP = 1.0  # re-ask at least this often: a pause set meanwhile must be seen

# KEYS[1] the model's request TAT, KEYS[2] its pause-until, KEYS[3] its token TAT (all
# Redis-clock seconds). ARGV[1] request emission interval (s; 0 = no request limit), ARGV[2]
# its tolerance (s), ARGV[3] seconds of quota one token uses (0 = no token limit), ARGV[4] the
# request's estimated tokens. Returns the seconds to wait as a string (Lua numbers would be
# truncated to integers); "0" means the start is committed. Mirrors limits.ModelLimiter's
# `_ready_at` / `_commit` (tokens "pay after": a request waits for the token TAT with no
# tolerance, then charges its own tokens); keep the two in step.
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then return tostring(pause - now) end
local interval = tonumber(ARGV[1])
local token_interval = tonumber(ARGV[3])
local tokens = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local token_tat = tonumber(redis.call('GET', KEYS[3]) or '0')
local ready = 0
if interval > 0 then ready = tat - tonumber(ARGV[2]) end
if token_interval > 0 and tokens > 0 and token_tat > ready then ready = token_tat end
if ready > now then return tostring(ready - now) end
if interval > 0 then
  local new_tat = math.max(tat, now) + interval
  redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 60000)
end
if token_interval > 0 and tokens > 0 then
  local new_token_tat = math.max(token_tat, now) + tokens * token_interval
  redis.call('SET', KEYS[3], tostring(new_token_tat), 'PX',
             math.ceil((new_token_tat - now) * 1000) + 60000)
end
return '0'
"""

# KEYS[1] pause-until; ARGV[1] seconds. Only ever extends a pause, never shortens one.
PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local want = now + tonumber(ARGV[1])
local have = tonumber(redis.call('GET', KEYS[1]) or '0')
if want > have then
  redis.call('SET', KEYS[1], tostring(want), 'PX', math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
end
return tostring(math.max(want, have) - now)
"""


@dataclass(eq=False)
class FleetPermit:
    model: str
    estimated_tokens: int
    waited: float


class RedisModelLimiter:
    """Fleet-wide request spacing and pauses for one model."""

    def __init__(
        self,
        client: Any,
        model: str,
        rpm: float | None,
        *,
        tpm: float | None = None,
        burst: int = 1,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        self.client = client
        self.model = model
        self.interval = emission_interval(rpm) if rpm else 0.0
        self.token_interval = emission_interval(tpm) if tpm else 0.0
        self.tolerance = self.interval * (burst - 1)
        self.sleep = sleep
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._pause = client.register_script(PAUSE_LUA)

    @property
    def keys(self) -> list[str]:
        return [KEY_PREFIX + self.model, PAUSE_PREFIX + self.model, TOKEN_PREFIX + self.model]

    def try_acquire(self, estimated_tokens: int = 0) -> float:
        """Commit a start now and return 0, or return how long to wait first."""
        args = [self.interval, self.tolerance, self.token_interval, estimated_tokens]
        return float(self._acquire(keys=self.keys, args=args))

    async def acquire(self, estimated_tokens: int = 0) -> FleetPermit:
        waited = 0.0
        while True:
            wait = await anyio.to_thread.run_sync(self.try_acquire, estimated_tokens)
            if wait <= 0:
                return FleetPermit(self.model, estimated_tokens, waited)
            step = min(wait, MAX_SLEEP)
            await self.sleep(step)
            waited += step

    def pause(self, seconds: float) -> float:
        """Make every worker wait `seconds` before its next start of this model."""
        return float(self._pause(keys=[PAUSE_PREFIX + self.model], args=[seconds]))

    def record(
        self,
        permit: FleetPermit,
        *,
        actual_tokens: int | None = None,
        outcome: str = "ok",
        latency: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        if outcome == "rate_limited" and retry_after:
            self.pause(retry_after)

    # The server's own quota is the reference; a local view of the next start is still handy.
    def ready_in(self) -> float:
        """Seconds until this model's next start is allowed (reads, does not commit)."""
        tat_raw, pause_raw, _tokens = self.client.mget(self.keys)
        seconds, micros = self.client.time()
        now = seconds + micros / 1_000_000
        ready = max(gcra_ready_at(float(tat_raw or 0), self.tolerance), float(pause_raw or 0))
        return max(0.0, ready - now)


class RedisLimits:
    """`for_model` like `limits.Limits`, backed by one Redis client shared by all models."""

    def __init__(
        self, client: Any, rpm: float | None, *, tpm: float | None = None, burst: int = 1
    ) -> None:
        self.client = client
        self.rpm = rpm
        self.tpm = tpm
        self.burst = burst
        self._models: dict[str, RedisModelLimiter] = {}

    def for_model(self, model: str) -> RedisModelLimiter:
        if model not in self._models:
            self._models[model] = RedisModelLimiter(
                self.client, model, self.rpm, tpm=self.tpm, burst=self.burst
            )
        return self._models[model]


__all__ = ["ACQUIRE_LUA", "FleetPermit", "RedisLimits", "RedisModelLimiter"]
