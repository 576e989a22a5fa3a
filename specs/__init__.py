"""The YAML specs of xenmig's built-in formats, shipped as package data.

Each ``*.yaml`` file here describes one format in the spec language (docs/spec-language.md).
"""
