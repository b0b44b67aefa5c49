"""Starting structures (bond-valence and DLS cells, Glazer tilts). Pure science, no workflow imports."""
