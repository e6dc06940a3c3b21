"""From run records to numbers, tables and plots; never re-runs training."""
