"""Scaling out with Ray: the cluster (joined or started locally) and the
rollout workers. The judge's Ray replicas live with the judge
(orchestrator/judge/replicas.py)."""
