"""The library's benchmarks, run by ``python scripts/bench.py <name>`` or the ``facet-vlm-bench`` console script
(`facet_vlm.benchmarks.cli`): speed (``render``, ``train``, ``sequence``; `facet_vlm.benchmarks.speed`), accuracy on
generated data (``hard``, ``curve``, ``sequence-hard``; `facet_vlm.benchmarks.accuracy`), the comparison report
(``compare``; `facet_vlm.benchmarks.comparison`) and ``report``, which reruns the documented benchmarks and writes
the tables and plots of ``docs/`` (`facet_vlm.benchmarks.report`). Importing this package imports nothing else.
"""
