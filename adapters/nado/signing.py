"""EIP-712 signing of Nado executes through the official SDK, offline (nado-protocol.md §3-§5).

The SDK (`nado_protocol`) builds the typed data, the order digest and the
signature; this module only shapes its inputs and outputs. Nothing here performs
I/O or reads a clock: nonces and expirations are built from times the caller
passes in. The digest of an order is known before it is sent and is the order's
key from then on.

The private key lives in a `Secret`, whose str/repr are masked, and in a
`Signer`, whose repr shows only the address; neither can be pickled. No error
raised here contains the key. `adapters.nado.verify` checks signatures without a
key from wire bodies; `recover_signer` is the primitive both use.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from typing import NoReturn

import attrs
from eth_account import Account
from eth_account.messages import encode_structured_data
from nado_protocol.contracts.eip712.sign import build_eip712_typed_data
from nado_protocol.contracts.eip712.sign import get_eip712_typed_data_digest
from nado_protocol.contracts.eip712.sign import sign_eip712_typed_data
from nado_protocol.contracts.types import NadoTxType
from nado_protocol.utils.expiration import OrderType
from nado_protocol.utils.nonce import gen_order_nonce
from nado_protocol.utils.order import build_appendix
from nado_protocol.utils.order import gen_order_verifying_contract

from engine.runtime.config import ConfigError

__all__ = [
    "KEY_ENV",
    "BadKey",
    "BadSignature",
    "OrderFields",
    "Secret",
    "SignedCancel",
    "SignedOrder",
    "Signer",
    "appendix_for",
    "cancel_message",
    "load_key",
    "order_digest",
    "order_nonce",
    "recover_signer",
    "subaccount_hex",
    "typed_data",
]

KEY_ENV = "NADO_PRIVATE_KEY"
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_ORDER_TYPES = {
    "default": OrderType.DEFAULT,
    "ioc": OrderType.IOC,
    "fok": OrderType.FOK,
    "post_only": OrderType.POST_ONLY,
}
TAG_BITS = 20
U64 = 2**64 - 1
I128 = 2**127


class BadKey(ConfigError):
    """The signing key is missing or malformed. The message never contains the key."""


class Secret:
    """A string that does not show itself: str/repr/format are masked, pickling refused."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


def load_key(raw: str | None, *, source: str = KEY_ENV) -> Secret:
    """Validate `0x` + 64 hex digits and a valid secp256k1 scalar; else BadKey (exit 2)."""
    if raw is None or not raw.strip():
        raise BadKey(f"{source} is not set; export the signer's private key")
    value = raw.strip()
    if not re.fullmatch(r"0x[0-9a-fA-F]{64}", value):
        raise BadKey(f"{source} is malformed: expected 0x followed by 64 hex digits")
    if not 0 < int(value, 16) < _SECP256K1_N:
        raise BadKey(f"{source} is not a valid secp256k1 private key")
    return Secret(value)


def subaccount_hex(owner: str, name: str = "default") -> str:
    """bytes32 subaccount: 20-byte owner + ASCII name right-padded to 12 bytes (§2)."""
    if not re.fullmatch(r"0x[0-9a-fA-F]{40}", owner):
        raise ValueError("owner must be 0x + 40 hex digits")
    raw = name.encode("ascii", errors="strict") if name.isascii() else b""
    if not raw or len(raw) > 12:
        raise ConfigError(f"subaccount name must be 1-12 ASCII characters, got {name!r}")
    return "0x" + owner[2:].lower() + raw.hex().ljust(24, "0")


def appendix_for(tif: str, reduce_only: bool = False) -> int:
    """Appendix v1, cross margin: DEFAULT 1, IOC 513, FOK 1025, POST_ONLY 1537.

    Reduce-only adds bit 11 (2048).
    """
    order_type = _ORDER_TYPES.get(tif)
    if order_type is None:
        raise ValueError(f"unknown time in force {tif!r}")
    return int(build_appendix(order_type, reduce_only=reduce_only))


def order_nonce(recv_time_ms: int, tag: int) -> int:
    """`(recv_time_ms << 20) + tag`: the venue drops the order after recv_time (§3.2).

    `tag` (< 2**20) makes otherwise identical orders distinct; bit 63 must stay clear.
    """
    if not 0 <= tag < 2**TAG_BITS:
        raise ValueError(f"nonce tag must be in [0, 2**20), got {tag}")
    if recv_time_ms < 0:
        raise ValueError("recv_time_ms must be >= 0")
    nonce = int(gen_order_nonce(recv_time_ms, random_int=tag))
    if nonce >= 2**63:
        raise ValueError("recv_time_ms too large: nonce bit 63 is reserved")
    return nonce


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} out of range [{lo}, {hi}]: {value!r}")


