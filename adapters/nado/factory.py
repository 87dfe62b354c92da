"""`dnpair run --venue nado`: settings, networks and the key, checked before any I/O.

The one module of this package that reads real clocks: it plugs the wall clock into
the venue (everything else takes time as a parameter, tests/nado/test_purity.py).

Networks (nado-protocol.md §1.1): `mainnet` and `testnet` carry their gateway, chain id
and endpoint contract, which discovery then requires the gateway to confirm; `local`
(a `dnpair venue serve`, say) has no defaults and needs `--gateway`. `--gateway`
overrides the URL of any network but not its expectations.

Environment: `NADO_PRIVATE_KEY` (required; `0x` + 64 hex; never logged: it is
registered with the log redactor at once), `NADO_SUBACCOUNT` (default `default`),
`NADO_PRODUCT_IDS` (optional expectations, e.g. `ETH-PERP=4,SOL-PERP=8`),
`NADO_ARCHIVE_URL` (the indexer; mainnet/testnet default to Nado's, `local` has none;
`off` disables it). Every problem
is a `ConfigError` whose message names the setting and never contains the key.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from decimal import Decimal

import attrs

from adapters.nado.discovery import Expectations
from adapters.nado.signing import KEY_ENV
from adapters.nado.signing import load_key
from adapters.nado.signing import subaccount_hex
from adapters.nado.venue import NadoSettings
from adapters.nado.venue import NadoVenue
from engine.core.clock import Clock
from engine.core.clock import VirtualClock
from engine.ops.logs import register_secret
from engine.runtime.config import ConfigError

__all__ = ["NETWORKS", "Network", "account_key", "make_nado_venue", "nado_settings"]

SUBACCOUNT_ENV = "NADO_SUBACCOUNT"
PRODUCT_IDS_ENV = "NADO_PRODUCT_IDS"
ARCHIVE_ENV = "NADO_ARCHIVE_URL"


@attrs.frozen
class Network:
    gateway: str | None
    chain_id: int | None
    endpoint_addr: str | None
    archive: str | None = None


NETWORKS: dict[str, Network] = {
    "mainnet": Network(
        "https://gateway.prod.nado.xyz/v1",
        57073,
        "0x05ec92d78ed421f3d3ada77ffde167106565974e",
        "https://archive.prod.nado.xyz/v1",
    ),
    "testnet": Network(
        "https://gateway.test.nado.xyz/v1",
        763373,
        "0x698d87105274292b5673367dec81874ce3633ac2",
        "https://archive.test.nado.xyz/v1",
    ),
    "local": Network(None, None, None),
}


def _product_ids(raw: str | None) -> dict[str, int]:
    if not raw:
        return {}
    out: dict[str, int] = {}
    for part in raw.split(","):
        m = re.fullmatch(r"\s*([A-Z0-9]{2,12}-PERP)\s*=\s*(\d{1,9})\s*", part)
        if not m:
            raise ConfigError(f"{PRODUCT_IDS_ENV}: expected SYMBOL=ID[,SYMBOL=ID], got {part!r}")
        out[m.group(1)] = int(m.group(2))
    return out


def nado_settings(
    *,
    network: str,
    gateway: str | None,
    pair: Sequence[str],
    env: Mapping[str, str],
    seed: int = 0,
) -> NadoSettings:
    net = NETWORKS.get(network)
    if net is None:
        raise ConfigError(f"--network: one of {', '.join(NETWORKS)}, got {network!r}")
    url = gateway or net.gateway
    if url is None:
        raise ConfigError(f"--network {network} has no default gateway: pass --gateway URL")
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        raise ConfigError(f"--gateway: expected http(s)://HOST[:PORT]/v1, got {url!r}")
    name = env.get(SUBACCOUNT_ENV, "default")
    try:
        subaccount_hex("0x" + "00" * 20, name)
    except ConfigError as exc:
        raise ConfigError(f"{SUBACCOUNT_ENV}: {exc}") from None
    archive = env.get(ARCHIVE_ENV) or net.archive
    if archive in ("off", "none"):
        archive = None
    if archive is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", archive):
        raise ConfigError(f"{ARCHIVE_ENV}: expected http(s)://HOST[:PORT]/PATH, got {archive!r}")
    expect = Expectations(
        chain_id=net.chain_id,
        endpoint_addr=net.endpoint_addr,
        product_ids=_product_ids(env.get(PRODUCT_IDS_ENV)),
    )
    return NadoSettings(
        gateway_url=url.rstrip("/"),
        pair=tuple(pair),
        subaccount_name=name,
        expect=expect,
        archive_url=archive,
        seed=seed,
    )


def make_nado_venue(
    *,
    clock: Clock,
    network: str,
    gateway: str | None,
    pair: Sequence[str],
    env: Mapping[str, str] | None = None,
    seed: int = 0,
    bbo_max_age_s: Decimal | None = None,
    on_sent: Callable[[str], None] | None = None,
) -> NadoVenue:
    """The venue `dnpair run --venue nado` trades on. Raises ConfigError (exit 2).
    `on_sent` is the composition root's hook (the crash test's), given the engine order
    id when a placement's answer arrives, before its ack is reported."""
    env = os.environ if env is None else env
    if isinstance(clock, VirtualClock):
        raise ConfigError("--venue nado runs on the wall clock only (drop --clock virtual)")
    key = load_key(env.get(KEY_ENV))
    register_secret(key)
    settings = nado_settings(network=network, gateway=gateway, pair=pair, env=env, seed=seed)
    if bbo_max_age_s is not None:  # REST confirms a quiet stream's quote at half the age
        settings = attrs.evolve(settings, quiet_quote_s=bbo_max_age_s / 2)
    return NadoVenue(settings, key, clock=clock, unix_ns=time.time_ns, on_sent=on_sent)


def account_key(venue: NadoVenue, network: str) -> str:
    """Who this venue trades as, without any I/O and without the key: network, gateway,
    signer subaccount (owner address + name). Two engines with the same key are one
    account (engine/runtime/account.py locks it)."""
    from adapters.nado.signing import _account

    owner = str(_account(venue._key).address)
    sub = subaccount_hex(owner, venue.settings.subaccount_name)
    return f"nado:{network}:{venue.settings.gateway_url}:{sub}"
