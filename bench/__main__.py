"""``python -m bench``: issue 10's numbers side by side (see ``bench/suite.py``)."""

from bench.suite import main

main()
