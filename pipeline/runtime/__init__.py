"""The stream runtime: binds processors to Kafka with consume-transform-produce transactions."""
