"""nftables through its JSON API, in process.

Why libnftables via ctypes: the allow-set is programmed before an answer is released, so
its cost is on the answer's latency. Measured here (kernel 6.18, nftables 1.0.6, one element
per call, network namespace): libnftables JSON ~70 µs, libnftables text ~45 µs, ``nft -j -f
-`` as a subprocess ~2.5 ms. Debian's ``python3-nftables`` is the same library behind a
thinner wrapper and is not in the venv; pyroute2 has no nftables set API worth the
dependency. JSON keeps the commands structured (no quoting of addresses into a command
line). When ``libnftables.so.1`` cannot be loaded the ``nft`` binary is used (slow, but
the same commands).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import shutil
import subprocess
import threading
from typing import Any

import orjson

_OUTPUT_JSON = 1 << 4  # NFT_CTX_OUTPUT_JSON: also makes run_cmd_from_buffer parse JSON


class NftError(RuntimeError):
    """nft refused a command; the message is nft's own."""


class Nft:
    """One libnftables context (commands are serialised: the context is not thread-safe)."""

    def __init__(self, prefer_library: bool = True) -> None:
        self._lock = threading.Lock()
        self._lib: Any = None
        self._ctx: Any = None
        self.backend = "nft"
        if prefer_library:
            self._open_library()
        if self._lib is None and shutil.which("nft") is None:
            raise NftError("neither libnftables.so.1 nor the nft binary is available "
                           "(Debian package nftables)")

    def _open_library(self) -> None:
        name = ctypes.util.find_library("nftables") or "libnftables.so.1"
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            return
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            return
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
        self._lib, self._ctx, self.backend = lib, ctx, "libnftables"

    def run(self, commands: list[dict[str, Any]]) -> Any:
        """Run a batch of JSON commands atomically (one transaction); returns nft's JSON
        output (for ``list``), or None. Raises :class:`NftError`."""
        data = orjson.dumps({"nftables": commands})
        if self._lib is None:
            return self._run_binary(data)
        with self._lock:
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, data)
            out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
            err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(_first_line(err) or f"nft failed (rc {rc})")
        return orjson.loads(out) if out.strip() else None

    def run_text(self, script: str) -> None:
        """Run an nft script (the base ruleset, written once at start) as one transaction;
        libnftables falls back to its text parser when the buffer is not JSON."""
        if self._lib is None:
            proc = subprocess.run(["nft", "-f", "-"], input=script.encode(),
                                  capture_output=True, timeout=10, check=False)
            if proc.returncode != 0:
                raise NftError(_first_line(proc.stderr) or f"nft exited {proc.returncode}")
            return
        with self._lock:
            rc = self._lib.nft_run_cmd_from_buffer(self._ctx, script.encode())
            err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(_first_line(err) or f"nft failed (rc {rc})")

    @staticmethod
    def _run_binary(data: bytes) -> Any:
        proc = subprocess.run(["nft", "-j", "-f", "-"], input=data, capture_output=True,
                              timeout=10, check=False)
        if proc.returncode != 0:
            raise NftError(_first_line(proc.stderr) or f"nft exited {proc.returncode}")
        return orjson.loads(proc.stdout) if proc.stdout.strip() else None

    def list_json(self, what: dict[str, Any]) -> Any:
        """``list`` one object, e.g. ``{"set": {"family": "inet", "table": t, "name": s}}``."""
        return self.run([{"list": what}])

    def close(self) -> None:
        if self._lib is not None and self._ctx:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None
            self._lib = None


def _first_line(err: bytes) -> str:
    text = err.decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else ""
