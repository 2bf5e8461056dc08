"""asv benchmarks of fastbp (see README.md here and common.py)."""
