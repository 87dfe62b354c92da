"""Venue adapters: the only code that performs I/O."""
