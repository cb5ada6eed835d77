"""`atelier sd serve` flags: AUTOMATIC1111's launch command works, mistakes are one line."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys

import pytest

from atelier.cli.main import build_parser
from atelier.core.errors import AtelierError

# the platform guide's A1111 start command, with only the program changed
GUIDE = [
    "--skip-torch-cuda-test",
    "--enable-insecure-extension-access",
    "--listen",
    "--log-startup",
    "--disable-safe-unpickle",
    "--skip-prepare-environment",
    "--api",
    "--port",
    "8183",
]


def _settings(argv):
    from atelier.cli.sd import settings_from_args

    return settings_from_args(build_parser().parse_args(["sd", "serve", *argv]))


def test_guide_start_command_is_accepted_with_notes(tiny_sdxl):
    from atelier.sd.serve import resolve

    settings, notes = _settings([*GUIDE, "--ckpt", str(tiny_sdxl[0]), "--app-code", "c0de"])
    assert settings.port == 8183 and settings.listen and settings.model == str(tiny_sdxl[0])
    assert resolve(settings).host == "0.0.0.0"
    text = "\n".join(notes)
    for flag in set(GUIDE) - {"--listen", "--port", "8183"}:
        assert flag in text, flag
    assert len(notes) <= 4  # one line per reason, not per flag


def test_guide_command_through_the_console_script_fails_only_on_the_missing_model():
    r = subprocess.run(
        [sys.executable, "-m", "atelier", "sd", "serve", *GUIDE, "--ckpt", "/no/such"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == "atelier: error: --model /no/such: no such file or folder"
    assert all(line.startswith("atelier: note: ") for line in lines[:-1])


def test_a1111_flags_with_a_meaning_are_mapped(tiny_sdxl, tmp_path):
    auth_file = tmp_path / "auth.txt"
    auth_file.write_text("carol:pw3\n")
    settings, notes = _settings(
        [
            "--ckpt",
            str(tiny_sdxl[0]),
            "--api-auth",
            "alice:pw1,bob:pw2",
            "--gradio-auth-path",
            str(auth_file),
            "--no-half",
            "--server-name",
            "127.0.0.2",
            "--timeout-keep-alive",
            "30",
            "--subpath",
            "sd",
            "--use-cpu",
            "all",
            "--xformers",
            "--medvram",
            "--no-half-vae",
            "--ckpt-dir",
            "/models",
            "--sub-quad-q-chunk-size",
            "512",
            "--cors-allow-origins",
            "http://a.example,http://b.example",
        ]
    )
    assert settings.api_auth == [("alice", "pw1"), ("bob", "pw2"), ("carol", "pw3")]
    assert settings.dtype == "fp32" and settings.device == "cpu"
    assert settings.host == "127.0.0.2" and settings.keep_alive_s == 30.0
    assert settings.root_path == "sd" and len(settings.cors_origins) == 2
    text = "\n".join(notes)
    for flag in ("--xformers", "--medvram", "--no-half-vae", "--ckpt-dir", "--sub-quad-q"):
        assert flag in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "m", "--not-an-a1111-flag"],
        ["--model", "m", "--port", "99999"],
        ["--model", "m", "--timeout-keep-alive", "0"],
        ["--model", "m", "--device-id", "-1"],
        ["--model", "m", "--sub-quad-chunk-threshold", "101"],
        ["--model", "m", "--max-batch-pixels", "10"],
        ["--model", "m", "--header-timeout", "nan"],
        ["--model", "m", "--body-timeout", "0"],
        ["--model", "m", "--dtype", "fp8"],
        ["--model", "m", "--attention", "xformers"],
        ["--model", "m", "--precision", "half"],
        ["--model", "m", "--loglevel", "LOUD"],
    ],
)
def test_parse_time_mistakes_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["sd", "serve", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atelier: error:")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--model (or A1111's --ckpt) is required"),
        (["--model", "a", "--ckpt", "b"], "different models"),
        (["--model", "m", "--api-auth", "alice"], "--api-auth"),
        (["--model", "m", "--api-auth", ":pw"], "--api-auth"),
        (["--model", "m", "--api-auth", ","], "--api-auth"),
        (["--model", "m", "--gradio-auth-path", "/no/such"], "--gradio-auth-path"),
        (["--model", "m", "--dtype", "fp16", "--no-half"], "contradict"),
        (["--model", "m", "--device", "cuda:0", "--device-id", "1"], "contradicts"),
    ],
)
def test_flag_combinations_that_make_no_sense(argv, message):
    with pytest.raises(AtelierError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _settings(argv)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"app_code": ""}, "--app-code"),
        ({"app_code": "has space"}, "--app-code"),
        ({"app_code": "naïve"}, "--app-code"),
        ({"device": "cpu:x"}, "--device"),
        ({"device": "gpu"}, "--device"),
        ({"vae": "/no/such"}, "--vae"),
        ({"config_dir": "/tmp"}, "--config-dir"),
        ({"tls_keyfile": "/no/key"}, "--tls-keyfile and --tls-certfile"),
        ({"tls_keyfile": "/no/key", "tls_certfile": "/no/cert"}, "--tls-keyfile"),
        ({"max_size": 100}, "--max-size"),
    ],
)
def test_resolve_refuses_before_loading(tiny_sdxl, patch, message):
    from atelier.sd.serve import resolve

    from .conftest import make_settings

    settings = make_settings(tiny_sdxl)
    for key, value in patch.items():
        setattr(settings, key, value)
    with pytest.raises(AtelierError, match=message):
        resolve(settings)


def test_a_bad_certificate_is_refused(tiny_sdxl, tmp_path):
    from atelier.sd.serve import resolve

    from .conftest import make_settings

    (tmp_path / "k").write_text("not a key")
    (tmp_path / "c").write_text("not a cert")
    settings = make_settings(
        tiny_sdxl, tls_keyfile=str(tmp_path / "k"), tls_certfile=str(tmp_path / "c")
    )
    with pytest.raises(AtelierError, match="not a certificate"):
        resolve(settings)


def test_busy_port_and_unknown_host_are_one_line_errors():
    from atelier.sd.http_server import bind

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(AtelierError, match=f"--port {port}: cannot listen"):
            bind("127.0.0.1", port)
    with pytest.raises(AtelierError, match="--host"):
        bind("no-such-host.invalid", 0)
    bind("127.0.0.1", 0).close()


def test_api_auth_pairs_and_app_code_are_both_let_in(tiny_sdxl, engine):
    from fastapi.testclient import TestClient

    from atelier.sd.app import create_app

    from .conftest import make_settings

    settings = make_settings(tiny_sdxl, api_auth=[("alice", "pw1")])
    app = create_app(settings, engine=engine, load=False)

    def basic(user: str, pw: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()}

    with TestClient(app) as c:
        assert c.get("/sdapi/v1/samplers", headers=basic("alice", "pw1")).status_code == 200
        assert (
            c.get("/sdapi/v1/samplers", headers=basic("anyone", settings.app_code)).status_code
            == 200
        )
        assert (
            c.get("/sdapi/v1/samplers", headers={"X-Apig-AppCode": settings.app_code}).status_code
            == 200
        )
        for headers in (
            basic("alice", "pw2"),
            basic("bob", "pw1"),
            basic("alice", ""),
            {"Authorization": "Basic !!!notbase64"},
            {"Authorization": "Bearer pw1"},
            {"X-Apig-AppCode": "pw1"},
        ):
            assert c.get("/sdapi/v1/samplers", headers=headers).status_code == 401, headers
