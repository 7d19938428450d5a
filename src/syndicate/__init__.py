"""syndicate: feeds and email digests for review sites."""

__version__ = "0.1.0"
