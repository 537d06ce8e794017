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
