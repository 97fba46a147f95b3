"""Run configuration: the TOML schema, loading and presets (``presets/*.toml``).

    loading.py     TOML + preset + CLI overrides -> a validated, fully resolved config
    presets/       the named presets (``demo``, ``tiny``, the study's ``covid-radiography``)
"""
