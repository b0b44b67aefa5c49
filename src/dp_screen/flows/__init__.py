"""jobflow flows that chain the Makers of ``dp_screen.jobs`` into campaigns."""
