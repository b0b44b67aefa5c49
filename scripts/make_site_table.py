"""Regenerate the packaged default site table (rule R1) from pymatgen's Shannon radii.

Usage: python scripts/make_site_table.py [OUT.csv]   (default: src/dp_screen/data/site_table_r1.csv)
"""

import sys
from pathlib import Path

from dp_screen.chemistry.site_tables import r1_table_text

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parents[1] / "src/dp_screen/data/site_table_r1.csv"
out.write_text(r1_table_text())
print(f"wrote {out}")
