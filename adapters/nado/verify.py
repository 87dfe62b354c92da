"""Signature checks for Nado executes, without a key (the simulated gateway's side).

Each `verify_*` parses a wire body (strings or ints for numbers, as the gateway
accepts them), recomputes the EIP-712 digest with the SDK and recovers the signing
address. Deciding whether that address may act for the sender (owner or linked
signer, else error 2028) is the caller's job. Bad shapes raise `MalformedFrame`,
bad signatures `signing.BadSignature`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from typing import NoReturn

import attrs
from nado_protocol.contracts.types import NadoTxType
from nado_protocol.utils.order import gen_order_verifying_contract

from adapters.nado.signing import OrderFields
from adapters.nado.signing import cancel_message
from adapters.nado.signing import order_digest
from adapters.nado.signing import recover_signer
from adapters.nado.wire import MalformedFrame
from adapters.nado.wire import req_hex
from adapters.nado.wire import req_int
from adapters.nado.wire import req_list
from adapters.nado.wire import req_obj
from adapters.nado.wire import req_str

__all__ = [
    "VerifiedCancel",
    "VerifiedOrder",
    "verify_cancel",
    "verify_place_order",
    "verify_stream_auth",
]


@attrs.frozen(kw_only=True)
class VerifiedOrder:
    product_id: int
    order: OrderFields
    digest: str
    signer: str  # recovered, checksummed
    client_id: int | None

    @property
    def owner(self) -> str:
        """The subaccount's owner address (first 20 bytes of the sender), lower-case."""
        return self.order.sender[:42]


def verify_place_order(body: Mapping[str, Any], chain_id: int) -> VerifiedOrder:
    """Parse a `{"place_order": …}` body, recompute its digest and recover the signer."""
    w = "place_order"
    inner = req_obj(body, w, w)
    raw = req_obj(inner, "order", w)
    try:
        order = OrderFields(
            sender=req_hex(raw, "sender", w, nbytes=32),
            price_x18=req_int(raw, "priceX18", w),
            amount=req_int(raw, "amount", w),
            expiration=req_int(raw, "expiration", w),
            nonce=req_int(raw, "nonce", w),
            appendix=req_int(raw, "appendix", w),
        )
    except ValueError as exc:
        _malformed(exc, w)
    pid = req_int(inner, "product_id", w, min_value=0)
    signer = recover_signer(
        NadoTxType.PLACE_ORDER,
        order.message(),
        gen_order_verifying_contract(pid),
        chain_id,
        req_str(inner, "signature", w),
    )
    return VerifiedOrder(
        product_id=pid,
        order=order,
        digest=order_digest(order, pid, chain_id),
        signer=signer,
        client_id=None if inner.get("id") is None else req_int(inner, "id", w, min_value=0),
    )


@attrs.frozen(kw_only=True)
class VerifiedCancel:
    sender: str
    product_ids: tuple[int, ...]
    digests: tuple[str, ...] | None  # None for cancel_product_orders
    nonce: int
    signer: str

    @property
    def owner(self) -> str:
        return self.sender[:42]


def verify_cancel(body: Mapping[str, Any], chain_id: int, endpoint_addr: str) -> VerifiedCancel:
    """Parse a `cancel_orders` or `cancel_product_orders` body and recover its signer."""
    key = "cancel_orders" if "cancel_orders" in body else "cancel_product_orders"
    inner = req_obj(body, key, key)
    tx = req_obj(inner, "tx", key)
    sender = req_hex(tx, "sender", key, nbytes=32)
    pids = tuple(_int_item(p, key) for p in req_list(tx, "productIds", key))
    digests: tuple[str, ...] | None = None
    if key == "cancel_orders":
        digests = tuple(_digest_item(d, key) for d in req_list(tx, "digests", key))
        if len(digests) != len(pids):
            raise MalformedFrame("productIds and digests differ in length", where=key)
    nonce = req_int(tx, "nonce", key, min_value=0)
    kind, msg = cancel_message(sender, pids, digests, nonce)
    signer = recover_signer(kind, msg, endpoint_addr, chain_id, req_str(inner, "signature", key))
    return VerifiedCancel(
        sender=sender, product_ids=pids, digests=digests, nonce=nonce, signer=signer
    )


def verify_stream_auth(message: Mapping[str, Any], chain_id: int, endpoint_addr: str) -> str:
    """Recover the signer of an `authenticate` message (the caller checks the expiry)."""
    w = "authenticate"
    tx = req_obj(message, "tx", w)
    sender = req_hex(tx, "sender", w, nbytes=32)
    msg = {"sender": bytes.fromhex(sender[2:]), "expiration": req_int(tx, "expiration", w)}
    return recover_signer(
        NadoTxType.AUTHENTICATE_STREAM,
        msg,
        endpoint_addr,
        chain_id,
        req_str(message, "signature", w),
    )


def _int_item(value: object, where: str) -> int:
    return req_int({"v": value}, "v", where, min_value=0)


def _digest_item(value: object, where: str) -> str:
    return req_hex({"v": value}, "v", where, nbytes=32)


def _malformed(exc: Exception, where: str) -> NoReturn:
    if isinstance(exc, MalformedFrame):
        raise exc
    raise MalformedFrame(str(exc), where=where) from None
