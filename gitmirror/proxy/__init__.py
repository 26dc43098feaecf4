"""The pull-through proxy: any project on first request, recorded like synced content (docs/proxy.md)."""
