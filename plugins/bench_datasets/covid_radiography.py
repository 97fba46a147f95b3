"""``covid-radiography``: the COVID-19 Radiography Database (Kaggle) from a local folder.

Download the database yourself (Kaggle, "COVID-19 Radiography Database") and pass
its folder as ``--data PATH`` (the ``root`` parameter). Every public layout is
accepted:

* the current release: ``COVID-19_Radiography_Dataset/<Class>/{images,masks}/<Class>-N.png``
  (3616 / 6012 / 10192 / 1345 images, 299x299; lung masks, possibly 256x256);
* the flat 2021 release: ``<Class>/*.png`` (no ``images/`` folder, no masks);
* either one nested once, twice or three times below ``root`` (e.g. ``archive/...``);
* class-folder aliases, case-insensitive, with spaces, ``_`` or ``-``:
  ``COVID``/``COVID-19``, ``Lung_Opacity``/``Lung Opacity``, ``Normal``/``NORMAL``,
  ``Viral Pneumonia``/``Viral_Pneumonia``.

The old 3-class releases (no Lung Opacity) are refused with a message saying so.

Sampling follows the reference study: ``per_class`` images per class (default
1345, all of Viral Pneumonia) chosen with a seeded permutation of each class's
sorted file list, then split per class 80/10/10 with the rounding rule of
:mod:`bench_datasets.splitting` (1076 / 134 / 135 per class). The chosen files of
each split are the ids (paths relative to the database folder) and are listed in
``metadata["files"]``, so the split can be audited and reused.

Any image mode is converted to 8-bit grayscale: L as is; RGB/RGBA/P/LA/1 through
Pillow's ITU-R 601 luma conversion (alpha ignored); 16-bit (``I;16*``) scaled by
255/65535; 32-bit ``I`` scaled the same way when it holds values above 255, kept
when it does not; ``F`` taken as [0, 1] when its maximum is <= 1, else clipped to
[0, 255]. ``image_size=None`` keeps the native size (every image must share it);
an integer resizes every image to that square (Pillow bilinear, antialiased).
Lung masks are binarised at half their own maximum and resized with nearest
neighbour to the image size; an image without a mask gets an all-False mask and
its id is listed in ``metadata["missing_lung_masks"]``.

A corrupt or unreadable file stops the load with a list of the culprits, unless
``skip_corrupt=True``: then each is replaced by the next file of the same class in
the seeded order (so the counts stay exact while files are left) and recorded in
``metadata["skipped_corrupt"]``. Nothing is changed silently.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data import SPLIT_NAMES, DatasetSplits, Split, fingerprint_of
from bench.errors import ConfigError, DataError
from bench.pipeline.keys import file_digests

from .splitting import ROUNDING_RULE, check_fractions, split_counts

NAME = "covid-radiography"
CLASS_NAMES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Normal", "Viral Pneumonia")
DISEASE_CLASSES: tuple[str, ...] = ("COVID", "Lung_Opacity", "Viral Pneumonia")
#: Image counts of the current Kaggle release, for messages.
RELEASE_COUNTS: dict[str, int] = {"COVID": 3616, "Lung_Opacity": 6012, "Normal": 10192, "Viral Pneumonia": 1345}
LOADER_VERSION = 1
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
MAX_DEPTH = 3
_IGNORED_DIRS = frozenset({"__macosx"})

_ALIASES: dict[str, str] = {
    "covid": "COVID",
    "covid19": "COVID",
    "lungopacity": "Lung_Opacity",
    "normal": "Normal",
    "viralpneumonia": "Viral Pneumonia",
}

EXPECTED_TREE = """\
expected the COVID-19 Radiography Database (Kaggle) at --data or up to 3 folders below it:
  COVID-19_Radiography_Dataset/
    COVID/images/COVID-1.png ...            COVID/masks/COVID-1.png ... (masks optional)
    Lung_Opacity/images/Lung_Opacity-1.png ...
    Normal/images/Normal-1.png ...
    Viral Pneumonia/images/Viral Pneumonia-1.png ...
  or the flat 2021 layout: COVID/*.png, Lung_Opacity/*.png, Normal/*.png, Viral Pneumonia/*.png
  (folder names are matched case-insensitively; 'COVID-19', 'Lung Opacity', 'NORMAL',
  'Viral_Pneumonia' are accepted too)"""


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def class_of_folder(name: str) -> str | None:
    """The class a folder name stands for, or None."""
    return _ALIASES.get(_norm(name))


def _visible(entry: os.DirEntry[str]) -> bool:
    return not entry.name.startswith(".") and entry.name.lower() not in _IGNORED_DIRS


def _subdirs(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if e.is_dir() and _visible(e)), key=lambda e: e.name)
    except OSError:
        return []


@dataclass
class ClassFolder:
    name: str
    path: Path
    images_dir: Path
    masks_dir: Path | None


@dataclass
class Layout:
    """Where the database's class folders were found."""

    top: Path
    classes: dict[str, ClassFolder] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        nested = [c.images_dir != c.path for c in self.classes.values()]
        if all(nested):
            return "images/masks per class (2021+ release)"
        if not any(nested):
            return "flat class folders (2021 release)"
        return "mixed (some class folders with images/, some flat)"


def _class_folders(path: Path) -> dict[str, list[os.DirEntry[str]]]:
    found: dict[str, list[os.DirEntry[str]]] = {}
    for entry in _subdirs(path):
        cls = class_of_folder(entry.name)
        if cls is not None:
            found.setdefault(cls, []).append(entry)
    return found


def find_layout(root: str | Path) -> Layout:
    """Find the database folder under ``root`` (searching down up to 3 levels)."""
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise DataError(f"dataset {NAME!r}: --data path {str(root_path)!r} does not exist.\n{EXPECTED_TREE}")
    if root_path.is_file():
        hint = " It looks like the downloaded archive: unzip it and pass the folder." if root_path.suffix.lower() == ".zip" else ""
        raise DataError(f"dataset {NAME!r}: --data path {str(root_path)!r} is a file, not a folder.{hint}\n{EXPECTED_TREE}")

    level = [root_path]
    for depth in range(MAX_DEPTH + 1):
        candidates = [(p, _class_folders(p)) for p in level]
        candidates = [(p, f) for p, f in candidates if len(f) >= 2]
        if candidates:
            best = max(len(f) for _, f in candidates)
            top = [(p, f) for p, f in candidates if len(f) == best]
            if len(top) > 1:
                where = ", ".join(repr(str(p)) for p, _ in top)
                raise DataError(
                    f"dataset {NAME!r}: found more than one database under {str(root_path)!r}: {where}. "
                    "Pass --data pointing at the one to use."
                )
            return _layout_of(*top[0])
        if depth < MAX_DEPTH:
            level = [Path(e.path) for p in level for e in _subdirs(p)]
    listing = sorted(e.name for e in _subdirs(root_path))[:12]
    seen = f" It holds the folders: {', '.join(repr(n) for n in listing)}." if listing else " It holds no folders."
    if class_of_folder(root_path.name) is not None:
        seen += f" {root_path.name!r} looks like one class folder: pass the folder that holds all four."
    raise DataError(
        f"dataset {NAME!r}: no class folders (COVID, Lung_Opacity, Normal, Viral Pneumonia) found in "
        f"{str(root_path)!r} or up to {MAX_DEPTH} levels below it.{seen}\n{EXPECTED_TREE}"
    )


def _layout_of(top: Path, found: dict[str, list[os.DirEntry[str]]]) -> Layout:
    for cls, entries in found.items():
        if len(entries) > 1:
            names = ", ".join(repr(e.name) for e in entries)
            raise DataError(f"dataset {NAME!r}: {str(top)!r} has several folders for class {cls!r}: {names}; keep one.")
    missing = [c for c in CLASS_NAMES if c not in found]
    if missing:
        present = ", ".join(repr(found[c][0].name) for c in CLASS_NAMES if c in found)
        if missing == ["Lung_Opacity"]:
            raise DataError(
                f"dataset {NAME!r}: {str(top)!r} looks like an old 3-class release of the COVID-19 "
                f"Radiography Database (2020: COVID-19, NORMAL, Viral Pneumonia; found {present}). "
                "The Lung_Opacity class is missing: the study needs the current 4-class release "
                "(COVID, Lung_Opacity, Normal, Viral Pneumonia) from Kaggle."
            )
        raise DataError(
            f"dataset {NAME!r}: {str(top)!r} is missing the class folder(s) {', '.join(map(repr, missing))} "
            f"(found {present}).\n{EXPECTED_TREE}"
        )
    layout = Layout(top=top)
    for cls in CLASS_NAMES:
        entry = found[cls][0]
        path = Path(entry.path)
        sub = {e.name.lower(): Path(e.path) for e in _subdirs(path)}
        images_dir = sub.get("images", path)
        masks_dir = sub.get("masks") if "images" in sub else None
        layout.classes[cls] = ClassFolder(name=entry.name, path=path, images_dir=images_dir, masks_dir=masks_dir)
    return layout


@dataclass(frozen=True)
class FileEntry:
    rel: str  # path relative to the database folder (the image id)
    path: str
    size: int
    mtime: int
    mask: str | None  # mask path, or None


def _image_files(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return [
                e for e in it
                if not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS and e.is_file()
            ]
    except OSError as exc:
        raise DataError(f"dataset {NAME!r}: cannot list {str(folder)!r}: {exc}") from exc


def list_files(layout: Layout) -> dict[str, list[FileEntry]]:
    """Each class's image files (sorted by relative path) with size, mtime and mask path."""
    out: dict[str, list[FileEntry]] = {}
    for cls, folder in layout.classes.items():
        masks: dict[str, str] = {}
        if folder.masks_dir is not None:
            for e in _image_files(folder.masks_dir):
                masks.setdefault(os.path.splitext(e.name)[0].lower(), e.path)
        entries = []
        for e in _image_files(folder.images_dir):
            st = e.stat()
            rel = Path(e.path).relative_to(layout.top).as_posix()
            mask = masks.get(os.path.splitext(e.name)[0].lower())
            entries.append(FileEntry(rel=rel, path=e.path, size=st.st_size, mtime=int(st.st_mtime), mask=mask))
        entries.sort(key=lambda f: f.rel)
        out[cls] = entries
    return out


def content_listing(files: dict[str, list[FileEntry]]) -> dict[str, list[list[str | None]]]:
    """Per class: ``[relative path, content digest, mask name, mask content digest]`` per image."""
    paths = [p for entries in files.values() for f in entries for p in (f.path, f.mask) if p]
    digest = dict(zip(paths, file_digests(paths), strict=True))
    return {
        cls: [
            [f.rel, digest[f.path], None if f.mask is None else os.path.basename(f.mask),
             None if f.mask is None else digest[f.mask]]
            for f in entries
        ]
        for cls, entries in files.items()
    }


# ---------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------
def to_gray_uint8(img: Any) -> np.ndarray:
    """A PIL image of any mode -> uint8 (H, W) (see the module docstring for the rules)."""
    mode = img.mode
    if mode == "L":
        return np.asarray(img, dtype=np.uint8)
    if mode.startswith("I;16"):
        a = np.asarray(img).astype(np.uint32)
        return ((a * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "I":
        a = np.asarray(img).astype(np.int64)
        if a.size and a.max() > 255:
            return ((np.clip(a, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.clip(a, 0, 255).astype(np.uint8)
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        return np.clip(np.nan_to_num(a) + 0.5, 0, 255).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _binary_mask(img: Any) -> np.ndarray:
    mode = img.mode
    if mode.startswith("I") or mode == "F":
        a = np.asarray(img).astype(np.float64)
    else:
        a = np.asarray(img.convert("L")).astype(np.float64)
    top = float(a.max()) if a.size else 0.0
    return a > top / 2 if top > 0 else np.zeros(a.shape, dtype=bool)


def _decode(entry: FileEntry, size: tuple[int, int] | None, resize: bool) -> tuple[np.ndarray, np.ndarray | None, str]:
    """(uint8 image, bool mask or None, source mode). Raises on unreadable files."""
    from PIL import Image

    with Image.open(entry.path) as im:
        im.load()
        mode = im.mode
        arr = to_gray_uint8(im)
    if resize and size is not None and arr.shape != size:
        arr = np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.Resampling.BILINEAR))
    mask = None
    if entry.mask is not None:
        try:
            with Image.open(entry.mask) as mm:
                mm.load()
                m = _binary_mask(mm)
        except Exception as exc:  # noqa: BLE001 - reported with the file name
            raise _MaskError(f"its mask {entry.mask}: {_reason(exc, entry.mask)}") from exc
        if m.shape != arr.shape:
            m = np.asarray(
                Image.fromarray(m.astype(np.uint8) * 255).resize((arr.shape[1], arr.shape[0]), Image.Resampling.NEAREST)
            ) > 127
        mask = m
    return arr, mask, mode


class _MaskError(Exception):
    pass


def _reason(exc: BaseException, path: str) -> str:
    """``Type: message`` without the file name repeated (the report already names it)."""
    msg = str(exc).replace(f"'{path}'", "").replace(path, "").strip().rstrip(":").strip()
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def choose_files(
    params: dict[str, Any], layout: Layout, files: dict[str, list[FileEntry]]
) -> tuple[dict[str, list[list[FileEntry]]], dict[str, list[FileEntry]]]:
    """The chosen files of each class, per split (train, val, test; each sorted by relative path),
    and each class's files left over (in the seeded order: the replacements of corrupt ones).

    ``params``: the checked parameters. Raises :class:`DataError` when a class folder is empty
    or holds fewer than ``per_class`` images. ``load()`` and ``split_sizes()`` both split with this.
    """
    per_class = params["per_class"]
    for cls in CLASS_NAMES:
        n = len(files[cls])
        if n == 0:
            raise DataError(
                f"dataset {NAME!r}: class folder {str(layout.classes[cls].images_dir)!r} holds no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        if per_class is not None and n < per_class:
            smallest = min(len(v) for v in files.values())
            raise DataError(
                f"dataset {NAME!r}: class {cls!r} has {n} images in {str(layout.classes[cls].images_dir)!r}, "
                f"fewer than per_class={per_class} (the current release has {RELEASE_COUNTS[cls]}). "
                f"Lower per_class (at most {smallest} here) or set per_class = \"all\" for every "
                f"image (--set dataset.params.per_class=all)."
            )

    # seeded choice per class, then a per-class split of the chosen files
    plan: dict[str, list[list[FileEntry]]] = {}
    reserves: dict[str, list[FileEntry]] = {}
    for ci, cls in enumerate(CLASS_NAMES):
        entries = files[cls]
        k = len(entries) if per_class is None else per_class
        rng = np.random.default_rng(np.random.SeedSequence([params["seed"], ci]))
        order = rng.permutation(len(entries))
        chosen = [entries[i] for i in order[:k]]
        reserves[cls] = [entries[i] for i in order[k:]]
        parts, start = [], 0
        for count in split_counts(k, params["split"]):
            parts.append(sorted(chosen[start : start + count], key=lambda f: f.rel))
            start += count
        plan[cls] = parts
    return plan, reserves


# ---------------------------------------------------------------------------------------
# the dataset component
# ---------------------------------------------------------------------------------------
class CovidRadiography:
    """The COVID-19 Radiography Database from a local folder (``covid-radiography``).

    Parameters (keyword-only, stored as given): root: the folder (``--data``);
    per_class: images per class (None or "all": every image, unbalanced); split:
    (train, val, test) fractions; seed: sampling and split seed; image_size: None keeps
    the native size, an int resizes to that square; skip_corrupt: skip (and record) unreadable
    files instead of failing.
    """

    name = NAME

    def __init__(
        self,
        *,
        root: str,
        per_class: int | str | None = 1345,
        split: tuple[float, float, float] = (0.8, 0.1, 0.1),
        seed: int = 0,
        image_size: int | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        self.root = root
        self.per_class = per_class
        self.split = split
        self.seed = seed
        self.image_size = image_size
        self.skip_corrupt = skip_corrupt

    def get_params(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "per_class": self.per_class,
            "split": self.split,
            "seed": self.seed,
            "image_size": self.image_size,
            "skip_corrupt": self.skip_corrupt,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"CovidRadiography({params})"

    def _checked(self) -> dict[str, Any]:
        where = f"dataset {NAME!r}"

        def opt_int(key: str, value: Any, minimum: int, none: str) -> int | None:
            if value is None:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
                raise ConfigError(f"{where}: {key!r} must be an integer >= {minimum} or {none}, got {value!r}")
            return int(value)

        per_class = self.per_class
        if isinstance(per_class, str) and per_class.strip().lower() == "all":
            per_class = None  # what TOML and --set can say for None

        if self.root is None or (isinstance(self.root, str) and not self.root.strip()):
            raise ConfigError(
                f"{where}: no data folder given; pass --data PATH (the 'root' parameter) pointing at the "
                "downloaded COVID-19 Radiography Database"
            )
        if not isinstance(self.root, (str, os.PathLike)):
            raise ConfigError(f"{where}: 'root' must be a path, got {self.root!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"{where}: 'seed' must be an integer >= 0, got {self.seed!r}")
        if not isinstance(self.skip_corrupt, (bool, np.bool_)):
            raise ConfigError(f"{where}: 'skip_corrupt' must be true or false, got {self.skip_corrupt!r}")
        return {
            "per_class": opt_int("per_class", per_class, 1, '"all" (every image)'),
            "split": list(check_fractions(self.split, where=where)),
            "seed": int(self.seed),
            "image_size": opt_int("image_size", self.image_size, 16, "None"),
            "skip_corrupt": bool(self.skip_corrupt),
        }

    def _scan(self) -> tuple[dict[str, Any], Layout, dict[str, list[FileEntry]], str]:
        params = self._checked()
        layout = find_layout(self.root)
        files = list_files(layout)
        fp = fingerprint_of({
            "dataset": NAME, "loader_version": LOADER_VERSION, "params": params, "files": content_listing(files),
        })
        return params, layout, files, fp

    def validate(self) -> None:
        """Check the parameters without reading the folder (the plan calls this); ConfigError if bad."""
        self._checked()

    def image_shape(self) -> tuple[int, int] | None:
        """(H, W) of the images: ``image_size``, else the first image's header; None if unreadable.

        Cheap (one folder listing and one image header, nothing decoded); a missing or
        malformed folder gives None here and its clear error when the dataset loads.
        """
        size = self._checked()["image_size"]
        if size is not None:
            return (size, size)
        from PIL import Image

        try:
            layout = find_layout(self.root)
            folders = [layout.classes[cls].images_dir for cls in CLASS_NAMES]
        except Exception:  # noqa: BLE001 - load() reports it, naming the folder
            return None
        for folder in folders:
            try:
                entries = sorted(_image_files(folder), key=lambda e: e.name)
            except DataError:
                continue
            for entry in entries[:8]:
                try:
                    with Image.open(entry.path) as im:  # header only, nothing decoded
                        return (int(im.size[1]), int(im.size[0]))
                except Exception:  # noqa: BLE001 - load() reports it, naming the file
                    continue
        return None

    def fingerprint(self) -> str:
        """Hash of the parameters and the contents of every image and mask file (nothing is decoded).

        Each file is hashed once; its digest is remembered per path, size, mtime and
        ctime (:func:`bench.pipeline.keys.file_digests`), so a file replaced, even with its old
        size and mtime restored, is seen.
        """
        return self._scan()[3]

    def split_sizes(self) -> dict[str, int]:
        """``{"train": n, "val": n, "test": n}``: the images of each split ``load()`` returns, from
        the same choice and split of the listed files (:func:`choose_files`; nothing is opened,
        decoded or hashed). Exact while every chosen file is readable: without ``skip_corrupt`` a
        corrupt one fails the load; with it, one that no spare file of its class can replace
        leaves its split one short. Raises :class:`DataError` where ``load()`` would on the folder.
        """
        params = self._checked()
        layout = find_layout(self.root)
        plan, _ = choose_files(params, layout, list_files(layout))
        return {name: sum(len(plan[cls][si]) for cls in CLASS_NAMES) for si, name in enumerate(SPLIT_NAMES)}

    # -- loading ------------------------------------------------------------------------------
    def load(self) -> DatasetSplits:
        params, layout, files, fp = self._scan()
        plan, reserves = choose_files(params, layout, files)

        # slots: (split, class index, entry) in final array order
        slots: dict[str, list[tuple[int, FileEntry]]] = {name: [] for name in SPLIT_NAMES}
        for si, split_name in enumerate(SPLIT_NAMES):
            for ci, cls in enumerate(CLASS_NAMES):
                slots[split_name].extend((ci, f) for f in plan[cls][si])

        size = self._target_size(params, slots)
        has_masks = any(f.mask is not None for entries in files.values() for f in entries)
        arrays: dict[str, dict[str, Any]] = {}
        for split_name, items in slots.items():
            n = len(items)
            arrays[split_name] = {
                "images": np.zeros((n, *size), dtype=np.uint8),
                "masks": np.zeros((n, *size), dtype=bool) if has_masks else None,
                "labels": np.array([ci for ci, _ in items], dtype=np.int64),
                "entries": [f for _, f in items],
                "keep": np.ones(n, dtype=bool),
            }

        modes: Counter[str] = Counter()
        lock = threading.Lock()
        failures: list[tuple[str, int, FileEntry, str]] = []
        wrong_size: list[tuple[FileEntry, tuple[int, ...]]] = []
        resize = params["image_size"] is not None

        def work(job: tuple[str, int]) -> None:
            split_name, j = job
            a = arrays[split_name]
            entry = a["entries"][j]
            try:
                img, mask, mode = _decode(entry, size, resize)
            except _MaskError as exc:
                failures.append((split_name, j, entry, str(exc)))
                return
            except Exception as exc:  # noqa: BLE001 - reported with the file name
                failures.append((split_name, j, entry, _reason(exc, entry.path)))
                return
            if img.shape != size:
                wrong_size.append((entry, img.shape))
                return
            a["images"][j] = img
            if mask is not None:
                a["masks"][j] = mask
            with lock:
                modes[mode] += 1

        jobs = [(s, j) for s in SPLIT_NAMES for j in range(len(slots[s]))]
        _map(work, jobs)

        skipped: list[dict[str, str]] = []
        while failures and not wrong_size:
            if not params["skip_corrupt"]:
                shown = "\n".join(f"  {f.path}: {why}" for _, _, f, why in sorted(failures, key=lambda t: t[2].rel)[:20])
                more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
                raise DataError(
                    f"dataset {NAME!r}: {len(failures)} corrupt or unreadable file(s) among the chosen images:\n"
                    f"{shown}{more}\nRemove or replace them, or set skip_corrupt = true to skip them "
                    "(each is then replaced by another image of its class and listed in the run's manifest)."
                )
            current, failures = sorted(failures, key=lambda t: (t[0], t[1])), []
            retry = []
            for split_name, j, entry, why in current:
                skipped.append({"file": entry.rel, "error": why})
                cls = CLASS_NAMES[int(arrays[split_name]["labels"][j])]
                if reserves[cls]:
                    arrays[split_name]["entries"][j] = reserves[cls].pop(0)
                    retry.append((split_name, j))
                else:
                    arrays[split_name]["keep"][j] = False
            _map(work, retry)

        if wrong_size:
            shown = "\n".join(f"  {e.path}: {shape[1]}x{shape[0]}" for e, shape in sorted(wrong_size, key=lambda t: t[0].rel)[:20])
            raise DataError(
                f"dataset {NAME!r}: image_size is None (keep the native size) but {len(wrong_size)} image(s) are not "
                f"{size[1]}x{size[0]} like the first one:\n{shown}\nSet image_size (e.g. image_size = {size[0]}) "
                "to resize every image to one square size."
            )

        splits: dict[str, Split] = {}
        missing_masks: list[str] = []
        digest = hashlib.blake2b(digest_size=16)
        for split_name in SPLIT_NAMES:
            a = arrays[split_name]
            keep = a["keep"]
            entries = [e for e, k in zip(a["entries"], keep, strict=True) if k]
            images, masks, labels = a["images"], a["masks"], a["labels"]
            if not keep.all():
                images, labels = images[keep], labels[keep]
                masks = None if masks is None else masks[keep]
            ids = np.array([e.rel for e in entries], dtype=str) if entries else np.zeros(0, dtype="<U1")
            missing_masks.extend(e.rel for e in entries if e.mask is None)
            splits[split_name] = Split(
                images=images, labels=labels, ids=ids, masks={} if masks is None else {"lung": masks}
            )
            digest.update(split_name.encode())
            digest.update(np.ascontiguousarray(images).data)  # no copy of the pixels
            digest.update("\n".join(ids.tolist()).encode())

        metadata = {
            "root": str(Path(self.root).expanduser().resolve()),
            "database_folder": str(layout.top.resolve()),
            "layout": layout.kind,
            "class_folders": {c: layout.classes[c].path.relative_to(layout.top).as_posix() for c in CLASS_NAMES},
            "available_per_class": {c: len(files[c]) for c in CLASS_NAMES},
            "params": params,
            "image_size": list(size),
            "rounding_rule": ROUNDING_RULE,
            "counts": {s: {c: int(np.sum(splits[s].labels == i)) for i, c in enumerate(CLASS_NAMES)} for s in SPLIT_NAMES},
            "files": {s: splits[s].ids.tolist() for s in SPLIT_NAMES},
            "skipped_corrupt": skipped,
            "missing_lung_masks": sorted(missing_masks) if has_masks else [],
            "lung_masks": "none in this layout" if not has_masks else "from masks/ folders",
            "source_modes": dict(sorted(modes.items())),
            "content_hash": digest.hexdigest(),
            "loader_version": LOADER_VERSION,
            # the classes whose recall the `disease_recall` selection rule averages
            "positive_classes": list(DISEASE_CLASSES),
        }
        return DatasetSplits(
            name=NAME,
            class_names=CLASS_NAMES,
            train=splits["train"],
            val=splits["val"],
            test=splits["test"],
            fingerprint=fp,
            metadata=metadata,
        )

    @staticmethod
    def _target_size(params: dict[str, Any], slots: dict[str, list[tuple[int, FileEntry]]]) -> tuple[int, int]:
        if params["image_size"] is not None:
            return (params["image_size"], params["image_size"])
        from PIL import Image

        for items in slots.values():
            for _, entry in items:
                try:
                    with Image.open(entry.path) as im:  # header only, no decoding
                        return (im.size[1], im.size[0])
                except Exception:  # noqa: BLE001 - this file is reported by the decode pass
                    continue
        return (299, 299)


def _map(work: Any, jobs: Sequence[Any]) -> None:
    workers = min(os.cpu_count() or 1, 8)
    if workers <= 1 or len(jobs) < 8:
        for job in jobs:
            work(job)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, jobs))
