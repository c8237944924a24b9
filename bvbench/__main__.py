"""`python -m bvbench` (and `torchrun -m bvbench`) runs the CLI."""

from bvbench.cli import main

if __name__ == "__main__":
    main()
