"""asv benchmarks of fastbp (see common.py and STYLE.md section 8)."""
