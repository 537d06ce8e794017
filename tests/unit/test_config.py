"""The config file: every bad one is one line naming the key and exit 2; the good ones mean what the reference says."""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirror_engine.cli import main
from mirror_engine.config import DEFAULT_REMOTE_URL, load_config, override_mirror_dir
from mirror_engine.errors import ConfigError


@pytest.fixture(autouse=True)
def restore_cli_logging() -> Iterator[None]:
    """cli.main() points the mirror_engine logger at the stderr of the moment; put it back after each test."""
    logger = logging.getLogger("mirror_engine")
    handlers, level = logger.handlers[:], logger.level
    yield
    logger.handlers[:] = handlers
    logger.setLevel(level)


def write(tmp_path: Path, text: str, name: str = "mirror.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["run", str(path)])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, captured.err


def assert_one_line_error(err: str, path: Path, key: str, phrase: str) -> None:
    assert err.endswith("\n")
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mirror-engine: error: {path}: {key}: "), lines[0]
    assert phrase in lines[0]


BAD_CONFIGS = [
    # unknown keys, with a suggestion when one is close
    pytest.param("blacklst: [numpy]\n", "blacklst", "unknown key; did you mean 'blacklist'?", id="typo-blacklist"),
    pytest.param("platfroms: [linux-64]\n", "platfroms", "did you mean 'platforms'?", id="typo-platforms"),
    pytest.param("licence_blacklist: GPL\n", "licence_blacklist", "did you mean 'license_blacklist'?", id="typo-lic"),
    pytest.param("zzzzzz: 1\n", "zzzzzz", "unknown key; known keys: dest_channel", id="unknown-no-suggestion"),
    # license families
    pytest.param(
        "license_blacklist:\n  - GPL2\n  - GPLv3\n",
        "license_blacklist[1]",
        "'GPLv3' is not a license family; use one of",
        id="license-GPLv3-at-1",
    ),
    pytest.param("license_blacklist: GPL-3.0\n", "license_blacklist[0]", "not a license family", id="license-lone"),
    # pkg_list stands alone
    pytest.param(
        "pkg_list: [numpy]\nblacklist: [scipy]\n", "pkg_list", "cannot be combined with blacklist", id="pkg+black"
    ),
    pytest.param(
        "pkg_list: [numpy]\nwhitelist: [scipy]\n", "pkg_list", "cannot be combined with whitelist", id="pkg+white"
    ),
    pytest.param(
        "pkg_list: numpy\nlicense_blacklist: GPL\n",
        "pkg_list",
        "cannot be combined with license_blacklist",
        id="pkg+license",
    ),
    # channels
    pytest.param("channels: []\n", "channels", "must list at least one channel", id="channels-empty"),
    pytest.param("channels: [./no-such-dir]\n", "channels[0]", "does not exist", id="channels-missing-path"),
    pytest.param(
        "channels: ['file:///no/such/dir']\n", "channels[0]", "does not exist", id="channels-missing-file-url"
    ),
    pytest.param(
        "channels: ['ftp://example.com/pkgs']\n", "channels[0]", "unsupported scheme 'ftp'", id="channels-ftp"
    ),
    pytest.param(
        "channels:\n  - https://repo.example.com/main\n  - s3://bucket/pkgs\n",
        "channels[1]",
        "unsupported scheme 's3'",
        id="channels-second-bad",
    ),
    pytest.param("channels: ['https://']\n", "channels[0]", "has no host", id="channels-no-host"),
    pytest.param("channels: {main: https://x.example}\n", "channels", "valid tuple", id="channels-mapping"),
    pytest.param("channels: [null]\n", "channels[0]", "valid string", id="channels-null-item"),
    # names that must not be paths
    pytest.param("dest_channel: a/b\n", "dest_channel", "not a plain channel name", id="dest-slash"),
    pytest.param("dest_channel: '..'\n", "dest_channel", "not a plain channel name", id="dest-dotdot"),
    pytest.param("dest_channel: ''\n", "dest_channel", "not a plain channel name", id="dest-empty"),
    pytest.param("dest_channel: [a]\n", "dest_channel", "valid string", id="dest-list"),
    pytest.param("platforms: [linux-64, linux/64]\n", "platforms[1]", "not a plain platform name", id="platform-slash"),
    pytest.param("platforms: ['..']\n", "platforms[0]", "not a plain platform name", id="platform-dotdot"),
    pytest.param("platforms: []\n", "platforms", "must list at least one platform", id="platforms-empty"),
    # python versions
    pytest.param("python_versions: [3]\n", "python_versions[0]", "'3' is not a Python version", id="py-3"),
    pytest.param("python_versions: [three]\n", "python_versions[0]", "'three' is not a Python version", id="py-three"),
    pytest.param("python_versions: [3.10, 3.x]\n", "python_versions[1]", "'3.x' is not a Python version", id="py-3.x"),
    # our keys
    pytest.param("concurrency: 0\n", "concurrency", "greater than or equal to 1", id="concurrency-0"),
    pytest.param("concurrency: abc\n", "concurrency", "valid integer", id="concurrency-abc"),
    pytest.param("concurrency: 10000\n", "concurrency", "less than or equal to 512", id="concurrency-10000"),
    pytest.param("retries: -1\n", "retries", "greater than or equal to 0", id="retries-negative"),
    pytest.param("read_timeout: 0\n", "read_timeout", "greater than 0", id="read-timeout-0"),
    pytest.param("connect_timeout: -5\n", "connect_timeout", "greater than 0", id="connect-timeout-negative"),
    pytest.param("retry_backoff_max: 100000\n", "retry_backoff_max", "less than or equal to 3600", id="backoff-max"),
    pytest.param(
        "remote_url: ftp://repo.example.com/\n", "remote_url", "not an http:// or https:// URL", id="remote-ftp"
    ),
    pytest.param("remote_url: not a url\n", "remote_url", "not an http:// or https:// URL", id="remote-garbage"),
    # shape of the file
    pytest.param("channels: [a\nplatforms: linux-64\n", "line 2, column 10", "not valid YAML", id="yaml-syntax"),
    pytest.param("platforms:\n\t- linux-64\n", "line 2, column 1", "not valid YAML", id="yaml-tab"),
    pytest.param(
        "platforms: [linux-64]\nplatforms: [osx-64]\n", "line 2, column 1", "'platforms' is given twice", id="dup-key"
    ),
    pytest.param("retries: true\n", "retries", "valid integer", id="retries-bool"),
    pytest.param("read_timeout: yes\n", "read_timeout", "expected a number of seconds, got True", id="timeout-bool"),
    pytest.param("connect_timeout: soon\n", "connect_timeout", "got 'soon'", id="timeout-text"),
    pytest.param("- channels\n- platforms\n", "(top level)", "must be a mapping", id="top-level-list"),
    pytest.param("just some words\n", "(top level)", "must be a mapping", id="top-level-string"),
    # list entries
    pytest.param("blacklist: ['']\n", "blacklist[0]", "an empty package name", id="blacklist-empty-name"),
    pytest.param("whitelist: [readline, '  ']\n", "whitelist[1]", "an empty package name", id="whitelist-blank"),
    pytest.param("pkg_list: ['']\n", "pkg_list[0]", "an empty package name", id="pkg-list-empty-name"),
    pytest.param("blacklist: [[numpy]]\n", "blacklist[0]", "valid string", id="blacklist-nested-list"),
    pytest.param("mirror_dir: [a, b]\n", "mirror_dir", "not a valid path", id="mirror-dir-list"),
]


@pytest.mark.parametrize(("text", "key", "phrase"), BAD_CONFIGS)
def test_bad_config_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    key: str,
    phrase: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # the default mirror_dir, ./mirror, is then tmp_path/mirror however it resolves
    path = write(tmp_path, text)
    code, err = run_cli(path, capsys)
    assert code == 2
    assert_one_line_error(err, path, key, phrase)
    assert sorted(tmp_path.iterdir()) == [path]  # nothing written next to the config, no mirror_dir created


def test_missing_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "absent.yaml"
    code, err = run_cli(path, capsys)
    assert code == 2
    assert_one_line_error(err, path, "(file)", "cannot read")


def test_config_file_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(tmp_path, capsys)
    assert code == 2
    assert_one_line_error(err, tmp_path, "(file)", "cannot read")


def test_bad_config_leaves_the_mirror_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mirror_dir = tmp_path / "out"
    existing = mirror_dir / "anaconda" / "linux-64" / "zlib-1.3-h0_0.conda"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"old bytes")
    (mirror_dir / "anaconda" / "linux-64" / "repodata.json").write_text("{}")
    before = sorted(p.relative_to(tmp_path) for p in mirror_dir.rglob("*"))
    path = write(
        tmp_path, f"mirror_dir: {mirror_dir}\nplatforms: [linux-64]\nblacklist: [zlib]\nlicense_blacklist: GPLv3\n"
    )
    code, err = run_cli(path, capsys)
    assert code == 2
    assert_one_line_error(err, path, "license_blacklist[0]", "'GPLv3' is not a license family")
    assert sorted(p.relative_to(tmp_path) for p in mirror_dir.rglob("*")) == before
    assert existing.read_bytes() == b"old bytes"
    assert (mirror_dir / "anaconda" / "linux-64" / "repodata.json").read_text() == "{}"


