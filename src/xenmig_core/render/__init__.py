"""Renderers: turning walks and reports into text, JSON, JSON lines and YAML."""
