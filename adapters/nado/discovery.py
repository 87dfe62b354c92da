"""Start-up discovery: what the gateway says it is, checked before anything is signed.

`discover` reads `contracts` (chain id, endpoint address), `status`, `symbols` (perps)
and `all_products` (book increments), maps the pair's symbols to product ids and checks
every one of these against the configuration and against each other. Any mismatch is a
`DiscoveryError`, a `ConfigError`: `dnpair run` exits 2 naming it, and no order was sent.
Nothing is hard-coded except the expectations a network carries (nado-protocol.md §1.1,
§2.1); `local` expects nothing but internal consistency.
"""

from __future__ import annotations

from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import attrs

from adapters.base import ProductInfo
from adapters.nado.queries import Contracts
from adapters.nado.queries import SymbolInfo
from adapters.nado.queries import parse_all_products
from adapters.nado.queries import parse_contracts
from adapters.nado.queries import parse_symbols
from adapters.nado.wire import MalformedFrame
from engine.runtime.config import ConfigError

__all__ = ["Discovery", "DiscoveryError", "Expectations", "VenueUnavailable", "discover"]

Query = Callable[[Mapping[str, Any]], Awaitable[Any]]


class DiscoveryError(ConfigError):
    """The venue is not what the configuration says: refuse to trade (exit 2)."""


class VenueUnavailable(DiscoveryError):
    """The venue did not answer usefully at start-up (down, rate limiting, unreadable
    replies): worth retrying; `dnpair run` retries inside its start-up budget, then
    exits 3 with this reason. Nothing was sent."""


@attrs.frozen(kw_only=True)
class Expectations:
    chain_id: int | None = None
    endpoint_addr: str | None = None  # lower-case
    product_ids: Mapping[str, int] = attrs.field(factory=dict)  # symbol -> id, if configured


@attrs.frozen(kw_only=True)
class Discovery:
    contracts: Contracts
    symbols: dict[str, SymbolInfo]  # the pair's, by symbol
    status: str
    # The pair's oracle prices from the same `all_products` read (0 = none given), the
    # price band's first reference (RELIABILITY D5); the venue refreshes them later.
    oracles: dict[int, Decimal] = attrs.field(factory=dict)

    @property
    def products(self) -> dict[str, ProductInfo]:
        return {s: info.product_info() for s, info in self.symbols.items()}


async def discover(query: Query, pair: Sequence[str], expect: Expectations) -> Discovery:
    """Run the start-up reads through `query` (returns success data or raises)."""
    try:
        contracts = parse_contracts(await query({"type": "contracts"}))
        status = await query({"type": "status"})
        symbols = parse_symbols(await query({"type": "symbols", "product_type": "perp"}))
        books = parse_all_products(await query({"type": "all_products"}))
    except MalformedFrame as exc:
        raise VenueUnavailable(f"venue discovery: unreadable reply ({exc})") from None
    if expect.chain_id is not None and contracts.chain_id != expect.chain_id:
        raise DiscoveryError(
            f"venue chain id {contracts.chain_id} != {expect.chain_id} expected for this "
            "network; refusing to sign for the wrong chain"
        )
    if expect.endpoint_addr is not None and contracts.endpoint_addr != expect.endpoint_addr:
        raise DiscoveryError(
            f"venue endpoint contract {contracts.endpoint_addr} != {expect.endpoint_addr} "
            "expected for this network"
        )
    if status != "active":
        raise DiscoveryError(f"venue status is {str(status)[:40]!r}, not 'active'")
    if len(set(pair)) != len(pair):
        raise DiscoveryError(f"the pair names the same product twice: {list(pair)}")
    found: dict[str, SymbolInfo] = {}
    for symbol in pair:
        info = symbols.get(symbol)
        if info is None:
            raise DiscoveryError(f"venue does not list {symbol} among its perps")
        if info.type != "perp":
            raise DiscoveryError(f"{symbol} is a {info.type!r} product, not a perp")
        want = expect.product_ids.get(symbol)
        if want is not None and info.product_id != want:
            raise DiscoveryError(
                f"{symbol} is product {info.product_id} at the venue, configuration says {want}"
            )
        if not info.tradable:
            raise DiscoveryError(f"{symbol} trading status is {info.trading_status!r}, not live")
        if info.isolated_only:
            raise DiscoveryError(f"{symbol} is isolated-margin only; this bot trades cross")
        book = books.get(info.product_id)
        if book is None or not book.is_perp:
            raise DiscoveryError(f"{symbol}: product {info.product_id} missing from all_products")
        ours = (info.price_increment_x18, info.size_increment_x18, info.min_size_x18)
        theirs = (book.price_increment_x18, book.size_increment_x18, book.min_size_x18)
        if ours != theirs:
            raise DiscoveryError(
                f"{symbol}: symbols and all_products disagree on (tick, size increment, "
                f"min size) x18: {ours} vs {theirs}"
            )
        found[symbol] = info
    ids = [i.product_id for i in found.values()]
    if len(set(ids)) != len(ids):
        raise DiscoveryError(f"the pair's symbols map to the same product: {ids}")
    oracles = {pid: books[pid].oracle_price for pid in ids}
    return Discovery(contracts=contracts, symbols=found, status=str(status), oracles=oracles)
