"""Benchmark `atelier llm convert` against the whole-model-in-memory method.

Builds a random model of real Llama shape (default: TinyLlama-1.1B's shape, bf16),
converts it hf2mg T=2 P=2 and back with Atelier, then does the same the way vendor
scripts do (load everything with transformers, split in memory, save; and back).
Each step runs in its own process so that its peak RSS (VmHWM) is its own.

    PYTHONPATH=src python bench/convert.py [--size 1b|3b] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # real Llama-family shapes ("smoke" only checks that the script runs)
    "smoke": {
        "hidden_size": 256,
        "intermediate_size": 704,
        "num_hidden_layers": 4,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "vocab_size": 1000,
    },
    "1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
        "vocab_size": 32000,
    },
    "3b": {
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 28,
        "num_attention_heads": 24,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
    },
}
TP, PP = 2, 2


def build_model(out: Path, size: str) -> int:
    """config.json + random bf16 safetensors shards, written one tensor at a time."""
    import torch
    from transformers import LlamaConfig

    from atelier.llm.convert.hf_checkpoint import hf_plan, write_safetensors_sharded
    from atelier.llm.convert.meta import meta_from_hf_config

    out.mkdir(parents=True)
    config = LlamaConfig(**SIZES[size], max_position_embeddings=4096, dtype="bfloat16")
    config.architectures = ["LlamaForCausalLM"]
    config.to_json_file(str(out / "config.json"))
    meta = meta_from_hf_config(
        json.loads((out / "config.json").read_text()), "bench", torch.bfloat16
    )
    plan = hf_plan(meta)
    gen = torch.Generator().manual_seed(0)

    def tensors():
        for name, shape in plan:
            yield name, (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)

    write_safetensors_sharded(tensors(), out, plan, torch.bfloat16, 2 * 1024**3)
    return sum(2 * torch.Size(s).numel() for _, s in plan)


# --- the whole-model-in-memory method ---------------------------------------------------


def inmem_hf2mg(hf: Path, mg: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from atelier.llm.convert import sharding as sh

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.bfloat16)
    cfg = model.config
    sd = model.state_dict()
    groups, per = cfg.num_key_value_heads, cfg.num_hidden_layers // PP
    padded = sh.padded_vocab_size(cfg.vocab_size, 128, TP)
    ranks = {}
    for p in range(PP):
        for t in range(TP):
            r = {}
            if p == 0:
                r["embedding.word_embeddings.weight"] = sh.split_rows(
                    sh.pad_vocab(sd["model.embed_tokens.weight"], padded), TP, t
                )
            for j in range(per):
                pre, d = f"model.layers.{p * per + j}.", f"decoder.layers.{j}."
                qkv = sh.fuse_qkv(
                    sd[pre + "self_attn.q_proj.weight"],
                    sd[pre + "self_attn.k_proj.weight"],
                    sd[pre + "self_attn.v_proj.weight"],
                    groups,
                )
                r[d + "input_layernorm.weight"] = sd[pre + "input_layernorm.weight"]
                r[d + "self_attention.linear_qkv.weight"] = sh.split_rows(qkv, TP, t)
                r[d + "self_attention.linear_proj.weight"] = sh.split_cols(
                    sd[pre + "self_attn.o_proj.weight"], TP, t
                )
                r[d + "pre_mlp_layernorm.weight"] = sd[pre + "post_attention_layernorm.weight"]
                r[d + "mlp.linear_fc1.weight"] = sh.fuse_gate_up(
                    sd[pre + "mlp.gate_proj.weight"], sd[pre + "mlp.up_proj.weight"], TP, t
                )
                r[d + "mlp.linear_fc2.weight"] = sh.split_cols(
                    sd[pre + "mlp.down_proj.weight"], TP, t
                )
            if p == PP - 1:
                r["decoder.final_layernorm.weight"] = sd["model.norm.weight"]
                r["output_layer.weight"] = sh.split_rows(
                    sh.pad_vocab(sd["lm_head.weight"], padded), TP, t
                )
            ranks[(t, p)] = r
    for (t, p), r in ranks.items():
        d = mg / "iter_0000001" / f"mp_rank_{t:02d}_{p:03d}"
        d.mkdir(parents=True)
        torch.save({"model": r, "config": cfg.to_dict()}, d / "model_optim_rng.pt")


def inmem_mg2hf(mg: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from atelier.llm.convert import sharding as sh

    ranks = {
        (t, p): torch.load(
            mg / "iter_0000001" / f"mp_rank_{t:02d}_{p:03d}" / "model_optim_rng.pt",
            weights_only=False,
        )
        for t in range(TP)
        for p in range(PP)
    }
    cfg = LlamaConfig(**ranks[(0, 0)]["config"])
    heads, groups = cfg.num_attention_heads, cfg.num_key_value_heads
    hd, per, v = cfg.hidden_size // heads, cfg.num_hidden_layers // PP, cfg.vocab_size
    sd = {
        "model.embed_tokens.weight": torch.cat(
            [ranks[(t, 0)]["model"]["embedding.word_embeddings.weight"] for t in range(TP)]
        )[:v]
    }
    for p in range(PP):
        rs = [ranks[(t, p)]["model"] for t in range(TP)]
        for j in range(per):
            pre, d = f"model.layers.{p * per + j}.", f"decoder.layers.{j}."
            q, k, vv = sh.unfuse_qkv(
                torch.cat([r[d + "self_attention.linear_qkv.weight"] for r in rs]),
                heads,
                groups,
                hd,
            )
            sd[pre + "self_attn.q_proj.weight"] = q
            sd[pre + "self_attn.k_proj.weight"] = k
            sd[pre + "self_attn.v_proj.weight"] = vv
            sd[pre + "self_attn.o_proj.weight"] = torch.cat(
                [r[d + "self_attention.linear_proj.weight"] for r in rs], dim=1
            )
            sd[pre + "mlp.gate_proj.weight"], sd[pre + "mlp.up_proj.weight"] = sh.unfuse_gate_up(
                [r[d + "mlp.linear_fc1.weight"] for r in rs]
            )
            sd[pre + "mlp.down_proj.weight"] = torch.cat(
                [r[d + "mlp.linear_fc2.weight"] for r in rs], dim=1
            )
            sd[pre + "input_layernorm.weight"] = rs[0][d + "input_layernorm.weight"]
            sd[pre + "post_attention_layernorm.weight"] = rs[0][d + "pre_mlp_layernorm.weight"]
    last = [ranks[(t, PP - 1)]["model"] for t in range(TP)]
    sd["model.norm.weight"] = last[0]["decoder.final_layernorm.weight"]
    sd["lm_head.weight"] = torch.cat([r["output_layer.weight"] for r in last])[:v]
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.load_state_dict({k: t.contiguous() for k, t in sd.items()}, assign=True)
    model.save_pretrained(str(out), max_shard_size="5GB")


def proc_status(field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of this process, in bytes.

    ru_maxrss is not used: a spawned child inherits its parent's high-water mark.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(step: str, src: Path, dst: Path) -> None:
    import torch  # noqa: F401  (imports counted separately from the conversion)

    from atelier.llm.convert import Hf2MgOptions, hf2mg, mg2hf

    if step.startswith("inmem"):
        import transformers  # noqa: F401
    base = proc_status("VmRSS")
    t0 = time.perf_counter()
    if step == "atelier-hf2mg":
        hf2mg(Hf2MgOptions(load_dir=src, save_dir=dst, tp=TP, pp=PP))
    elif step == "atelier-mg2hf":
        mg2hf(src, dst)
    elif step == "inmem-hf2mg":
        inmem_hf2mg(src, dst)
    elif step == "inmem-mg2hf":
        inmem_mg2hf(src, dst)
    seconds = time.perf_counter() - t0
    peak = proc_status("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_rss": peak, "base_rss": base}))


def run_child(step: str, src: Path, dst: Path) -> dict:
    os.sync()  # start each step without the previous step's dirty pages being flushed
    proc = subprocess.run(
        [sys.executable, __file__, "--child", step, str(src), str(dst)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_weights(a: Path, b: Path) -> bool:
    import torch
    from safetensors import safe_open

    def index(folder: Path) -> dict[str, Path]:
        out = {}
        for f in folder.glob("*.safetensors"):
            with safe_open(str(f), "pt") as h:
                out.update(dict.fromkeys(h.keys(), f))
        return out

    ia, ib = index(a), index(b)
    if sorted(ia) != sorted(ib):
        return False
    for name in ia:
        with safe_open(str(ia[name]), "pt") as ha, safe_open(str(ib[name]), "pt") as hb:
            if not torch.equal(ha.get_tensor(name), hb.get_tensor(name)):
                return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="1b")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--child", nargs=3, metavar=("STEP", "SRC", "DST"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.child[0], Path(a.child[1]), Path(a.child[2]))
        return
    work = Path(tempfile.mkdtemp(prefix="atelier-bench-convert-", dir=a.work))
    try:
        t0 = time.perf_counter()
        model_bytes = build_model(work / "hf", a.size)
        print(
            f"model: Llama {a.size} shape, bf16, {model_bytes / 1e9:.2f} GB "
            f"(built in {time.perf_counter() - t0:.0f} s); hf2mg T={TP} P={PP} and back"
        )
        print(
            f"{'method':<16}{'step':<8}{'seconds':>9}{'GB/s':>7}{'peak RSS GB':>13}"
            f"{'x model':>9}{'x model, minus imports':>24}"
        )
        for method in ("atelier", "inmem"):
            for step, src, dst in (
                ("hf2mg", work / "hf", work / f"{method}-mg"),
                ("mg2hf", work / f"{method}-mg", work / f"{method}-hf"),
            ):
                r = run_child(f"{method}-{step}", src, dst)
                print(
                    f"{method:<16}{step:<8}{r['seconds']:>9.1f}"
                    f"{model_bytes / r['seconds'] / 1e9:>7.2f}{r['peak_rss'] / 1e9:>13.2f}"
                    f"{r['peak_rss'] / model_bytes:>9.2f}"
                    f"{(r['peak_rss'] - r['base_rss']) / model_bytes:>24.2f}",
                    flush=True,
                )
            print(
                f"{method:<16}round trip bit-identical: "
                f"{same_weights(work / 'hf', work / f'{method}-hf')}",
                flush=True,
            )
            shutil.rmtree(work / f"{method}-mg", ignore_errors=True)
            shutil.rmtree(work / f"{method}-hf", ignore_errors=True)
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
