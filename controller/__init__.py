"""Loris controller package."""
