"""dealscout: product photos in, draft marketplace listings out (Gemini models, SQLite record)."""

__version__ = "0.1.0"
