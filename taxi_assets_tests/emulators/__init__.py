"""Emulators and servers the test suite starts on loopback."""
