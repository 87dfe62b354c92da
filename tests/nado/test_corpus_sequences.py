"""The conformance corpus through the Nado adapter (issue 11: "the conformance sequences of
the conformance issue drive the adapter to the right events").

For every scenario in `tests/conformance/scenarios/` and every account in it that places
orders, an offline `NadoVenue` (tests/nado/offline.py: scripted gateway, virtual clock)
plays that account:

- its `place` steps become `PlaceOrder` intents (a `resend` re-submits the same intent),
  its `cancel` steps `CancelOrder` intents; the gateway answers each request the adapter
  sends with the scenario's recorded reply (placeholders filled with the adapter's own
  digest, client id and order fields), classified as the real client classifies a reply;
- the scenario's stream events are fed as the frames `corpus.wire_frames` makes (the
  digests, client ids and subaccount of the played account swapped for the adapter's
  own), through `decode_stream`, each after the step that causes it (an order's frames
  after its placement is acked; the `cancelled` update of an order the scenario cancels
  after that cancel). The other accounts' frames are fed too: a venue subscription would
  not carry them, and they must move nothing.

The engine events expected are derived from the scenario's data, never written out: per
order, `OrderAccepted` (success reply) or `OrderRejected` with the reply's `error_code`
(or, for a price or size off the product's increments, the adapter's refusal before
sending anything); one `FillReceived` per fill frame of the account (size, price, side,
fee, maker flag, cumulative = original - remaining); then how it ended: nothing more when
the fills cover the order; `OrderExpired(sum of the fills)` for an IOC/FOK the venue ended
short; `OrderCancelled(sum of the fills)` for a resting order the venue ended; the cancel
reply's `OrderCancelled(amount - unfilled_amount)` when the account cancelled it; and
`VenueError(permanent, 2020)` when the cancel reply does not list it (not open). Each
`best_bid_offer` frame is one `BboUpdated` and becomes the ledger's quote; every
`position_change` of the account agrees with the position the ledger books from the
adapter's events (the adapter turns it into no event: balance or delta is unsettled,
nado-protocol.md §12.4). A `QueryOrder` afterwards answers each ended order from the same
knowledge.

Each case runs with the product's increments as discovered (the offline `SYMBOLS`, the
ones the scenarios' 2001/2002 refusals imply) and with increments fine enough that every
order goes out, so every recorded reply reaches the adapter; and with each step's frames
arriving after its reply and before it (the stream may beat the REST answer: the engine
still hears accepted -> fills -> end).

Not an adapter event sequence: the `query` steps of `accounts`. The corpus records only
the fields it checks of a `subaccount_info` reply (no `v_quote_balance`, which the SDK's
`PerpProductBalance` has and the adapter's parser requires), so those replies are taken
from `venue serve` (test_corpus.py checks they contain the recorded ones) and fed to the
adapter's position query and start-up subaccount check.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import attrs
import pytest

from adapters.nado.client import GatewayError
from adapters.nado.discovery import DiscoveryError
from adapters.nado.errors import classify_exception
from adapters.nado.errors import classify_http
from adapters.nado.mapping import from_x18
from adapters.nado.mapping import to_x18
from adapters.nado.queries import SymbolInfo
from adapters.nado.queries import parse_envelope
from engine.core.clock import VirtualClock
from engine.core.events import BboUpdated
from engine.core.events import Event
from engine.core.events import FillReceived
from engine.core.events import OrderAccepted
from engine.core.events import OrderCancelled
from engine.core.events import OrderExpired
from engine.core.events import OrderRejected
from engine.core.events import OrderStatus
from engine.core.events import PositionSnapshot
from engine.core.events import VenueError
from engine.core.intents import CancelOrder
from engine.core.intents import PlaceOrder
from engine.core.intents import QueryOrder
from engine.core.intents import QueryPositions
from engine.core.ledger import Ledger
from tests.conformance.corpus import CORPUS_DIR
from tests.conformance.corpus import Scenario
from tests.conformance.corpus import default_labels
from tests.conformance.corpus import iter_steps
from tests.conformance.corpus import load_corpus
from tests.conformance.corpus import wire_frames
from tests.conformance.driver import run_scenario
from tests.conformance.driver import subset
from tests.nado.offline import SYMBOLS
from tests.nado.offline import Gateway
from tests.nado.offline import OfflineVenue

D = Decimal
RTT_MS = 50
CORPUS = load_corpus()
# The corpus as of this test: a scenario added, removed or renamed must be looked at here.
SCENARIOS = {
    "accounts",
    "bbo_on_change",
    "cancel_not_open",
    "fok_fill",
    "fok_kill",
    "ioc_full_fill",
    "ioc_no_fill",
    "ioc_partial_fill",
    "position_change",
    "post_only_rest_partial_cancel",
    "reduce_only_clamp",
    "reduce_only_reject",
    "rejects",
}
INCREMENTS = ("listed", "fine")
ORDERINGS = ("after_answer", "before_answer")


# -- the scenario's structure -------------------------------------------------------------


def owners(sc: Scenario) -> dict[str, str]:
    """label -> the account that placed it."""
    out: dict[str, str] = {}
    for kind, step in iter_steps(sc):
        place = step.get("place", {})
        if kind == "place" and "label" in place:
            out[place["label"]] = place["as"]
    return out


def roles(sc: Scenario) -> list[str]:
    """The accounts that place orders: each is played by the adapter in turn."""
    return sorted(set(owners(sc).values()))


def labels_in(event: Mapping[str, Any]) -> set[str]:
    found = set()
    for key in ("digest", "order_digest", "id"):
        value = event.get(key)
        if isinstance(value, str) and value.startswith(("$o:", "$id:")):
            found.add(value.split(":", 1)[1])
    return found


def event_steps(sc: Scenario) -> list[int]:
    """For each event, the step after which it is fed: the step that placed the orders it
    names (for a `cancelled` update of an order the scenario cancels: that cancel), never
    before the event ahead of it (the stream delivers in order)."""
    placed: dict[str, int] = {}
    cancelled: dict[str, int] = {}
    for i, (kind, step) in enumerate(iter_steps(sc)):
        if kind == "place" and "label" in step["place"]:
            placed.setdefault(step["place"]["label"], i)
        if kind == "cancel":
            for label in step["cancel"].get("orders", []):
                cancelled[label] = i
    out, last = [], 0
    for e in sc.events:
        need = last
        for label in labels_in(e):
            need = max(need, placed[label])
            if e["type"] == "order_update" and e["reason"] == "cancelled" and label in cancelled:
                need = max(need, cancelled[label])
        out.append(need)
        last = need
    return out


def cases() -> list[tuple[Scenario, str, str, str]]:
    return [
        (sc, role, inc, order)
        for sc in CORPUS
        for role in roles(sc)
        for inc in INCREMENTS
        for order in ORDERINGS
    ]


CASES = cases()


def test_every_scenario_is_driven_through_the_adapter() -> None:
    """No scenario is silently skipped: each one of the corpus, with each of its accounts
    that places orders, is a case below (and `accounts`' queries have their own test)."""
    on_disk = {p.stem for p in CORPUS_DIR.glob("*.json")}
    assert on_disk == SCENARIOS
    assert {sc.name for sc in CORPUS} == SCENARIOS
    assert {sc.name for sc, _, _, _ in CASES} == SCENARIOS
    per_role = len(INCREMENTS) * len(ORDERINGS)
    assert len(CASES) == per_role * sum(len(roles(sc)) for sc in CORPUS)
    # Every stream event type of the corpus reaches the adapter in some case.
    fed = {e["type"] for sc in CORPUS for e in sc.events}
    assert fed == {"fill", "order_update", "position_change", "best_bid_offer"}


# -- the gateway answers with the scenario's replies --------------------------------------


class CorpusGateway(Gateway):
    """Answers the next execute with `pending` (the scenario's reply for this step),
    through the client's own classification; `order` queries say 2020 (nothing rests in
    the gateway's book: orders that ended are answered from what the adapter heard)."""

    def __init__(self, clock: VirtualClock, rtt_ms: int) -> None:
        super().__init__(clock, rtt_ms)
        self.pending: dict[str, Any] | None = None
        self.pending_query: dict[str, Any] | None = None
        self.answered = 0

    @staticmethod
    def _answer(reply: Mapping[str, Any], request: str) -> Any:
        classified = classify_http(200, {}, json.dumps(reply), request)
        if classified is not None:
            raise GatewayError(classified, request)
        return parse_envelope(reply).data

    async def execute(self, body: Any, *, request: str, priority: Any, weight: int) -> Any:
        self.log.append((self.clock.now_ns(), next(iter(body))))
        await self._trip()
        reply, self.pending = self.pending, None
        assert reply is not None, f"{request}: a request the scenario has no reply for"
        self.answered += 1
        return self._answer(reply, request)

    async def query(
        self, params: Any, *, request: str, priority: Any, weight: int | None = None
    ) -> Any:
        if params["type"] == "subaccount_info" and self.pending_query is not None:
            self.log.append((self.clock.now_ns(), "subaccount_info"))
            await self._trip()
            reply, self.pending_query = self.pending_query, None
            return self._answer(reply, request)
        return await super().query(params, request=request, priority=priority, weight=weight)


@attrs.define
class Names:
    """What the placeholders of one played account stand for."""

    role: str
    sender: str
    labels: Any  # corpus.Labels: made-up values for everything not ours
    entries: dict[str, Any] = attrs.field(factory=dict)  # our label -> OrderEntry

    def sub(self, account: str) -> str:
        return self.sender if account == self.role else self.labels.subaccounts[account]

    def fill(self, value: Any, order: Any = None) -> Any:
        """A recorded reply with its placeholders filled (`order`: the entry whose object
        this is, for `$exp`, `$nonce`, `$s`)."""
        if isinstance(value, dict):
            digest = value.get("digest")
            if isinstance(digest, str) and digest.startswith("$o:"):
                order = self.entries.get(digest[3:], order)
            return {k: self.fill(v, order) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v, order) for v in value]
        if not isinstance(value, str) or not value.startswith("$"):
            return value
        kind, _, name = value[1:].partition(":")
        if kind == "o":
            entry = self.entries.get(name)
            return entry.digest if entry is not None else self.labels.digests[name]
        if kind == "id":
            entry = self.entries.get(name)
            return entry.signed.client_id if entry is not None else self.labels.client_ids[name]
        if kind == "sub":
            return self.sub(name)
        if value == "$text":
            return "refused (corpus reply)"
        if value == "$sig":
            return "0x" + "00" * 65
        assert order is not None, value
        fields = order.signed.order
        if value == "$exp":
            return str(fields.expiration)
        if value == "$nonce":
            return str(fields.nonce)
        if value == "$s":
            return str(order.sent_unix_s)
        raise AssertionError(f"no value for placeholder {value!r}")

    def translate(self, frame: dict[str, Any]) -> dict[str, Any]:
        """A `wire_frames` frame with the played account's made-up values swapped for the
        adapter's own (digest, client id, subaccount)."""
        mine = [(k, e) for k, e in self.entries.items() if k in self.labels.digests]
        digests = {self.labels.digests[k]: e.digest for k, e in mine}
        ids = {self.labels.client_ids[k]: e.signed.client_id for k, e in mine}
        subs = {}
        if self.role in self.labels.subaccounts:
            subs[self.labels.subaccounts[self.role]] = self.sender
        out = dict(frame)
        for key in ("digest", "order_digest"):
            if key in out:
                out[key] = digests.get(out[key], out[key])
        if "subaccount" in out:
            out["subaccount"] = subs.get(out["subaccount"], out["subaccount"])
        if isinstance(out.get("id"), int):
            out["id"] = ids.get(out["id"], out["id"])
        return out


