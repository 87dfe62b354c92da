"""BUILD: open both legs at equal USD notional; done only on the venue's word.

Pre-trade guards (each a named method that journals its reason on refusal) run at
once on entry; a refusal ends in `aborted` with nothing sent. Then rounds of orders:
the first places both legs at once (IOC through the touch by `cross_bps`, or
POST_ONLY at the touch, repriced on deadline), later rounds retry whatever is
missing with escalating aggression (`cross_bps + k x repair_step_bps`). Every
remainder is sized from verified fills (ledger, or the venue's own word on a cancel
or expiry when it says more), never from the original request. A round ends when
every order of it is settled; on the fill deadline its unsettled orders are
cancelled. A placement with an unknown outcome is resolved by QueryOrder before
anything else is sent for that leg. `built` only after a position query, answered
after the last order, shows both legs at target within one size increment.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from engine.core import flatness
from engine.core.events import PositionSnapshot
from engine.core.intents import SendAlert
from machines.base import PureMachine
from machines.base import State
from machines.params import CycleParams
from machines.policy import PRETRADE_CHECKS
from machines.policy import WorkPolicy
from machines.pricing import OrderRounds
from machines.pricing import outside_band
from machines.pricing import size_for_notional

ZERO = Decimal(0)
RESIDUAL_QUANTUM = Decimal("0.000001")
BREAKER_ID, HEALTH_ID = "breaker", "health"  # machine ids the app spawns them under
# Each pre-trade check (a guard) and the method that says why it refuses.
REFUSALS = {
    "entries_allowed": "_entries_refusal",
    "venue_verified_flat": "_flat_refusal",
    "bbo_fresh": "_bbo_refusal",
    "within_price_band": "_band_refusal",
    "within_max_position": "_max_position_refusal",
    "sizes_tradable": "_size_refusal",
}


class BuildMachine(OrderRounds, PureMachine):
    """BUILD: guards → both legs at once → repair the missing leg → verify by position query.

    Ends `built`, `aborted` (a guard refused, nothing sent) or `failed` (exposure may be open).
    """

    checking = State(initial=True)

    # placing: one round of orders at a time (plain State(states=...) keeps mypy happy)
    working = State(initial=True)
    cancelling = State()
    deciding = State()
    placing = State(states=[working, cancelling, deciding])

    verifying = State()
    built = State(final=True)
    aborted = State(final=True)
    failed = State(final=True)

    # Pre-trade guards, taken at once on entry (eventless), in this order; pure: a refusal's
    # reason is journaled on entry to `aborted`, the sizes on the way to `placing`.
    checking.to(placing, cond=list(PRETRADE_CHECKS), on="size_legs")
    checking.to(aborted)

    # A round ends when all its orders are settled; the decision is taken at once.
    working.to(cancelling, cond="hard_rejected")
    working.to(deciding, cond="round_settled")
    cancelling.to(deciding, cond="round_settled")
    deciding.to(verifying, cond="legs_complete")
    deciding.to(failed, cond="hard_rejected")
    # The hedge deadline (V1): one leg open without the other for the exit budget, no
    # further round may start; the session's emergency exit takes over, flagged.
    deciding.to(failed, cond="hedge_deadline_passed", on="stop_for_hedge")
    deciding.to(working, cond="rounds_left")
    deciding.to(failed)

    # Fills are already in the ledger; the eventless decisions above look at it. Events
    # a state does not take are consumed (noted): no catch-all transitions.
    # `is_mine`: an order id this engine never owned is broadcast (e.g. a foreign fill).
    fill_received = placing.to(None, cond="is_mine", on="record_fill")
    order_expired = placing.to(None, cond="is_mine", on="record_end")
    order_cancelled = placing.to(None, cond="is_mine", on="record_end")
    order_rejected = placing.to(None, cond="is_mine", on="record_reject")
    order_status = cancelling.to(None, cond=["is_mine", "says_open"], on="cancel_again") | (
        placing.to(None, cond="is_mine", on="record_status")
    )
    venue_error = (
        placing.to(None, cond="is_mine", on="record_error")
        # `answers_me`: the answer to this verification's latest query, not an earlier one.
        | verifying.to(None, cond=["answers_me", "verify_left"], on="recheck_later")
        | verifying.to(failed, cond="answers_me")
    )
    position_snapshot = (
        verifying.to(built, cond=["answers_me", "at_target", "read_agrees"])
        # A read that lacks reported fills lags: asked again within the lag budget.
        | verifying.to(None, cond=["answers_me", "read_lags"], on="wait_for_lag")
        | verifying.to(
            None, cond=["answers_me", "lag_suspected", "verify_left"], on="recheck_later"
        )
        | verifying.to(failed, cond="answers_me")
    )
    # Named deadlines, each armed on entry to the state that waits.
    fills_timeout = working.to(cancelling)
    settle_timeout = cancelling.to(None, cond="queries_left", on="chase_unsettled") | (
        cancelling.to(failed)
    )
    requery_timeout = placing.to(None, on="requery_unknown")
    recheck_timeout = verifying.to(None, on="query_positions")
    verify_timeout = verifying.to(None, cond="verify_left", on="query_positions") | (
        verifying.to(failed)
    )

    def setup(self, **params: Any) -> None:
        self.p: CycleParams = params["params"]
        self.setup_rounds(params.get("policy") or WorkPolicy.build(self.p))
        self.targets: tuple[Decimal, Decimal] = (ZERO, ZERO)  # long (buy), short (sell)
        self.start_pos: tuple[Decimal, Decimal] = (ZERO, ZERO)
        self.residual_usd = ZERO
        self.reason = ""

    # -- pre-trade guards (pure: each answers; `refusal` says why) ----------------------------
    # Each check of the policy's `pretrade_checks` (a check it leaves out passes).
    def entries_allowed(self) -> bool:
        return not self._refusal_of("entries_allowed")

    def venue_verified_flat(self) -> bool:
        return not self._refusal_of("venue_verified_flat")

    def bbo_fresh(self) -> bool:
        return not self._refusal_of("bbo_fresh")

    def within_price_band(self) -> bool:
        return not self._refusal_of("within_price_band")

    def within_max_position(self) -> bool:
        return not self._refusal_of("within_max_position")

    def sizes_tradable(self) -> bool:
        return not self._refusal_of("sizes_tradable")

    def _refusal_of(self, check: str) -> str:
        if check not in self.policy.pretrade_checks:
            return ""
        reason: str = getattr(self, REFUSALS[check])()
        return reason

    def refusal(self) -> tuple[str, str]:
        """(check, reason) of the first pre-trade check that refuses, in the policy's order."""
        for name in self.policy.pretrade_checks:
            reason = self._refusal_of(name)
            if reason:
                return name, reason
        return "", ""

    def _entries_refusal(self) -> str:
        """The breaker is closed and health is normal (when those machines run)."""
        breaker = self.ledger.state_of(BREAKER_ID)
        if breaker and "closed" not in breaker:
            return f"circuit breaker {breaker[-1]}"
        health = self.ledger.state_of(HEALTH_ID)
        if health and "normal" not in health:
            return f"venue health {health[-1]}: no new entries"
        return ""

    def _flat_refusal(self) -> str:
        for leg in self.p.legs:
            pos = self.ledger.venue_position(leg.product_id)
            quote = self.ledger.quote(leg.product_id)
            if pos is None:
                return f"no venue position known for {leg.symbol}"
            flat = flatness.is_dust(
                pos, flatness.mid_of(quote), self.p.dust_usd, leg.size_increment
            )
            if not flat:
                return f"residual venue position {pos} on {leg.symbol}"
            fills = self.ledger.position(leg.product_id)
            if abs(pos - fills) >= leg.size_increment:
                # A flat read the reported fills contradict is a lagging read (issue 11).
                return f"venue reads {pos} on {leg.symbol}, its fills say {fills}"
        return ""

    def _bbo_refusal(self) -> str:
        for leg in self.p.legs:
            quote = self.ledger.quote(leg.product_id)
            if quote is None or quote.bid <= 0 or quote.ask < quote.bid:
                return f"no valid BBO for {leg.symbol}"
            age_ns = self.ledger.now_ns - quote.ts_ns
            if age_ns > self.p.bbo_max_age_s * 1_000_000_000:
                return f"stale BBO for {leg.symbol}: {Decimal(age_ns) / 10**9} s"
        return ""

    def _band_refusal(self) -> str:
        """Both quotes within `price_band_bps` of the venue's oracle price (D5). A quote
        whose product had an oracle price and has none now cannot be band-checked: no
        entry on it either."""
        for leg in self.p.legs:
            if self.p.price_band_bps and self.ledger.oracle_lost(leg.product_id):
                return (
                    f"no current oracle price for {leg.symbol}: its quote cannot be checked "
                    f"against the band ({self.p.price_band_bps} bps)"
                )
            off = outside_band(self.p, self.ledger, leg.product_id)
            if off is not None:
                return (
                    f"{leg.symbol} quote {off.quantize(Decimal(1))} bps from the oracle price "
                    f"{self.ledger.oracle(leg.product_id)} (band {self.p.price_band_bps} bps)"
                )
        return ""

    def _max_position_refusal(self) -> str:
        usd = self.p.notional_usd + self.p.carry_usd
        if usd <= 0:
            return f"notional {usd} is not positive"
        if usd > self.p.max_position_usd:
            return f"notional {usd} above max_position_usd {self.p.max_position_usd}"
        return ""

    def _size_refusal(self) -> str:
        sizes, _, _ = self._sizing()
        for leg, qty in zip(self.p.legs, sizes, strict=True):
            quote = self.ledger.quote(leg.product_id)
            value = qty * quote.mid if quote is not None else ZERO
            if qty <= 0 or value < leg.min_order_value_usd:
                return f"{leg.symbol} size {qty} (${value}) below the venue minimum"
        return ""

    # -- round guards ---------------------------------------------------------------------
    def legs_complete(self) -> bool:
        return all(self.remainder(i) < leg.size_increment for i, leg in enumerate(self.p.legs))

    def rounds_left(self) -> bool:
        return self._next_rung() < len(self.rungs)

    # -- verification guards ----------------------------------------------------------------
    def at_target(self, ev: PositionSnapshot) -> bool:
        for i, leg in enumerate(self.p.legs):
            pos = self.ledger.venue_position(leg.product_id)
            if pos is None or abs(pos - self.start_pos[i] - self._signed_target(i)) >= (
                leg.size_increment
            ):
                return False
        return True

    def lag_suspected(self, ev: PositionSnapshot) -> bool:
        """Our verified fills say target while the venue does not (yet): ask again later."""
        return self.legs_complete() and all(
            abs(self.orders.signed_filled(leg.product_id) - self._signed_target(i))
            < leg.size_increment
            for i, leg in enumerate(self.p.legs)
        )

    # -- actions --------------------------------------------------------------------------
    def net_usd(self) -> Decimal:
        """Signed notional of the long leg's fills less the short leg's."""
        return flatness.net_usd(
            {
                leg.product_id: (self.targets[i] - self.remainder(i)) * (1 if i == 0 else -1)
                for i, leg in enumerate(self.p.legs)
            },
            {
                leg.product_id: flatness.mid_of(self.ledger.quote(leg.product_id))
                for leg in self.p.legs
            },
        )

    def on_enter_working(self) -> None:
        self.rung = self._next_rung()
        self.round += 1
        rung = self.rungs[self.rung]
        # What each leg still needs from verified fills: the long leg buys, the short sells.
        wants = [
            (leg, self.remainder(i) if i == 0 else -self.remainder(i))
            for i, leg in enumerate(self.p.legs)
            if leg.round_size_down(self.remainder(i)) >= leg.size_increment
        ]
        self.place_round(rung, wants, "build" if self.round == 0 else rung.label)
        self.arm(self.policy.round_deadline, self.round_wait_s())

    def on_enter_built(self) -> None:
        self.note("built: venue position at target", positions=self.venue_positions())

    def on_enter_aborted(self) -> None:
        check, self.reason = self.refusal()
        self.note("pre-trade check refused", reason=self.reason)
        self.note("build aborted", reason=self.reason)
        if check == "within_price_band":
            self.emit(
                SendAlert(
                    event="price_band",
                    severity="warning",
                    message=f"[BAND] entry refused: {self.reason}",
                    state="aborted",
                    action="no entries while a quote is beyond the band; exits price from "
                    "the oracle",
                )
            )

    def on_enter_failed(self) -> None:
        reason = self.hard_reason or (
            "legs incomplete after every repair attempt"
            if not self.legs_complete()
            else "venue position not verified at target"
        )
        self.cancel_unsettled()
        self.note(
            "build failed",
            reason=reason,
            remainders=[str(self.remainder(i)) for i in range(2)],
            venue=self.venue_positions(),
        )

    # -- helpers ------------------------------------------------------------------------
    def _sizing(self) -> tuple[tuple[Decimal, Decimal], tuple[Decimal, Decimal], Decimal]:
        """Both legs' sizes at equal notional (rounded down), their values, the residual."""
        usd = self.p.notional_usd + self.p.carry_usd
        sizes, values = [], []
        for leg in self.p.legs:
            quote = self.ledger.quote(leg.product_id)
            mid = quote.mid if quote is not None else ZERO
            qty = size_for_notional(leg, usd, mid)
            sizes.append(qty)
            values.append(qty * mid)
        residual = (usd - (values[0] + values[1]) / 2).quantize(RESIDUAL_QUANTUM)
        return (sizes[0], sizes[1]), (values[0], values[1]), residual

    def size_legs(self) -> None:
        self.targets, values, self.residual_usd = self._sizing()
        long, short = (self.ledger.venue_position(leg.product_id) or ZERO for leg in self.p.legs)
        self.start_pos = (long, short)
        self.note(
            "sized at equal notional",
            usd=str(self.p.notional_usd + self.p.carry_usd),
            qty=[str(q) for q in self.targets],
            notional=[str(v) for v in values],
            residual_usd=str(self.residual_usd),
        )

    def _signed_target(self, i: int) -> Decimal:
        return self.targets[i] if i == 0 else -self.targets[i]

    def remainder(self, i: int) -> Decimal:
        """What leg i still needs, from verified fills only."""
        filled = self.orders.signed_filled(self.p.legs[i].product_id)
        return self.targets[i] - (filled if i == 0 else -filled)

    def _next_rung(self) -> int:
        # A leg is complete: no more passive repricing, repair the other at once.
        one_done = any(self.remainder(i) < leg.size_increment for i, leg in enumerate(self.p.legs))
        return self.next_rung(skip_passive=one_done)
