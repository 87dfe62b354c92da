"""EIP-712 signing through the SDK: parity with the SDK's own client, round trips, key hygiene."""

from __future__ import annotations

import copy
import pickle
import traceback

import pytest
from nado_protocol.contracts.types import NadoExecuteType
from nado_protocol.engine_client import EngineClient
from nado_protocol.engine_client.types import EngineClientOpts
from nado_protocol.engine_client.types.execute import CancelOrdersParams
from nado_protocol.engine_client.types.execute import CancelProductOrdersParams
from nado_protocol.engine_client.types.execute import PlaceOrderParams
from nado_protocol.engine_client.types.execute import to_execute_request
from nado_protocol.utils.bytes32 import subaccount_to_hex
from nado_protocol.utils.execute import OrderParams

from adapters.nado.signing import BadKey
from adapters.nado.signing import BadSignature
from adapters.nado.signing import OrderFields
from adapters.nado.signing import Signer
from adapters.nado.signing import appendix_for
from adapters.nado.signing import load_key
from adapters.nado.signing import order_digest
from adapters.nado.signing import order_nonce
from adapters.nado.signing import subaccount_hex
from adapters.nado.timing import NO_EXPIRY
from adapters.nado.timing import Timing
from adapters.nado.verify import verify_cancel
from adapters.nado.verify import verify_place_order
from adapters.nado.verify import verify_stream_auth
from adapters.nado.wire import MalformedFrame
from engine.runtime.config import ConfigError

KEY = "0x" + "11" * 32
KEY2 = "0x" + "22" * 32
ADDRESS = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
CHAIN = 763373
ENDPOINT = "0x698D87105274292B5673367DEC81874Ce3633Ac2"
E18 = 10**18
NONCE = order_nonce(1_767_200_090_000, 7)


@pytest.fixture
def signer():
    return Signer(load_key(KEY), chain_id=CHAIN, endpoint_addr=ENDPOINT)


def sign(signer, **over):
    args = {
        "price_x18": 3500 * E18,
        "amount_x18": -(10**17),
        "expiration": 1_767_225_600,
        "nonce": NONCE,
        "tif": "ioc",
        "reduce_only": True,
        "client_id": 42,
    }
    return signer.sign_order(4, **{**args, **over})


def sdk_client():
    return EngineClient(
        EngineClientOpts(
            url="http://127.0.0.1:9/v1", signer=KEY, chain_id=CHAIN, endpoint_addr=ENDPOINT
        )
    )


# --- parity with the SDK ----------------------------------------------------------------


def test_place_order_matches_the_sdk_byte_for_byte(signer):
    signed = sign(signer)
    client = sdk_client()
    params = OrderParams(
        sender=signer.sender,
        priceX18=3500 * E18,
        amount=-(10**17),
        expiration=1_767_225_600,
        nonce=NONCE,
        appendix=2561,
    )
    prepared = client.prepare_execute_params(params, True)
    sdk_sig = client._sign(NadoExecuteType.PLACE_ORDER, prepared.dict(), 4)
    assert signed.signature == sdk_sig
    assert signed.digest == client.get_order_digest(prepared, 4)
    sdk_body = to_execute_request(
        PlaceOrderParams(product_id=4, order=prepared, signature=sdk_sig, id=42)
    ).dict()
    assert signed.body() == sdk_body
    assert signed.body()["place_order"]["order"]["appendix"] == "2561"


def test_cancels_match_the_sdk(signer):
    client = sdk_client()
    digest = sign(signer).digest
    ours = signer.sign_cancel([4], [digest], nonce=NONCE)
    params = client.prepare_execute_params(
        CancelOrdersParams(sender=signer.sender, productIds=[4], digests=[digest], nonce=NONCE),
        True,
    )
    params.signature = client._sign(NadoExecuteType.CANCEL_ORDERS, params.dict())
    assert ours.body() == to_execute_request(params).dict()

    ours_all = signer.sign_cancel([4, 8], None, nonce=NONCE, client_id=9)
    p2 = client.prepare_execute_params(
        CancelProductOrdersParams(sender=signer.sender, productIds=[4, 8], nonce=NONCE), True
    )
    p2.signature = client._sign(NadoExecuteType.CANCEL_PRODUCT_ORDERS, p2.dict())
    body = ours_all.body()
    assert body["cancel_product_orders"].pop("id") == 9  # the SDK model has no `id`
    assert body == to_execute_request(p2).dict()


@pytest.mark.parametrize(
    ("tif", "reduce_only", "value"),
    [
        ("default", False, 1),
        ("ioc", False, 513),
        ("fok", False, 1025),
        ("post_only", False, 1537),
        ("default", True, 2049),
        ("ioc", True, 2561),
        ("fok", True, 3073),
        ("post_only", True, 3585),
    ],
)
def test_appendix_bits(tif, reduce_only, value):
    assert appendix_for(tif, reduce_only) == value


