"""pydantic documents stored in the dp_screen collections."""
