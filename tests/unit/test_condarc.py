"""conda's configuration: later .condarc files win, the mirror config wins over all of them."""

from __future__ import annotations

from pathlib import Path

from mirror_engine.condarc import condarc_paths, read_condarc
from mirror_engine.config import parse_config


def test_later_files_win_and_only_network_keys_are_taken(tmp_path: Path) -> None:
    system, user = tmp_path / "system", tmp_path / "user"
    system.write_text("ssl_verify: false\nproxy_servers: {http: 'http://old:3128'}\nchannels: [defaults]\n")
    user.write_text("proxy_servers:\n  http: http://proxy:3128\n  https: http://proxy:3128\n")
    found = read_condarc([system, tmp_path / "missing", user])
    assert found == {
        "ssl_verify": False,
        "proxy_servers": {"http": "http://proxy:3128", "https": "http://proxy:3128"},
    }


def test_condarc_env_comes_last(tmp_path: Path) -> None:
    paths = condarc_paths({"CONDARC": "/x/rc", "XDG_CONFIG_HOME": "/xdg"}, tmp_path)
    assert paths[-1] == Path("/x/rc") and Path("/xdg/conda/.condarc") in paths and tmp_path / ".condarc" in paths


def test_the_mirror_config_wins_over_condarc(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not read here")
    conda = {"ssl_verify": str(bundle), "proxy_servers": {"https": "http://proxy:3128"}}
    config = parse_config({"ssl_verify": True}, tmp_path / "c.yaml", conda)
    assert config.ssl_verify is True
    assert config.proxy_servers == {"https": "http://proxy:3128"}
    from_conda = parse_config({}, tmp_path / "c.yaml", conda)
    assert from_conda.ssl_verify == bundle


def test_a_broken_condarc_is_skipped(tmp_path: Path) -> None:
    broken = tmp_path / "rc"
    broken.write_text("ssl_verify: [unclosed\n")
    assert read_condarc([broken]) == {}
