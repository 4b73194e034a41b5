"""Benchmarks of exa-source against the raw HTTP ceiling and the alternatives users would write.

Run ``.venv/bin/python bench/run.py --imports 100000 --repeat 3`` (see ``bench/run.py``).
"""
