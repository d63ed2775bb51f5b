"""Bottom-up multi-person pose (HigherHRNet's framework on the ScaleNAS body, scalenas.md
section 10): targets, losses, the two-resolution head, and tag-based decoding and grouping."""
