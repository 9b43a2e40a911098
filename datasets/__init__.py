"""Dataset generators and preparation scripts (the built-in synthetic street scenes)."""
