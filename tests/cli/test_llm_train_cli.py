"""`atelier llm train` / `run` flags: MindSpeed-LLM script lines parse, the environment form,
one-line errors for bad input (these run without training a step)."""

from __future__ import annotations

import logging
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from atelier.cli.llm_train import train_request
from atelier.cli.main import build_parser
from atelier.llm.train.env import ENV_TO_FIELD

# The argument lines of MindSpeed-LLM's examples/mcore/llama2/pretrain_llama2_13b_ptd.sh
# ($GPT_ARGS $DATA_ARGS $OUTPUT_ARGS $CKPT_ARGS and the trailing flags), paths filled in.
MINDSPEED_LLAMA2_PRETRAIN = """
    --use-mcore-models --tensor-model-parallel-size 8 --pipeline-model-parallel-size 1
    --sequence-parallel --num-layers 40 --hidden-size 5120 --ffn-hidden-size 13824
    --num-attention-heads 40 --tokenizer-type PretrainedFromHF --tokenizer-name-or-path TOK
    --seq-length 4096 --max-position-embeddings 4096 --micro-batch-size 4
    --global-batch-size 512 --make-vocab-size-divisible-by 1 --lr 1e-6 --train-iters 5000
    --lr-decay-style cosine --untie-embeddings-and-output-weights --disable-bias-linear
    --attention-dropout 0.0 --init-method-std 0.01 --hidden-dropout 0.0
    --position-embedding-type rope --normalization RMSNorm --use-fused-rmsnorm --swiglu
    --use-flash-attn --no-masked-softmax-fusion --attention-softmax-in-fp32 --min-lr 1e-8
    --weight-decay 1e-1 --lr-warmup-fraction 0.01 --clip-grad 1.0 --adam-beta1 0.9
    --initial-loss-scale 4096 --adam-beta2 0.95 --no-gradient-accumulation-fusion
    --load CKPT --no-load-optim --no-load-rng --use-fused-swiglu --use-fused-rotary-pos-emb
    --bf16 --ckpt-format torch
    --data-path DATA --handler-name GeneralPretrainHandler --split 949,50,1
    --log-interval 1 --save-interval 10000 --eval-interval 1000 --eval-iters 10
    --enable-hf2mg-convert --model-type-hf llama2
    --distributed-backend nccl --save SAVE --transformer-impl local
"""
# MindSpeed-LLM's examples/mcore/qwen3/tune_qwen3_0point6b_4K_full_ptd.sh ($GPT_ARGS ...).
MINDSPEED_QWEN3_TUNE = """
    --use-mcore-models --tensor-model-parallel-size 1 --pipeline-model-parallel-size 1
    --sequence-parallel --spec mindspeed_llm.tasks.models.spec.qwen3_spec layer_spec
    --kv-channels 128 --qk-layernorm --use-flash-attn --num-layers 28 --hidden-size 1024
    --use-rotary-position-embeddings --num-attention-heads 16 --ffn-hidden-size 3072
    --max-position-embeddings 32768 --seq-length 8192 --train-iters 2000
    --micro-batch-size 1 --global-batch-size 16 --make-vocab-size-divisible-by 1
    --padded-vocab-size 151936 --rotary-base 1000000 --disable-bias-linear --swiglu
    --tokenizer-type PretrainedFromHF --tokenizer-name-or-path TOK --normalization RMSNorm
    --position-embedding-type rope --norm-epsilon 1e-6 --hidden-dropout 0
    --attention-dropout 0 --no-gradient-accumulation-fusion --attention-softmax-in-fp32
    --exit-on-missing-checkpoint --no-masked-softmax-fusion --group-query-attention
    --num-query-groups 8 --seed 42 --bf16 --min-lr 1.25e-7 --weight-decay 1e-1
    --lr-warmup-fraction 0.01 --clip-grad 1.0 --adam-beta1 0.9 --adam-beta2 0.95
    --no-load-optim --no-load-rng --lr 1.25e-6 --ckpt-format torch
    --data-path DATA --split 100,0,0 --handler-name AlpacaStyleInstructionHandler
    --finetune --stage sft --is-instruction-dataset --prompt-type qwen3
    --log-interval 1 --save-interval 2000 --eval-interval 2000 --eval-iters 0
    --load CKPT --save SAVE --distributed-backend nccl
"""


@pytest.fixture
def clean_env(monkeypatch):
    for var in [*ENV_TO_FIELD, "RUN_TYPE", "SN", "EPOCH", "CONVERT_MG2HF"]:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _parse(line: str):
    return build_parser().parse_args(["llm", "train", *shlex.split(line)])


