"""`atelier llm merge`: join datasets into one, streaming (Megatron's merge tool).

Inputs are output prefixes of `preprocess` (every `{p}_*_document` set is merged
key by key into `{out}_*_document`), plain dataset prefixes, or a directory of
`.bin/.idx` pairs (merged in name order into `{out}.bin/.idx`, as Megatron's
`tools/merge_datasets.py` does).
"""

from __future__ import annotations

import glob
from pathlib import Path

from atelier.core.atomic import commit_files
from atelier.core.errors import AtelierError, disk_full_at, require_free
from atelier.core.paths import output_folder
from atelier.llm.data.indexed import IndexedReader, IndexedWriter, bin_path, exists

SUFFIX = "_document"


def dataset_keys(prefix: str) -> list[str]:
    """Keys of a preprocess output prefix: `{prefix}_{key}_document.idx` files."""
    found = glob.glob(glob.escape(prefix) + "_*" + SUFFIX + ".idx")
    keys = [f[len(prefix) + 1 : -len(SUFFIX + ".idx")] for f in found]
    return sorted(k for k in keys if exists(f"{prefix}_{k}{SUFFIX}"))


def plan_merge(inputs: list[str], output_prefix: str) -> dict[str, list[str]]:
    """Output prefix -> input dataset prefixes, in order."""
    if len(inputs) == 1 and Path(inputs[0]).is_dir():
        idx = sorted(Path(inputs[0]).glob("*.idx"))
        prefixes = [str(p.with_suffix("")) for p in idx if bin_path(p.with_suffix("")).is_file()]
        if not prefixes:
            raise AtelierError(f"--input {inputs[0]}: no .bin/.idx pairs in this directory")
        return {output_prefix: prefixes}
    if all(exists(p) for p in inputs):
        return {output_prefix: list(inputs)}
    plan: dict[str, list[str]] = {}
    first_keys: list[str] | None = None
    for p in inputs:
        keys = dataset_keys(p)
        if not keys:
            raise AtelierError(
                f"--input {p}: neither a dataset prefix ({p}.bin/.idx) nor a preprocess "
                f"output prefix ({p}_<key>_document.bin/.idx)"
            )
        if first_keys is None:
            first_keys = keys
        elif keys != first_keys:
            raise AtelierError(f"--input {p}: has keys {keys}, but {inputs[0]} has {first_keys}")
        for k in keys:
            plan.setdefault(f"{output_prefix}_{k}{SUFFIX}", []).append(f"{p}_{k}{SUFFIX}")
    return plan


def merge(inputs: list[str], output_prefix: str) -> dict[str, int]:
    """Merge; returns output prefix -> number of sequences written."""
    if not inputs:
        raise AtelierError("--input: give at least one dataset")
    if Path(output_prefix).is_dir():
        raise AtelierError(f"--output-prefix {output_prefix} is a folder; give a file prefix")
    plan = plan_merge(inputs, output_prefix)
    for out, parts in plan.items():
        if any(_same_prefix(out, p) for p in parts):
            raise AtelierError(f"--output-prefix {output_prefix}: would overwrite an input")
    folder = output_folder(Path(output_prefix).parent, "--output-prefix")
    needed = sum(bin_path(p).stat().st_size for parts in plan.values() for p in parts)
    require_free(folder, needed)
    with disk_full_at(folder, needed):
        return _merge(plan)


def _same_prefix(a: str, b: str) -> bool:
    return Path(a).absolute().resolve() == Path(b).absolute().resolve()


def _merge(plan: dict[str, list[str]]) -> dict[str, int]:
    pairs = []
    written = {}
    writers: list[IndexedWriter] = []
    try:
        for out, parts in plan.items():
            readers = [IndexedReader.open(p) for p in parts]
            dtypes = {r.dtype for r in readers}
            if len(dtypes) > 1:
                names = ", ".join(f"{r.prefix} ({r.dtype})" for r in readers)
                raise AtelierError(f"cannot merge datasets of different dtypes: {names}")
            w = IndexedWriter(out, readers[0].dtype)
            writers.append(w)
            for r in readers:
                w.append_raw(bin_path(r.prefix), r.lengths, r.doc_ends)
            written[out] = len(w.lengths)
            pairs += w.finish()
        if not any(written.values()):
            raise AtelierError("--input: the inputs hold 0 sequences; nothing was written")
        commit_files(pairs)
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return written
