"""Test harness shipped with the product: chaos runs, invariants, machine bounds, demo."""
