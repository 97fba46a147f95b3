"""ImageNet weights files: find them in the Keras cache, check their MD5, never delete them.

Keras's own ``get_file`` deletes a cached file whose hash is wrong when the
download then fails; a user's file must never be deleted. So bench resolves the
file itself before Keras sees it:

* the file is in the cache with the right MD5: it is used, no network;
* it is there with a wrong MD5: :class:`~bench.errors.WeightsError`, the file is
  left untouched;
* it is missing: a download is attempted only when downloads are allowed
  (``BENCH_OFFLINE`` unset or ``0``) and the host answers within a few seconds;
  it goes to a temporary file that is checked and then renamed into the cache.
  Otherwise :class:`~bench.errors.WeightsError` names the file, its MD5, where to
  put it, and the ``--weights PATH`` / ``--weights none`` alternatives.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from bench.errors import WeightsError

#: Environment variable: set to 1 to never try a download.
OFFLINE_ENV = "BENCH_OFFLINE"
#: Seconds the reachability probe (DNS + TCP connect) may take.
PROBE_TIMEOUT_S = 3.0

_BASE = "https://storage.googleapis.com/tensorflow/keras-applications"


@dataclass(frozen=True)
class WeightsFile:
    """A Keras applications weights file: name in the cache, MD5, where Keras gets it."""

    fname: str
    md5: str
    origin: str


IMAGENET_NOTOP: dict[str, WeightsFile] = {
    "vgg16": WeightsFile(
        fname="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="6d6bbae143d832006294945121d1f1fc",
        origin=f"{_BASE}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "densenet201": WeightsFile(
        fname="densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="c13680b51ded0fb44dff2d8f86ac8bb1",
        origin=f"{_BASE}/densenet/densenet201_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}


def keras_home() -> Path:
    """``$KERAS_HOME`` (resolved now, not at import), else ``~/.keras``."""
    return Path(os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras"))


def fallback_home() -> Path:
    """Where Keras caches when the Keras home is not writable."""
    return Path("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()) / ".keras"


def cache_candidates(fname: str) -> list[Path]:
    """Every place Keras may have cached ``fname``, in the order Keras uses them."""
    out = [keras_home() / "models" / fname]
    fb = fallback_home() / "models" / fname
    if fb not in out:
        out.append(fb)
    return out


def md5_of(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download_target_dir() -> Path:
    home = keras_home()
    probe = home if home.exists() else home.parent
    if os.access(probe, os.W_OK):
        return home / "models"
    return fallback_home() / "models"


def missing_message(backbone: str, wf: WeightsFile, extra: str = "") -> str:
    target = _download_target_dir() / wf.fname
    return (
        f"ImageNet weights for {backbone!r} are not available{extra}.\n"
        f"  file: {wf.fname}\n"
        f"  MD5:  {wf.md5}\n"
        f"  from: {wf.origin}\n"
        f"  put it at: {target}  (the Keras cache: $KERAS_HOME/models, KERAS_HOME="
        f"{keras_home()})\n"
        f"Alternatives: --weights PATH (a local notop .h5 backbone file or a full-model "
        f".weights.h5/.keras file), --weights none (a seeded random backbone, the study's "
        f"head) or --weights scratch (nothing pretrained: a seeded random backbone, a head "
        f"that normalises its features, trained here)."
    )


def downloads_allowed() -> bool:
    return os.environ.get(OFFLINE_ENV, "0").strip().lower() in ("", "0", "false", "no")


def host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """DNS + TCP connect to the URL's host within ``timeout`` seconds (DNS can hang: a thread)."""
    host = urllib.parse.urlsplit(url).hostname
    if not host:
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def _download(wf: WeightsFile, target: Path) -> None:
    """Download into a private temp dir (Keras may delete only there), check, rename."""
    import keras

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bench-dl-", dir=target.parent) as tmp:
        got = keras.utils.get_file(
            wf.fname, wf.origin, cache_dir=tmp, cache_subdir="dl", file_hash=wf.md5,
            hash_algorithm="md5",
        )
        if md5_of(got) != wf.md5:
            raise WeightsError(f"downloaded {wf.fname} has a wrong MD5")
        if not target.exists():  # never overwrite a file someone put there meanwhile
            os.replace(got, target)


def resolve_imagenet(backbone: str) -> tuple[Path, str]:
    """(path, md5) of the verified ImageNet notop weights for ``backbone``.

    Raises :class:`WeightsError` (never deletes or overwrites a file).
    """
    wf = IMAGENET_NOTOP.get(backbone)
    if wf is None:
        raise WeightsError(f"no ImageNet weights file known for backbone {backbone!r}")
    for path in cache_candidates(wf.fname):
        if path.is_file():
            actual = md5_of(path)
            if actual != wf.md5:
                raise WeightsError(
                    f"{path} has MD5 {actual}, expected {wf.md5} for {wf.fname} "
                    f"(ImageNet weights of {backbone!r}); the file was left untouched. "
                    f"Replace it with the right file (from {wf.origin}), or use "
                    f"--weights PATH (a local weights file) or --weights none."
                )
            return path, actual
    if not downloads_allowed():
        raise WeightsError(missing_message(backbone, wf, f" and {OFFLINE_ENV} forbids a download"))
    if not host_reachable(wf.origin):
        raise WeightsError(missing_message(backbone, wf, " and the download host cannot be reached"))
    target = _download_target_dir() / wf.fname
    try:
        _download(wf, target)
    except Exception as exc:  # noqa: BLE001 - reported with the file named
        raise WeightsError(missing_message(backbone, wf, f" and the download failed ({exc})")) from exc
    return target, md5_of(target)
