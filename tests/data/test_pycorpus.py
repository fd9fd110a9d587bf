import hashlib
import pathlib

import numpy as np
import pytest

from jaxzoo.data import pycorpus, tfds_utils

TEST_SUITE_DIRS = {"test", "tests", "idle_test"}


def sha1_split(relpath):
    return "test" if int(hashlib.sha1(relpath.encode()).hexdigest(), 16) % 20 == 0 else "train"


def read_split(builder, split):
    """{path: (text bytes, num_bytes)} of a prepared builder's split, read straight from TFDS."""
    out = {}
    for r in builder.as_data_source(split=split):
        path = r["path"].decode() if isinstance(r["path"], bytes) else r["path"]
        text = r["text"] if isinstance(r["text"], bytes) else r["text"].encode()
        out[path] = (text, int(r["num_bytes"]))
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The real corpus of this Python, built once (well under a second)."""
    return str(tmp_path_factory.mktemp("tfds"))


def test_encode_decode_round_trip_non_ascii():
    tok = pycorpus.ByteTokenizer()
    text = "naïve café — 世界 🐍\n\tx = 'ß'"
    ids = tok.encode(text)
    assert ids.dtype == np.uint16
    assert ids.tolist() == list(text.encode("utf-8"))
    assert len(ids) > len(text)  # multi-byte characters really took several ids
    assert tok.decode(ids) == text
    assert tok.decode(ids.tolist()) == text
    assert (tok.vocab_size, tok.eot_id) == (pycorpus.VOCAB_SIZE, pycorpus.EOT) == (257, 256)


def test_decode_drops_eot_and_replaces_invalid_bytes():
    tok = pycorpus.ByteTokenizer()
    assert tok.decode([104, 256, 105, 256, 300]) == "hi"  # EOT and ids of a padded vocab dropped
    assert tok.decode(np.array([0xFF, 97], np.int32)) == "\ufffda"
    assert tok.decode([]) == ""
    with pytest.raises(ValueError, match="-1"):
        tok.decode([97, -1])
    with pytest.raises(ValueError, match="1-D"):
        tok.decode(np.zeros((2, 3), np.int32))


def test_encode_documents_appends_eot_to_each():
    ids = pycorpus.ByteTokenizer().encode_documents(["a", "", "é"])
    assert ids.dtype == np.uint16
    assert ids.tolist() == [97, 256, 256, 0xC3, 0xA9, 256]


def test_selection_and_split_on_fake_stdlib(tmp_path):
    root = tmp_path / "lib"
    kept = {f"m{i:02d}.py": f"x = {i}\n" for i in range(40)}
    kept.update({
        "pkg/__init__.py": "'''pkg'''\n", "pkg/sub/mod.py": "def f():\n    return 'é'\n",
        "idlelib/editor.py": "pass\n", "testing.py": "pass\n", "latest/a.py": "pass\n",
        "exactly_512k.py": "#" * (512 * 1024 - 1) + "\n",
    })
    dropped = {
        "test/support.py": "pass\n", "test/test_os.py": "pass\n", "lib2to3/tests/data/x.py": "pass\n",
        "idlelib/idle_test/htest.py": "pass\n", "unittest/test/helper.py": "pass\n",
        "site-packages/thirdparty.py": "pass\n", "dist-packages/thirdparty.py": "pass\n",
        "__pycache__/cached.py": "pass\n", "pkg/test_pkg.py": "pass\n", "empty.py": "",
        "over_512k.py": "#" * (512 * 1024) + "\n", "notes.txt": "not python\n",
    }
    for rel, text in {**kept, **dropped}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    (root / "latin1.py").write_bytes(b"# caf\xe9\n")  # not valid UTF-8: dropped

    files = pycorpus.stdlib_files(root)
    assert [p for p, _ in files] == sorted(kept)
    assert all(text == kept[p] for p, text in files)

    expected = {s: {p for p in kept if sha1_split(p) == s} for s in ("train", "test")}
    assert expected["test"] and expected["train"]  # the names exercise both splits
    builder = tfds_utils.prepare(pycorpus.PythonStdlib, tmp_path / "tfds", root=root)
    assert builder.builder_config.name == pycorpus.CONFIG_NAME
    for split in ("train", "test"):
        got = read_split(builder, split)
        assert set(got) == expected[split]
        for path, (text, num_bytes) in got.items():
            assert text == kept[path].encode() and num_bytes == len(text)


def test_real_splits_partition_the_selected_files(data_dir):
    builder = pycorpus._prepared(data_dir)
    splits = {s: read_split(builder, s) for s in ("train", "test")}
    train, test = set(splits["train"]), set(splits["test"])
    selected = {p for p, _ in pycorpus.stdlib_files()}
    assert not train & test
    assert train | test == selected
    assert len(test) > 0 and 0.01 < len(test) / len(selected) < 0.15  # about 5% (binomial)
    for split, docs in splits.items():
        for path, (text, num_bytes) in docs.items():
            assert sha1_split(path) == split
            parts = path.split("/")
            assert not TEST_SUITE_DIRS & set(parts[:-1]) and not parts[-1].startswith("test_")
            assert "site-packages" not in parts and path.endswith(".py")
            assert 0 < num_bytes == len(text) <= 512 * 1024
    root = pathlib.Path(pycorpus.stdlib_root())
    assert splits["train"]["os.py"][0] == (root / "os.py").read_bytes()


def test_load_tokens_ends_every_document_with_eot(data_dir):
    docs = pycorpus.load_documents("test", data_dir)
    assert [p for p, _ in docs] == sorted(p for p, _ in docs)
    tokens = pycorpus.load_tokens("test", data_dir)
    assert tokens.dtype == np.uint16 and tokens.max() == pycorpus.EOT
    assert np.sum(tokens == pycorpus.EOT) == len(docs)
    assert tokens[-1] == pycorpus.EOT
    pieces = np.split(tokens, np.flatnonzero(tokens == pycorpus.EOT) + 1)[:-1]
    assert [p[:-1].astype(np.uint8).tobytes() for p in pieces] == [d for _, d in docs]


def test_load_tokens_max_bytes_keeps_whole_spread_out_documents(data_dir):
    docs = dict(pycorpus.load_documents("train", data_dir))
    paths = sorted(docs)
    for max_bytes in (2_000, 200_000):
        tokens = pycorpus.load_tokens("train", data_dir, max_bytes=max_bytes)
        assert 0.9 * max_bytes <= len(tokens) <= max_bytes
        np.testing.assert_array_equal(tokens, pycorpus.load_tokens("train", data_dir, max_bytes=max_bytes))
        pieces = np.split(tokens, np.flatnonzero(tokens == pycorpus.EOT) + 1)[:-1]
        texts = [p[:-1].astype(np.uint8).tobytes() for p in pieces]
        by_text = {v: k for k, v in docs.items()}
        chosen = [by_text[t] for t in texts]  # every piece is a whole document of the split
        assert chosen == sorted(chosen)  # concatenated in path order
        assert chosen != paths[:len(chosen)]  # not just the alphabetically first files
        assert len({p.split("/")[0][:1].lower() for p in chosen}) >= 2
    with pytest.raises(ValueError, match="max_bytes=1 is smaller"):
        pycorpus.load_tokens("train", data_dir, max_bytes=1)


def test_bad_split_is_named(data_dir):
    with pytest.raises(ValueError, match=r"split='validation'; allowed: 'train', 'test'"):
        pycorpus.load_tokens("validation", data_dir)


def test_windows_shapes_overlap_and_views():
    tokens = np.arange(11, dtype=np.uint16)
    w = pycorpus.windows(tokens, 3)
    assert w.shape == (3, 4) and w.dtype == np.uint16
    for i in range(3):
        np.testing.assert_array_equal(w[i], tokens[3 * i:3 * i + 4])
    np.testing.assert_array_equal(w[:-1, -1], w[1:, 0])  # consecutive windows share one token
    np.testing.assert_array_equal(w[:, 1:].ravel(), tokens[1:10])  # each target once
    w1 = pycorpus.windows(tokens, 3, stride=1)
    assert w1.shape == (8, 4)
    np.testing.assert_array_equal(w1[:, 0], tokens[:8])
    assert pycorpus.windows(tokens, 10).shape == (1, 11)
    assert pycorpus.windows(tokens, 2, stride=4).shape == (3, 3)  # starts 0, 4, 8


@pytest.mark.parametrize("length,stride,n,match", [
    (0, None, 11, "length=0"), (3, 0, 11, "stride=0"), (10, None, 10, "10 tokens is shorter"),
])
def test_windows_errors(length, stride, n, match):
    with pytest.raises(ValueError, match=match):
        pycorpus.windows(np.zeros(n, np.uint16), length, stride)
    with pytest.raises(ValueError, match="1-D"):
        pycorpus.windows(np.zeros((2, 20), np.uint16), 3)
