"""Shipped TOML presets: `kqv gpt train --preset NAME`."""
