"""Make goldens/mindspeed_hf2mg.json by running MindSpeed-LLM's own hf->mg conversion code.

Usage: PYTHONPATH=TRANSFORMERS_4_43 python make_mindspeed_goldens.py MINDSPEED_LLM_CHECKOUT
OUT_JSON ATELIER_SRC (a checkout of MindSpeed-LLM v2.0.0, e.g. `git archive v2.0.0 | tar
-x -C DIR`; transformers 4.43.2, the version it pins, `pip install --target`). Also
writes mindspeed_mg2hf.json next to OUT_JSON: MindSpeed's mg -> hf (loader_mg messages,
saver, HuggingfaceModel.update_module, save_pretrained) of the same checkpoints.

Runs its loader_hf message functions on its HuggingfaceModel, its saver's set_model_*
splitting and padding (through `Recorder`, a stand-in for its Megatron model) and its
Megatron*Model module mappings on CPU, with megatron / mindspeed_llm's NPU side stubbed
(only building the Megatron model and torch.save are skipped). Not a test; it needs
MindSpeed-LLM's source, which is not part of this repository."""

import argparse
import importlib
import importlib.abc
import importlib.machinery
import json
import re
import sys
import types
from pathlib import Path
from unittest import mock

ROOT = Path(sys.argv[1])
STUB = ("megatron", "bitsandbytes", "torch_npu", "mindspeed", "mindspeed_llm")


class Stubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in STUB or name.startswith("mindspeed_llm.training"):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = mock.MagicMock(name=spec.name)
        m.__path__, m.__spec__, m.__name__ = [], spec, spec.name
        return m

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, Stubs())
pkg = types.ModuleType("mscheck")
pkg.__path__ = [str(ROOT / "mindspeed_llm/tasks/checkpoint")]
sys.modules["mscheck"] = pkg
models = importlib.import_module("mscheck.models")
loader_hf = importlib.import_module("mscheck.loader_hf")
saver = importlib.import_module("mscheck.saver")
loader_mg = importlib.import_module("mscheck.loader_mg")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from golden_models import CASES, digest, make_golden_model  # noqa: E402

DT = {"fp16": torch.float16, "bf16": torch.bfloat16}


class Recorder:
    """Stands in for MindSpeed's MegatronModel in saver.set_model_*: records set_* calls."""

    def __init__(self, margs, md):
        self.args, self._md, self.calls = margs, md, []

    def get_args(self):
        return self.args

    def get_metadata(self):
        return self._md

    def get_embedding_module(self):
        return object()

    def get_first_k_dense_replace(self):
        return self.args.num_layers

    def get_moe_layer_freq(self):
        return 1

    def __getattr__(self, name):
        if not name.startswith("set_"):
            raise AttributeError(name)

        def record(**kw):
            self.calls.append(
                (
                    name,
                    kw.get("tp_rank", 0),
                    kw.get("pp_rank", 0),
                    kw.get("layer_idx"),
                    kw["data"].to(self.args.params_dtype).clone(),
                )
            )

        return record


def mapping(mcore: bool):
    dummy = argparse.Namespace(
        model_cfg=models.ModelBase.read_model_cfg(
            argparse.Namespace(ckpt_cfg_path=str(ROOT / "configs/checkpoint/model_cfg.json"))
        ),
        args_cmd=argparse.Namespace(model_type_hf="llama2"),
    )
    cls = models.MegatronMCoreModel if mcore else models.MegatronLegacyModel
    cls.get_module_mapping(dummy)
    return dummy.module_mapping


def _hf_model(bias: bool, **cmd):  # MindSpeed's HuggingfaceModel, loaded like its CLI does
    args_cmd = argparse.Namespace(
        model_type_hf="llama2",
        ckpt_cfg_path=str(ROOT / "configs/checkpoint/model_cfg.json"),
        add_qkv_bias=bias,
        add_dense_bias=False,
        post_norm=False,
        orm=False,
        **cmd,
    )
    hf = models.HuggingfaceModel(args_cmd)
    hf.get_modules_from_pretrained()
    return hf


