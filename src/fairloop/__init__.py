"""fairloop."""
