"""Compile ``_native.c`` and ``_render.c`` with the system C compiler, cache the build, load it with ctypes.

The compiler is ``$CC``, else ``cc``, ``gcc`` or ``clang``; flags ``-O3 -march=native``
(retried without ``-march=native`` if that fails; never ``-ffast-math``). Builds are
cached under ``$ADAPTIVEBLUR_CACHE_DIR``, else ``$XDG_CACHE_HOME/adaptiveblur``, else
``~/.cache/adaptiveblur``, in a file named by a hash of the source, the compiler, the
flags and the CPU. They land under a temporary name and are moved into place with
:func:`os.replace`, so concurrent processes are safe.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

# The blur kernel, and the fused samples-to-samples pipeline around it. Each is compiled
# from a copy with a plain name: the kernel includes itself through __FILE__.
SOURCES = {
    "adaptiveblur_native.c": Path(__file__).with_name("_native.c"),
    "adaptiveblur_render.c": Path(__file__).with_name("_render.c"),
    "adaptiveblur_backward.c": Path(__file__).with_name("_backward.c"),
}
ABI_VERSION = 2  # must match ABI_VERSION in _native.c
BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-ffp-contract=fast", "-std=gnu11")
NATIVE_FLAGS = ("-march=native",)
LIBRARIES = ("-lm",)
COMPILE_TIMEOUT_S = 120.0


class NativeBuildError(RuntimeError):
    """The C kernel could not be compiled or loaded (the message says why)."""


@dataclass(frozen=True)
class Build:
    """A compiled kernel: where it is and whether this call compiled it."""

    path: Path
    compiled: bool
    flags: tuple[str, ...]


def cache_dir() -> Path:
    """Where compiled kernels are kept (``$ADAPTIVEBLUR_CACHE_DIR`` first)."""
    explicit = os.environ.get("ADAPTIVEBLUR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "adaptiveblur"
    try:
        return Path.home() / ".cache" / "adaptiveblur"
    except (KeyError, RuntimeError):  # no home directory (some containers)
        return Path(tempfile.gettempdir()) / "adaptiveblur-cache"


def compiler_command() -> list[str]:
    """The C compiler to run: ``$CC`` (split like a shell would) if set, else cc, gcc or clang.

    Raises:
        NativeBuildError: ``$CC`` names nothing runnable, or no compiler is found.
    """
    configured = os.environ.get("CC", "").strip()
    if configured:
        try:
            command = shlex.split(configured)
        except ValueError as error:  # unbalanced quotes
            raise NativeBuildError(f"$CC ({configured!r}) cannot be parsed: {error}") from error
        if not command or shutil.which(command[0]) is None:
            raise NativeBuildError(f"the C compiler in $CC ({configured!r}) was not found")
        return command
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found is not None:
            return [found]
    raise NativeBuildError("no C compiler found (install cc, gcc or clang, or set CC)")


def build_library(directory: Path) -> Build:
    """Compile :data:`SOURCES` into ``directory`` unless an identical build is already there.

    Raises:
        NativeBuildError: no working compiler, or the source does not compile.
    """
    try:
        sources = {name: path.read_bytes() for name, path in SOURCES.items()}
    except OSError as error:
        raise NativeBuildError(
            f"the kernel source is missing from the installation ({error})"
        ) from error
    command = compiler_command()
    identity = _compiler_identity(command)
    digest = hashlib.sha256()
    for part in (
        *sources.values(),
        identity.encode(),
        " ".join(BASE_FLAGS + NATIVE_FLAGS).encode(),
        _machine_identity().encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    target = directory / f"adaptiveblur_native-{digest.hexdigest()[:20]}.so"
    if target.exists():
        return Build(target, compiled=False, flags=())
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError:
        # An unwritable cache (read-only home, sandbox) only costs a compile per process.
        directory = Path(tempfile.mkdtemp(prefix="adaptiveblur-native-"))
        target = directory / target.name
        logger.warning("cache dir not writable; building the native kernel in %s", directory)
    flags = _compile(command, sources, target)
    return Build(target, compiled=True, flags=flags)


def _compile(command: list[str], sources: dict[str, bytes], target: Path) -> tuple[str, ...]:
    with tempfile.TemporaryDirectory(prefix="adaptiveblur-build-") as work:
        for name, text in sources.items():
            (Path(work) / name).write_bytes(text)
        partial = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
        errors = []
        for flags in (BASE_FLAGS + NATIVE_FLAGS, BASE_FLAGS):
            argv = [*command, *flags, "-o", str(partial), *sources, *LIBRARIES]
            result = _run_compiler(argv, work)
            if result.returncode == 0 and partial.exists():
                os.replace(partial, target)
                logger.info("compiled the native kernel: %s", shlex.join(argv))
                return flags
            errors.append(_compiler_message(result.stderr) or f"exit status {result.returncode}")
            partial.unlink(missing_ok=True)
    raise NativeBuildError(
        f"the C compiler {command[0]!r} failed to build the native kernel: {errors[-1]}"
    )


def open_library(path: Path) -> ctypes.CDLL:
    """Load a build, recompiling once if the cached file is unusable (truncated, stale)."""
    for attempt in (1, 2):
        try:
            library = ctypes.CDLL(str(path))
            version = int(library.adaptiveblur_abi_version())
            if version != ABI_VERSION:
                raise OSError(f"ABI version {version}, expected {ABI_VERSION}")
            return library
        except (OSError, AttributeError) as error:
            if attempt == 2:
                raise NativeBuildError(
                    f"the compiled kernel {path} could not be loaded: {error}"
                ) from error
            path.unlink(missing_ok=True)
            path = build_library(path.parent).path
    raise AssertionError("unreachable")


def _run_compiler(argv: list[str], cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the compiler; one that cannot be started at all is a :class:`NativeBuildError`."""
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=COMPILE_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise NativeBuildError(f"the C compiler {argv[0]!r} could not be run: {error}") from error


def _compiler_identity(command: list[str]) -> str:
    result = _run_compiler([*command, "--version"])
    if result.returncode != 0:
        raise NativeBuildError(
            f"the C compiler {command[0]!r} does not work: "
            f"{_compiler_message(result.stderr) or f'exit status {result.returncode}'}"
        )
    resolved = shutil.which(command[0]) or command[0]
    return "\n".join([os.path.realpath(resolved), *command[1:], result.stdout.strip()])


def _machine_identity() -> str:
    """What -march=native depends on: the architecture and, where readable, the CPU's features."""
    parts = [platform.system(), platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            seen = set()
            for line in info:
                key = line.split(":", 1)[0].strip()
                if (
                    key in ("vendor_id", "model name", "flags", "Features", "CPU part")
                    and key not in seen
                ):
                    seen.add(key)
                    parts.append(line.strip())
    except OSError:
        pass
    return "\n".join(parts)


def _compiler_message(text: str) -> str:
    """The line of compiler output worth showing: the first error, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[0 if errors else -1][:300]
