"""MindSpeed-LLM `preprocess_data.py` flags that Atelier accepts without effect or refuses.

So that MindSpeed's example scripts run with only the program name replaced: a flag that
changes nothing in Atelier is accepted and logged (why: `IGNORED`), one whose behaviour
Atelier does not have is refused with one line (why: `REFUSED`), never "unrecognized".
docs/llm.md ("MindSpeed preprocess flags") lists every flag.
"""

from __future__ import annotations

import argparse

from atelier.core.errors import AtelierError
from atelier.core.flags import NON_NEGATIVE_INT, POSITIVE_INT
from atelier.core.log import get_logger

log = get_logger(__name__)

# flag -> why it changes nothing here (MindSpeed reads it only where noted)
IGNORED = {
    "--overwrite-cache": "Atelier keeps no dataset cache: every run reads the input afresh",
    "--make-vocab-size-divisible-by": "only pads the vocabulary size for training; "
    "preprocessing writes the same ids",
    "--pad-vocab-size-to": "only pads the vocabulary size for training",
    "--seed": "MindSpeed uses it only to mix LlamaFactoryInstructionHandler datasets",
    "--max-samples": "MindSpeed reads it only for LlamaFactoryInstructionHandler",
    "--dataset-dir": "MindSpeed reads it only for LlamaFactoryInstructionHandler",
    "--interleave-probs": "MindSpeed reads it only for LlamaFactoryInstructionHandler",
    "--mix-strategy": "MindSpeed reads it only for LlamaFactoryInstructionHandler",
    "--dataset-additional-keys": "MindSpeed writes extra keys only with the R1 handlers",
}
# flag -> why it is refused
REFUSED = {
    "--hf-datasets-params": "loads from the Hugging Face hub; give local files to --input",
    "--script-data-dir": "Atelier runs no dataset loading scripts; give data files to --input",
    "--datasets": "merging is a verb here: atelier llm merge --input A B --output-prefix P",
    "--merge-group-keys": "merging is a verb here: atelier llm merge --input DIR --output-prefix P",
    "--split-sentences": "sentence splitting (NLTK punkt, downloaded at run time) is not supported",
    "--keep-newlines": "goes with --split-sentences, which is not supported",
}


_IGNORED_KW: dict[str, dict] = {
    "--overwrite-cache": {"action": "store_true"},
    "--make-vocab-size-divisible-by": {"type": POSITIVE_INT},
    "--pad-vocab-size-to": {"type": POSITIVE_INT},
    "--seed": {"type": NON_NEGATIVE_INT},
    "--max-samples": {"type": POSITIVE_INT},
    "--mix-strategy": {"choices": ["concat", "interleave_under", "interleave_over"]},
    "--dataset-additional-keys": {"nargs": "*"},
}
_REFUSED_KW: dict[str, dict] = {
    "--datasets": {"nargs": "+"},
    "--merge-group-keys": {"nargs": "+"},
    "--split-sentences": {"action": "store_true"},
    "--keep-newlines": {"action": "store_true"},
}


def add_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("MindSpeed-LLM flags accepted without effect (see docs/llm.md)")
    for flag, why in IGNORED.items():
        g.add_argument(flag, help=why, **_IGNORED_KW.get(flag, {}))
    g = p.add_argument_group("MindSpeed-LLM flags refused (each says why)")
    for flag, why in REFUSED.items():
        g.add_argument(flag, help=f"refused: {why}", **_REFUSED_KW.get(flag, {}))


def check_flags(args: argparse.Namespace) -> None:
    """Refuse what Atelier cannot do, note what it ignores."""

    def given(flag: str) -> bool:
        value = getattr(args, flag[2:].replace("-", "_"))
        return value not in (None, False, [])

    for flag, why in REFUSED.items():
        if given(flag):
            raise AtelierError(f"{flag}: not supported: {why}")
    for flag, why in IGNORED.items():
        if given(flag):
            log.info("%s is accepted and ignored: %s", flag, why)
