"""Pulses in-memory broker."""
