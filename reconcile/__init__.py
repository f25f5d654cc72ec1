"""Reconciliation stage: matching rules → trip states, bad debts, alerts, settlement (filled by its issue)."""
