"""Operators of the Hilos provider."""
