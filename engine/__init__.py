"""The engine: clock, deadlines, events, intents, loop, journal, replay, ledger."""
