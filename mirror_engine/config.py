"""YAML -> frozen, validated MirrorConfig; the only module that ever sees YAML.

The keys and their meaning are those of the reference tool (cas-sync), so its configs run unchanged;
the keys we add (concurrency, retries, timeouts) all have safe defaults.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mirror_engine.bandwidth import parse_bytes
from mirror_engine.condarc import conda_settings
from mirror_engine.errors import ConfigError
from mirror_engine.licenses import FAMILIES, normalize_family
from mirror_engine.session import redact

log = logging.getLogger(__name__)

DEFAULT_REMOTE_URL = "https://repo.continuum.io/"
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PYTHON_MINOR = re.compile(r"^\d+\.\d+$")


def _as_text(value: object) -> object:
    """YAML gives ints for `7zip`-free names like `2024`; every name key is text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _as_text_list(value: object) -> object:
    """The reference's own examples write `license_blacklist: GPL`: a lone string is a one-item list."""
    if value is None:
        return []
    if isinstance(value, str | int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, list):
        return [_as_text(item) for item in value]
    return value


def _as_seconds(value: object) -> object:
    """Float-looking YAML stays text (see _TextFloatLoader); a number of seconds is parsed here."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {value!r}") from None
    return value


Text = Annotated[str, BeforeValidator(_as_text)]
Seconds = Annotated[float, BeforeValidator(_as_seconds)]
TextList = Annotated[tuple[str, ...], BeforeValidator(_as_text_list)]


def _plain_name(value: str, what: str) -> str:
    if not _PLAIN_NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"{value!r} is not a plain {what} name (letters, digits, '-', '_', '.')")
    return value


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: object) -> object:
    """`${VAR}` in a credential is read from the environment, so secrets stay out of the config file."""
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ValueError(f"environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REFERENCE.sub(lookup, value)


Secret = Annotated[SecretStr, BeforeValidator(_expand_env)]


class DestinationConfig(BaseModel):
    """`destination:`: a repository server (quetz), an HTTP PUT target, or S3-compatible storage.

    The channel is written under `url` as `<dest_channel>/<subdir>/<file>` (quetz: into the channel
    `dest_channel`). Credentials may be `${VAR}` references, or come from `credentials_file` (YAML with
    the same keys); they are never printed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["http", "s3", "quetz"]
    url: Text
    ssl_verify: bool | Path = True  # the reference's sites.master.ssl_verify: a bool or a CA bundle
    # quetz
    api_key: Secret | None = None
    # http (PUT): basic or bearer auth
    username: Text | None = None
    password: Secret | None = None
    token: Secret | None = None
    # s3: absent keys come from the standard AWS environment variables and files
    endpoint_url: Text | None = None
    region: Text | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    multipart_threshold: Text = "64MB"  # files at least this big are uploaded in parts of this size
    credentials_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_credentials_file(cls, data: object, info: ValidationInfo) -> object:
        if not isinstance(data, dict) or data.get("credentials_file") is None:
            return data
        path = (_base_dir(info) / Path(str(data["credentials_file"])).expanduser()).resolve()
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise ValueError(f"credentials_file: {path}: cannot read: {reason}") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"credentials_file: {path}: must be a mapping such as api_key: ...")
        unknown = sorted(set(loaded) - set(_CREDENTIAL_KEYS))
        if unknown:
            raise ValueError(f"credentials_file: {path}: {unknown[0]!r} is not a credential key")
        return {**loaded, **data, "credentials_file": path}  # keys written in the config win

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        scheme = urlsplit(value).scheme
        if kind == "s3" and (scheme != "s3" or not urlsplit(value).netloc):
            raise ValueError(f"{redact(value)!r} is not an s3://bucket/prefix URL")
        if kind in ("http", "quetz") and (scheme not in ("http", "https") or not urlsplit(value).netloc):
            raise ValueError(f"{redact(value)!r} is not an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("ssl_verify", mode="before")
    @classmethod
    def _ca_bundle(cls, value: object, info: ValidationInfo) -> object:
        return _tls_setting(value, info)

    @field_validator("multipart_threshold")
    @classmethod
    def _part_size(cls, value: str) -> str:
        if parse_bytes(value, rate=False) < 5 * 1024 * 1024:
            raise ValueError(f"{value!r} is below S3's smallest part of 5 MiB")
        return value

    @model_validator(mode="after")
    def _credentials_for_kind(self) -> Self:
        if self.kind == "quetz" and self.api_key is None:
            raise ValueError("api_key: required for a quetz destination (an API key of a channel owner)")
        if self.password is not None and self.username is None:
            raise ValueError("username: required with password")
        return self

    @property
    def multipart_bytes(self) -> int:
        return parse_bytes(self.multipart_threshold, rate=False)


_CREDENTIAL_KEYS = ("api_key", "username", "password", "token", "access_key_id", "secret_access_key", "session_token")


def _tls_setting(value: object, info: ValidationInfo) -> object:
    """`ssl_verify` and friends: yes/no words as bools, any other text a file resolved against the config."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    if isinstance(value, str | Path):
        path = (_base_dir(info) / Path(value).expanduser()).resolve()
        if not path.is_file():
            raise ValueError(f"{str(path)!r} is not a file")
        return path
    return value


class MirrorConfig(BaseModel):
    """Every key the reference tool accepted, plus ours; typos fail loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- keys of the reference tool ---
    dest_channel: Text = "anaconda"
    remote_url: Text = DEFAULT_REMOTE_URL
    channels: TextList | None = None
    platforms: TextList | None = None
    python_versions: TextList = ()
    license_blacklist: TextList = ()
    blacklist: TextList = ()
    whitelist: TextList = ()
    pkg_list: TextList = ()
    mirror_dir: Path = Field(Path("mirror"), validate_default=True)  # resolved against the config's folder

    # --- our keys ---
    concurrency: int = Field(16, ge=1, le=512, strict=True)
    processes: int | None = Field(None, ge=1, le=64, strict=True)  # transfer processes; default: one per core
    retries: int = Field(5, ge=0, le=100, strict=True)
    retry_backoff: Seconds = Field(1.0, ge=0, le=600)
    retry_backoff_max: Seconds = Field(60.0, ge=0, le=3600)
    connect_timeout: Seconds = Field(30.0, gt=0, le=3600)
    read_timeout: Seconds = Field(60.0, gt=0, le=3600)
    file_timeout: Seconds = Field(7200.0, gt=0, le=7 * 86400)  # one whole package, all its bytes
    max_bandwidth: Text | None = None  # "50MB/s": shared by all transfers of a run
    min_free_space: Text | None = None  # "10GB": stop before the destination's disk gets fuller
    allow_other_hosts: bool = False  # follow a CEP-15 base_url that points at another host
    include_dependencies: bool = False  # add what the selected packages need, so each one installs
    prune_removed: bool = False  # delete files upstream moved into `removed` (default: keep them reachable)
    write_bz2: bool = False  # also publish the deprecated repodata.json.bz2
    prefer_conda: bool = False  # drop a .tar.bz2 whose name-version-build the channel also has as .conda
    html_pages: bool = True  # index.html per channel and subdir, runs.html beside them
    # --- conda's words for the network; also read from .condarc (see condarc.py), config wins ---
    ssl_verify: bool | Path = True  # or a CA bundle file, for a private CA
    proxy_servers: dict[str, str] = Field(default_factory=dict)  # {"http": url, "https": url}
    client_ssl_cert: Path | None = None
    client_ssl_cert_key: Path | None = None
    # --- where the channel is written; absent: the folder mirror_dir/dest_channel ---
    destination: DestinationConfig | None = None

    @field_validator("dest_channel")
    @classmethod
    def _dest_is_name(cls, value: str) -> str:
        return _plain_name(value, "channel")

    @field_validator("remote_url")
    @classmethod
    def _remote_is_http(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value if value.endswith("/") else value + "/"

    @field_validator("max_bandwidth")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None and parse_bytes(value, rate=True) <= 0:
            raise ValueError(f"{value!r} must be more than 0 bytes per second")
        return value

    @field_validator("min_free_space")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is not None:
            parse_bytes(value, rate=False)
        return value

    @field_validator("ssl_verify", "client_ssl_cert", "client_ssl_cert_key", mode="before")
    @classmethod
    def _tls_file(cls, value: object, info: ValidationInfo) -> object:
        return _tls_setting(value, info)

    @field_validator("proxy_servers")
    @classmethod
    def _proxies(cls, value: dict[str, str]) -> dict[str, str]:
        for scheme, url in value.items():
            if scheme not in ("http", "https"):
                raise ValueError(f"[{scheme!r}]: use the keys http and https")
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ValueError(f"[{scheme!r}]: {redact(url)!r} is not a proxy URL such as http://proxy:3128")
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms_are_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one platform, or be left out to mirror all of them")
        for index, item in enumerate(value):
            try:
                _plain_name(item, "platform")
            except ValueError as exc:
                raise ValueError(f"[{index}]: {exc}") from None
        return value

    @field_validator("python_versions")
    @classmethod
    def _python_minors(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, item in enumerate(value):
            if not _PYTHON_MINOR.fullmatch(item):
                raise ValueError(f"[{index}]: {item!r} is not a Python version such as 3.10 (major.minor)")
        return value

    @field_validator("license_blacklist")
    @classmethod
    def _license_families(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        families = []
        for index, item in enumerate(value):
            family = normalize_family(item)
            if family is None:
                raise ValueError(f"[{index}]: {item!r} is not a license family; use one of {', '.join(FAMILIES)}")
            families.append(family)
        return tuple(families)

    @field_validator("blacklist", "whitelist", "pkg_list")
    @classmethod
    def _names_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, item in enumerate(value):
            if not item.strip():
                raise ValueError(f"[{index}]: an empty package name")
        return tuple(item.strip() for item in value)

    @field_validator("channels")
    @classmethod
    def _channels_resolve(cls, value: tuple[str, ...] | None, info: ValidationInfo) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("must list at least one channel, or be left out for the defaults")
        base_dir = _base_dir(info)
        return tuple(_resolve_channel(item, index, base_dir) for index, item in enumerate(value))

    @field_validator("mirror_dir")
    @classmethod
    def _mirror_dir_resolves(cls, value: Path, info: ValidationInfo) -> Path:
        path = (_base_dir(info) / value.expanduser()).resolve()
        if path.exists() and not path.is_dir():
            raise ValueError(f"{str(path)!r} is a file, not a folder")
        ancestor = path
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise ValueError(f"{str(ancestor)!r} is not writable by this user")
        return path

    @model_validator(mode="after")
    def _pkg_list_stands_alone(self) -> Self:
        if self.pkg_list:
            for other in ("blacklist", "whitelist", "license_blacklist"):
                if getattr(self, other):
                    raise ValueError(f"pkg_list: cannot be combined with {other}; pkg_list stands alone")
        return self

    @property
    def channel_urls(self) -> tuple[str, ...]:
        """The channels to read, with the reference's default of free/ and pro/ under remote_url."""
        if self.channels is not None:
            return self.channels
        return (f"{self.remote_url}pkgs/free/", f"{self.remote_url}pkgs/pro/")

    @property
    def channel_dir(self) -> Path:
        return self.mirror_dir / self.dest_channel

    @property
    def worker_processes(self) -> int:
        """Processes that download (1: in this process); by default one per core, at most 8."""
        return self.processes if self.processes is not None else max(1, min(os.cpu_count() or 1, 8))

    @property
    def max_bandwidth_bytes(self) -> int:
        return parse_bytes(self.max_bandwidth, rate=True) if self.max_bandwidth else 0

    @property
    def min_free_bytes(self) -> int:
        return parse_bytes(self.min_free_space, rate=False) if self.min_free_space else 0

    @property
    def state_dir(self) -> Path:
        """Our own files beside the channels: the journal and the run locks."""
        return self.mirror_dir / ".mirror_engine"


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context or {}
    base = context.get("base_dir")
    return base if isinstance(base, Path) else Path.cwd()


def _resolve_channel(item: str, index: int, base_dir: Path) -> str:
    """Normalise one `channels` entry to an http(s):// or file:// URL ending in '/'."""
    parts = urlsplit(item)
    if parts.scheme in ("http", "https"):
        if not parts.netloc:
            raise ValueError(f"[{index}]: {item!r} has no host")
        return item if item.endswith("/") else item + "/"
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ValueError(f"[{index}]: {item!r} is not a file:// URL of a folder; write file:///absolute/path")
        path = Path(unquote(parts.path))
    elif parts.scheme and len(parts.scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise ValueError(f"[{index}]: {item!r}: unsupported scheme {parts.scheme!r}; use https://, file:// or a path")
    else:
        path = base_dir / Path(item).expanduser()
    path = path.resolve()
    if not path.is_dir():
        raise ValueError(f"[{index}]: local channel {str(path)!r} does not exist or is not a folder")
    return path.as_uri() + "/"


class _TextFloatLoader(yaml.SafeLoader):
    """SafeLoader that keeps float-looking scalars as text (`python_versions: [3.10]` means 3.10, not 3.1)
    and refuses a key given twice, which plain YAML loaders silently resolve to the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_TextFloatLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_config(path: Path) -> MirrorConfig:
    """Read and validate a config file; any problem becomes a one-line ConfigError naming the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "(file)", f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = yaml.load(text, Loader=_TextFloatLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(path, where, f"not valid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, "(top level)", "must be a mapping of keys such as channels: and platforms:")
    config = parse_config(data, path, conda_settings())
    if config.whitelist and not (config.blacklist or config.license_blacklist):
        log.warning("%s: whitelist has no effect without blacklist or license_blacklist", path)
    return config


def override_mirror_dir(config: MirrorConfig, mirror_dir: Path) -> MirrorConfig:
    """`--mirror-dir`: the config with another mirror_dir, checked as the key would be (relative to the cwd)."""
    data = config.model_dump(exclude_unset=True) | {"mirror_dir": mirror_dir.expanduser().resolve()}
    try:
        return MirrorConfig.model_validate(data, context={"base_dir": Path.cwd()})
    except ValidationError as exc:
        raise _to_config_error(exc, Path("--mirror-dir")) from None


def parse_config(data: dict[str, Any], path: Path, conda: dict[str, Any] | None = None) -> MirrorConfig:
    """Validate a config mapping; network settings missing from it are taken from `conda` (.condarc)."""
    merged = {key: value for key, value in (conda or {}).items() if key not in data} | data
    try:
        return MirrorConfig.model_validate(merged, context={"base_dir": path.parent.resolve()})
    except ValidationError as exc:
        raise _to_config_error(exc, path) from None


def _to_config_error(exc: ValidationError, path: Path) -> ConfigError:
    err = exc.errors()[0]  # one line: the first problem
    loc = [part for part in err["loc"] if part not in ("function-after", "function-before")]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    message = str(err["msg"]).removeprefix("Value error, ")
    if message.startswith("[") or (not loc and ": " in message):  # the validator named the key itself
        named, _, message = message.partition(": ")
        key += named
    if err["type"] == "extra_forbidden":
        known = list(MirrorConfig.model_fields)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        message = "unknown key" + (f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(known)}")
    elif err["type"] in ("int_parsing", "float_parsing", "int_type", "float_type", "string_type", "tuple_type"):
        message += f", got {err['input']!r}"
    return ConfigError(path, key or "(top level)", message)
