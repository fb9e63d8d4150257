"""candlewax: exchange trades in, exact event-time bars and volatility alerts out, on Kafka + Bytewax."""

__version__ = "0.1.0"
