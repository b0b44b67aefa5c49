"""Chemistry of the composition space: site tables, enumeration, descriptors (pure science, no workflow imports)."""