def test_mindspeed_pretrain_line_parses(clean_env, caplog) -> None:
    caplog.set_level(logging.INFO)
    req = train_request(_parse(MINDSPEED_LLAMA2_PRETRAIN))
    c = req.config
    assert (c["tensor_model_parallel_size"], c["micro_batch_size"], c["global_batch_size"]) == (
        8,
        4,
        512,
    )
    assert (c["lr"], c["min_lr"], c["lr_decay_style"], c["train_iters"]) == (
        1e-6,
        1e-8,
        "cosine",
        5000,
    )
    assert c["bf16"] and c["no_load_optim"] and c["make_vocab_size_divisible_by"] == 1
    assert req.shape["num_layers"] == 40 and req.shape["max_position_embeddings"] == 4096
    assert req.agree["untie_embeddings_and_output_weights"] is True
    assert req.data_path == ["DATA"] and req.load == Path("CKPT") and req.save == Path("SAVE")
    assert req.split == "949,50,1" and not req.is_instruction
    notes = [r.getMessage() for r in caplog.records if "no effect" in r.getMessage()]
    assert len(notes) == 1 and "--use-fused-rmsnorm" in notes[0] and "--spec" not in notes[0]


def test_mindspeed_sft_line_parses(clean_env) -> None:
    req = train_request(_parse(MINDSPEED_QWEN3_TUNE))
    assert req.is_instruction and req.config["finetune"] and req.config["seed"] == 42
    assert req.agree["kv_channels"] == 128 and req.agree["qk_layernorm"] is True
    assert req.config["extra_args"]["prompt_type"] == "qwen3"
    assert req.shape["num_query_groups"] == 8 and req.seq_length == 8192


@pytest.mark.parametrize(
    "extra,needle",
    [
        ("--num-experts 8", "unrecognized arguments: --num-experts"),
        ("--hidden-dropout 0.1", "--hidden-dropout"),
        ("--ckpt-format torch_dist", "--ckpt-format"),
        ("--position-embedding-type alibi", "--position-embedding-type"),
    ],
)
def test_unknown_or_unsupported_flag_is_one_line(extra, needle) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "atelier", "llm", "train", "--data-path", "d", *extra.split()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_environment_form(clean_env) -> None:
    env = {
        "DATA_PATH": "/d/corpus_text_document",
        "TOKENIZER_PATH": "/tok",
        "CKPT_LOAD_DIR": "/mg",
        "CKPT_SAVE_PATH": "/out",
        "MBS": "2",
        "GBS": "16",
        "TP": "2",
        "PP": "1",
        "LR": "3e-4",
        "MIN_LR": "3e-5",
        "SEQ_LEN": "1024",
        "SN": "1000",
        "EPOCH": "2",
        "SEED": "7",
        "RUN_TYPE": "pretrain",
        "MODEL_NAME": "llama2-7b",
        "CONVERT_MG2HF": "True",
    }
    for k, v in env.items():
        clean_env.setenv(k, v)
    req = train_request(build_parser().parse_args(["llm", "train"]))
    c = req.config
    assert req.data_path == ["/d/corpus_text_document"] and req.tokenizer == "/tok"
    assert req.load == Path("/mg") and req.save == Path("/out") and req.seq_length == 1024
    assert (c["micro_batch_size"], c["global_batch_size"], c["tensor_model_parallel_size"]) == (
        2,
        16,
        2,
    )
    assert (c["lr"], c["min_lr"], c["seed"]) == (3e-4, 3e-5, 7)
    assert c["train_iters"] == 125  # ceil(SN x EPOCH / GBS)
    assert req.convert_mindspeed and c["extra_args"]["model_name"] == "llama2-7b"
    # a flag wins over its variable
    req = train_request(build_parser().parse_args(["llm", "train", "--micro-batch-size", "4"]))
    assert req.config["micro_batch_size"] == 4
    clean_env.setenv("RUN_TYPE", "sft")
    req = train_request(build_parser().parse_args(["llm", "train"]))
    assert req.is_instruction and req.config["finetune"]