def convert(hf_dir, tp, pp, mcore, dtype, bias):
    hf = _hf_model(bias, save_model_type="mg", load_dir=str(hf_dir), target_tensor_parallel_size=tp)
    hf.has_embedding_position_embeddings_module = lambda **kw: False  # rope: none
    h = hf.get_args()
    md = _metadata(h.untie_embeddings_and_output_weights, h.vocab_size)
    from math import ceil

    padded = ceil(h.vocab_size / tp) * tp  # _vocab_size_with_padding, divisible_by 1
    margs = _margs(tp, bias, h.num_layers, dtype, padded_vocab_size=padded)
    rec = Recorder(margs, md)
    rec.args.use_mcore_models = mcore
    cmd = argparse.Namespace(post_norm=False, add_qkv_bias=bias, add_dense_bias=False)
    msg = loader_hf.get_message_preprocess(hf, md)
    loader_hf.to_detach(msg)
    msg = {k: v.to(dtype) for k, v in msg.items()}
    out_embed = saver.set_model_preprocess(rec, msg)
    per = h.num_layers // pp
    total = 0
    for p in range(pp):
        for j in range(per):
            m = {}
            m = loader_hf.get_message_layer_norm(m, hf, total, md, cmd)
            m = loader_hf.get_message_layer_attn(m, hf, total, md, cmd)
            m = loader_hf.get_message_layer_mlp(m, hf, total, md)
            loader_hf.to_detach(m)
            m = {k: v.to(dtype) for k, v in m.items()}
            kw = {"vp_rank": 0, "pp_rank": p, "layer_idx": j}
            saver.set_model_layer_norm(rec, m, md, **kw)
            saver.set_model_layer_attn(rec, m, md, **kw)
            saver.set_model_layer_mlp(rec, m, md, total, **kw)
            assert not m, m
            total += 1
        if p == pp - 1:
            kw = {"vp_rank": 0, "pp_rank": p}
            m = {k: v.to(dtype) for k, v in loader_hf.get_message_postprocess(hf, md).items()}
            saver.set_model_postprocess(rec, m, md, out_embed, **kw)
            if md.output_layer:
                m = {
                    k: v.detach().to(dtype)
                    for k, v in loader_hf.get_message_output_layer(hf, md).items()
                }
                saver.set_model_output_layer(rec, m, md, **kw)
    names = mapping(mcore)
    ranks = {}
    for method, t, p, layer, data in rec.calls:
        key = method.removeprefix("set_")
        attr, suffix = key.rsplit("_", 1)
        path = names[attr].replace("[layer_idx]", f".{layer}")
        name = f"{path}.{suffix}"
        if not mcore and name == "word_embeddings.weight":
            name = (
                "word_embeddings_for_head.weight"  # legacy GPTModel.state_dict_for_save_checkpoint
            )
        rank = f"mp_rank_{t:02d}" if pp == 1 else f"mp_rank_{t:02d}_{p:03d}"
        ranks.setdefault(rank, {})[name] = digest(data)
    return ranks


def _metadata(untied: bool, true_vocab: int | None) -> argparse.Namespace:
    """The loader's `md` for a dense Llama-layout model (loader_hf/loader_mg build_metadata)."""
    return argparse.Namespace(
        position_embedding_type="rope",
        linear_bias=False,
        swiglu=True,
        norm_has_bias=False,
        output_layer=untied,
        true_vocab_size=true_vocab,
        add_output_layer_bias=False,
        qk_layernorm=False,
        rm_head=False,
    )


def _margs(tp: int, bias: bool, layers: int, dtype, **more) -> argparse.Namespace:
    """The Megatron args MindSpeed's loader/saver functions read, for a dense model."""
    return argparse.Namespace(
        tensor_model_parallel_size=tp,
        expert_model_parallel_size=1,
        post_norm=False,
        add_qkv_bias=bias,
        add_dense_bias=False,
        num_experts=None,
        num_layers=layers,
        params_dtype=dtype,
        **more,
    )


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


