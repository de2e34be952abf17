"""Which cluster a tool talks to: its cluster file and its secret, and where each came from.

``raftkv-ctl`` and ``raftcloud`` find them the way ``etcdctl`` finds a local etcd
(docs/operations.md, "Which cluster a tool talks to"):

* the cluster file: ``--config``, else ``$RAFTCLOUD_CONFIG``, else the
  ``deploy/local.toml`` of the checkout around the current directory (the
  nearest folder, going up, that has one);
* the secret: ``$RAFTCLOUD_SECRET``, else ``$RAFTCLOUD_SECRET_FILE`` (relative
  to the current directory), else the cluster file's ``secret_file`` key
  (relative to the file's folder), else ``cluster.secret`` in the data directory
  that ``raftcloud up`` made: the one given, or the nearest ``var/`` going up.

:class:`Located` says which source each came from, for ``-v`` and for errors.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from raftkv.cluster import CONFIG_ENV, SECRET_ENV, SECRET_FILE_ENV, ClusterConfig, load_cluster
from raftkv.errors import ConfigError

LOCAL_CONFIG = Path("deploy") / "local.toml"   # a checkout's local cluster file
LOCAL_DATA_DIR = Path("var")                    # where `make up` (raftcloud up) keeps its data
SECRET_NAME = "cluster.secret"                  # the secret raftcloud up makes in its data dir


@dataclass(frozen=True)
class Located:
    config: Path               # the cluster file
    config_from: str           # where its name came from, for people
    secret_file: Path | None   # the secret's file, when the tool chose it (else load_cluster's)
    secret_from: str

    def describe(self) -> str:
        return (f"cluster file {self.config} ({self.config_from}); "
                f"secret {self.secret_from}")

    def load(self) -> ClusterConfig:
        """The cluster, with the secret located here.

        :raises ConfigError: the file or the secret cannot be read, or the file is malformed.
        """
        secret = None
        if self.secret_file is not None:
            try:
                secret = self.secret_file.read_bytes().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read the cluster secret {self.secret_file}: "
                                  f"{exc.strerror}") from exc
        return load_cluster(self.config, secret=secret)


def nearest(relative: Path, start: Path) -> Path | None:
    """``folder / relative`` for the nearest folder from ``start`` upwards that has it."""
    for folder in (start, *start.parents):
        if (folder / relative).exists():
            return folder / relative
    return None


def locate(config: str | os.PathLike[str] | None, *, data_dir: Path | None = None,
           cwd: Path | None = None, fallback_config: Path | None = None) -> Located:
    """The cluster file and secret a tool should use (see the module's docstring).

    :param config: ``--config``, if given.
    :param data_dir: ``--data-dir``, if given: its ``cluster.secret`` is the last resort.
    :param fallback_config: the cluster file when none is given nor found around ``cwd``
        (``raftcloud`` passes the ``deploy/local.toml`` it was installed with).
    :raises ConfigError: no cluster file, or no secret, anywhere.
    """
    here = (cwd or Path.cwd()).resolve()
    if config:
        path, config_from = Path(config), "from --config"
    elif os.environ.get(CONFIG_ENV):
        path, config_from = Path(os.environ[CONFIG_ENV]), f"from ${CONFIG_ENV}"
    elif (found := nearest(LOCAL_CONFIG, here)) is not None:
        path, config_from = found, f"the checkout's, found from {here}"
    elif fallback_config is not None:
        path, config_from = fallback_config, "the installed default"
    else:
        raise ConfigError(f"no cluster file: give --config or ${CONFIG_ENV}, or run this "
                          f"inside a raftcloud checkout (no {LOCAL_CONFIG} from {here} upwards)")
    if not path.is_file():
        raise ConfigError(f"no cluster file at {path} ({config_from})")
    if os.environ.get(SECRET_ENV):
        return Located(path, config_from, None, f"from ${SECRET_ENV}")
    if os.environ.get(SECRET_FILE_ENV):
        secret = Path(os.environ[SECRET_FILE_ENV])
        return Located(path, config_from, secret.absolute(), f"{secret} (from ${SECRET_FILE_ENV})")
    key = _secret_file_key(path)
    if key:
        return Located(path, config_from, None,
                       f"{path.parent / key} (the cluster file's secret_file)")
    if data_dir is not None:
        secret = data_dir / SECRET_NAME
        return Located(path, config_from, secret.absolute(), f"{secret} (in the data dir)")
    found = nearest(LOCAL_DATA_DIR / SECRET_NAME, here)
    if found is None:
        raise ConfigError(
            f"no cluster secret: set ${SECRET_ENV} or ${SECRET_FILE_ENV}, or run this where "
            f"`raftcloud up` keeps its data (no {LOCAL_DATA_DIR / SECRET_NAME} from {here} "
            "upwards)")
    return Located(path, config_from, found, f"{found} (raftcloud up's, found from {here})")


def _secret_file_key(path: Path) -> str | None:
    """The cluster file's ``secret_file``, if it can be read (load_cluster says why if not)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return None
    key = raw.get("cluster", {}).get("secret_file")
    return str(key) if key else None
