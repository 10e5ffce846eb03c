"""A store in a local folder. The folder is created by the first write, not before.

A new artifact is committed with ``os.link`` from a temp file (sidecar first, then data): a link
fails if the name exists, so an existing key is never replaced, unlike ``os.replace``, which is
used only for ``overwrite=True`` and downloads.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from configs.errors import MoraError
from storage.files import Mismatch, copy_hashing, download_target, fsync_dir, write_atomic, write_temp
from storage.keys import SIDECAR_SUFFIX, key_problem
from storage.provenance import Provenance
from storage.store import Store

class LocalStore(Store):
    """Artifacts as files under ``root``; sidecars beside them as ``<name>.prov.json``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(os.path.abspath(os.path.expanduser(os.fspath(root))))
        self.url = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise MoraError(f"store {self.url} is not a folder")

    # ---- helpers ----------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return self.root.joinpath(*self._check_key(key).split("/"))

    def _sidecar_path(self, key: str) -> Path:
        path = self._path(key)
        return path.with_name(path.name + SIDECAR_SUFFIX)

    def _write_error(self, key: str, exc: OSError) -> MoraError:
        reason = exc.strerror or type(exc).__name__
        return MoraError(f"cannot write '{key}' to store {self.url}: {reason}")

    def _commit(self, key: str, fill_data: Callable[[BinaryIO], tuple[str, int]],
                make_sidecar: Callable[[str, int], bytes], overwrite: bool) -> None:
        """Data into a temp file (giving sha256, size) → sidecar committed → data committed.

        If committing the data fails, the previous sidecar (or none) is put back.
        """
        final = self._path(key)
        side = self._sidecar_path(key)
        temps: list[Path] = []
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp, (sha256, size) = write_temp(final, fill_data)
            temps.append(tmp)
            sidecar = make_sidecar(sha256, size)
            if overwrite:
                self._replace(side, sidecar, tmp, final)
            else:
                side_tmp, _ = write_temp(side, lambda f: f.write(sidecar))
                temps.append(side_tmp)
                self._link_new(key, side_tmp, side, final, tmp)
            fsync_dir(final.parent)
        except OSError as exc:
            raise self._write_error(key, exc) from exc
        finally:
            for tmp in temps:
                tmp.unlink(missing_ok=True)

    def _link_new(self, key: str, side_tmp: Path, side: Path, final: Path, tmp: Path) -> None:
        """Create the sidecar, then the data, each only if absent (the sidecar is the claim)."""
        try:
            os.link(side_tmp, side)
        except FileExistsError:
            raise self._already_exists(key) from None
        try:
            os.link(tmp, final)
        except BaseException as exc:
            try:
                side.unlink(missing_ok=True)  # ours: no earlier sidecar to put back
            except OSError:
                pass
            if isinstance(exc, FileExistsError):  # data without a sidecar was there
                raise self._already_exists(key) from None
            raise

    def _replace(self, side: Path, sidecar: bytes, tmp: Path, final: Path) -> None:
        try:
            old_sidecar = side.read_bytes()
        except FileNotFoundError:
            old_sidecar = None
        write_atomic(side, lambda f: f.write(sidecar))
        try:
            os.replace(tmp, final)
        except BaseException:
            try:
                if old_sidecar is None:
                    side.unlink(missing_ok=True)
                else:
                    write_atomic(side, lambda f: f.write(old_sidecar))
            except OSError:
                pass
            raise

    # ---- writes -----------------------------------------------------------------------------
    def _put_bytes(self, key: str, data: bytes, sidecar: bytes, content_type: str,
                   overwrite: bool) -> None:
        def fill(f: BinaryIO) -> tuple[str, int]:
            f.write(data)
            return "", len(data)

        self._commit(key, fill, lambda _sha, _size: sidecar, overwrite)

    def _put_file(self, key: str, path: Path, provenance: Provenance, overwrite: bool) -> None:
        try:
            src = open(path, "rb")
        except OSError as exc:
            raise MoraError(f"cannot store '{path}': {exc.strerror or exc}") from None

        with src:
            self._commit(key, lambda f: copy_hashing(src, f),
                         lambda sha, size: self._sidecar_bytes(key, provenance, sha, size)[0],
                         overwrite)

    # ---- reads ------------------------------------------------------------------------------
    def _open(self, key: str) -> BinaryIO:
        path = self._path(key)
        try:
            return open(path, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._missing(key) from None
        except OSError as exc:
            raise MoraError(f"cannot read '{key}' from store {self.url}: {exc.strerror}") from None

    def _raw_sidecar(self, key: str) -> bytes | None:
        try:
            return self._sidecar_path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise MoraError(f"cannot read '{key}' from store {self.url}: {exc.strerror}") from None

    # Two tries: an overwrite=True landing between the sidecar read and the data read.
    _READ_TRIES = 2

    def get_bytes(self, key: str) -> bytes:
        for _ in range(self._READ_TRIES):
            raw_sidecar = self._raw_sidecar(key)
            with self._open(key) as f:
                data = f.read()
            problem = self._content_problem(key, raw_sidecar, hashlib.sha256(data).hexdigest(),
                                            len(data))
            if problem is None:
                return data
        raise self._corrupt(key, problem)

    def download(self, key: str, dest: str | os.PathLike) -> Path:
        target = download_target(key, dest)
        for _ in range(self._READ_TRIES):
            raw_sidecar = self._raw_sidecar(key)
            with self._open(key) as src:
                def fill(f: BinaryIO) -> None:
                    problem = self._content_problem(key, raw_sidecar, *copy_hashing(src, f))
                    if problem:
                        raise Mismatch(problem)

                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    write_atomic(target, fill)
                    return target
                except Mismatch as exc:
                    problem = str(exc)
                except OSError as exc:
                    raise MoraError(f"cannot download '{key}' to {target}: {exc.strerror or exc}") from None
        raise self._corrupt(key, problem)

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise self._missing(key)
        yield path

    def read_provenance(self, key: str) -> Provenance:
        side = self._sidecar_path(key)
        try:
            raw = side.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            if self.exists(key):
                raise MoraError(f"artifact '{key}' in store {self.url} has no provenance sidecar") from None
            raise self._missing(key) from None
        return self._parse_provenance(key, raw)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _stored_size(self, key: str) -> int | None:
        import stat

        try:
            found = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise MoraError(f"cannot read '{key}' from store {self.url}: {exc.strerror}") from None
        return found.st_size if stat.S_ISREG(found.st_mode) else None

    @property
    def identity(self) -> str:
        return f"file://{self.root}"

    def list(self, prefix: str = "") -> list[str]:
        prefix = self._check_prefix(prefix)
        start = self.root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else self.root
        if not start.is_dir():
            return []
        keys = []
        for dirpath, _dirnames, filenames in os.walk(start):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix) and key_problem(key) is None:
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        path, side = self._path(key), self._sidecar_path(key)
        try:
            existed = path.is_file()
            if existed:
                path.unlink()
            side.unlink(missing_ok=True)
        except OSError as exc:
            raise MoraError(f"cannot delete '{key}' from store {self.url}: {exc.strerror}") from None
        if not existed:
            raise self._missing(key)

    def uri(self, key: str) -> str:
        return str(self._path(key))

