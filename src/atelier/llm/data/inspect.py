"""`atelier llm inspect`: what a preprocessed dataset holds, and one sample decoded.

Masked tokens (label -100) are shown dim inside `[…]`, trained ones in bold,
so a wrong template or mask is visible at a glance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from atelier.core.errors import AtelierError
from atelier.llm.data.handlers import IGNORE
from atelier.llm.data.indexed import IndexedReader, exists
from atelier.llm.data.merge import dataset_keys
from atelier.llm.data.tokenizer import Backend, TokenizerSpec, load_tokenizer


@dataclass
class DatasetSummary:
    prefix: str
    dtype: str
    sequences: int
    documents: int
    tokens: int
    min_len: int
    mean_len: float
    max_len: int
    histogram: list[tuple[int, int, int]]  # (low, high, count)


def find_datasets(prefix: str) -> dict[str, IndexedReader]:
    if exists(prefix):
        return {"data": IndexedReader.open(prefix)}
    keys = dataset_keys(prefix)
    if not keys:
        raise AtelierError(
            f"{prefix}: no dataset here; give the --output-prefix used for preprocess "
            f"or a dataset prefix (without .bin/.idx)"
        )
    return {k: IndexedReader.open(f"{prefix}_{k}_document") for k in keys}


def summarize(reader: IndexedReader, bins: int = 10) -> DatasetSummary:
    lengths = reader.lengths.astype(np.int64)
    hist: list[tuple[int, int, int]] = []
    if len(lengths):
        lo, hi = int(lengths.min()), int(lengths.max())
        counts, edges = np.histogram(
            lengths, bins=min(bins, max(1, hi - lo + 1)), range=(lo, hi + 1)
        )
        hist = [(int(edges[i]), int(edges[i + 1]) - 1, int(c)) for i, c in enumerate(counts)]
    return DatasetSummary(
        prefix=str(reader.prefix),
        dtype=str(reader.dtype),
        sequences=len(reader),
        documents=reader.num_documents,
        tokens=reader.num_tokens,
        min_len=int(lengths.min()) if len(lengths) else 0,
        mean_len=float(lengths.mean()) if len(lengths) else 0.0,
        max_len=int(lengths.max()) if len(lengths) else 0,
        histogram=hist,
    )


def render_sample(ids: np.ndarray, labels: np.ndarray | None, backend: Backend | None) -> Text:
    """Tokens grouped into runs of trained / masked; decoded when a tokenizer is given."""
    text = Text()
    if labels is None:
        labels = ids
    masked = labels == IGNORE
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or masked[i] != masked[start]:
            run = [int(x) for x in ids[start:i]]
            shown = backend.decode(run) if backend else " ".join(map(str, run))
            if masked[start]:
                text.append(f"[{shown}]", style="dim")
            else:
                text.append(shown, style="bold")
            start = i
    return text


def inspect_dataset(
    prefix: str,
    sample: int = 0,
    tokenizer: TokenizerSpec | None = None,
    console: Console | None = None,
) -> dict[str, DatasetSummary]:
    console = console or Console()
    datasets = find_datasets(prefix)
    summaries = {k: summarize(r) for k, r in datasets.items()}
    table = Table(title=f"Datasets under {prefix}")
    for col in ("key", "dtype", "sequences", "documents", "tokens", "min", "mean", "max"):
        table.add_column(col, justify="left" if col in ("key", "dtype") else "right")
    for k, s in summaries.items():
        table.add_row(
            k,
            s.dtype,
            str(s.sequences),
            str(s.documents),
            str(s.tokens),
            str(s.min_len),
            f"{s.mean_len:.1f}",
            str(s.max_len),
        )
    console.print(table)
    first = next(iter(summaries.values()))
    if first.histogram:
        peak = max(c for _, _, c in first.histogram) or 1
        console.print("length histogram (tokens per sequence):")
        for lo, hi, c in first.histogram:
            console.print(
                f"  {lo:>7}-{hi:<7} {'█' * max(1 if c else 0, round(30 * c / peak)):<30} {c}"
            )
    ids_key = next((k for k in datasets if k.endswith("input_ids")), next(iter(datasets)))
    labels_key = next((k for k in datasets if k.endswith("labels")), None)
    n = len(datasets[ids_key])
    if n == 0:
        return summaries
    if not 0 <= sample < n:
        raise AtelierError(f"--sample {sample}: out of range; the dataset has {n} sequences")
    backend = Backend(load_tokenizer(tokenizer)) if tokenizer else None
    ids = datasets[ids_key][sample]
    labels = datasets[labels_key][sample] if labels_key else None
    legend = " (masked in dim [..], trained in bold)" if labels is not None else ""
    console.print(f"sample {sample} of {n}, {len(ids)} tokens{legend}:")
    console.print(render_sample(ids, labels, backend))
    return summaries
