"""storage/: one interface, a local-folder and an S3 backend (S3 = moto's server on loopback)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from configs.errors import MoraError
from storage import LocalStore, ModelRef, Provenance, S3Store, Store, open_store

from tests.s3server import S3_BUCKET, s3_server, s3_store_url  # noqa: F401  (fixtures)

KEY_RE = re.compile(r"(?P<kind>[a-z0-9/_-]+)/(?P<day>\d{8})/(?P<hex>[0-9a-f]{32})(?P<suffix>.*)")

BAD_KEYS = [
    "",
    "../x",
    "/abs",
    "a/../b",
    "a\\b",
    "x.prov.json",
    "video/x.mp4.prov.json",
    "a\x00b",
    "a\nb",
    "a\x1fb",
    "dir/",
    "a//b",
    "./a",
    "a/./b",
    ".x.mp4.abc.mora-tmp",
]


def full_provenance(**overrides) -> Provenance:
    fields = dict(
        kind="video",
        flow_run_id="0b7c6a52-2a1c-4d1e-9a3e-1f2d3c4b5a69",
        sop="text-to-video",
        prompt="a red fox in snow",
        enhanced_prompt="a red fox trotting through fresh snow, golden hour, cinematic",
        seed=1234,
        profile="tiny",
        models=[
            ModelRef(id="tiny/sd3", revision="abc123", role="text-to-image"),
            ModelRef(id="tiny/svd", role="image-to-video"),
        ],
        parents=["image/20250101/" + "a" * 32 + ".png"],
        created_at=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc),
        params={"frames": 16, "fps": 8, "size": [64, 64], "nested": {"ok": True, "x": None}},
    )
    fields.update(overrides)
    return Provenance(**fields)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    return open_store(request.getfixturevalue("s3_store_url"))


# ---- both backends ----------------------------------------------------------------------------


def test_bytes_round_trip(store):
    key = store.new_key("image", ".png")
    data = bytes(range(256)) * 5
    assert store.put_bytes(key, data, Provenance(kind="image")) == key
    assert store.exists(key)
    assert store.get_bytes(key) == data
    assert store.put_bytes(store.new_key("report"), b"", Provenance(kind="report"))  # empty is fine


def test_file_round_trip(store, tmp_path):
    src = tmp_path / "in.mp4"
    src.write_bytes(os.urandom(200_000))
    key = store.put_file(store.new_key("video", ".mp4"), src, Provenance(kind="video"))
    assert store.get_bytes(key) == src.read_bytes()

    dest = store.download(key, tmp_path / "out" / "deep" / "copy.mp4")  # parents made
    assert dest == tmp_path / "out" / "deep" / "copy.mp4"
    assert dest.read_bytes() == src.read_bytes()
    into_dir = store.download(key, tmp_path / "out")  # a folder: keeps the key's file name
    assert into_dir == tmp_path / "out" / key.rsplit("/", 1)[1]
    assert into_dir.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(["deep", into_dir.name])

    with store.local_path(key) as path:
        assert path.suffix == ".mp4"
        assert path.read_bytes() == src.read_bytes()
    if isinstance(store, S3Store):
        assert not path.exists()  # the temp download is gone
    else:
        assert path.exists() and str(path) == store.uri(key)


def test_provenance_round_trip(store):
    data = b"\x00fake mp4 bytes" * 100
    prov = full_provenance()
    key = store.put_bytes(store.new_key("video", ".mp4"), data, prov)
    back = store.read_provenance(key)
    assert back.sha256 == hashlib.sha256(data).hexdigest()
    assert back.size == len(data)
    assert back.content_type == "video/mp4"
    assert back.created_at == prov.created_at and back.created_at.tzinfo is not None
    expected = prov.model_dump() | {"sha256": back.sha256, "size": len(data),
                                    "content_type": "video/mp4"}
    assert back.model_dump() == expected
    assert prov.sha256 is None  # the caller's object is not modified

    # An explicit content type is kept; an unknown suffix falls back to octet-stream.
    k2 = store.put_bytes(store.new_key("dataset", ".parquet"), b"PAR1",
                         Provenance(kind="dataset", content_type="application/x-parquet"))
    assert store.read_provenance(k2).content_type == "application/x-parquet"
    k3 = store.put_bytes(store.new_key("checkpoint", ".safetensors"), b"w", Provenance(kind="checkpoint"))
    assert store.read_provenance(k3).content_type == "application/octet-stream"


def test_provenance_model():
    assert Provenance(kind="x").created_at.tzinfo == timezone.utc
    naive = Provenance(kind="x", created_at=datetime(2025, 1, 1, 12))
    assert naive.created_at == datetime(2025, 1, 1, 12, tzinfo=timezone.utc)
    plus2 = timezone(timedelta(hours=2))
    assert Provenance(kind="x", created_at=datetime(2025, 1, 1, 12, tzinfo=plus2)).created_at.hour == 10
    with pytest.raises(ValueError):
        Provenance(kind="x", unknown_field=1)
    with pytest.raises(ValueError):
        ModelRef(id="m", extra="no")
    again = Provenance.model_validate_json(full_provenance().model_dump_json())
    assert again == full_provenance()


def test_unserialisable_params_write_nothing(store):
    key = store.new_key("image", ".png")
    with pytest.raises(MoraError, match="not JSON-serialisable"):
        store.put_bytes(key, b"x", Provenance(kind="image", params={"bad": object()}))
    assert store.list() == [] and not store.exists(key)


def test_list_returns_data_keys_only(store):
    assert store.list() == []
    keys = [
        store.put_bytes(store.new_key("image", ".png"), b"i1", Provenance(kind="image")),
        store.put_bytes(store.new_key("image", ".png"), b"i2", Provenance(kind="image")),
        store.put_bytes(store.new_key("video", ".mp4"), b"v", Provenance(kind="video")),
        store.put_bytes(store.new_key("dataset/round-1", ".parquet"), b"d", Provenance(kind="dataset")),
    ]
    listed = store.list()
    assert listed == sorted(keys)
    assert not any(k.endswith(".prov.json") for k in listed)
    assert store.list("image/") == sorted(keys[:2])
    assert store.list("ima") == sorted(keys[:2])
    assert store.list("dataset/round-1/") == [keys[3]]
    assert store.list("nothing/") == []
    with pytest.raises(MoraError, match="invalid store prefix"):
        store.list("../")


def test_new_key_format(store):
    before = datetime.now(timezone.utc).strftime("%Y%m%d")
    key = store.new_key("video", ".mp4")
    after = datetime.now(timezone.utc).strftime("%Y%m%d")
    m = KEY_RE.fullmatch(key)
    assert m and m["kind"] == "video" and m["suffix"] == ".mp4" and m["day"] in (before, after)
    assert KEY_RE.fullmatch(store.new_key("dataset/round_2", ".tar.gz"))["suffix"] == ".tar.gz"
    assert KEY_RE.fullmatch(store.new_key("report"))["suffix"] == ""
    assert len({store.new_key("image", ".png") for _ in range(100)}) == 100
    for kind in ["", "Video", "../x", "/video", "video/", "a//b", "vi deo", "-x", "a/.b", None]:
        with pytest.raises(MoraError, match="invalid artifact kind"):
            store.new_key(kind, ".mp4")
    for suffix in ["mp4", ".MP4", ".a.b.c", "./x", ".", ".mp4/", "/x", ".prov json", None]:
        with pytest.raises(MoraError, match="invalid key suffix"):
            store.new_key("video", suffix)
    assert store.list() == []  # new_key writes nothing


def test_exists_and_delete(store):
    key = store.put_bytes(store.new_key("image", ".png"), b"png", Provenance(kind="image"))
    other = store.put_bytes(store.new_key("image", ".png"), b"png2", Provenance(kind="image"))
    assert store.exists(key)
    store.delete(key)
    assert not store.exists(key)
    assert store.list() == [other]
    with pytest.raises(MoraError, match="no artifact"):
        store.read_provenance(key)  # the sidecar went too
    with pytest.raises(MoraError, match="no artifact"):
        store.delete(key)
    assert store.get_bytes(other) == b"png2"


def test_overwrite_replaces_data_and_provenance(store):
    key = store.new_key("report", ".json")
    store.put_bytes(key, b"{}", Provenance(kind="report", seed=1))
    with pytest.raises(MoraError, match="already exists"):
        store.put_bytes(key, b"[0]", Provenance(kind="report", seed=3))  # never silently
    assert store.get_bytes(key) == b"{}" and store.read_provenance(key).seed == 1
    store.put_bytes(key, b"[1]", Provenance(kind="report", seed=2), overwrite=True)
    assert store.get_bytes(key) == b"[1]"
    assert store.read_provenance(key).seed == 2
    assert store.read_provenance(key).size == 3
    assert store.list() == [key]


@pytest.mark.parametrize(
    "call",
    ["get_bytes", "download", "local_path", "read_provenance", "delete"],
)
def test_missing_key_error_names_key_and_store(store, call, tmp_path):
    key = "video/20250101/" + "0" * 32 + ".mp4"
    with pytest.raises(MoraError) as info:
        if call == "download":
            store.download(key, tmp_path / "x.mp4")
        elif call == "local_path":
            with store.local_path(key):
                pass
        else:
            getattr(store, call)(key)
    message = str(info.value)
    assert key in message and store.url in message and "\n" not in message
    assert not store.exists(key)
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("bad", BAD_KEYS, ids=repr)
def test_invalid_keys_rejected(store, bad, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"x")
    calls = [
        lambda: store.put_bytes(bad, b"x", Provenance(kind="image")),
        lambda: store.put_file(bad, src, Provenance(kind="image")),
        lambda: store.get_bytes(bad),
        lambda: store.download(bad, tmp_path / "out"),
        lambda: store.local_path(bad).__enter__(),
        lambda: store.read_provenance(bad),
        lambda: store.exists(bad),
        lambda: store.delete(bad),
        lambda: store.uri(bad),
    ]
    for call in calls:
        with pytest.raises(MoraError, match="^invalid store key") as info:
            call()
        assert "\n" not in str(info.value) and "\x00" not in str(info.value)
    assert store.list() == []


def test_uri(store):
    key = store.put_bytes(store.new_key("image", ".png"), b"png", Provenance(kind="image"))
    uri = store.uri(key)
    if isinstance(store, LocalStore):
        assert Path(uri).is_absolute() and Path(uri).read_bytes() == b"png"
        assert uri == os.path.join(store.url, *key.split("/"))
    else:
        assert uri == f"{store.url}/{key}" and uri.startswith(f"s3://{S3_BUCKET}/t/")


def test_backends_agree(tmp_path, s3_store_url):
    local, s3 = open_store(str(tmp_path / "store")), open_store(s3_store_url)
    src = tmp_path / "clip.mp4"
    src.write_bytes(os.urandom(50_000))
    artifacts = [
        ("image/20250101/" + "1" * 32 + ".png", b"\x89PNG fake", full_provenance(kind="image")),
        ("video/20250101/" + "2" * 32 + ".mp4", src, full_provenance()),
        ("dataset/round-1/20250101/" + "3" * 32 + ".parquet", b"PAR1",
         full_provenance(kind="dataset", params={"rows": 3})),
    ]
    for st in (local, s3):
        for key, data, prov in artifacts:
            if isinstance(data, Path):
                st.put_file(key, data, prov)
            else:
                st.put_bytes(key, data, prov)
    assert local.list() == s3.list() == sorted(k for k, _, _ in artifacts)
    for key, _, _ in artifacts:
        assert local.get_bytes(key) == s3.get_bytes(key)
        assert local.read_provenance(key) == s3.read_provenance(key)
        with local.local_path(key) as a, s3.local_path(key) as b:
            assert a.read_bytes() == b.read_bytes()


def test_concurrent_writers(store):
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            key = store.new_key("image", ".png")
            store.put_bytes(key, f"img{i}".encode(), Provenance(kind="image", seed=i))
            assert store.get_bytes(key) == f"img{i}".encode()
            assert store.read_provenance(key).seed == i
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store.list("image/")) == 8


def test_stores_pickle(store):
    key = store.put_bytes(store.new_key("image", ".png"), b"x", Provenance(kind="image"))
    again = pickle.loads(pickle.dumps(store))
    assert type(again) is type(store) and again.url == store.url
    assert again.get_bytes(key) == b"x"


# ---- open_store and URLs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, bucket, prefix, normal",
    [
        ("s3://bucket", "bucket", "", "s3://bucket"),
        ("s3://bucket/", "bucket", "", "s3://bucket"),
        ("s3://my.bucket-1/some/prefix", "my.bucket-1", "some/prefix", "s3://my.bucket-1/some/prefix"),
        ("s3://bucket/some/prefix/", "bucket", "some/prefix", "s3://bucket/some/prefix"),
        ("S3://bucket/p", "bucket", "p", "s3://bucket/p"),
        ("s3://bucket/a%20b", "bucket", "a%20b", "s3://bucket/a%20b"),  # literal, like the AWS CLI
    ],
)
def test_s3_urls_parse(url, bucket, prefix, normal):
    st = open_store(url)  # no network here
    assert isinstance(st, S3Store)
    assert (st.bucket, st.prefix, st.url) == (bucket, prefix, normal)
    assert st._client is None  # nothing contacted, no client made


@pytest.mark.parametrize(
    "url, why",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("a\x00b", "NUL"),
        ("./st\nore", "control"),
        ("s3://", "no bucket"),
        ("s3:///prefix", "no bucket"),
        ("s3:bucket", "s3://bucket"),
        ("s3://Bad_Bucket/x", "invalid"),
        ("s3://ab", "invalid"),
        ("s3://" + "a" * 64, "invalid"),
        ("s3://a..b", "adjacent"),
        ("s3://-bucket", "invalid"),
        ("s3://192.168.1.1", "IP address"),
        ("s3://xn--bucket", "reserved"),
        ("s3://bucket/a//b", "segment"),
        ("s3://bucket/../x", "segment"),
        ("s3://bucket/a\\b", "backslash"),
        ("s3://bucket:9000/x", "port"),
        ("s3://bucket/x?versionId=1", "query"),
        ("s3://bucket/x#frag", "fragment"),
        ("ftp://host/x", "unknown scheme 'ftp://'"),
        ("http://localhost:9000/bucket", "unknown scheme 'http://'"),
        ("https://bucket.s3.amazonaws.com", "unknown scheme"),
        ("gs://bucket", "unknown scheme"),
        ("file://relative/path", "absolute path"),
        ("file:///x?y", "query"),
    ],
)
def test_bad_store_urls(url, why):
    with pytest.raises(MoraError) as info:
        open_store(url)
    message = str(info.value)
    assert message.startswith("store URL '") and "does not parse" in message
    assert why in message
    assert "\n" not in message and "\x00" not in message


def test_credentials_in_url_are_not_echoed():
    with pytest.raises(MoraError, match="credentials do not belong") as info:
        open_store("s3://AKIAEXAMPLE:sup3rs3cret@bucket/x")
    assert "sup3rs3cret" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)


def test_local_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MORA_STORE", raising=False)
    default = open_store()
    assert isinstance(default, LocalStore) and default.url == str(tmp_path / "mora-store")
    monkeypatch.setenv("MORA_STORE", "elsewhere")
    assert open_store(None).url == str(tmp_path / "elsewhere")
    assert open_store("rel/dir").url == str(tmp_path / "rel" / "dir")
    assert open_store(tmp_path / "p").url == str(tmp_path / "p")  # a Path works too
    assert open_store(f"file://{tmp_path}/a%20b").url == str(tmp_path / "a b")
    assert open_store(f"file://localhost{tmp_path}/x").url == str(tmp_path / "x")
    assert open_store(f"file:{tmp_path}/y").url == str(tmp_path / "y")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_store("~/st").url == str(tmp_path / "st")
    assert open_store("weird:name").url == str(tmp_path / "weird:name")  # a plain relative path
    assert not any(tmp_path.iterdir())  # nothing was created


def test_importing_storage_does_not_import_boto3():
    code = "import sys, storage; assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


# ---- local backend ----------------------------------------------------------------------------


def _all_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_local_root_created_on_first_write_only(tmp_path):
    root = tmp_path / "nested" / "store"
    st = open_store(str(root))
    key = st.new_key("image", ".png")
    assert st.list() == [] and not st.exists(key)
    with pytest.raises(MoraError):
        st.get_bytes(key)
    with pytest.raises(MoraError):
        st.put_file(st.new_key("image", ".png"), tmp_path / "vanished.png", Provenance(kind="image"))
    assert not (tmp_path / "nested").exists()
    st.put_bytes(key, b"x", Provenance(kind="image"))
    assert root.is_dir()
    assert _all_files(root) == [key, key + ".prov.json"]
    for name in _all_files(root):
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o644
    assert json.loads((root / (key + ".prov.json")).read_text())["sha256"] == hashlib.sha256(b"x").hexdigest()


def test_local_root_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(MoraError, match="not a folder"):
        open_store(str(tmp_path / "f"))


def test_local_list_ignores_temp_and_stray_files(tmp_path):
    st = open_store(str(tmp_path / "s"))
    key = st.put_bytes(st.new_key("image", ".png"), b"x", Provenance(kind="image"))
    folder = (tmp_path / "s" / key).parent
    (folder / ".abc.png.xyz.mora-tmp").write_bytes(b"partial")
    (folder / "orphan.png.prov.json").write_text("{}")
    assert st.list() == [key]


@pytest.mark.parametrize("failing", ["data-commit", "sidecar-commit", "fsync"])
def test_local_failed_write_leaves_nothing(tmp_path, monkeypatch, failing):
    st = open_store(str(tmp_path / "s"))
    old_key = st.put_bytes(st.new_key("video", ".mp4"), b"old", Provenance(kind="video", seed=1))
    new_key = st.new_key("video", ".mp4")
    before = _all_files(tmp_path / "s")

    def failing_commit(real):  # a new key is committed by os.link, an overwrite by os.replace
        def commit(src, dst):
            is_sidecar = str(dst).endswith(".prov.json")
            if (failing == "data-commit" and not is_sidecar) or (failing == "sidecar-commit" and is_sidecar):
                raise OSError(28, "No space left on device")
            return real(src, dst)
        return commit

    def fsync(fd):
        raise OSError(5, "Input/output error")

    if failing == "fsync":
        monkeypatch.setattr(os, "fsync", fsync)
    else:
        monkeypatch.setattr(os, "link", failing_commit(os.link))
        monkeypatch.setattr(os, "replace", failing_commit(os.replace))
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"new data")
    for key, overwrite in ((new_key, False), (old_key, True)):  # a new key, and an overwrite
        with pytest.raises(MoraError, match="cannot write") as info:
            st.put_file(key, src, Provenance(kind="video", seed=2), overwrite=overwrite)
        assert str(st.url) in str(info.value)
        with pytest.raises(MoraError):
            st.put_bytes(key, b"new bytes", Provenance(kind="video", seed=2), overwrite=overwrite)
    monkeypatch.undo()

    assert _all_files(tmp_path / "s") == before  # no temp files, no orphan sidecar
    assert st.list() == [old_key] and not st.exists(new_key)
    assert st.get_bytes(old_key) == b"old"
    assert st.read_provenance(old_key).seed == 1  # the old sidecar is back


def test_local_put_file_source_vanishes(tmp_path):
    st = open_store(str(tmp_path / "s"))
    with pytest.raises(MoraError, match="no such file"):
        st.put_file(st.new_key("video", ".mp4"), tmp_path / "gone.mp4", Provenance(kind="video"))
    with pytest.raises(MoraError, match="no such file"):
        st.put_file(st.new_key("video", ".mp4"), tmp_path, Provenance(kind="video"))  # a folder
    assert not (tmp_path / "s").exists()


def test_local_missing_sidecar_is_reported(tmp_path):
    st = open_store(str(tmp_path / "s"))
    key = st.put_bytes(st.new_key("image", ".png"), b"x", Provenance(kind="image"))
    (tmp_path / "s" / (key + ".prov.json")).unlink()
    with pytest.raises(MoraError, match="has no provenance sidecar"):
        st.read_provenance(key)
    (tmp_path / "s" / (key + ".prov.json")).write_text('{"kind": "image", "bogus": 1}')
    with pytest.raises(MoraError, match="sidecar .* is invalid: bogus"):
        st.read_provenance(key)


def test_local_key_cannot_escape_root(tmp_path):
    st = open_store(str(tmp_path / "s"))
    for bad in ("../outside", "a/../../outside", "/etc/passwd"):
        with pytest.raises(MoraError, match="invalid store key"):
            st.put_bytes(bad, b"x", Provenance(kind="image"))
    assert _all_files(tmp_path) == []


# ---- S3 backend -------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_layout_in_bucket(s3_server, s3_store_url):
    import boto3

    st = open_store(s3_store_url)
    st.check()
    assert st.endpoint == s3_server  # from AWS_ENDPOINT_URL_S3, read by boto3 itself
    key = st.put_bytes(st.new_key("video", ".mp4"), b"mp4", Provenance(kind="video"))
    raw = boto3.session.Session().client("s3", endpoint_url=s3_server)
    listed = raw.list_objects_v2(Bucket=S3_BUCKET, Prefix=st.prefix + "/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [f"{st.prefix}/{key}", f"{st.prefix}/{key}.prov.json"]
    head = raw.head_object(Bucket=S3_BUCKET, Key=f"{st.prefix}/{key}")
    assert head["ContentType"] == "video/mp4"
    side = raw.get_object(Bucket=S3_BUCKET, Key=f"{st.prefix}/{key}.prov.json")
    assert json.loads(side["Body"].read())["size"] == 3
    # Foreign objects under the prefix that are not valid keys are not listed.
    raw.put_object(Bucket=S3_BUCKET, Key=f"{st.prefix}/folder/", Body=b"")
    assert st.list() == [key]


def test_s3_bucket_root_store(s3_server):
    st = open_store(f"s3://{S3_BUCKET}")
    key = st.put_bytes(st.new_key("rootcheck", ".txt"), b"hi", Provenance(kind="report"))
    try:
        assert st.uri(key) == f"s3://{S3_BUCKET}/{key}"
        assert key in st.list("rootcheck/")
    finally:
        st.delete(key)


def test_s3_multipart_file(s3_store_url, tmp_path, monkeypatch):
    import storage.s3

    monkeypatch.setattr(storage.s3, "SINGLE_PUT_LIMIT", 1024 * 1024)
    src = tmp_path / "big.safetensors"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    st = open_store(s3_store_url)
    key = st.put_file(st.new_key("checkpoint", ".safetensors"), src, Provenance(kind="checkpoint"))
    assert st.read_provenance(key).sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert st.download(key, tmp_path / "back").read_bytes() == src.read_bytes()


def test_s3_failed_data_upload_removes_sidecar(s3_store_url, tmp_path):
    from botocore.exceptions import EndpointConnectionError

    st = open_store(s3_store_url)
    real_put = st.client.put_object

    def put_object(**kwargs):
        if not kwargs["Key"].endswith(".prov.json"):
            raise EndpointConnectionError(endpoint_url="http://example.invalid")
        return real_put(**kwargs)

    st.client.put_object = put_object
    key = st.new_key("image", ".png")
    with pytest.raises(MoraError, match="unreachable"):
        st.put_bytes(key, b"x", Provenance(kind="image"))
    del st.client.put_object
    assert st.list() == [] and not st.exists(key)
    import boto3

    raw = boto3.session.Session().client("s3")
    assert raw.list_objects_v2(Bucket=S3_BUCKET, Prefix=st.prefix + "/").get("KeyCount") == 0


def test_s3_missing_bucket(s3_server):
    st = open_store("s3://no-such-bucket-here/p")
    for call in (st.check, st.list, lambda: st.get_bytes("a/b.png"),
                 lambda: st.put_bytes("a/b.png", b"x", Provenance(kind="image"))):
        with pytest.raises(MoraError) as info:
            call()
        assert str(info.value) == f"bucket 'no-such-bucket-here' does not exist at {s3_server}"


def test_s3_unreachable_endpoint_fails_fast(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value-123")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    st = S3Store(S3_BUCKET, "p", endpoint_url=endpoint, max_attempts=1, connect_timeout=1)
    started = time.monotonic()
    with pytest.raises(MoraError) as info:
        st.check()
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "unreachable" in message and endpoint in message and "\n" not in message
    assert "very-secret-value-123" not in message

    # The same through the environment, as the CLI would see it.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    st = open_store(f"s3://{S3_BUCKET}/p")  # constructing touches nothing
    with pytest.raises(MoraError, match="unreachable"):
        st.get_bytes("a/b.png")


def test_s3_no_credentials(s3_server, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    st = open_store(f"s3://{S3_BUCKET}/p")
    with pytest.raises(MoraError, match="no S3 credentials"):
        st.check()


@pytest.mark.parametrize(
    "code, status, expected",
    [
        ("InvalidAccessKeyId", 403, "S3 credentials rejected by"),
        ("SignatureDoesNotMatch", 403, "S3 credentials rejected by"),
        ("AccessDenied", 403, "S3 credentials rejected or access denied"),
        ("403", 403, "S3 credentials rejected or access denied"),
        ("404", 404, "bucket 'mora-test' does not exist at"),
        ("SlowDown", 503, "S3 head_bucket failed at"),
    ],
)
def test_s3_check_error_mapping(s3_server, code, status, expected):
    from botocore.exceptions import ClientError

    st = open_store(f"s3://{S3_BUCKET}/p")

    def head_bucket(**kwargs):
        raise ClientError({"Error": {"Code": code, "Message": "nope"},
                           "ResponseMetadata": {"HTTPStatusCode": status}}, "HeadBucket")

    st.client.head_bucket = head_bucket
    with pytest.raises(MoraError) as info:
        st.check()
    assert str(info.value).startswith(expected) and "testing" not in str(info.value)
