"""Per-user request rates, counted in the shared Redis cache so they hold across web processes.

DRF's SimpleRateThrottle keeps each user's recent request times as one pickled list in the cache: a GET and
a SET of the whole list per request (through a Redis client Django builds per call), growing with the
rate. This keeps the same sliding log as a sorted set and checks and records a request in one Lua call:
drop the times older than the window, refuse when `limit` remain, else add this one. The same limits, the
same 429 and the same Retry-After as DRF's (`wait` below is its formula).
"""

from __future__ import annotations

import logging
import secrets
import threading

import redis
from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import UserRateThrottle

log = logging.getLogger(__name__)

# KEYS[1]: the user's log. ARGV: now, window (s), limit, a unique member. Returns {allowed, count, oldest}:
# count and oldest (a score, as text; "" if none) of the log as DRF's `history` would hold them.
_SLIDING_LOG = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
if count >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, count, oldest[2] or ''}
end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('EXPIRE', KEYS[1], math.ceil(window))
return {1, count + 1, ''}
"""

_lock = threading.Lock()
_script: redis.commands.core.Script | None = None


def _sliding_log() -> redis.commands.core.Script:
    """The script on one client of the cache's Redis database, made once per process."""
    global _script
    if _script is None:
        with _lock:
            if _script is None:
                cache_settings = settings.CACHES["default"]
                client = redis.Redis.from_url(cache_settings["LOCATION"], **cache_settings.get("OPTIONS", {}))
                _script = client.register_script(_SLIDING_LOG)
    return _script


class SharedRateThrottle(UserRateThrottle):
    """A per-user rate counted in the shared cache (Redis). If that cache is unreachable the request is let
    through: submit then answers 503 for the broker anyway."""

    cache_format = "throttle-log_%(scope)s_%(ident)s"  # a sorted set, not DRF's pickled list

    def allow_request(self, request, view) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        self.now = self.timer()
        member = f"{self.now!r}-{secrets.token_hex(6)}"
        try:
            allowed, self.count, oldest = _sliding_log()(
                keys=[cache.make_key(key)], args=[repr(self.now), self.duration, self.num_requests, member]
            )
        except redis.RedisError:
            log.warning("throttle cache unreachable; not throttling this request", exc_info=True)
            return True
        self.oldest = float(oldest) if oldest else None
        return bool(allowed)

    def wait(self) -> float | None:
        """DRF's SimpleRateThrottle.wait, on the log's count and oldest time instead of its list."""
        remaining = self.duration - (self.now - self.oldest) if self.oldest is not None else self.duration
        available = self.num_requests - self.count + 1
        if available <= 0:
            return None
        return remaining / float(available)


class SubmitThrottle(SharedRateThrottle):
    scope = "submit"


class ReadThrottle(SharedRateThrottle):
    scope = "read"
