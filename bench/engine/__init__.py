"""The curve engine: region grids and orders, the streaming perturbation engine, forward strategies.

    regions.py      the region grid, region scores, perturbation orders
    forward.py      the forward-pass seam (full batched passes)
    incremental.py  exact incremental inference; the only module that walks Keras graphs
                    through private attributes (canary-tested)
    strategies.py   the forward strategies by name (full, incremental, auto)
    curves.py       the streaming engine: per-image f(x^(k)) curves (``evaluate_aopc``)
    tracing.py      per-model tf.functions (``graph_function``, ``traced``): each traced once
    memo.py         ``ModelMemo``: values memoised per model object (weak, keyed, bounded)
"""