# -- playing one account of one scenario ----------------------------------------------------


def x18(text: str | int) -> Decimal:
    return from_x18(int(text))


def intent_of(place: Mapping[str, Any]) -> PlaceOrder:
    return PlaceOrder(
        order_id=place["label"],
        product_id=int(place["product_id"]),
        side=place["side"],
        qty=D(place["qty"]),
        price=D(place["price"]),
        tif=place.get("tif", "ioc"),
        reduce_only=bool(place.get("reduce_only", False)),
    )


@attrs.define
class Played:
    rig: OfflineVenue
    names: Names
    ledger: Ledger
    intents: dict[str, PlaceOrder]  # our label -> intent
    sent: dict[str, bool]  # our label -> did the placement reach the gateway
    positions_seen: list[tuple[int, Decimal, Decimal]]  # (pid, position_change amount, ledger's)
    quotes_seen: list[tuple[Any, Any]]  # (bbo frame, the ledger's quote after it)
    events: list[Event]


def symbols_for(inc: str) -> dict[int, SymbolInfo]:
    if inc == "listed":
        return dict(SYMBOLS)
    return {
        pid: attrs.evolve(info, price_increment_x18=1, size_increment_x18=1)
        for pid, info in SYMBOLS.items()
    }


async def play(sc: Scenario, role: str, inc: str, *, early: bool = False) -> Played:
    rig = OfflineVenue(rtt_ms=RTT_MS, quiet_quote_s=D(3600))  # no REST quote refreshes
    rig.gateway = gateway = CorpusGateway(rig.clock, RTT_MS)
    await rig.start(symbols=tuple(SYMBOLS))
    rig.venue.core.symbols = symbols_for(inc)
    names = Names(role=role, sender=rig.sender, labels=default_labels(sc))
    frames = wire_frames(sc, names.labels, start_ns=rig.unix_ns())
    when = event_steps(sc)
    ledger = Ledger()
    played = Played(rig, names, ledger, {}, {}, [], [], [])

    def catch_up() -> None:
        for _, ev in rig.events[len(played.events) :]:
            played.events.append(ev)
            ledger.apply_event(ev, rig.clock.now_ns())

    async def feed(i: int) -> None:
        """The frames that follow step `i`."""
        for frame, at in zip(frames, when, strict=True):
            if at != i:
                continue
            fed = names.translate(frame)
            await rig.frame(fed)
            catch_up()
            if fed["type"] == "position_change" and fed["subaccount"] == rig.sender:
                pid = int(fed["product_id"])
                played.positions_seen.append((pid, x18(fed["amount"]), ledger.position(pid)))
            if frame["type"] == "best_bid_offer":
                played.quotes_seen.append((frame, ledger.quote(int(frame["product_id"]))))

    async def answered(i: int) -> None:
        """The request is out: the step's frames arrive before its answer (`early`) or
        after it."""
        await rig.settle()
        if early:
            await feed(i)
        await rig.run(RTT_MS)
        catch_up()
        if not early:
            await feed(i)

    for i, (kind, step) in enumerate(iter_steps(sc)):
        if kind == "place":
            place = step["place"]
            label = place.get("resend", place.get("label"))
            if owners(sc).get(label) == role:
                intent = played.intents.get(label) or intent_of(place)
                played.intents[label] = intent
                ledger.apply_intent(intent)
                before = gateway.answered
                rig.venue.submit(intent)  # signs it now (the digest is known before sending)
                entry = rig.venue.orders.get(label)
                if entry is not None:  # else refused before anything could be sent
                    names.entries[label] = entry
                    gateway.pending = names.fill(step["reply"], entry)
                await answered(i)
                played.sent.setdefault(label, gateway.answered > before)
                gateway.pending = None
                continue
        elif kind == "cancel" and step["cancel"]["as"] == role:
            cancel = step["cancel"]
            (label,) = cancel["orders"]
            gateway.pending = names.fill(step["reply"])
            rig.venue.submit(CancelOrder(order_id=label, product_id=cancel["product_ids"][0]))
            await answered(i)
            assert gateway.pending is None, f"{sc.name}: the cancel was not sent"
            continue
        await feed(i)
    await rig.run(5 * RTT_MS)  # past the wait for fill frames and the lost-push probe
    catch_up()
    return played


