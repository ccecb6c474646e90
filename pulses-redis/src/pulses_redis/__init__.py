"""Pulses Redis Streams broker."""
