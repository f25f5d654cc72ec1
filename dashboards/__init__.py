"""Dashboards stage: read-only presentation over the warehouse (filled by its issue)."""