# -- what the scenario says the engine must hear ---------------------------------------------


def describe(ev: Event) -> tuple[Any, ...]:
    if isinstance(ev, OrderAccepted):
        return ("accepted", ev.order_id, ev.digest)
    if isinstance(ev, OrderRejected):
        return ("rejected", ev.order_id, ev.code)
    if isinstance(ev, FillReceived):
        return (
            "fill",
            ev.order_id,
            ev.product_id,
            ev.side,
            ev.qty,
            ev.price,
            ev.fee,
            ev.is_maker,
            ev.cumulative_qty,
        )
    if isinstance(ev, OrderExpired):
        return ("expired", ev.order_id, ev.filled_qty)
    if isinstance(ev, OrderCancelled):
        return ("cancelled", ev.order_id, ev.filled_qty, ev.reason)
    if isinstance(ev, VenueError):
        return ("venue_error", ev.order_id, ev.request, ev.error_class, ev.code)
    if isinstance(ev, OrderStatus):
        return ("status", ev.order_id, ev.state, ev.filled_qty)
    if isinstance(ev, BboUpdated):
        return ("bbo", ev.product_id, ev.bid, ev.bid_qty, ev.ask, ev.ask_qty, ev.ts_venue_ns)
    return (ev.kind,)


@attrs.define
class Expected:
    events: dict[str, list[tuple[Any, ...]]]  # our label -> its events, in order
    filled: dict[str, Decimal]  # our label -> the scenario's filled size
    ended: dict[str, str | None]  # our label -> the state QueryOrder must answer (None: open)
    bbo: list[tuple[Any, ...]]


