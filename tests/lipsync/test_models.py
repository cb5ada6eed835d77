"""State-dict parity with the official Wav2Lip networks (Rudrabha/Wav2Lip, models/*.py).

The official checkpoints are not available offline, so compatibility is proved by
key/shape parity: the tables below were transcribed by hand from the official source
(one entry per conv unit, in module order), independently of atelier's model code.
Unit kinds: c = conv_block(Conv2d, BatchNorm2d) (`Conv2d`), t = the same with
ConvTranspose2d (`Conv2dTranspose`), n = conv_block(Conv2d) (`nonorm_Conv2d`),
p = a bare nn.Conv2d.
"""

from __future__ import annotations

import torch

from atelier.lipsync.models import SyncNet_color, Wav2Lip, Wav2Lip_disc_qual

# prefix kind cin cout kh kw
SYNCNET = """
face_encoder.0 c 15 32 7 7
face_encoder.1 c 32 64 5 5
face_encoder.2 c 64 64 3 3
face_encoder.3 c 64 64 3 3
face_encoder.4 c 64 128 3 3
face_encoder.5 c 128 128 3 3
face_encoder.6 c 128 128 3 3
face_encoder.7 c 128 128 3 3
face_encoder.8 c 128 256 3 3
face_encoder.9 c 256 256 3 3
face_encoder.10 c 256 256 3 3
face_encoder.11 c 256 512 3 3
face_encoder.12 c 512 512 3 3
face_encoder.13 c 512 512 3 3
face_encoder.14 c 512 512 3 3
face_encoder.15 c 512 512 3 3
face_encoder.16 c 512 512 1 1
audio_encoder.0 c 1 32 3 3
audio_encoder.1 c 32 32 3 3
audio_encoder.2 c 32 32 3 3
audio_encoder.3 c 32 64 3 3
audio_encoder.4 c 64 64 3 3
audio_encoder.5 c 64 64 3 3
audio_encoder.6 c 64 128 3 3
audio_encoder.7 c 128 128 3 3
audio_encoder.8 c 128 128 3 3
audio_encoder.9 c 128 256 3 3
audio_encoder.10 c 256 256 3 3
audio_encoder.11 c 256 256 3 3
audio_encoder.12 c 256 512 3 3
audio_encoder.13 c 512 512 1 1
"""

WAV2LIP = """
face_encoder_blocks.0.0 c 6 16 7 7
face_encoder_blocks.1.0 c 16 32 3 3
face_encoder_blocks.1.1 c 32 32 3 3
face_encoder_blocks.1.2 c 32 32 3 3
face_encoder_blocks.2.0 c 32 64 3 3
face_encoder_blocks.2.1 c 64 64 3 3
face_encoder_blocks.2.2 c 64 64 3 3
face_encoder_blocks.2.3 c 64 64 3 3
face_encoder_blocks.3.0 c 64 128 3 3
face_encoder_blocks.3.1 c 128 128 3 3
face_encoder_blocks.3.2 c 128 128 3 3
face_encoder_blocks.4.0 c 128 256 3 3
face_encoder_blocks.4.1 c 256 256 3 3
face_encoder_blocks.4.2 c 256 256 3 3
face_encoder_blocks.5.0 c 256 512 3 3
face_encoder_blocks.5.1 c 512 512 3 3
face_encoder_blocks.6.0 c 512 512 3 3
face_encoder_blocks.6.1 c 512 512 1 1
audio_encoder.0 c 1 32 3 3
audio_encoder.1 c 32 32 3 3
audio_encoder.2 c 32 32 3 3
audio_encoder.3 c 32 64 3 3
audio_encoder.4 c 64 64 3 3
audio_encoder.5 c 64 64 3 3
audio_encoder.6 c 64 128 3 3
audio_encoder.7 c 128 128 3 3
audio_encoder.8 c 128 128 3 3
audio_encoder.9 c 128 256 3 3
audio_encoder.10 c 256 256 3 3
audio_encoder.11 c 256 512 3 3
audio_encoder.12 c 512 512 1 1
face_decoder_blocks.0.0 c 512 512 1 1
face_decoder_blocks.1.0 t 1024 512 3 3
face_decoder_blocks.1.1 c 512 512 3 3
face_decoder_blocks.2.0 t 1024 512 3 3
face_decoder_blocks.2.1 c 512 512 3 3
face_decoder_blocks.2.2 c 512 512 3 3
face_decoder_blocks.3.0 t 768 384 3 3
face_decoder_blocks.3.1 c 384 384 3 3
face_decoder_blocks.3.2 c 384 384 3 3
face_decoder_blocks.4.0 t 512 256 3 3
face_decoder_blocks.4.1 c 256 256 3 3
face_decoder_blocks.4.2 c 256 256 3 3
face_decoder_blocks.5.0 t 320 128 3 3
face_decoder_blocks.5.1 c 128 128 3 3
face_decoder_blocks.5.2 c 128 128 3 3
face_decoder_blocks.6.0 t 160 64 3 3
face_decoder_blocks.6.1 c 64 64 3 3
face_decoder_blocks.6.2 c 64 64 3 3
output_block.0 c 80 32 3 3
output_block.1 p 32 3 1 1
"""