def test_appendix_unknown_tif():
    with pytest.raises(ValueError, match="time in force"):
        appendix_for("gtc")


def test_order_nonce():
    assert order_nonce(1000, 5) == (1000 << 20) + 5
    assert order_nonce(1000, 2**20 - 1) < order_nonce(1001, 0)
    for tag in (-1, 2**20):
        with pytest.raises(ValueError, match="tag"):
            order_nonce(1000, tag)
    with pytest.raises(ValueError, match="bit 63"):
        order_nonce(2**43, 0)


def test_subaccount_hex():
    assert subaccount_hex(ADDRESS) == (
        "0x19e7e376e7c213b7e7e7e46cc70a5dd086daff2a64656661756c740000000000"
    )
    assert subaccount_hex(ADDRESS, "bot1") == subaccount_to_hex(ADDRESS, "bot1").lower()
    for name in ("", "thirteen-char", "ünï"):
        with pytest.raises(ConfigError, match="subaccount name"):
            subaccount_hex(ADDRESS, name)


# --- round trips ------------------------------------------------------------------------


def test_sign_then_recover_same_address(signer):
    signed = sign(signer)
    assert signer.address == ADDRESS
    assert signed.signature.startswith("0x")
    assert len(signed.signature) == 132
    assert signed.signature[-2:] in ("1b", "1c")
    verified = verify_place_order(signed.body(), CHAIN)
    assert verified.signer == ADDRESS
    assert verified.owner == ADDRESS.lower()
    assert verified.digest == signed.digest
    assert verified.client_id == 42


def test_digest_stable_and_nonce_sensitive(signer):
    a, b = sign(signer), sign(signer)
    assert a.digest == b.digest
    assert a.digest == order_digest(a.order, 4, CHAIN)
    assert sign(signer, nonce=NONCE + 1).digest != a.digest
    assert sign(signer, client_id=43).digest == a.digest  # the client id is not hashed
    assert sign(signer, tif="fok").digest != a.digest
    assert order_digest(a.order, 8, CHAIN) != a.digest  # product id picks the domain
    assert order_digest(a.order, 4, 57073) != a.digest


def test_tampered_body_recovers_another_address(signer):
    body = sign(signer).body()
    body["place_order"]["order"]["amount"] = str(-(10**18))
    assert verify_place_order(body, CHAIN).signer != ADDRESS
    body = sign(signer).body()
    assert verify_place_order(body, 57073).signer != ADDRESS  # other chain


def test_bad_signatures_and_bodies(signer):
    body = sign(signer).body()
    body["place_order"]["signature"] = "0x1234"
    with pytest.raises(BadSignature):
        verify_place_order(body, CHAIN)
    body["place_order"]["signature"] = "0x" + "00" * 65
    with pytest.raises(BadSignature):
        verify_place_order(body, CHAIN)
    body = sign(signer).body()
    body["place_order"]["order"]["nonce"] = "-1"
    with pytest.raises(MalformedFrame):
        verify_place_order(body, CHAIN)
    body = sign(signer).body()
    body["place_order"]["order"]["nonce"] = str(2**64)
    with pytest.raises(MalformedFrame):
        verify_place_order(body, CHAIN)
    with pytest.raises(MalformedFrame):
        verify_place_order({"cancel_orders": {}}, CHAIN)


def test_cancel_round_trip(signer):
    digest = sign(signer).digest
    signed = signer.sign_cancel([4], [digest.upper().replace("0X", "0x")], nonce=NONCE)
    v = verify_cancel(signed.body(), CHAIN, ENDPOINT)
    assert (v.signer, v.digests, v.product_ids, v.nonce) == (ADDRESS, (digest,), (4,), NONCE)
    v2 = verify_cancel(signer.sign_cancel([], None, nonce=NONCE).body(), CHAIN, ENDPOINT)
    assert (v2.signer, v2.digests, v2.product_ids) == (ADDRESS, None, ())
    # signed for the endpoint contract: another verifying contract recovers someone else
    assert verify_cancel(signed.body(), CHAIN, "0x" + "00" * 20).signer != ADDRESS
    with pytest.raises(ValueError, match="one product id per digest"):
        signer.sign_cancel([4, 8], [digest], nonce=NONCE)
    with pytest.raises(ValueError, match="digest"):
        signer.sign_cancel([4], ["0xabc"], nonce=NONCE)
    bad = signed.body()
    bad["cancel_orders"]["tx"]["productIds"] = [4, 8]
    with pytest.raises(MalformedFrame):
        verify_cancel(bad, CHAIN, ENDPOINT)