@pytest.mark.parametrize(
    "var,value,needle",
    [
        ("MBS", "0", "MBS='0'"),
        ("LR", "nan", "LR='nan'"),
        ("TP", "two", "TP='two'"),
        ("RUN_TYPE", "dpo", "RUN_TYPE='dpo'"),
        ("CONVERT_MG2HF", "maybe", "CONVERT_MG2HF"),
    ],
)
def test_bad_environment_is_one_line(clean_env, var, value, needle) -> None:
    from atelier.core.errors import AtelierError

    clean_env.setenv("DATA_PATH", "d")
    clean_env.setenv("TRAIN_ITERS", "5")
    clean_env.setenv(var, value)
    with pytest.raises(AtelierError, match=needle.replace("(", r"\(")) as e:
        train_request(build_parser().parse_args(["llm", "train"]))
    assert "\n" not in str(e.value)


def _atelier(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if k not in ENV_TO_FIELD}
    return subprocess.run(
        [sys.executable, "-m", "atelier", "llm", "train", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
    )


def test_bad_inputs_are_one_line_exit_2(tmp_path: Path, clean_env, capsys) -> None:
    """In-process (`main`): these are refused before any process or model is started."""
    import json

    from atelier.cli.main import main

    common = ["--data-path", str(tmp_path / "d"), "--train-iters", "2", "--seq-length", "8"]
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"]}))
    (tmp_path / "empty").mkdir()
    cases = [
        (["--load", str(gpt2)], "unsupported architecture"),
        (["--load", str(tmp_path / "missing")], "no such folder"),
        (["--load", str(tmp_path / "empty")], "the folder is empty"),
        (["--save", "/sys/atelier-cannot-write", "--load", str(gpt2)], "not writable"),
        (["--convert-mg2hf", str(tmp_path / "hf")], "needs --save"),
        ([], "give --train-iters"),
    ]
    for extra, needle in cases:
        argv = [a for a in common if not (extra == [] and a in ("--train-iters", "2"))] + extra
        assert main(["llm", "train", *argv]) == 2, extra
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("atelier: error:"), (extra, lines)
        assert needle in lines[0], (extra, lines[0])
    assert not (tmp_path / "hf").exists()


# --- end to end on the bundled demo data (tiny Llama, a few iterations) -------------------


@pytest.fixture(scope="session")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny HF Llama with the bundled tokenizer, its hf2mg output and preprocessed data."""
    from importlib import resources

    from atelier.llm.convert import Hf2MgOptions, hf2mg
    from atelier.llm.data.preprocess import PreprocessConfig, preprocess
    from atelier.llm.data.tokenizer import TokenizerSpec
    from atelier.llm.demo import tiny_llama

    root = tmp_path_factory.mktemp("train-job")
    assets = resources.files("atelier.llm.assets")
    tok_dir = str(assets / "tokenizer")
    tiny_llama(root / "hf", tok_dir, num_layers=2, hidden=32)
    raw = str(assets / "text_sample.txt")
    preprocess(
        PreprocessConfig(
            input=raw,
            output_prefix=str(root / "text"),
            tokenizer=TokenizerSpec(name_or_path=tok_dir),
            append_eod=True,
        )
    )
    hf2mg(Hf2MgOptions(load_dir=root / "hf", save_dir=root / "mg"))
    return {"root": root, "hf": root / "hf", "mg": root / "mg", "raw": Path(raw)}


def _env_job(job: dict[str, Path], save: Path, iters: int) -> dict[str, str]:
    return {
        "DATA_PATH": str(job["root"] / "text_text_document"),
        "TOKENIZER_PATH": str(job["hf"]),
        "CKPT_LOAD_DIR": str(job["mg"]),
        "CKPT_SAVE_PATH": str(save),
        "MBS": "2",
        "GBS": "4",
        "SEQ_LEN": "32",
        "TRAIN_ITERS": str(iters),
        "LR": "1e-3",
    }


FAST = ["--device", "cpu", "--eval-iters", "0", "--split", "100,0,0", "--log-interval", "1"]


def test_env_form_trains_logs_and_converts(job, tmp_path: Path) -> None:
    """The guide's environment form only (plus logging flags): metrics.jsonl, TensorBoard
    events as Megatron tags them, and CONVERT_MG2HF's folder that transformers loads."""
    import json

    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModelForCausalLM

    save = tmp_path / "save"
    env = {**_env_job(job, save, 3), "CONVERT_MG2HF": "True"}
    log_file, tb = tmp_path / "metrics.jsonl", tmp_path / "tb"
    r = _atelier(*FAST, "--log-file", str(log_file), "--tensorboard-dir", str(tb), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [x["iteration"] for x in recs] == [2, 3]  # hf2mg output is iteration 1
    keys = {"iteration", "consumed_samples", "lm_loss", "lr", "grad_norm", "tokens_per_s"}
    assert all(keys <= set(x) for x in recs) and recs[-1]["consumed_samples"] == 8
    events = EventAccumulator(str(tb))
    events.Reload()
    assert {"lm loss", "learning-rate", "grad-norm", "lm loss vs samples"} <= set(
        events.Tags()["scalars"]
    )
    assert [e.step for e in events.Scalars("lm loss")] == [2, 3]
    hf_out = save / "mg2hf_iteration3"
    assert f"Hugging Face model written to {hf_out}" in r.stdout
    model = AutoModelForCausalLM.from_pretrained(hf_out)
    with torch.no_grad():
        out = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 6)


@pytest.mark.parametrize("nproc", [1, 2])
def test_sigterm_saves_and_exits_0(job, tmp_path: Path, nproc: int) -> None:
    """SIGTERM to the process the user started: with --nproc-per-node 2 (TP 2) the parent
    passes it on to the ranks it spawned; every rank stops after the same iteration."""
    import os
    import signal
    import time

    save, log_file = tmp_path / "save", tmp_path / "m.jsonl"
    base = {k: v for k, v in os.environ.items() if k not in ENV_TO_FIELD}
    spawn = ["--nproc-per-node", "2", "--tensor-model-parallel-size", "2"] if nproc > 1 else []
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atelier",
            "llm",
            "train",
            *FAST,
            *spawn,
            "--log-file",
            str(log_file),
        ],
        env={**base, **_env_job(job, save, 500)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        log_file.is_file() and log_file.read_text().count("\n") >= 1
    ):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    line = next(x for x in out.splitlines() if x.startswith("stopped by SIGTERM"))
    it = int(line.split("after iteration ")[1].split(";")[0])
    assert f"checkpoint saved to {save / f'iter_{it:07d}'}" in line
    assert (save / "latest_checkpointed_iteration.txt").read_text().strip() == str(it)
    assert err.count("SIGTERM received: finishing iteration") == 1


