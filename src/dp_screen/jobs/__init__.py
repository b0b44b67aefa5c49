"""jobflow Makers for each pipeline step (thin wrappers over the science modules)."""