def test_stream_auth_round_trip(signer):
    msg = signer.stream_auth(1_767_200_060_000, request_id=1)
    assert msg["method"] == "authenticate"
    assert msg["tx"] == {"sender": signer.sender, "expiration": "1767200060000"}
    assert verify_stream_auth(msg, CHAIN, ENDPOINT) == ADDRESS


def test_linked_signer_signs_for_the_owner():
    s = Signer(
        load_key(KEY),
        chain_id=CHAIN,
        endpoint_addr=ENDPOINT,
        linked_signer=load_key(KEY2),
        subaccount_name="bot1",
    )
    assert s.address == ADDRESS
    assert s.signer_address != ADDRESS
    v = verify_place_order(sign(s).body(), CHAIN)
    assert v.owner == ADDRESS.lower()
    assert v.signer == s.signer_address


def test_order_field_ranges(signer):
    with pytest.raises(ValueError, match="zero"):
        sign(signer, amount_x18=0)
    with pytest.raises(ValueError, match="priceX18"):
        sign(signer, price_x18=2**127)
    with pytest.raises(ValueError, match="expiration"):
        sign(signer, expiration=-1)
    with pytest.raises(ValueError, match="client id"):
        sign(signer, client_id=2**64)
    with pytest.raises(ValueError, match="sender"):
        OrderFields(sender="0xABC", price_x18=1, amount=1, expiration=1, nonce=1, appendix=1)


def test_signer_config_errors():
    with pytest.raises(ConfigError, match="endpoint_addr"):
        Signer(load_key(KEY), chain_id=CHAIN, endpoint_addr="0x12")
    with pytest.raises(ConfigError, match="chain_id"):
        Signer(load_key(KEY), chain_id=0, endpoint_addr=ENDPOINT)


# --- key hygiene ------------------------------------------------------------------------

BAD_KEYS = [
    None,
    "",
    "   ",
    "11" * 32,  # no 0x
    "0x" + "11" * 31,  # short
    "0x" + "11" * 33,  # long
    "0x" + "zz" * 32,  # not hex
    "0x" + "00" * 32,  # zero scalar
    "0x" + "ff" * 32,  # beyond the curve order
    "0x" + "11" * 32 + "\n0x",  # junk around a valid key
]


@pytest.mark.parametrize("raw", BAD_KEYS)
def test_bad_keys_fail_without_echoing_the_key(raw):
    with pytest.raises(BadKey) as info:
        load_key(raw)
    exc = info.value
    assert isinstance(exc, ConfigError)
    assert not isinstance(exc, KeyError)
    assert "NADO_PRIVATE_KEY" in str(exc)
    text = "".join(traceback.format_exception(exc))
    if raw and raw.strip():
        core = raw.strip().removeprefix("0x")[:16]
        assert core not in text
        assert core not in repr(exc)
    assert exc.__cause__ is None


def test_secret_is_masked_everywhere():
    secret = load_key(KEY)
    core = KEY[2:]
    views = [
        str(secret),
        repr(secret),
        f"{secret}",
        f"{secret!r}",
        "%s" % (secret,),  # noqa: UP031 - logging-style formatting
        format(secret, ">10"),
        repr([secret]),
        repr({"k": secret}),
    ]
    for view in views:
        assert core not in view
        assert "****" in view
    assert secret.reveal() == KEY
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        copy.deepcopy(secret)


def test_signer_never_shows_the_key(signer):
    core = KEY[2:]
    assert core not in repr(signer)
    assert core not in str(signer)
    assert ADDRESS in repr(signer)
    with pytest.raises(TypeError):
        pickle.dumps(signer)
    assert not hasattr(signer, "__dict__")
    # the signed payload carries a signature and the address, never the key
    assert core not in str(sign(signer).body())


def test_errors_during_signing_do_not_carry_the_key(signer):
    with pytest.raises(ValueError, match="time in force") as info:
        sign(signer, tif="nope")
    assert KEY[2:] not in "".join(traceback.format_exception(info.value))


def test_timing_defaults_and_config():
    t = Timing()
    now_ms, now_s = 1_767_200_000_123, 1_767_200_000
    assert t.nonce(now_ms, 3) == ((now_ms + 90_000) << 20) + 3
    assert t.expiration(now_s, "ioc") == now_s + 60
    assert t.expiration(now_s, "fok") == now_s + 60
    assert t.expiration(now_s, "default") == NO_EXPIRY
    assert t.expiration(now_s, "post_only") == NO_EXPIRY
    assert t.stream_auth_expiration(now_ms) == now_ms + 60_000
    assert Timing(resting_ttl_s=3600).expiration(now_s, "default") == now_s + 3600
    with pytest.raises(ValueError, match="stream_auth_ttl_ms"):
        Timing(stream_auth_ttl_ms=200_000)
    with pytest.raises(ValueError, match="resting_ttl_s"):
        Timing(resting_ttl_s=0)
