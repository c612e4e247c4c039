"""A folder of images in class folders (the ImageFolder layout) as a ``Dataset`` that decodes lazily.

Two layouts: ``root/<class>/*.{png,jpg,jpeg,bmp,webp}`` (split per class, seeded, 60/20/20 into train, val and
test) or ``root/{train,val,test}/<class>/...`` (``val`` optional: then a seeded fifth of train per class).
Class folder names, sorted, are the labels; a class is its index in that order.

Loading lists and probes the files (size, modification time, image header; PNG checksums), so nothing is
decoded up front and nothing but the file list is held: each split decodes an item with Pillow and applies
the preprocessing (``edgecomp.data.preprocess``) only when that item is read. Unreadable files are skipped and
counted, up to ``MAX_BAD_FRACTION`` of them. The recipe is settled here against the model's input: channels
and layout from the model unless given, and, without ``--resize``/``--center-crop``, a resize to the model's
height and width whenever the images are not already that size.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset

from edgecomp.data.base import Dataset
from edgecomp.data.preprocess import Preprocess, check_channels, resized_size
from edgecomp.errors import ConfigError
from edgecomp.spec import ImagePreprocess, ModelSpec, Normalization

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_BAD_FRACTION = 0.10
"""Most unreadable image files skipped (as a fraction of all image files) before loading fails."""
SPLIT_FOLDERS = ("train", "val", "test")
LAYOUT_HINT = ("put the images in one folder per class, root/<class>/*.png|jpg|jpeg|bmp|webp "
               "(or root/train/<class>/..., root/test/<class>/... and optionally root/val/<class>/...)")


@dataclass(frozen=True)
class ImageFile:
    """One image file as probed when loading: where it is, its class, what identifies its content, its size."""

    path: str
    target: int
    bytes: int
    mtime_ns: int
    width: int
    height: int


class ImageFolderSplit(TorchDataset):
    """One split of an image folder: a file list; item ``i`` is file ``i`` decoded and preprocessed on reading."""

    def __init__(self, files: Sequence[ImageFile], preprocess: Preprocess) -> None:
        self.paths = [f.path for f in files]
        self.targets = [f.target for f in files]
        self.stamps = [(f.bytes, f.mtime_ns) for f in files]
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(decode(self.paths[i], self.preprocess)), self.targets[i]

    def fingerprint(self) -> str:
        """A hash of the file list with each file's size and modification time."""
        digest = hashlib.sha256()
        for path, (size, mtime) in zip(self.paths, self.stamps):
            digest.update(f"{path}\0{size}\0{mtime}\n".encode())
        return digest.hexdigest()


def decode(path: str, preprocess: Preprocess) -> np.ndarray:
    """The model input for the image file at ``path``: decoded with Pillow, then ``preprocess`` applied."""
    try:
        with Image.open(path) as img:
            return preprocess(img)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"cannot decode the image {path}: {exc}",
                          "delete or replace the file (it passed the header check when the folder was loaded)") from exc


def load_image_folder(root: str | Path, preprocess: Preprocess | None, seed: int = 0, workers: int | None = None,
                      spec: ModelSpec | None = None) -> Dataset:
    """The image folder at ``root`` as a lazily decoded ``Dataset`` (see the module docstring).

    ``preprocess`` None: pixels / 255, channels and layout from ``spec`` (the model's input), resized to its
    height and width if the images are not that size already. ``workers``: DataLoader worker processes for
    streaming (default min(2, CPUs)).
    """
    root = Path(root)
    folders = _split_folders(root)
    labels = _class_names(folders["train"] if folders else root)
    listed = {split: _list_images(folder, labels) for split, folder in (folders or {"all": root}).items()}
    probed, bad, total = _probe_all(listed)
    if total == 0:
        raise ConfigError(f"no images in {root} (looked for {', '.join(IMAGE_SUFFIXES)} files in class folders)",
                          LAYOUT_HINT)
    notes = _bad_file_notes(root, bad, total)
    for split, files in probed.items():
        counts = Counter(f.target for f in files)
        empty = [labels[c] for c in range(len(labels)) if not counts[c]]
        if empty and split in ("all", "train"):
            raise ConfigError(f"class folder(s) {', '.join(empty)} of {root} hold no readable images",
                              "add images to them or remove the empty folders")
    rng = np.random.default_rng(seed)
    if folders:
        train, val = (probed["train"], probed["val"]) if "val" in probed else _split(probed["train"], rng, (0.8,))
        splits = {"train": train, "val": val, "test": probed["test"]}
    else:
        train, val, test = _split(probed["all"], rng, (0.6, 0.2))
        splits = {"train": train, "val": val, "test": test}
    empty = [s for s, files in splits.items() if not files]
    if empty:
        raise ConfigError(f"{root} has too few images for a {', '.join(empty)} split ({total - len(bad)} readable)",
                          "add images: with no split folders each class is split 60/20/20, so give each at "
                          "least 5")
    sizes = Counter((f.width, f.height) for files in splits.values() for f in files)
    pre, settled = settle_recipe(preprocess, spec, sizes)
    notes += settled
    n_images = sum(len(files) for files in splits.values())
    return Dataset(  # its notes reach the console once, from the build (build._load)
        name=root.name, train=ImageFolderSplit(splits["train"], pre), val=ImageFolderSplit(splits["val"], pre),
        test=ImageFolderSplit(splits["test"], pre), labels=labels, preprocess=pre,
        workers=min(2, os.cpu_count() or 1) if workers is None else workers,
        source=f"image folder {root} ({len(labels)} classes, {n_images:,} images)", notes=notes,
    )


