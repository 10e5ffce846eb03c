"""S3 faults between the client and a loopback S3 server (tests/s3faults.py): writes retry and
land whole or fail with one line; reads never return a partial object; a training round run
through the faults writes the same dataset as one run without them."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from configs.errors import MoraError
from storage import LocalStore, Provenance, S3Store

from tests.s3faults import FaultProxy
from tests.s3server import S3_BUCKET, s3_server, s3_store_url  # noqa: F401  (fixtures)

MiB = 1024 * 1024


@pytest.fixture
def proxies(s3_server):
    """``make(rate, seed, modes=..., match=...)``: a FaultProxy in front of moto, closed after."""
    made: list[FaultProxy] = []

    def make(rate: float, seed: int, **kwargs) -> FaultProxy:
        made.append(FaultProxy(s3_server, rate=rate, seed=seed, **kwargs))
        return made[-1]

    yield make
    for proxy in made:
        proxy.close()


def s3_store(prefix: str, endpoint: str, **kwargs) -> S3Store:
    kwargs.setdefault("max_attempts", 8)
    return S3Store(S3_BUCKET, prefix, endpoint_url=endpoint, **kwargs)


def fresh_prefix() -> str:
    return f"faults/{uuid.uuid4().hex[:12]}"


def data_gets(method: str, path: str) -> bool:
    """GETs of data objects only (not sidecars, not listings)."""
    return method == "GET" and "?" not in path and not path.endswith(".prov.json")


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# ---- writes -----------------------------------------------------------------------------------


def test_writes_retry_through_faults_and_land_whole(proxies, s3_server, tmp_path):
    proxy = proxies(rate=0.35, seed=7)
    prefix = fresh_prefix()
    faulty, clean = s3_store(prefix, proxy.url), s3_store(prefix, s3_server)
    written = {}
    for i in range(16):
        data = os.urandom(100 + 997 * i)
        if i % 3 == 0:
            src = tmp_path / f"f{i}.bin"
            src.write_bytes(data)
            key = faulty.put_file(faulty.new_key("video", ".mp4"), src, Provenance(kind="video", seed=i))
        else:
            key = faulty.put_bytes(faulty.new_key("image", ".png"), data, Provenance(kind="image", seed=i))
        written[key] = (data, i)

    # Every mode struck, the lost-answer ones (the write landed, the answer did not) included.
    assert set(proxy.injected) == {"500", "503", "drop-before", "drop-after", "truncate"}
    assert clean.list() == sorted(written)
    for key, (data, seed) in written.items():
        assert clean.get_bytes(key) == data
        recorded = clean.read_provenance(key)
        assert (recorded.sha256, recorded.size, recorded.seed) == \
            (hashlib.sha256(data).hexdigest(), len(data), seed)


def test_multipart_upload_through_faults(proxies, s3_server, tmp_path):
    proxy = proxies(rate=0.3, seed=3)
    prefix = fresh_prefix()
    faulty = s3_store(prefix, proxy.url, multipart_threshold=6 * MiB, part_size=5 * MiB)
    src = tmp_path / "big.safetensors"
    src.write_bytes(os.urandom(12 * MiB + 123))  # three parts: 5 + 5 + 2 MiB
    key = faulty.put_file(faulty.new_key("checkpoints", ".safetensors"), src,
                          Provenance(kind="checkpoint"))
    assert proxy.total_injected > 0

    clean = s3_store(prefix, s3_server)
    head = clean.client.head_object(Bucket=S3_BUCKET, Key=clean._full(key))
    assert head["ETag"].strip('"').endswith("-3")  # really a multipart upload
    assert clean.download(key, tmp_path / "back").read_bytes() == src.read_bytes()
    assert clean.read_provenance(key).sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    # Nothing half-done left behind: no unfinished uploads under the prefix.
    uploads = clean.client.list_multipart_uploads(Bucket=S3_BUCKET, Prefix=prefix + "/")
    assert not uploads.get("Uploads")


@pytest.mark.parametrize("modes, expected", [
    (("500", "503"), r"S3 upload failed at http://127\.0\.0\.1:\d+ .*(InternalError|SlowDown)"),
    (("drop-before",), r"S3 endpoint http://127\.0\.0\.1:\d+ is unreachable"),
])
def test_writes_fail_loudly_when_every_request_fails(proxies, s3_server, tmp_path, modes, expected):
    proxy = proxies(rate=1.0, seed=1, modes=modes)
    prefix = fresh_prefix()
    faulty = s3_store(prefix, proxy.url, max_attempts=3)
    with pytest.raises(MoraError, match=expected) as info:
        faulty.put_bytes(faulty.new_key("image", ".png"), b"x" * 1000, Provenance(kind="image"))
    one_line(info)
    src = tmp_path / "clip.mp4"
    src.write_bytes(b"y" * 5000)
    with pytest.raises(MoraError, match=expected) as info:
        faulty.put_file(faulty.new_key("video", ".mp4"), src, Provenance(kind="video"))
    one_line(info)
    assert proxy.requests == proxy.total_injected == 2 * 3  # each write tried max_attempts times
    assert s3_store(prefix, s3_server).list() == []


def test_lost_answer_after_the_data_landed_is_not_already_exists(proxies, s3_server):
    # Every data PUT lands but its answer is lost once: the retry meets the object it wrote.
    proxy = proxies(rate=0.5, seed=11, modes=("drop-after",),
                    match=lambda method, path: method == "PUT")
    prefix = fresh_prefix()
    faulty = s3_store(prefix, proxy.url)
    keys = [faulty.put_bytes(faulty.new_key("image", ".png"), bytes([i]) * 300,
                             Provenance(kind="image")) for i in range(10)]
    assert proxy.injected["drop-after"] >= 5
    clean = s3_store(prefix, s3_server)
    assert [clean.get_bytes(k) for k in keys] == [bytes([i]) * 300 for i in range(10)]


# ---- reads ------------------------------------------------------------------------------------


def _stored(s3_server, monkeypatch, size: int = 300_000, checksum: bool = True) -> tuple[str, str, bytes]:
    """(prefix, key, data) of an object written without faults; ``checksum=False``: without a
    stored CRC, so botocore cannot check the body and only the sidecar's sha256 can."""
    if not checksum:
        monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    prefix = fresh_prefix()
    clean = s3_store(prefix, s3_server)
    data = os.urandom(size)
    key = clean.put_bytes(clean.new_key("video", ".npz"), data, Provenance(kind="video"))
    monkeypatch.delenv("AWS_REQUEST_CHECKSUM_CALCULATION", raising=False)
    return prefix, key, data


