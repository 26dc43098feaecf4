"""Copying upstream into the repository: selection, closure, merge, the local state, warm sync."""