class MegatronFake:
    """Stands in for loader_mg's Megatron model: get_* read the rank state dicts (cast to
    its --params-dtype) under the names of MindSpeed's module mappings."""

    def __init__(self, ranks, names, margs, layers_per_stage):
        self.ranks, self.names, self.args = ranks, names, margs
        self.layers_per_stage, self.stage = layers_per_stage, 0

    def get_args(self):
        return self.args

    def get_layers_module(self, **kw):
        return [None] * self.layers_per_stage

    def get_first_k_dense_replace(self):
        return self.args.num_layers

    def get_moe_layer_freq(self):
        return 1

    def _name(self, key, what, kw):
        path = self.names[key].replace("[layer_idx]", f".{kw.get('layer_idx') or 0}")
        return f"{path}.{what}"

    def __getattr__(self, attr):
        m = re.match(r"^(get|has)_(.+)_(weight|bias)$", attr)
        if not m:
            raise AttributeError(attr)
        op, key, what = m.groups()

        def fn(**kw):
            state = self.ranks[(kw.get("tp_rank", 0), self.stage)]
            name = self._name(key, what, kw)
            if op == "has":
                return name in state
            return state[name].to(self.args.params_dtype)

        return fn


class SavedSource:
    """What the saver's T=1 Megatron model holds (Recorder calls), read by HF update_module."""

    def __init__(self, calls, margs):
        self.data, self.args = {}, margs
        for method, _, _, layer, data in calls:
            key, what = method.removeprefix("set_").rsplit("_", 1)
            self.data[(key, what, layer)] = data

    def get_args(self):
        return self.args

    def __getattr__(self, attr):
        m = re.match(r"^(get|has)_(.+)_(weight|bias|module)$", attr)
        if not m:
            raise AttributeError(attr)
        op, key, what = m.groups()

        def fn(**kw):
            layer = kw.get("layer_idx", kw.get("src_layer_idx"))
            found = [(k, v) for k, v in self.data.items() if k[0] == key and k[2] == layer]
            if op == "has":
                return any(k[1] == what for k, _ in found) if what != "module" else bool(found)
            return next(v for k, v in found if k[1] == what)

        return fn


