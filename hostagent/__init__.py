"""Loris hostagent package."""
