"""DFT single points: CP2K (local, Debian package) and VASP (atomate2, clusters). No workflow imports."""
