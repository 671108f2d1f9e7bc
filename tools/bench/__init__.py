"""The parts of tools/benchmark.py: models and inputs both sides run, the sections, the report."""
