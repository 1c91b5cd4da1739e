"""Rollout engines other than the policy's own sampler: vLLM."""
