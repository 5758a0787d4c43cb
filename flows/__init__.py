"""Loris flows package."""
