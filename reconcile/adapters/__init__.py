"""Reconciliation adapters: one module per technology and role."""
