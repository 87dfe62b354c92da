"""Runs one corpus scenario against a loopback `venue serve` and reports what came back.

Requests go over HTTP exactly as a client sends them (orders signed with the adapter's
`Signer`); events are read from one `/v1/subscribe` connection subscribed to every
account's `fill`, `order_update` and `position_change` streams (and `best_bid_offer`
for the scenario's products). The end of a scenario is marked by one more order, from an
account of its own, that crosses nothing: the stream delivers in order, so when its
`order_update` arrives every event of the scenario has arrived (no sleeping).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import httpx
from websockets.asyncio.client import connect

from adapters.nado.signing import Secret
from adapters.nado.signing import Signer
from adapters.nado.signing import order_nonce
from adapters.nado.timing import Timing
from adapters.sim.faults import profile_from_dict
from adapters.sim.server import SIM_CHAIN_ID
from adapters.sim.server import SIM_ENDPOINT
from adapters.sim.server import ServerOptions
from adapters.sim.server import VenueServer
from tests.conformance.corpus import Labels
from tests.conformance.corpus import Scenario
from tests.conformance.corpus import iter_steps
from tests.conformance.corpus import normalize
from tests.conformance.corpus import profile_dict

__all__ = ["ACCOUNTS", "Outcome", "run_scenario"]

ACCOUNTS: dict[str, dict[str, str]] = {
    "taker": {"key": "0x" + "11" * 32},
    "maker": {"key": "0x" + "22" * 32},
}
_MARKER = {"key": "0x" + "33" * 32}
WAIT_S = 10.0
TIMING = Timing()
ONE = 10**18


@attrs.frozen
class Outcome:
    replies: list[Any]  # normalized, one per step
    events: list[dict[str, Any]]  # normalized, in arrival order
    labels: Labels


def _x18(text: str | int) -> int:
    return int(Decimal(str(text)) * ONE)


def _signer(spec: Mapping[str, str]) -> Signer:
    return Signer(
        Secret(spec["key"]),
        chain_id=SIM_CHAIN_ID,
        endpoint_addr=SIM_ENDPOINT,
        subaccount_name=spec.get("subaccount", "default"),
    )


class _Run:
    def __init__(self, sc: Scenario, server: VenueServer, http: httpx.AsyncClient) -> None:
        self.sc, self.server, self.http = sc, server, http
        specs = {**ACCOUNTS, **sc.accounts}
        self.signers = {name: _signer(spec) for name, spec in specs.items()}
        self.marker = _signer(_MARKER)
        self.labels = Labels(subaccounts={n: s.sender for n, s in self.signers.items()})
        self.bodies: dict[str, dict[str, Any]] = {}
        self.tag = 0

    async def post(self, path: str, body: Any) -> Any:
        r = await self.http.post(path, content=json.dumps(body))
        return r.json()

    def sign_place(self, step: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
        self.tag += 1
        now_ms = int(time.time() * 1000)
        tif = step.get("tif", "ioc")
        recv_ms = now_ms + int(step.get("recv_offset_ms", TIMING.recv_window_ms))
        amount = _x18(step["qty"]) * (1 if step["side"] == "buy" else -1)
        signed = signer.sign_order(
            int(step["product_id"]),
            price_x18=_x18(step["price"]),
            amount_x18=amount,
            expiration=int(step.get("expiration", TIMING.expiration(now_ms // 1000, tif))),
            nonce=order_nonce(max(0, recv_ms), self.tag),
            tif=tif,
            reduce_only=bool(step.get("reduce_only", False)),
            client_id=self.tag,
        )
        label = step.get("label")
        if label is not None:
            self.labels.digests[label] = signed.digest
            self.labels.client_ids[label] = self.tag
        return signed.body()

    async def place(self, step: Mapping[str, Any]) -> Any:
        if "resend" in step:  # the same signed body again
            return await self.post("/execute", self.bodies[step["resend"]])
        body = self.sign_place(step, self.signers[step["as"]])
        if "label" in step:
            self.bodies[step["label"]] = body
        return await self.post("/execute", body)

    async def cancel(self, step: Mapping[str, Any]) -> Any:
        signer = self.signers[step["as"]]
        now_ms = int(time.time() * 1000)
        recv_ms = now_ms + int(step.get("recv_offset_ms", TIMING.recv_window_ms))
        if "orders" in step:
            digests = [self.labels.digests[label] for label in step["orders"]]
            pids = [int(p) for p in step["product_ids"]]
        else:
            digests, pids = None, [int(p) for p in step.get("products", [])]
        signed = signer.sign_cancel(pids, digests, nonce=order_nonce(max(0, recv_ms), 0))
        return await self.post("/execute", signed.body())

    async def query(self, step: Mapping[str, Any]) -> Any:
        params = {k: v for k, v in step.items() if k not in ("query", "reply", "as")}
        params["type"] = step["query"]
        for key, value in list(params.items()):
            if isinstance(value, str) and value.startswith("$sub:"):
                params[key] = self.signers[value[5:]].sender
        return await self.post("/query", params)


async def _subscribe(ws: Any, streams: list[dict[str, Any]]) -> None:
    for n, stream in enumerate(streams, start=1):
        await ws.send(json.dumps({"method": "subscribe", "stream": stream, "id": n}))
    acked: set[int] = set()
    while len(acked) < len(streams):
        obj = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        if "type" not in obj:
            if obj.get("error") is not None:
                raise AssertionError(f"subscription refused: {obj}")
            acked.add(int(obj["id"]))


async def run_scenario(sc: Scenario, seed: int = 1) -> Outcome:
    options = ServerOptions(
        seed=seed, profile=profile_from_dict(profile_dict(sc)), auth_streams=frozenset()
    )
    server = VenueServer(options)
    await server.start()
    try:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=WAIT_S) as http,
            connect(server.ws_url, open_timeout=WAIT_S) as ws,
        ):
            run = _Run(sc, server, http)
            streams: list[dict[str, Any]] = [
                {"type": kind, "subaccount": s.sender}
                for s in run.signers.values()
                for kind in ("fill", "order_update", "position_change")
            ]
            streams.append({"type": "order_update", "subaccount": run.marker.sender})
            streams += [{"type": "best_bid_offer", "product_id": p} for p in sc.bbo_products]
            await _subscribe(ws, streams)
            replies = []
            for kind, step in iter_steps(sc):
                if kind == "place":
                    reply = await run.place(step["place"])
                elif kind == "cancel":
                    reply = await run.cancel(step["cancel"])
                else:
                    reply = await run.query(step)
                replies.append(normalize(reply, run.labels))
            # The end marker: an IOC on SOL-PERP far below the book, from its own account.
            marker_step = {"product_id": 8, "side": "buy", "qty": "0.1", "price": "140"}
            end = await run.post("/execute", run.sign_place(marker_step, run.marker))
            if end.get("status") != "success":
                raise AssertionError(f"end marker refused: {end}")
            marker_digest = str(end["data"]["digest"]).lower()
            events = []
            while True:
                obj = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
                if "type" not in obj:
                    continue
                if obj.get("digest", "").lower() == marker_digest:
                    break
                events.append(normalize(obj, run.labels))
            return Outcome(replies=replies, events=events, labels=run.labels)
    finally:
        await server.stop()


def subset(expected: Any, actual: Any) -> bool:
    """`expected` is contained in `actual`: dict keys it names match, lists element-wise."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)


def main() -> None:  # pragma: no cover - authoring aid: print what the sim answers
    import sys

    from tests.conformance.corpus import CORPUS_DIR
    from tests.conformance.corpus import load_scenario

    for name in sys.argv[1:]:
        out = asyncio.run(run_scenario(load_scenario(CORPUS_DIR / f"{name}.json")))
        print(json.dumps({"replies": out.replies, "events": out.events}, indent=1))


if __name__ == "__main__":  # pragma: no cover
    main()
