"""inspect: say what a checkpoint folder is, reading only metadata and shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atelier.core.errors import AtelierError
from atelier.llm.convert.hf_checkpoint import HFSource
from atelier.llm.convert.megatron_checkpoint import MegatronSource
from atelier.llm.convert.meta import dtype_name


def inspect_checkpoint(path: Path) -> dict[str, Any]:
    """Format, family, TP/PP, vocabulary (true/padded), dtype and parameter count."""
    if not path.is_dir():
        raise AtelierError(f"{path}: not a folder")
    if (path / "config.json").is_file():
        src = HFSource(path)
        info: dict[str, Any] = {
            "format": "huggingface",
            "tp": 1,
            "pp": 1,
            "padded_vocab": src.meta.vocab_size,
        }
    else:
        src = MegatronSource(path)
        lay = src.layout
        info = {
            "format": lay.fmt + (f" ({lay.norms} norms)" if lay.fmt == "mcore" else ""),
            "tp": lay.tp,
            "pp": lay.pp // lay.vp,
            **({"virtual_pipeline_chunks": lay.vp} if lay.vp > 1 else {}),
            "layers_per_stage": ",".join(map(str, lay.layer_list)),
            "padded_vocab": lay.padded_vocab,
            "iteration": lay.iteration,
        }
    m = src.meta
    info.update(
        {
            "family": m.family,
            "layers": m.num_layers,
            "hidden": m.hidden_size,
            "ffn": m.ffn_hidden_size,
            "heads": m.num_heads,
            "query_groups": m.num_groups,
            "head_dim": m.head_dim,
            "true_vocab": m.vocab_size,
            "tied_embeddings": m.tied,
            "qkv_bias": m.qkv_bias,
            "qk_norm": m.qk_norm,
            "dtype": dtype_name(m.dtype),
            "parameters": m.num_parameters(),
        }
    )
    src.close()
    return info
