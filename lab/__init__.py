"""Loris lab package."""