@attrs.frozen(kw_only=True)
class OrderFields:
    """The six fields of the EIP-712 `Order` struct, as integers."""

    sender: str
    price_x18: int
    amount: int
    expiration: int
    nonce: int
    appendix: int

    def __attrs_post_init__(self) -> None:
        if not re.fullmatch(r"0x[0-9a-f]{64}", self.sender):
            raise ValueError("sender must be lower-case 0x + 64 hex digits")
        _check_range("priceX18", self.price_x18, -I128, I128 - 1)
        _check_range("amount", self.amount, -I128, I128 - 1)
        _check_range("expiration", self.expiration, 0, U64)
        _check_range("nonce", self.nonce, 0, U64)
        _check_range("appendix", self.appendix, 0, 2**128 - 1)

    def message(self) -> dict[str, Any]:
        return {
            "sender": bytes.fromhex(self.sender[2:]),
            "priceX18": self.price_x18,
            "amount": self.amount,
            "expiration": self.expiration,
            "nonce": self.nonce,
            "appendix": self.appendix,
        }

    def wire(self) -> dict[str, str]:
        return {
            "sender": self.sender,
            "priceX18": str(self.price_x18),
            "amount": str(self.amount),
            "expiration": str(self.expiration),
            "nonce": str(self.nonce),
            "appendix": str(self.appendix),
        }


def typed_data(tx: NadoTxType, message: dict[str, Any], contract: str, chain_id: int) -> Any:
    return build_eip712_typed_data(tx, message, contract, chain_id)


def order_digest(order: OrderFields, product_id: int, chain_id: int) -> str:
    """The order id: EIP-712 hash of `Order` under the product's verifying contract."""
    contract = gen_order_verifying_contract(product_id)
    typed = typed_data(NadoTxType.PLACE_ORDER, order.message(), contract, chain_id)
    return str(get_eip712_typed_data_digest(typed))


class BadSignature(ValueError):
    """A signature that cannot be parsed or recovered."""


def recover_signer(
    tx: NadoTxType, message: dict[str, Any], verifying_contract: str, chain_id: int, signature: str
) -> str:
    """The checksummed address that produced `signature` over this typed data."""
    if not re.fullmatch(r"0x[0-9a-fA-F]{130}", signature):
        raise BadSignature("signature must be 0x + 130 hex digits")
    typed = typed_data(tx, message, verifying_contract, chain_id)
    try:
        address = Account.recover_message(
            encode_structured_data(typed.model_dump()), signature=signature
        )
    except Exception as exc:  # eth_keys raises several unrelated types
        raise BadSignature(f"cannot recover signer: {type(exc).__name__}") from None
    return str(address)


@attrs.frozen(kw_only=True)
class SignedOrder:
    product_id: int
    order: OrderFields
    digest: str
    signature: str
    client_id: int | None = None

    def body(self) -> dict[str, Any]:
        """JSON for `POST /v1/execute`, as the SDK's `to_execute_request` makes it (§4.1)."""
        inner: dict[str, Any] = {
            "product_id": self.product_id,
            "order": self.order.wire(),
            "signature": self.signature,
        }
        if self.client_id is not None:
            inner["id"] = self.client_id
        return {"place_order": inner}


@attrs.frozen(kw_only=True)
class SignedCancel:
    """`cancel_orders` (digests given) or `cancel_product_orders` (digests None)."""

    sender: str
    product_ids: tuple[int, ...]
    digests: tuple[str, ...] | None
    nonce: int
    signature: str
    client_id: int | None = None

    def body(self) -> dict[str, Any]:
        tx: dict[str, Any] = {"sender": self.sender, "productIds": list(self.product_ids)}
        if self.digests is not None:
            tx["digests"] = list(self.digests)
        tx["nonce"] = str(self.nonce)
        inner: dict[str, Any] = {"tx": tx, "signature": self.signature}
        if self.client_id is not None:
            inner["id"] = self.client_id
        key = "cancel_orders" if self.digests is not None else "cancel_product_orders"
        return {key: inner}


def cancel_message(
    sender: str, product_ids: Iterable[int], digests: Iterable[str] | None, nonce: int
) -> tuple[NadoTxType, dict[str, Any]]:
    msg: dict[str, Any] = {"sender": bytes.fromhex(sender[2:]), "productIds": list(product_ids)}
    if digests is None:
        msg["nonce"] = nonce
        return NadoTxType.CANCEL_PRODUCT_ORDERS, msg
    msg["digests"] = [bytes.fromhex(d[2:]) for d in digests]
    msg["nonce"] = nonce
    return NadoTxType.CANCEL_ORDERS, msg