def convert_back(mg_dir, hf_dir, mcore, dtype, bias, out_dir):
    """MindSpeed's mg -> hf: loader_mg messages, saver (T=1) set_model_*, HF update_module,
    save_pretrained into out_dir; returns {name: digest} of what save_pretrained wrote."""
    from safetensors.torch import load_file

    files = sorted((Path(mg_dir) / "iter_0000001").glob("mp_rank_*/model_optim_rng.pt"))
    ranks, tp, pp = {}, 1, 1
    for f in files:
        m = re.match(r"mp_rank_(\d+)(?:_(\d+))?", f.parent.name)
        t, p = int(m[1]), int(m[2] or 0)
        ck = torch.load(f, weights_only=False)
        ranks[(t, p)] = _flat(ck["model"])
        tp, pp = max(tp, t + 1), max(pp, p + 1)
        a = ck["args"]
    margs = _margs(
        tp,
        bias,
        a.num_layers,
        dtype,
        num_layer_list=None,
        position_embedding_type="rope",
        embed_layernorm=False,
        hidden_size=a.hidden_size,
        padded_vocab_size=a.padded_vocab_size,
        use_mcore_models=mcore,
    )
    md = _metadata(a.untie_embeddings_and_output_weights, None)
    fake = MegatronFake(ranks, mapping(mcore), margs, a.num_layers // pp)
    rec = Recorder(argparse.Namespace(**{**vars(margs), "tensor_model_parallel_size": 1}), md)
    msg = loader_mg.get_message_preprocess(fake, margs)
    out_embed = saver.set_model_preprocess(rec, msg)
    total = 0
    for p in range(pp):
        fake.stage = p
        kwargs = {"vp_rank": 0, "pp_rank": p}
        for j in range(a.num_layers // pp):
            kwargs["layer_idx"] = j
            m = {}
            m = loader_mg.get_message_layer_norm(m, fake, md, **kwargs)
            m = loader_mg.get_message_layer_attn(m, fake, md, **kwargs)
            m = loader_mg.get_message_layer_mlp(m, fake, md, **kwargs)
            kw = {"vp_rank": 0, "pp_rank": 0, "layer_idx": total}
            saver.set_model_layer_norm(rec, m, md, **kw)
            saver.set_model_layer_attn(rec, m, md, **kw)
            saver.set_model_layer_mlp(rec, m, md, total, **kw)
            total += 1
    kwargs = {"pp_rank": pp - 1, "vp_rank": 0}
    m = loader_mg.get_message_postprocess(fake, md, **kwargs)
    saver.set_model_postprocess(rec, m, md, out_embed, vp_rank=0, pp_rank=0)
    if md.output_layer:
        m = loader_mg.get_message_output_layer(fake, md, **kwargs)
        saver.set_model_output_layer(rec, m, md, vp_rank=0, pp_rank=0)
    hf = _hf_model(bias, save_model_type="hf", save_dir=str(hf_dir), load_dir=str(mg_dir))
    hf.update_module(SavedSource(rec.calls, argparse.Namespace(num_experts=None)))
    hf.get_model_item().save_pretrained(str(out_dir))
    state = {}
    for f in sorted(Path(out_dir).glob("*.safetensors")):
        state.update(load_file(str(f)))
    return {k: digest(v) for k, v in sorted(state.items())}


if __name__ == "__main__":
    import subprocess
    import tempfile

    out, back = {}, {}
    for case, (family, stored, tied, flags) in CASES.items():
        f = flags.split()
        tp = int(f[f.index("-T") + 1]) if "-T" in f else 1
        pp = int(f[f.index("-P") + 1]) if "-P" in f else 1
        mcore = "--mcore" in f
        dtype = DT["bf16" if "bf16" in f else "fp16"]
        d = Path(tempfile.mkdtemp()) / case
        make_golden_model(d, family, stored, tied)
        out[case] = convert(d, tp, pp, mcore, dtype, family == "qwen2")
        # mg -> hf from the Megatron checkpoint MindSpeed's layout above describes: written
        # by Atelier's hf2mg, checked equal to it tensor by tensor first
        mg = d.parent / "mg"
        argv = [sys.executable, "-m", "atelier", "llm", "convert", "--load-model-type", "hf"]
        argv += ["--save-model-type", "mg", "--load-dir", str(d), "--save-dir", str(mg)]
        argv += [
            "--target-tensor-parallel-size",
            str(tp),
            "--target-pipeline-parallel-size",
            str(pp),
        ]
        argv += ["--use-mcore-models"] if mcore else []
        argv += ["--params-dtype", "bf16"] if dtype == torch.bfloat16 else []
        argv += ["--add-qkv-bias"] if family == "qwen2" else []
        subprocess.run(
            argv,
            check=True,
            capture_output=True,
            env={**__import__("os").environ, "PYTHONPATH": sys.argv[3]},
        )
        written = {}
        for r in sorted((mg / "iter_0000001").glob("mp_rank_*/model_optim_rng.pt")):
            ck = torch.load(r, weights_only=False)
            written[r.parent.name] = {k: digest(v) for k, v in _flat(ck["model"]).items()}
        assert written == out[case], case
        back[case] = convert_back(mg, d, mcore, DT["fp16"], family == "qwen2", d.parent / "mg2hf")
        print(case, {r: len(v) for r, v in out[case].items()}, len(back[case]))
    Path(sys.argv[2]).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    Path(sys.argv[2]).with_name("mindspeed_mg2hf.json").write_text(
        json.dumps(back, indent=1, sort_keys=True) + "\n"
    )
