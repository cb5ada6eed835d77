"""The samples Megatron (pretraining) and MindSpeed-LLM (instruction data) would train on.

API for the engine (numpy only; torch is imported inside `collate`):

    spec = DataSpec(data_path="0.3 a_text_document 0.7 b_text_document", split="949,50,1",
                    seq_length=4096, seed=1234, eod_id=tok.eod, pad_id=tok.pad)
    check_vocab(spec, vocab_size)              # AtelierError: an id >= vocab_size in the data
    check_positions(spec, max_position_embeddings)
    train, valid, test = build_datasets(spec, [train_samples, valid_samples, test_samples])
    for idx in train.micro_batches(consumed_samples, micro_batch_size, dp_rank, dp_size):
        batch = collate([train[i] for i in idx], pad_id=spec.fill_id)
    # or, the same batches prefetched by worker processes:
    for batch in data_loader(train, spec.fill_id, consumed_samples, micro_batch_size,
                             dp_rank, dp_size, num_workers=2): ...

`ds[i]` is a dict of numpy arrays of one length (seq_length; an instruction sample's own
length with `pad_to_seq_length=False`): `tokens` int64, `labels` int64 (the target of each
token; always a valid id: 0 for pads and untrained instruction labels), `loss_mask` float32
(1 where trained),
`position_ids` int64, and with `reset_attention_mask` `segment_ids` int32: a token attends to
earlier tokens of its own segment only. The loss of a micro-batch is
`sum(ce(logits, labels) * loss_mask)`; the trainer divides by the trained-token count.

- Pretraining equals megatron-core's `GPTDataset` / `BlendedMegatronDatasetBuilder` (sample
  order and contents, blends, split, epochs, `reset_position_ids`, `reset_attention_mask`,
  `eod_mask_loss`, pad masking) for the same data, weights, split, seq-length and seed.
- Instruction data follows MindSpeed-LLM's `DecoderPackedMTFDataset` (order, cuts, label
  shift, EOS segments of packed rows).
- `micro_batches` is Megatron's `MegatronPretrainingSampler`: resume from consumed_samples
  continues exactly; DP rank r takes the r-th contiguous slice of each micro-step.
- Index caches are `.npy` files written atomically under `{prefix}/cache/` (megatron-core's
  place) or `data_cache_path`, named by a hash of what determines them, and reused.
"""

from atelier.llm.train.data.build import build_datasets, check_positions, check_vocab
from atelier.llm.train.data.collate import collate, data_loader
from atelier.llm.train.data.sampler import micro_batches
from atelier.llm.train.data.spec import IGNORE, DataSpec, parse_blend

__all__ = [
    "IGNORE",
    "DataSpec",
    "build_datasets",
    "check_positions",
    "check_vocab",
    "collate",
    "data_loader",
    "micro_batches",
    "parse_blend",
]