@pytest.mark.parametrize("mode, checksum", [("truncate", True), ("short", True), ("short", False)])
def test_reads_retry_broken_bodies_and_return_whole_objects(proxies, s3_server, monkeypatch,
                                                            tmp_path, mode, checksum):
    prefix, key, data = _stored(s3_server, monkeypatch, checksum=checksum)
    proxy = proxies(rate=0.5, seed=5, modes=(mode,), match=data_gets)
    faulty = s3_store(prefix, proxy.url)
    for _ in range(4):
        assert faulty.get_bytes(key) == data
        assert faulty.download(key, tmp_path / "copy.npz").read_bytes() == data
        with faulty.local_path(key) as path:
            assert path.read_bytes() == data
    assert proxy.injected[mode] >= 4


@pytest.mark.parametrize("mode, checksum, expected", [
    ("truncate", True, "broke off 4 times"),
    ("short", True, "is truncated or corrupt"),
    ("short", False, r"is truncated or corrupt: read 150000 bytes, its provenance records 300000"),
])
def test_reads_never_return_partial_data(proxies, s3_server, monkeypatch, tmp_path, mode,
                                         checksum, expected):
    prefix, key, data = _stored(s3_server, monkeypatch, checksum=checksum)
    proxy = proxies(rate=1.0, seed=5, modes=(mode,), match=data_gets)
    faulty = s3_store(prefix, proxy.url, max_attempts=4)
    with pytest.raises(MoraError, match=expected) as info:
        faulty.get_bytes(key)
    assert key in one_line(info)
    with pytest.raises(MoraError, match=expected):
        faulty.download(key, tmp_path / "copy.npz")
    assert not (tmp_path / "copy.npz").exists() and list(tmp_path.iterdir()) == []
    assert proxy.total_injected == 2 * 4


def test_sidecar_reads_retry_too(proxies, s3_server, monkeypatch):
    prefix, key, data = _stored(s3_server, monkeypatch)
    proxy = proxies(rate=0.5, seed=2, modes=("truncate",),
                    match=lambda method, path: method == "GET" and path.endswith(".prov.json"))
    faulty = s3_store(prefix, proxy.url)
    for _ in range(6):
        assert faulty.read_provenance(key).size == len(data)
        assert faulty.get_bytes(key) == data  # its check reads the sidecar first
    assert proxy.injected["truncate"] >= 3


def test_local_reads_check_the_sidecar(tmp_path):
    store = LocalStore(tmp_path / "store")
    data = os.urandom(5000)
    key = store.put_bytes(store.new_key("video", ".npz"), data, Provenance(kind="video"))
    path = Path(store.uri(key))
    path.write_bytes(data[:2500])  # truncated on disk behind the store's back
    with pytest.raises(MoraError, match="truncated or corrupt: read 2500 bytes") as info:
        store.get_bytes(key)
    assert key in one_line(info)
    with pytest.raises(MoraError, match="truncated or corrupt"):
        store.download(key, tmp_path / "out" / "copy.npz")
    assert list((tmp_path / "out").iterdir()) == []  # no partial download left
    path.write_bytes(bytes(reversed(data)))  # same size, other bytes
    with pytest.raises(MoraError, match="sha256 .* differs"):
        store.get_bytes(key)


# ---- a training round through the faults -------------------------------------------------------


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server", "tiny_zoo")
def test_training_round_through_faults_writes_the_same_dataset(proxies, s3_store_url, local_store,
                                                               tmp_path, monkeypatch):
    from flows.training import training_round
    from tasks.training import read_dataset

    from tests.test_training import write_config

    config = write_config(tmp_path, prompts=2)
    reference = training_round(round_id="faults-r1", config=config, store=local_store, seed=4)

    proxy = proxies(rate=0.25, seed=13)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.url)  # every store the tasks open
    result = training_round(round_id="faults-r1", config=config, store=s3_store_url, seed=4)
    print(f"\nfaults injected and survived in the round: {proxy.total_injected} of "
          f"{proxy.requests} requests: {dict(sorted(proxy.injected.items()))}")
    assert proxy.total_injected >= 5

    content = ["prompt", "enhanced_prompt", "criterion_id", "judge_a_raw", "judge_b_raw",
               "decision", "chosen", "seed"]
    expected = read_dataset(local_store, reference.dataset_key)[content]
    got = read_dataset(s3_store_url, result.dataset_key)[content]
    assert len(got) == 2 and got.equals(expected)
    assert result.report.losses == pytest.approx(reference.report.losses)