class Signer:
    """Signs for one subaccount on one chain. Holds the key; shows only the address."""

    __slots__ = ("_account", "_signer", "chain_id", "endpoint_addr", "sender")

    def __init__(
        self,
        key: Secret,
        *,
        chain_id: int,
        endpoint_addr: str,
        subaccount_name: str = "default",
        linked_signer: Secret | None = None,
    ) -> None:
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", endpoint_addr):
            raise ConfigError("endpoint_addr must be 0x + 40 hex digits")
        if chain_id <= 0:
            raise ConfigError(f"chain_id must be > 0, got {chain_id}")
        self._account = _account(key)
        self._signer = self._account if linked_signer is None else _account(linked_signer)
        self.chain_id = chain_id
        self.endpoint_addr = endpoint_addr.lower()
        self.sender = subaccount_hex(str(self._account.address), subaccount_name)

    @property
    def address(self) -> str:
        """The subaccount owner (checksummed)."""
        return str(self._account.address)

    @property
    def signer_address(self) -> str:
        return str(self._signer.address)

    def __repr__(self) -> str:
        return f"Signer(address={self.address}, sender={self.sender}, chain_id={self.chain_id})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Signer cannot be pickled")

    def _sign(self, tx: NadoTxType, message: dict[str, Any], contract: str) -> str:
        typed = typed_data(tx, message, contract, self.chain_id)
        return str(sign_eip712_typed_data(typed, self._signer))

    def sign_order(
        self,
        product_id: int,
        *,
        price_x18: int,
        amount_x18: int,
        expiration: int,
        nonce: int,
        tif: str,
        reduce_only: bool = False,
        client_id: int | None = None,
    ) -> SignedOrder:
        """Build, hash and sign one order. `expiration` is unix seconds (§3.2)."""
        if amount_x18 == 0:
            raise ValueError("amount must not be zero")
        if client_id is not None:
            _check_range("client id", client_id, 0, U64)
        order = OrderFields(
            sender=self.sender,
            price_x18=price_x18,
            amount=amount_x18,
            expiration=expiration,
            nonce=nonce,
            appendix=appendix_for(tif, reduce_only),
        )
        contract = gen_order_verifying_contract(product_id)
        return SignedOrder(
            product_id=product_id,
            order=order,
            digest=order_digest(order, product_id, self.chain_id),
            signature=self._sign(NadoTxType.PLACE_ORDER, order.message(), contract),
            client_id=client_id,
        )

    def sign_cancel(
        self,
        product_ids: Iterable[int],
        digests: Iterable[str] | None,
        *,
        nonce: int,
        client_id: int | None = None,
    ) -> SignedCancel:
        """`cancel_orders` for `digests` (paired with `product_ids`), or, with digests None,
        `cancel_product_orders` (empty product list = all products). Order-style nonce."""
        pids = tuple(product_ids)
        digs = None if digests is None else tuple(d.lower() for d in digests)
        if digs is not None:
            if len(digs) != len(pids) or not digs:
                raise ValueError("cancel_orders needs one product id per digest")
            for d in digs:
                if not re.fullmatch(r"0x[0-9a-f]{64}", d):
                    raise ValueError("digest must be 0x + 64 hex digits")
        _check_range("nonce", nonce, 0, U64)
        tx, msg = cancel_message(self.sender, pids, digs, nonce)
        return SignedCancel(
            sender=self.sender,
            product_ids=pids,
            digests=digs,
            nonce=nonce,
            signature=self._sign(tx, msg, self.endpoint_addr),
            client_id=client_id,
        )

    def stream_auth(self, expiration_ms: int, *, request_id: int) -> dict[str, Any]:
        """The `/v1/subscribe` authenticate message; expiration in ms, <= ~100 s ahead (§7.3)."""
        msg = {"sender": bytes.fromhex(self.sender[2:]), "expiration": expiration_ms}
        sig = self._sign(NadoTxType.AUTHENTICATE_STREAM, msg, self.endpoint_addr)
        return {
            "method": "authenticate",
            "id": request_id,
            "tx": {"sender": self.sender, "expiration": str(expiration_ms)},
            "signature": sig,
        }


def _account(key: Secret) -> Any:
    """A LocalAccount from a validated Secret; any failure is a BadKey without the key."""
    failed = False
    try:
        account = Account.from_key(load_key(key.reveal()).reveal())
    except BadKey:
        raise
    except Exception:
        failed = True
    if failed:  # raised outside the except block: no chained exception carries the key
        raise BadKey(f"{KEY_ENV} is not a valid private key")
    return account
