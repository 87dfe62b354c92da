"""Nonce receive-times, order expirations and stream-auth expiry, from a time the caller reads.

Defaults (all configurable, nado-protocol.md §3.2, §7.3, open question §12.7):
- nonce `recv_time` = now + 90 s, the SDK's default; the venue should drop an order
  that arrives later, which bounds how long a lost request can still execute;
- IOC/FOK expire 60 s after signing (a second guard against late execution);
- DEFAULT/POST_ONLY rest until cancelled (u32 max seconds, ccxt's "GTC") unless a TTL
  is set;
- stream authentication expires 60 s ahead (Vertex refused more than 100 s).
"""

from __future__ import annotations

import attrs

from adapters.nado.signing import order_nonce

__all__ = ["NO_EXPIRY", "Timing"]

NO_EXPIRY = 4_294_967_295  # unix seconds; ccxt's "GTC"


@attrs.frozen(kw_only=True)
class Timing:
    recv_window_ms: int = 90_000
    immediate_ttl_s: int = 60
    resting_ttl_s: int | None = None
    stream_auth_ttl_ms: int = 60_000

    def __attrs_post_init__(self) -> None:
        if self.recv_window_ms <= 0 or self.immediate_ttl_s <= 0:
            raise ValueError("recv_window_ms and immediate_ttl_s must be > 0")
        if self.resting_ttl_s is not None and self.resting_ttl_s <= 0:
            raise ValueError("resting_ttl_s must be > 0 or None")
        if not 0 < self.stream_auth_ttl_ms <= 100_000:
            raise ValueError("stream_auth_ttl_ms must be in (0, 100000]")

    def nonce(self, now_unix_ms: int, tag: int) -> int:
        return order_nonce(now_unix_ms + self.recv_window_ms, tag)

    def expiration(self, now_unix_s: int, tif: str) -> int:
        if tif in ("ioc", "fok"):
            return now_unix_s + self.immediate_ttl_s
        if self.resting_ttl_s is None:
            return NO_EXPIRY
        return now_unix_s + self.resting_ttl_s

    def stream_auth_expiration(self, now_unix_ms: int) -> int:
        return now_unix_ms + self.stream_auth_ttl_ms
