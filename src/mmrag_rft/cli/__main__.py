"""`python -m mmrag_rft.cli ...` (what `accelerate launch -m` needs)."""

from mmrag_rft.cli import main

if __name__ == "__main__":
    main()
