"""The benchmark code behind ``scripts/bench.py`` (one module per benchmark; ``scripts/`` only parses arguments)."""
