"""Helpers shared by test packages (real servers, fixture factories)."""
