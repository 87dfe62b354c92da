"""The engine's core: clock, deadlines, events, intents, the loop, journal, replay, ledger."""
