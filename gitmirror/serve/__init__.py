"""The index for installers: the HTTP app, static render, hydrate."""
