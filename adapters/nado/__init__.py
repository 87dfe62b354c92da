"""Nado exchange adapter: offline core (mapping, signing, errors, rate limits).

See README.md in this folder. Submodules are imported explicitly; importing the
package does not load the SDK.
"""
