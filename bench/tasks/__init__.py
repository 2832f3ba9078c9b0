"""npu-bench quality tasks (TOML): prompts, hidden tests and reference answers."""
