"""`npu-engine serve`: the OpenAI- and Ollama-compatible HTTP server over one Engine."""