def test_llm_run_does_the_whole_job_and_skips_what_exists(job, tmp_path: Path) -> None:
    import os

    env = {
        "MODEL_PATH": str(job["hf"]),
        "CONVERT_MODEL_PATH": str(tmp_path / "converted"),
        "DATA_PATH": str(tmp_path / "data" / "corpus_text_document"),
        "ORIGINAL_TRAIN_DATA_PATH": str(job["raw"]),
        "TOKENIZER_PATH": str(job["hf"]),
        "CKPT_SAVE_PATH": str(tmp_path / "save"),
        "MBS": "2",
        "GBS": "4",
        "SEQ_LEN": "32",
        "TRAIN_ITERS": "2",
        "RUN_TYPE": "pretrain",
    }
    base = {k: v for k, v in os.environ.items() if k not in ENV_TO_FIELD}

    def run() -> str:
        r = subprocess.run(
            [sys.executable, "-m", "atelier", "llm", "run", *FAST],
            capture_output=True,
            text=True,
            timeout=300,
            env={**base, **env},
        )
        assert r.returncode == 0, r.stderr[-3000:]
        return r.stdout

    first = run()
    assert "preprocess: " in first and "hf2mg: " in first and ": skipped" not in first
    hf_out = tmp_path / "save" / "mg2hf_iteration2"
    assert f"Hugging Face model written to {hf_out}" in first
    second = run()
    assert "preprocess: skipped" in second and "hf2mg: skipped" in second
    assert "trained 0 iterations" in second and "Hugging Face model: skipped" in second


def test_library_errors_name_the_flags(job, clean_env, capsys) -> None:
    from atelier.cli.main import main

    env = _env_job(job, job["root"] / "unused-save", 2)
    missing = job["root"] / "nope_text_document"
    for k, v in env.items():
        clean_env.setenv(k, v)
    assert main(["llm", "train", *FAST, "--data-path", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"atelier: error: --data-path {missing}: no dataset")
    for extra, needle in (  # these reach the engine, so in a process of their own
        (["--global-batch-size", "3"], "--global-batch-size 3 is not divisible by --micro-batch"),
        (["--num-layers", "7"], "--num-layers 7 disagrees with the checkpoint's"),
        (["--seq-length", "999"], "--seq-length 999 is longer than the model's"),
    ):
        r = _atelier(*FAST, *extra, env=env)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], (extra, r.stderr)
    assert not (job["root"] / "unused-save" / "latest_checkpointed_iteration.txt").exists()