def test_bad_config_does_not_create_mirror_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mirror_dir = tmp_path / "fresh"
    path = write(tmp_path, f"mirror_dir: {mirror_dir}\nchannels: []\n")
    code, _ = run_cli(path, capsys)
    assert code == 2
    assert not mirror_dir.exists()


def test_file_url_with_a_host_is_not_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `file://pkgs` names host "pkgs" and an empty path; it must not silently mirror whatever folder we run in
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(tmp_path, "channels: ['file://pkgs']\n")
    with pytest.raises(ConfigError, match=r"channels\[0\]"):
        load_config(path)


# --- good configs -----------------------------------------------------------------------------------------


def test_lone_strings_become_one_item_lists(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "license_blacklist: GPL\nblacklist: numpy\nwhitelist: readline\nplatforms: linux-64\n")
    )
    assert config.license_blacklist == ("GPL",)
    assert config.blacklist == ("numpy",)
    assert config.whitelist == ("readline",)
    assert config.platforms == ("linux-64",)


def test_lone_pkg_list_string(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "pkg_list: zope\n")).pkg_list == ("zope",)


def test_python_versions_keep_their_text(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "python_versions: [3.10, 2.7, 3.1, 3.12]\n")).python_versions == (
        "3.10",
        "2.7",
        "3.1",
        "3.12",
    )
    assert load_config(write(tmp_path, "python_versions: 3.10\n")).python_versions == ("3.10",)
    assert load_config(write(tmp_path, "python_versions: ['3.10']\n")).python_versions == ("3.10",)