def representable(intent: PlaceOrder, info: SymbolInfo) -> bool:
    return (
        to_x18(intent.price) % info.price_increment_x18 == 0
        and to_x18(intent.qty) % info.size_increment_x18 == 0
    )


def expected(sc: Scenario, role: str, played: Played, inc: str) -> Expected:
    names = played.names
    symbols = symbols_for(inc)
    sub = f"$sub:{role}"
    out = Expected({}, {}, {}, [])
    steps = list(iter_steps(sc))
    for kind, step in steps:
        if kind != "place":
            continue
        place = step["place"]
        label = place.get("resend", place.get("label"))
        if owners(sc).get(label) != role:
            continue
        seq = out.events.setdefault(label, [])
        intent = played.intents[label]
        reply = step["reply"]
        if "resend" in place:
            # The same signed body again: the venue holds it (2013, or the adapter knows
            # it placed already and does not send): accepted, never a second order.
            assert reply["status"] == "success" or reply["error_code"] == 2013
            seq.append(("accepted", label, names.entries[label].digest))
            continue
        if not representable(intent, symbols[intent.product_id]):
            seq.append(("rejected", label, None))  # refused before sending
            out.ended[label] = None  # never placed: no entry to ask about
            continue
        if reply["status"] == "failure":
            seq.append(("rejected", label, reply["error_code"]))
            out.filled[label] = D(0)
            out.ended[label] = "rejected"
            continue
        seq.append(("accepted", label, names.entries[label].digest))
        fills = [
            e
            for e in sc.events
            if e["type"] == "fill" and e["order_digest"] == f"$o:{label}" and e["subaccount"] == sub
        ]
        total = D(0)
        for f in fills:
            qty = x18(f["filled_qty"])
            total += qty
            seq.append(
                (
                    "fill",
                    label,
                    int(f["product_id"]),
                    "buy" if f["is_bid"] else "sell",
                    qty,
                    x18(f["price"]),
                    x18(f["fee"]),
                    not f["is_taker"],
                    x18(f["original_qty"]) - x18(f["remaining_qty"]),
                )
            )
        out.filled[label] = total
        updates = [
            e for e in sc.events if e["type"] == "order_update" and e["digest"] == f"$o:{label}"
        ]
        venue_end = next((e for e in updates if int(e["amount"]) == 0), None)
        cancel = next(
            (
                s
                for k, s in steps
                if k == "cancel"
                and s["cancel"]["as"] == role
                and label in s["cancel"].get("orders", [])
            ),
            None,
        )
        state: str | None = None
        if cancel is not None:
            gone = [
                o
                for o in cancel["reply"]["data"]["cancelled_orders"]
                if o["digest"] == f"$o:{label}"
            ]
            if gone:
                (o,) = gone
                by_reply = x18(abs(int(o["amount"]))) - x18(abs(int(o["unfilled_amount"])))
                assert by_reply == total, "the cancel reply and the fills disagree"
                seq.append(("cancelled", label, by_reply, "cancelled"))
                state = "cancelled"
            else:
                seq.append(("venue_error", label, "cancel_order", "permanent", 2020))
        if state is None and venue_end is not None:
            if total == intent.qty:
                state = "filled"  # the fills said it all: no end event
            elif intent.tif in ("ioc", "fok"):
                seq.append(("expired", label, total))
                state = "expired"
            else:
                seq.append(("cancelled", label, total, "by the venue"))
                state = "cancelled"
        out.ended[label] = state
    for f in wire_frames(sc, names.labels):
        if f["type"] == "best_bid_offer" and int(f["product_id"]) in played.rig.venue.core.symbols:
            out.bbo.append(
                (
                    "bbo",
                    int(f["product_id"]),
                    x18(f["bid_price"]),
                    x18(f["bid_qty"]),
                    x18(f["ask_price"]),
                    x18(f["ask_qty"]),
                )
            )
    return out