def settle_recipe(pre: Preprocess | None, spec: ModelSpec | None,
                  sizes: Counter[tuple[int, int]]) -> tuple[Preprocess, list[str]]:
    """``pre`` completed for images of ``sizes`` (width, height: count) and the model's input (``spec``).

    Channels and layout come from the model unless given; without a resize or crop, images not already of the
    model's height and width (or, with no model, of the commonest size) are resized to it. Raises a ConfigError
    when the recipe cannot make every image one size.
    """
    notes: list[str] = []
    if pre is None:
        pre = Preprocess(ImagePreprocess(), Normalization())
        notes.append("no preprocessing given: x = pixel / 255 (mean 0, std 1)")
    image, fill = pre.image, {}
    chw = _model_chw(spec)
    if chw and "channels" not in image.model_fields_set and chw[0] == 1:
        fill["channels"] = "L"
    if spec is not None and "layout" not in image.model_fields_set and spec.layout in ("NCHW", "NHWC"):
        fill["layout"] = spec.layout
    if image.resize is None and image.center_crop is None:
        want = (chw[2], chw[1]) if chw else sizes.most_common(1)[0][0]
        if set(sizes) != {want}:
            fill["resize"] = [want[1], want[0]]
            shown = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sizes.most_common(4))
            more = f" and {len(sizes) - 4} more" if len(sizes) > 4 else ""
            notes.append(f"images come in {len(sizes)} size(s) ({shown}{more}); each is resized to {want[0]}x{want[1]} "
                         f"({'the model input' if chw else 'the commonest size'}); pass --resize/--center-crop "
                         "to choose otherwise")
    pre = Preprocess(ImagePreprocess(**{**image.model_dump(exclude_unset=True), **fill}), pre.normalization)
    check_channels(pre)
    crop = pre.image.center_crop
    for w, h in sizes:
        rw, rh = resized_size(w, h, pre.image.resize)
        if crop and (crop[0] > rh or crop[1] > rw):
            after = f" ({rw}x{rh} after resizing)" if (rw, rh) != (w, h) else ""
            raise ConfigError(f"a {w}x{h} image{after} is too small to crop {crop[1]}x{crop[0]} (width x height)",
                              "pass --resize with a size of at least the crop, or a smaller --center-crop")
    outputs = Counter(pre.output_size(w, h) for w, h in sizes)
    if len(outputs) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in outputs)
        raise ConfigError(f"the preprocessing makes images of {len(outputs)} sizes (height x width: {shown}): "
                          f"resize {pre.image.resize} keeps each image's aspect ratio",
                          "add --center-crop H,W, or give --resize H,W for one exact size")
    return pre, notes


def _model_chw(spec: ModelSpec | None) -> tuple[int, int, int] | None:
    """(channels, height, width) of the model's image input, or None when it is not an image."""
    if spec is None or len(spec.input_shape) != 4 or spec.layout not in ("NCHW", "NHWC"):
        return None
    _, a, b, c = spec.input_shape
    return (a, b, c) if spec.layout == "NCHW" else (c, a, b)


