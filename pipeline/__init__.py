"""ticketflow: a Kafka-native pipeline for LLM customer-support agents."""

__version__ = "0.1.0"