def test_license_families_are_normalized(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "license_blacklist: [gpl2, Public Domain, apache, Other]\n"))
    assert config.license_blacklist == ("GPL2", "PUBLIC-DOMAIN", "APACHE", "OTHER")


def test_numeric_names_are_text(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "blacklist: [2024, numpy]\ndest_channel: 2024\n"))
    assert config.blacklist == ("2024", "numpy")
    assert config.dest_channel == "2024"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_dir = tmp_path / "conf"
    (config_dir / "upstream" / "pkgs").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(config_dir, "mirror_dir: out/mirror\nchannels:\n  - upstream/pkgs\n  - ./upstream\n")
    config = load_config(path)
    assert config.mirror_dir == config_dir / "out" / "mirror"
    assert config.channel_dir == config_dir / "out" / "mirror" / "anaconda"
    assert config.channel_urls == (
        (config_dir / "upstream" / "pkgs").as_uri() + "/",
        (config_dir / "upstream").as_uri() + "/",
    )
    assert not (config_dir / "out").exists()  # loading a config writes nothing


def test_default_mirror_dir_is_next_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(write(tmp_path, "dest_channel: internal\n"))
    assert config.mirror_dir == tmp_path / "mirror"
    assert config.channel_dir == tmp_path / "mirror" / "internal"


