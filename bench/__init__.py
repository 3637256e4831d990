"""`make bench`: the cost of observability per request, measured on this machine (see bench/run.py)."""