# -- the cases -------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("sc", "role", "inc", "order"),
    CASES,
    ids=[f"{sc.name}-{role}-{inc}-{order}" for sc, role, inc, order in CASES],
)
async def test_scenario_drives_the_adapter_to_the_right_events(
    sc: Scenario, role: str, inc: str, order: str
) -> None:
    played = await play(sc, role, inc, early=order == "before_answer")
    want = expected(sc, role, played, inc)
    said = [e for e in played.events if getattr(e, "request_id", None) is None]

    # Per order: exactly the scenario's events, in order.
    for label, seq in want.events.items():
        got = [describe(e) for e in said if getattr(e, "order_id", None) == label]
        assert got == seq, f"{sc.name} as {role}: order {label}"
    # The quotes: one BboUpdated per best_bid_offer push, each the ledger's quote after it.
    bbo = [describe(e)[:-1] for e in said if isinstance(e, BboUpdated)]
    assert bbo == want.bbo, sc.name
    for frame, quote in played.quotes_seen:
        assert quote is not None
        assert (quote.bid, quote.ask, quote.ts_venue_ns) == (
            x18(frame["bid_price"]),
            x18(frame["ask_price"]),
            int(frame["timestamp"]),
        )
    # Nothing else: the other accounts' frames and position_change move no event.
    ours = set(want.events)
    strays = [
        e
        for e in said
        if not isinstance(e, BboUpdated) and getattr(e, "order_id", None) not in ours
    ]
    assert strays == [], sc.name

    # The ledger, from the adapter's events alone: each order's fill is the scenario's, and
    # every position_change of the account states the position those fills make.
    ledger = played.ledger
    for label, filled in want.filled.items():
        record = ledger.order(label)
        assert record is not None
        assert record.filled == filled, f"{sc.name} as {role}: order {label}"
    for pid, amount, booked in played.positions_seen:
        assert booked == amount, f"{sc.name} as {role}: position_change {pid} {amount}"
    signed = {
        label: (1 if played.intents[label].side == "buy" else -1) * filled
        for label, filled in want.filled.items()
    }
    for pid in played.rig.venue.core.symbols:
        mine = [lbl for lbl in signed if played.intents[lbl].product_id == pid]
        assert ledger.position(pid) == sum((signed[lbl] for lbl in mine), D(0))
    last_said = {pid: amount for pid, amount, _ in played.positions_seen}
    for pid, amount in last_said.items():
        assert ledger.position(pid) == amount

    # QueryOrder of each ended order is answered from what was heard: the same total.
    rig = played.rig
    for label, state in want.ended.items():
        if state is None:
            continue
        rig.venue.submit(QueryOrder(request_id=f"q-{label}", order_id=label, product_id=4))
        await rig.run(2 * RTT_MS)
        answers = [e for _, e in rig.events if getattr(e, "request_id", None) == f"q-{label}"]
        assert [describe(e) for e in answers] == [("status", label, state, want.filled[label])], (
            f"{sc.name} as {role}: QueryOrder {label}"
        )

    # With fine increments every placement reached the venue and met its recorded reply.
    if inc == "fine":
        assert all(played.sent.values()), played.sent
    await rig.close()


