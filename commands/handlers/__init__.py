"""Command handlers by subject: personas, posts and turns, information."""
