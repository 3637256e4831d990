"""`python -m bench`: run the benchmark, print the tables and write docs/benchmarks.md."""

import sys

from bench.run import main

sys.exit(main())
