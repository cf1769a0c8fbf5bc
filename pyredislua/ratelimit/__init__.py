"""Rate limiting: GCRA (the default), token bucket, sliding log, sliding window counter, fixed
window and a concurrency limiter, each decision one atomic Lua call on the server clock. Every
key's name and stored state carry its algorithm; when Redis cannot decide, a limiter fails open
(the default), closed, or raises (:class:`Failure`). See the README's rate limiting section."""

from .limiters import (
    ALGORITHM_CLASSES,
    GCRA,
    ConcurrencyLimiter,
    FixedWindow,
    Limiter,
    SlidingLog,
    SlidingWindow,
    Slot,
    TokenBucket,
    check_all,
    combined_call,
    enforce,
    hit_all,
)
from .ops import (
    ALGORITHMS,
    Decision,
    Failure,
    FailureMode,
    KeyState,
    Limit,
    LimitDecision,
    Rate,
    RateLimiterStateError,
    RateLimitExceeded,
    SlotDecision,
    decide_call,
    inspect_call,
    limiter_key,
    reset_call,
)

RateLimiter = GCRA

__all__ = [
    "ALGORITHMS",
    "ALGORITHM_CLASSES",
    "GCRA",
    "ConcurrencyLimiter",
    "Decision",
    "Failure",
    "FailureMode",
    "FixedWindow",
    "KeyState",
    "Limit",
    "LimitDecision",
    "Limiter",
    "Rate",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterStateError",
    "SlidingLog",
    "SlidingWindow",
    "Slot",
    "SlotDecision",
    "TokenBucket",
    "check_all",
    "combined_call",
    "decide_call",
    "enforce",
    "hit_all",
    "inspect_call",
    "limiter_key",
    "reset_call",
]
