"""Talking to the index the mirror copies: one transport, pages, the download workers."""
