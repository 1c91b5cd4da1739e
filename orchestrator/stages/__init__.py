"""The stages a run is made of: GRPO, SFT and SimPO (SFT and SimPO through
one stage runner), the pipeline that chains them, and held-out evaluation."""
