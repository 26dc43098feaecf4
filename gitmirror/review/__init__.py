"""The mirror's own decisions: review of new releases, approval, yank/deprecate/takedown."""