def _split_folders(root: Path) -> dict[str, Path] | None:
    """{split: folder} when ``root`` holds train/ and test/ (and maybe val/) and nothing else; else None."""
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder", LAYOUT_HINT)
    names = {d.name for d in _subfolders(root)}
    if "train" not in names or not names <= set(SPLIT_FOLDERS):
        return None
    if "test" not in names:
        raise ConfigError(f"{root} has split folders ({', '.join(sorted(names))}) but no test/",
                          "add root/test/<class>/... with held-out images, or put all images in root/<class>/ "
                          "to have them split 60/20/20")
    return {name: root / name for name in SPLIT_FOLDERS if name in names}


def _subfolders(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _class_names(folder: Path) -> list[str]:
    """The class folders' names, sorted; a ConfigError when there are fewer than two."""
    names = [d.name for d in _subfolders(folder)]
    if not names:
        loose = [p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES][:3]
        where = f" (images such as {', '.join(loose)} lie directly in it)" if loose else ""
        raise ConfigError(f"no class folders in {folder}{where}", LAYOUT_HINT)
    if len(names) == 1:
        raise ConfigError(f"{folder} has a single class folder ({names[0]}); a classifier needs two or more",
                          "add a folder of images for each other class the model outputs")
    return names


def _list_images(folder: Path, labels: list[str]) -> list[tuple[Path, int]]:
    """(file, class index) of every image file under ``folder``'s class folders, sorted by class then path."""
    found = []
    for d in _subfolders(folder):
        if d.name not in labels:
            raise ConfigError(f"{d} is a class that {folder.parent}/train/ does not have",
                              f"every split's class folders must be among train's: {', '.join(labels)}")
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(d).parts))
        found += [(p, labels.index(d.name)) for p in files]
    return found


def _probe(item: tuple[Path, int]) -> ImageFile | str:
    """The file's identity and size from its header (PNG: all chunk checksums too), or why it is unreadable."""
    path, target = item
    try:
        st = path.stat()
        with Image.open(path) as img:
            width, height = img.size
            img.verify()
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types (SyntaxError, struct.error, ...)
        text = str(exc)  # Pillow often repeats the path: say what is wrong instead
        name = f"{path.parent.name}/{path.name}"  # the class folder too: file names repeat across classes
        return f"{name}: {'not a readable image' if str(path) in text else text} ({type(exc).__name__})"
    return ImageFile(str(path), target, st.st_size, st.st_mtime_ns, width, height)


def _probe_all(listed: dict[str, list[tuple[Path, int]]]) -> tuple[dict[str, list[ImageFile]], list[str], int]:
    """Probe every listed file (a few threads: it is mostly file reading): readable files per split, the
    reasons of the unreadable ones, and the number of files listed."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = {split: list(pool.map(_probe, items, chunksize=64)) for split, items in listed.items()}
    good = {split: [r for r in res if isinstance(r, ImageFile)] for split, res in results.items()}
    bad = [r for res in results.values() for r in res if isinstance(r, str)]
    return good, bad, sum(len(items) for items in listed.values())


def _bad_file_notes(root: Path, bad: list[str], total: int) -> list[str]:
    """A note on the skipped files, or a ConfigError when more than MAX_BAD_FRACTION of them are unreadable."""
    if not bad:
        return []
    examples = "; ".join(bad[:3]) + ("; ..." if len(bad) > 3 else "")
    if len(bad) > MAX_BAD_FRACTION * total:
        raise ConfigError(f"{len(bad)} of {total} image files in {root} are unreadable ({examples}), more than "
                          f"the {MAX_BAD_FRACTION:.0%} that are skipped",
                          "delete or re-save the broken files (they may be truncated downloads or not images)")
    return [f"skipped {len(bad)} unreadable image file(s) of {total} ({examples})"]


def _split(files: list[ImageFile], rng: np.random.Generator,
           fractions: tuple[float, ...]) -> tuple[list[ImageFile], ...]:
    """Split ``files`` per class by ``fractions`` (the rest goes last), seeded; each part keeps file order."""
    parts: list[list[ImageFile]] = [[] for _ in range(len(fractions) + 1)]
    for target in sorted({f.target for f in files}):
        members = [f for f in files if f.target == target]
        order = rng.permutation(len(members))
        cuts = np.cumsum([round(fr * len(members)) for fr in fractions]).tolist()
        part_of = np.searchsorted(cuts, np.arange(len(members)), side="right")
        chosen = {int(i): int(part_of[rank]) for rank, i in enumerate(order)}
        for i, f in enumerate(members):
            parts[chosen[i]].append(f)
    return tuple(parts)
