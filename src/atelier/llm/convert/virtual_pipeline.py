"""Virtual (interleaved) pipeline checkpoints: which layers each model chunk holds.

With `--num-layers-per-virtual-pipeline-stage n` Megatron splits the L layers into
V = L / (P n) chunks per pipeline stage; chunk v of stage p holds the n layers from
`v L / V + p n` (megatron-core `TransformerBlock._get_layer_offset`, core_r0.8.0), numbered
0..n-1 inside the chunk, and each rank file stores them as `model0` ... `model{V-1}`
(`megatron.training.checkpointing.save_checkpoint`). The embedding is in chunk 0 of
stage 0, the final norm and head in chunk V-1 of stage P-1.
"""

from __future__ import annotations

from atelier.core.errors import AtelierError


def virtual_chunks(
    num_layers: int, pp: int, layers_per_chunk: int | None, layer_list: list[int]
) -> list[list[range]]:
    """[stage][chunk] -> the global layers of that chunk (one chunk per stage without VPP)."""
    if not layers_per_chunk:
        starts = [sum(layer_list[:p]) for p in range(pp)]
        return [[range(starts[p], starts[p] + layer_list[p])] for p in range(pp)]
    if len(set(layer_list)) > 1:
        raise AtelierError(
            "num_layer_list: uneven stages cannot be combined with "
            "num_layers_per_virtual_pipeline_stage"
        )
    n = layers_per_chunk
    if num_layers % (pp * n) or num_layers // (pp * n) < 2:
        raise AtelierError(
            f"num_layers_per_virtual_pipeline_stage {n}: {num_layers} layers over pp {pp} "
            f"stages must make at least 2 chunks of {n} per stage (pp x {n} must divide "
            f"{num_layers})"
        )
    vp = num_layers // (pp * n)
    return [
        [range(v * num_layers // vp + p * n, v * num_layers // vp + (p + 1) * n) for v in range(vp)]
        for p in range(pp)
    ]


def chunk_key(v: int, vp: int) -> str:
    """The rank file's key of chunk v: `model` without VPP, else `model{v}`."""
    return "model" if vp == 1 else f"model{v}"
