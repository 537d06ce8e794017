"""conda's own configuration, for the settings the reference tool takes from it: `ssl_verify`,
`proxy_servers`, `client_ssl_cert`, `client_ssl_cert_key`. Later files win; the mirror config wins over all."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)
KEYS = ("ssl_verify", "proxy_servers", "client_ssl_cert", "client_ssl_cert_key")


def condarc_paths(environ: Mapping[str, str], home: Path) -> list[Path]:
    """Where conda looks, system-wide first, the user's and $CONDARC last."""
    paths = [Path("/etc/conda/.condarc"), Path("/etc/conda/condarc"), Path("/var/lib/conda/.condarc")]
    xdg = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    paths += [xdg / "conda" / ".condarc", home / ".conda" / ".condarc", home / ".condarc"]
    if environ.get("CONDARC"):
        paths.append(Path(environ["CONDARC"]))
    return paths


def read_condarc(paths: list[Path]) -> dict[str, Any]:
    """The KEYS found in these files; an unreadable file is skipped with a warning, never fatal."""
    found: dict[str, Any] = {}
    for path in paths:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            log.warning("%s: skipped, not readable as YAML (%s)", path, str(exc).splitlines()[0])
            continue
        if isinstance(doc, dict):
            found.update({key: doc[key] for key in KEYS if key in doc})
    return found


def conda_settings() -> dict[str, Any]:
    return read_condarc(condarc_paths(os.environ, Path.home()))
