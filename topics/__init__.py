"""The topic catalog as code: every topic, its key, value schema, layout and dead-letter topic."""

from topics.catalog import CATALOG, TopicSpec, topic_name

__all__ = ["CATALOG", "TopicSpec", "topic_name"]
