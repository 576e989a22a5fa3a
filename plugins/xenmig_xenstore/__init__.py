"""Plugin: xenstore migration streams (in progress)."""
