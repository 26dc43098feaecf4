"""Proving the promise: the pre-receive hook, verify, status."""