DISC = """
face_encoder_blocks.0.0 n 3 32 7 7
face_encoder_blocks.1.0 n 32 64 5 5
face_encoder_blocks.1.1 n 64 64 5 5
face_encoder_blocks.2.0 n 64 128 5 5
face_encoder_blocks.2.1 n 128 128 5 5
face_encoder_blocks.3.0 n 128 256 5 5
face_encoder_blocks.3.1 n 256 256 5 5
face_encoder_blocks.4.0 n 256 512 3 3
face_encoder_blocks.4.1 n 512 512 3 3
face_encoder_blocks.5.0 n 512 512 3 3
face_encoder_blocks.5.1 n 512 512 3 3
face_encoder_blocks.6.0 n 512 512 3 3
face_encoder_blocks.6.1 n 512 512 1 1
binary_pred.0 p 512 1 1 1
"""


def expected_state(table: str) -> dict[str, tuple[int, ...]]:
    """Expand the unit table into the official state-dict keys and shapes, in order."""
    out: dict[str, tuple[int, ...]] = {}
    for line in table.strip().splitlines():
        prefix, kind, cin, cout, kh, kw = line.split()
        cin, cout, kh, kw = int(cin), int(cout), int(kh), int(kw)
        conv = f"{prefix}.conv_block.0" if kind in "ctn" else prefix
        weight = (cin, cout, kh, kw) if kind == "t" else (cout, cin, kh, kw)
        out[f"{conv}.weight"] = weight
        out[f"{conv}.bias"] = (cout,)
        if kind in "ct":
            bn = f"{prefix}.conv_block.1"
            for name in ("weight", "bias", "running_mean", "running_var"):
                out[f"{bn}.{name}"] = (cout,)
            out[f"{bn}.num_batches_tracked"] = ()
    return out


def actual_state(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_syncnet_state_dict_matches_official() -> None:
    assert list(actual_state(SyncNet_color()).items()) == list(expected_state(SYNCNET).items())


def test_wav2lip_state_dict_matches_official() -> None:
    assert list(actual_state(Wav2Lip()).items()) == list(expected_state(WAV2LIP).items())


def test_disc_state_dict_matches_official() -> None:
    assert list(actual_state(Wav2Lip_disc_qual()).items()) == list(expected_state(DISC).items())


def test_forward_shapes() -> None:
    """Shapes only, one sample each: training and inference tests run the full paths."""
    torch.manual_seed(0)
    with torch.no_grad():
        out = Wav2Lip().eval()(torch.randn(1, 1, 80, 16), torch.rand(1, 6, 96, 96))
        assert out.shape == (1, 3, 96, 96)
        assert float(out.min()) >= 0 and float(out.max()) <= 1
        a, v = SyncNet_color().eval()(torch.randn(1, 1, 80, 16), torch.rand(1, 15, 48, 96))
        assert a.shape == v.shape == (1, 512)
        assert torch.allclose(a.norm(dim=1), torch.ones(1), atol=1e-5)
        d = Wav2Lip_disc_qual().eval()(torch.rand(1, 3, 2, 96, 96))
        assert d.shape == (2, 1)
