"""Policy and reference models on tunix: building, LoRA, rollouts, updates."""
