"""Cost and speed tables (the same as `zeroi2v bench`): python benchmarks/cost_and_speed.py [bench options]."""

import sys

from zeroi2v.bench import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