async def start_up_check(rig: OfflineVenue) -> None:
    """The start-up subaccount check, its request answered on the virtual clock."""
    task = asyncio.get_running_loop().create_task(rig.venue._check_subaccount())
    await rig.run(2 * RTT_MS)
    assert task.done()
    await task


@pytest.mark.asyncio
async def test_accounts_replies_through_the_position_parsers() -> None:
    """`accounts`' `subaccount_info` replies (as `venue serve` gives them, containing the
    recorded ones): a funded subaccount reads its positions; one that does not exist is
    never read as flat (a VenueError for the position query, a refusal at start-up)."""
    (sc,) = [s for s in CORPUS if s.name == "accounts"]
    out = await run_scenario(sc)
    queries = [
        (step, reply)
        for (kind, step), reply in zip(iter_steps(sc), out.replies, strict=True)
        if kind == "query"
    ]
    assert [step["query"] for step, _ in queries] == ["subaccount_info"] * 2
    for n, (step, reply) in enumerate(queries):
        assert subset(step["reply"], reply)
        account = step["subaccount"].removeprefix("$sub:")
        rig = OfflineVenue(rtt_ms=RTT_MS, quiet_quote_s=D(3600))
        rig.gateway = gateway = CorpusGateway(rig.clock, RTT_MS)
        await rig.start()
        names = Names(role=account, sender=rig.sender, labels=default_labels(sc))
        data = step["reply"]["data"]
        rid = f"p{n}"
        gateway.pending_query = names.fill(reply)
        rig.venue.submit(QueryPositions(request_id=rid, product_ids=(4,)))
        await rig.run(2 * RTT_MS)
        (answer,) = [e for _, e in rig.events if getattr(e, "request_id", None) == rid]
        gateway.pending_query = names.fill(reply)
        if data["exists"]:
            amounts = {b["product_id"]: x18(b["balance"]["amount"]) for b in data["perp_balances"]}
            assert isinstance(answer, PositionSnapshot)
            assert [(p.product_id, p.qty) for p in answer.positions] == [(4, amounts[4])]
            await start_up_check(rig)  # starts
        else:
            assert isinstance(answer, VenueError), answer  # never a zero position
            assert answer.error_class == "retryable"
            with pytest.raises(DiscoveryError, match="does not exist"):
                await start_up_check(rig)
        await rig.close()


