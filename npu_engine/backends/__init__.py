"""Backends that run models: OpenVINO GenAI locally (more come with the fallback adapters)."""
