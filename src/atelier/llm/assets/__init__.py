"""Tiny bundled data and tokenizer for `atelier demo` (written for this project)."""
