"""The worker pilot: claims tokens, runs steps, uploads results."""
