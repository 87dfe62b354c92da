"""Pure state machines: no I/O, no clock, no randomness. See machines/base.py."""
