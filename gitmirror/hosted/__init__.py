"""Projects hosted here: API tokens, the upload API, and read authentication (docs/hosted.md)."""