def test_absolute_and_file_url_channels(tmp_path: Path) -> None:
    upstream = tmp_path / "air gap" / "pkgs"
    upstream.mkdir(parents=True)
    path = write(tmp_path, f"channels:\n  - {upstream}\n  - '{upstream.as_uri()}'\n  - https://repo.example.com/main\n")
    assert load_config(path).channel_urls == (
        upstream.as_uri() + "/",
        upstream.as_uri() + "/",
        "https://repo.example.com/main/",
    )


def test_default_channels_are_free_and_pro_under_remote_url(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "platforms: [linux-64]\n"))
    assert config.remote_url == DEFAULT_REMOTE_URL == "https://repo.continuum.io/"
    assert config.channel_urls == ("https://repo.continuum.io/pkgs/free/", "https://repo.continuum.io/pkgs/pro/")


def test_default_channels_follow_remote_url(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "remote_url: https://mirror.example.com/anaconda\n"))
    assert config.channel_urls == (
        "https://mirror.example.com/anaconda/pkgs/free/",
        "https://mirror.example.com/anaconda/pkgs/pro/",
    )


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.dest_channel == "anaconda"
    assert config.platforms is None
    assert config.channels is None
    assert (config.python_versions, config.license_blacklist, config.blacklist) == ((), (), ())
    assert (config.whitelist, config.pkg_list) == ((), ())
    assert config.concurrency == 16
    assert config.retries == 5


def test_whitelist_without_blacklist_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write(tmp_path, "whitelist: [readline]\n")
    with caplog.at_level(logging.WARNING, logger="mirror_engine"):
        config = load_config(path)
    assert config.whitelist == ("readline",)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "whitelist has no effect" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()


@pytest.mark.parametrize("other", ["blacklist: [numpy]", "license_blacklist: GPL"])
def test_whitelist_with_a_blacklist_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture, other: str) -> None:
    with caplog.at_level(logging.WARNING, logger="mirror_engine"):
        load_config(write(tmp_path, f"whitelist: [readline]\n{other}\n"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_load_config_raises_config_error_with_exit_code_2(tmp_path: Path) -> None:
    path = write(tmp_path, "blacklst: [numpy]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.exit_code == 2
    assert str(info.value) == f"{path}: blacklst: unknown key; did you mean 'blacklist'?"


def test_mirror_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x")
    path = write(tmp_path, "channels: [https://example.invalid/c/]\nmirror_dir: afile\n")
    code, err = run_cli(path, capsys)
    assert code == 2
    assert_one_line_error(err, path, "mirror_dir", "is a file, not a folder")


def test_mirror_dir_without_write_permission(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() == 0:  # root ignores mode bits: a read-only mount is what stops it
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(locked)]).returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        locked.chmod(0o500)
    try:
        path = write(tmp_path, "channels: [https://example.invalid/c/]\nmirror_dir: locked/mirror\n")
        code, err = run_cli(path, capsys)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(locked)], check=True)
        locked.chmod(0o700)
    assert code == 2
    assert_one_line_error(err, path, "mirror_dir", "is not writable by this user")


def test_mirror_dir_override_keeps_the_rest(tmp_path: Path) -> None:
    (tmp_path / "pkgs").mkdir()
    config = load_config(write(tmp_path, "channels: [pkgs]\nblacklist: [tk]\nmirror_dir: one\n"))
    moved = override_mirror_dir(config, tmp_path / "two")
    assert moved.mirror_dir == tmp_path / "two" and moved.channel_dir == tmp_path / "two" / "anaconda"
    assert (moved.channels, moved.blacklist) == (config.channels, config.blacklist)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match=r"^--mirror-dir: mirror_dir: .* is a file, not a folder$"):
        override_mirror_dir(config, tmp_path / "afile")
