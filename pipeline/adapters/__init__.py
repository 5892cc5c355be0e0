"""Adapters: the ports of ``pipeline.processing`` bound to real services."""
