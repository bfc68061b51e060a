"""Hooks of the Hilos provider."""
