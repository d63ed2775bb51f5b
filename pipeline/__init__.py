"""ScaleNAS Pipeline: one-shot architecture search over multi-scale networks."""
