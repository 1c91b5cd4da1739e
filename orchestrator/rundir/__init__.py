"""A run directory: its layout and resume manifests, the rollout journal,
metrics, and `grar inspect`."""
