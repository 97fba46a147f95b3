"""The plugin layer: hooks, spec objects, component contracts, the registry.

    hookspecs.py   every ``bench_*`` hook, declared and documented in one place
    specs.py       the frozen spec objects the hooks return (ExplainerSpec, MetricSpec, ...)
    protocols.py   the component contracts, as ``typing.Protocol``s
    names.py       component names and the file names built from them
    registry.py    entry-point loading with isolation, provenance, ``registry()``, ``create()``
    scaffold.py    ``bench new-plugin``: a ready-to-install plugin package from bench/_template
"""
