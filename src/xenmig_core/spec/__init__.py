"""Spec files: reading (``yamlsrc``), validating and compiling (``loader``) them into the model
(``model``, ``layout``, ``expr``), and the compiled-spec cache (``cache``).

Nothing is imported here: a run whose formats come from the cache never loads the YAML
reader or the loader.
"""
