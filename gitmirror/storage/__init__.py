"""Where it is kept: the git metadata repository (the only user of dulwich) and the blob store."""
