"""What the session shows of a URL, and which proxy a request takes."""

from __future__ import annotations

from mirror_engine.session import bypasses_proxy, redact


def test_urls_in_messages_carry_no_credentials_or_tokens() -> None:
    assert redact("https://user:s3cret@host:8443/pkgs/main/") == "https://host:8443/pkgs/main/"
    assert redact("https://conda.anaconda.org/t/ab-12cd/private/noarch/x.conda") == (
        "https://conda.anaconda.org/t/<token>/private/noarch/x.conda"
    )
    assert redact("https://repo.anaconda.com/pkgs/main/") == "https://repo.anaconda.com/pkgs/main/"


def test_no_proxy_matches_hosts_and_domain_suffixes() -> None:
    assert bypasses_proxy("127.0.0.1", "localhost,127.0.0.1")
    assert bypasses_proxy("repo.corp.example", ".corp.example")
    assert bypasses_proxy("repo.corp.example", "corp.example")
    assert not bypasses_proxy("evilcorp.example", "corp.example")
    assert bypasses_proxy("anything", "*")
    assert not bypasses_proxy("repo.anaconda.com", None)


async def test_netrc_logins_are_sent_to_their_host_only(tmp_path, monkeypatch) -> None:
    import aiohttp

    from mirror_engine.config import parse_config
    from mirror_engine.session import open_session

    (tmp_path / "netrc").write_text("machine repo.corp.example login mirror password n3trcPass\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    async with open_session(parse_config({}, tmp_path / "c.yaml")) as http:
        for_corp = http._login("https://repo.corp.example/pkgs/main/noarch/x.conda", {})
        elsewhere = http._login("https://repo.anaconda.com/pkgs/main/noarch/x.conda", {})
        in_the_url = http._login("https://other:pw@repo.corp.example/pkgs/main/noarch/x.conda", {})
    assert for_corp == {"headers": {"Authorization": aiohttp.encode_basic_auth("mirror", "n3trcPass")}}
    assert elsewhere == {} and in_the_url == {}