class LosingGateway(CorpusGateway):
    """Loses the answer to the first placement (a timeout after it was sent)."""

    def __init__(self, clock: VirtualClock, rtt_ms: int) -> None:
        super().__init__(clock, rtt_ms)
        self.lose = 1

    async def execute(self, body: Any, *, request: str, priority: Any, weight: int) -> Any:
        if self.lose:
            self.lose -= 1
            self.log.append((self.clock.now_ns(), next(iter(body))))
            await self._trip()
            raise GatewayError(classify_exception(TimeoutError(), request), request)
        return await super().execute(body, request=request, priority=priority, weight=weight)


@pytest.mark.asyncio
async def test_resend_replies_after_a_lost_answer() -> None:
    """A `resend` step's reply reaches the adapter when the first answer was lost: the
    same signed body again, and the recorded duplicate-digest refusal says the venue holds
    the order (OrderAccepted), never a rejection."""
    resends = [
        (sc, step)
        for sc in CORPUS
        for kind, step in iter_steps(sc)
        if kind == "place" and "resend" in step["place"]
    ]
    assert resends, "the corpus has a resend step"
    for sc, step in resends:
        label = step["place"]["resend"]
        (first,) = [
            s for k, s in iter_steps(sc) if k == "place" and s["place"].get("label") == label
        ]
        rig = OfflineVenue(rtt_ms=RTT_MS, quiet_quote_s=D(3600))
        rig.gateway = gateway = LosingGateway(rig.clock, RTT_MS)
        await rig.start()
        names = Names(role=first["place"]["as"], sender=rig.sender, labels=default_labels(sc))
        intent = intent_of(first["place"])
        rig.venue.submit(intent)
        await rig.run(RTT_MS)
        entry = rig.venue.orders[label]
        names.entries[label] = entry
        assert [describe(e) for e in rig.of(VenueError)] == [
            ("venue_error", label, "place_order", "unknown_outcome", None)
        ]
        bodies = [entry.signed.body()]
        gateway.pending = names.fill(step["reply"], entry)
        rig.venue.submit(intent)  # the engine resolves an unknown outcome by re-sending
        await rig.run(RTT_MS)
        assert gateway.pending is None  # the recorded reply was the answer
        assert rig.venue.orders[label].signed.body() == bodies[0]  # same body, same digest
        assert step["reply"]["status"] == "success" or step["reply"]["error_code"] == 2013
        assert [describe(e) for e in rig.of(OrderAccepted)] == [("accepted", label, entry.digest)]
        assert rig.of(OrderRejected) == []
        await rig.close()
