import hashlib
import urllib.error

import pytest
import torch

from dropnotes import data


@pytest.fixture
def private_roots(tmp_path, monkeypatch):
    """Point the data lookup at two empty folders: $DROPNOTES_DATA and a fake user cache."""
    env, cache = tmp_path / "env", tmp_path / "cache"
    env.mkdir()
    (env / "README").write_text("an empty data folder is refused: this one holds a file\n")
    monkeypatch.setenv(data.ENV_VAR, str(env))
    monkeypatch.setattr("platformdirs.user_cache_dir", lambda name: str(cache / name))
    monkeypatch.setattr(data, "SIBLING_DATA", tmp_path / "no-such-folder")
    return env, cache


def test_roots_order(private_roots, tmp_path, monkeypatch):
    env, cache = private_roots
    assert data.data_roots() == [env, cache / "dropnotes" / "data"]
    monkeypatch.setattr(data, "SIBLING_DATA", tmp_path)  # an offline copy beside the checkout
    assert data.data_roots() == [env, tmp_path, cache / "dropnotes" / "data"]


def test_missing_file_offline_names_file_url_and_variable(private_roots, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(data.DataError) as err:
        data.fetch("mnist/t10k-labels-idx1-ubyte.gz")
    msg = str(err.value)
    assert "mnist/t10k-labels-idx1-ubyte.gz" in msg
    assert data.FILES["mnist/t10k-labels-idx1-ubyte.gz"].url in msg
    assert data.ENV_VAR in msg


def test_corrupt_file_is_reported_not_used(private_roots):
    env, _ = private_roots
    bad = env / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the MNIST labels")
    with pytest.raises(data.DataError, match="corrupt.*sha256"):
        data.fetch("mnist/t10k-labels-idx1-ubyte.gz")


def test_download_is_verified_and_atomic(have_data, private_roots, monkeypatch):
    """A 'download' (served from the offline copy) lands verified; a wrong payload leaves nothing behind."""
    payload = (have_data / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()

    class Response:
        def __init__(self, blob):
            self.blob, self.headers = blob, {"Content-Length": str(len(blob))}

        def read(self, n=-1):
            out, self.blob = self.blob[:n], self.blob[n:]
            return out

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    env, _ = private_roots
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: Response(b"garbage"))
    with pytest.raises(data.DataError, match="corrupt"):
        data.fetch("mnist/t10k-labels-idx1-ubyte.gz")
    assert not any(p.is_file() and p.name != "README" for p in env.rglob("*"))  # no partial file left
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: Response(payload))
    path = data.fetch("mnist/t10k-labels-idx1-ubyte.gz")
    assert path == env / "mnist" / "t10k-labels-idx1-ubyte.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == data.FILES[
        "mnist/t10k-labels-idx1-ubyte.gz"].sha256


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="dataset='cifar-10'.*'cifar10', 'cifar10-jpg'"):
        data.load_images("cifar-10")
    with pytest.raises(ValueError, match="dataset='wikitext'"):
        data.load_text("wikitext")


def test_mnist_and_fashion(have_data):
    m = data.load_mnist()
    assert m.x_train.shape == (60000, 1, 28, 28) and m.x_train.dtype == torch.uint8
    assert m.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert m.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    f = data.load_fashion_mnist()
    assert f.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert f.classes[9] == "Ankle boot"


def test_ptb_matches_published_counts(have_data):
    ptb = data.load_ptb()
    assert ptb.vocab_size == 10000
    assert (len(ptb.train), len(ptb.valid), len(ptb.test)) == (929589, 73760, 82430)
    assert ptb.vocab[int(ptb.train[0])] in ptb.vocab


def test_tinyshakespeare_split(have_data):
    ts = data.load_tinyshakespeare()
    assert len(ts.train) + len(ts.valid) == 1115394
    assert bytes(ts.train[:9].tolist()) == b"First Cit"


def test_stdlib_corpus_is_reproducible():
    raw1, prov1 = data.python_stdlib_corpus(max_bytes=200_000)
    raw2, prov2 = data.python_stdlib_corpus(max_bytes=200_000)
    assert raw1 == raw2 and len(raw1) == 200_000
    assert prov1 == prov2 and prov1["sha256"] == hashlib.sha256(raw1).hexdigest()


def test_cifar10_jpg_is_its_own_name(have_data):
    c = data.load_images("cifar10-jpg")
    assert c.name == "cifar10-jpg"
    assert c.x_train.shape == (50000, 3, 32, 32) and c.x_test.shape == (10000, 3, 32, 32)
    assert torch.bincount(c.y_test).tolist() == [1000] * 10


def test_cifar10_jpg_is_class_sorted_so_prefixes_are_one_class(have_data):
    """Documented trap: a prefix of the JPEG copy's test split is a single class."""
    c = data.load_images("cifar10-jpg")
    assert torch.unique(c.y_test[:1000]).tolist() == [0]


def test_a_missing_or_empty_data_folder_is_an_error(tmp_path, monkeypatch):
    """A DROPNOTES_DATA typo must not fall back silently to another copy of the data."""
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(data.DataError, match="DROPNOTES_DATA=.*typo.* is not a folder"):
        data.data_roots()
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(data.DataError, match="is an empty folder"):
        data.fetch("mnist/t10k-labels-idx1-ubyte.gz")


def test_unreadable_data_is_a_data_error(private_roots, monkeypatch):
    env, _ = private_roots
    path = env / "mnist" / "t10k-labels-idx1-ubyte.gz"
    path.parent.mkdir()
    path.write_bytes(b"x")
    real_open = open

    def refuse(file, *args, **kwargs):  # as for a file without read permission (we run as root here)
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refuse)
    with pytest.raises(data.DataError, match="cannot be read .*Permission denied"):
        data.fetch("mnist/t10k-labels-idx1-ubyte.gz")


def test_cifar_archive_is_unpickled_only_after_its_checksum_matched(private_roots, monkeypatch):
    """Unpickling runs code, so a tampered archive must be refused before pickle sees it."""
    import pickle

    env, _ = private_roots
    (env / "cifar10").mkdir()
    (env / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"tampered")
    calls = []
    monkeypatch.setattr(pickle, "load", lambda *a, **k: calls.append(a))
    with pytest.raises(data.DataError, match="corrupt"):
        data.load_cifar10()
    assert calls == []


def test_provenance_names_the_data_files_read(have_data):
    from dropnotes import results

    data.fetch("mnist/t10k-labels-idx1-ubyte.gz")
    used = results.provenance("cpu", [0], 1.0, "mnist")["data_files"]
    entry = used["mnist/t10k-labels-idx1-ubyte.gz"]
    assert entry["sha256"] == data.FILES["mnist/t10k-labels-idx1-ubyte.gz"].sha256
    assert entry["root"] == str(have_data.resolve())
