"""What the mirror records and the rules on it: names, manifests, the policy. Pure: no I/O."""
