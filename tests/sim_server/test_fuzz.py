"""Property: no request body or stream frame makes the gateway raise. Whatever comes in,
the answer is a JSON-serialisable Nado envelope (or stream reply); bad input is a failure
with an integer code. Runs on the request logic directly (no sockets), so it is fast."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from adapters.sim.faults import parse_profile
from adapters.sim.server import ServerOptions
from adapters.sim.server import VenueServer
from adapters.sim.server.gateway import EXECUTES
from adapters.sim.server.gateway import QUERIES
from adapters.sim.server.gateway import Reply
from adapters.sim.server.streams import StreamSession
from tests.sim_server.helpers import STILL
from tests.sim_server.helpers import make_signer

SERVER = VenueServer(ServerOptions(seed=1, profile=parse_profile(STILL)))
SENDER = make_signer().sender

EDGES = [0, -1, 2**31, 2**32, 2**63, 2**64, 2**127, 2**128, 2**160, 2**256, "", "0x"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from(EDGES),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["0x" + "ab" * 32, SENDER, "0x" + "11" * 65, "4", "-1", "1e3", ""]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(
    [
        "product_id",
        "product_ids",
        "order",
        "signature",
        "id",
        "tx",
        "sender",
        "priceX18",
        "amount",
        "expiration",
        "nonce",
        "appendix",
        "digests",
        "productIds",
        "digest",
        "subaccount",
        "depth",
        "product_type",
        "address",
    ]
)
shaped = st.dictionaries(field_names, json_values, max_size=8)
executes = st.builds(
    lambda kind, inner, order: {kind: {**inner, "order": order} if order else inner},
    st.sampled_from([*EXECUTES, "place_orders", "nope"]),
    shaped,
    st.one_of(st.none(), shaped),
)
queries = st.builds(lambda kind, params: {**params, "type": kind}, st.sampled_from(QUERIES), shaped)


def _valid_bodies() -> list[dict[str, Any]]:
    signer = make_signer()
    order = signer.sign_order(
        4,
        price_x18=2900 * 10**18,
        amount_x18=10**17,
        expiration=4_294_967_295,
        nonce=(4_000_000_000_000 << 20) + 1,
        tif="default",
        client_id=7,
    )
    cancel = signer.sign_cancel([4], ["0x" + "ab" * 32], nonce=5)
    return [order.body(), cancel.body(), signer.sign_cancel([4, 8], None, nonce=6).body()]


VALID = _valid_bodies()


def _mutate(body: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(body))
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _paths(obj: Any, prefix: list[str]) -> list[list[str]]:
    if not isinstance(obj, dict):
        return [prefix]
    return [prefix] * bool(prefix) + [p for k, v in obj.items() for p in _paths(v, [*prefix, k])]


def _check(reply: Any) -> None:
    assert isinstance(reply, Reply)
    payload = reply.payload
    json.dumps(payload)
    if isinstance(payload, dict) and payload.get("status") == "failure":
        assert isinstance(payload["error_code"], int)
        assert reply.http_status < 500, payload


@settings(max_examples=200, deadline=None)
@given(st.one_of(executes, json_values))
def test_any_execute_body_gets_an_envelope(body: Any) -> None:
    outcome = SERVER.gateway.execute(json.dumps(body))
    _check(outcome)


@settings(max_examples=200, deadline=None)
@given(st.one_of(queries, json_values))
def test_any_query_gets_an_envelope(params: Any) -> None:
    _check(SERVER.gateway.query_raw(json.dumps(params)))


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.builds(
            lambda method, rest, stream: {**rest, "method": method, "stream": stream},
            st.sampled_from(["subscribe", "unsubscribe", "authenticate", "ping", "list", "x"]),
            shaped,
            st.one_of(shaped, st.builds(lambda s: {**s, "type": "fill"}, shaped)),
        ),
        json_values,
    )
)
def test_any_stream_frame_gets_a_reply(message: Any) -> None:
    session = StreamSession(
        product_ids=[4, 8], chain_id=1, endpoint_addr="0x" + "e0" * 20, now_unix_ms=lambda: 0
    )
    reply = session.handle(json.dumps(message))
    json.dumps(reply)
    assert "result" in reply or isinstance(reply["error_code"], int)


def test_every_field_of_signed_bodies_with_edge_values() -> None:
    """Each field of a validly signed place/cancel body replaced by each edge value."""
    values: list[Any] = [*EDGES, None, True, 1.5, -(2**64), "-1", "1" * 90, [], {}, [2**40]]
    checked = 0
    for body in VALID:
        for path in _paths(body, []):
            for value in values:
                _check(SERVER.gateway.execute(json.dumps(_mutate(body, path, value))))
                checked += 1
    assert checked > 400


def test_every_field_of_a_signed_stream_auth_with_edge_values() -> None:
    session = StreamSession(
        product_ids=[4, 8], chain_id=1, endpoint_addr="0x" + "e0" * 20, now_unix_ms=lambda: 0
    )
    auth = make_signer().stream_auth(60_000, request_id=1)
    values: list[Any] = [*EDGES, None, 1.5, "-1", [], {}]
    for path in _paths(auth, []):
        for value in values:
            reply = session.handle(json.dumps(_mutate(auth, path, value)))
            json.dumps(reply)
            assert "result" in reply or isinstance(reply["error_code"], int)
