"""Drift detection, the retraining-trigger policy and the feedback store (pure, no pipeline imports)."""
