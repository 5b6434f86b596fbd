"""Type-check the TensorRT code against ``tensorrt-stubs``: ``python -m engines.typecheck [extra mypy args]``.

``tensorrt-stubs`` installs ``tensorrt/__init__.pyi`` (and ``tensorrt_bindings/``) straight into site-packages
without a ``py.typed`` marker, so mypy skips them ("installed, but missing library stubs"). This links the two
stub folders into a temporary directory, puts it on ``MYPYPATH`` and runs mypy with ``engines/mypy.ini`` over
:data:`TARGETS`. Install the stubs with ``pip install --no-deps tensorrt-stubs`` (their dependency on the real
``tensorrt`` cannot install without NVIDIA's package index).

Exit codes: mypy's; 3 when mypy or the stubs are not installed.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
CONFIG = Path(__file__).resolve().with_name("mypy.ini")
TARGETS = ("engines", "apnet_edge/runners/tensorrt_runner.py", "apnet_edge/runners/cuda_shim.py")
STUB_PACKAGES = ("tensorrt", "tensorrt_bindings")
MISSING = 3


def stub_dirs() -> Optional[list[Path]]:
    """The installed ``tensorrt`` and ``tensorrt_bindings`` stub folders, or None when tensorrt-stubs is absent."""
    spec = importlib.util.find_spec("tensorrt_stubs")
    if spec is None or not spec.submodule_search_locations:
        return None
    site = Path(next(iter(spec.submodule_search_locations))).parent
    dirs = [site / name for name in STUB_PACKAGES]
    if not all((d / "__init__.pyi").is_file() for d in dirs):
        return None
    return dirs


def _fix_params(line: str) -> str:
    """Repair one generated ``def`` line: a parameter named ``in`` (a keyword) becomes ``in_``, and parameters
    without a default after one with a default get ``= ...`` (both are syntax errors pybind11-stubgen emits)."""
    m = re.match(r"^(\s*def \w+\()(.*)(\)\s*(->.*)?:\s*(\.\.\.)?\s*)$", line)
    if not m:
        return line
    params, depth, cur = [], 0, ""
    for ch in m.group(2):
        if ch == "," and depth == 0:
            params.append(cur)
            cur = ""
            continue
        depth += ch in "([{"
        depth -= ch in ")]}"
        cur += ch
    if cur.strip():
        params.append(cur)
    out, seen_default = [], False
    for p in params:
        p = re.sub(r"^(\s*)in(\s*:)", r"\1in_\2", p)
        name = p.strip()
        if "=" in p:
            seen_default = True
        elif seen_default and name and not name.startswith("*") and name != "/":
            p = p + " = ..."
        out.append(p)
    return m.group(1) + ",".join(out) + m.group(3)


def prepare_stubs(dirs: Sequence[Path], dst: Path) -> None:
    """Copy the stub folders into ``dst`` with the generator's syntax slips repaired (see :func:`_fix_params`),
    plus an empty ``tensorrt_libs`` stub (the stubs import that wheel-only module)."""
    for d in dirs:
        for src in d.rglob("*.pyi"):
            target = dst / d.name / src.relative_to(d)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = src.read_text(encoding="utf-8")
            target.write_text("\n".join(_fix_params(ln) for ln in text.split("\n")), encoding="utf-8")
    (dst / "tensorrt_libs.pyi").write_text("", encoding="utf-8")


def run_mypy(extra: Sequence[str] = (), python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """Run mypy on :data:`TARGETS` with the stubs on ``MYPYPATH``; returns the finished process (stdout+stderr).

    Raises FileNotFoundError when mypy or tensorrt-stubs is not installed.
    """
    if importlib.util.find_spec("mypy") is None:
        raise FileNotFoundError("mypy is not installed (pip install mypy)")
    dirs = stub_dirs()
    if dirs is None:
        raise FileNotFoundError("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    with tempfile.TemporaryDirectory(prefix="trt-stubs-") as tmp:
        prepare_stubs(dirs, Path(tmp))
        env = dict(os.environ, MYPYPATH=tmp + (os.pathsep + os.environ["MYPYPATH"] if "MYPYPATH" in os.environ
                                               else ""))
        cmd = [python, "-m", "mypy", "--config-file", str(CONFIG), "--no-incremental", *extra, *TARGETS]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry: prints mypy's report, returns its exit code (3 if mypy or the stubs are missing)."""
    try:
        res = run_mypy(list(sys.argv[1:] if argv is None else argv))
    except FileNotFoundError as exc:
        print(f"engines.typecheck: {exc}", file=sys.stderr)
        return MISSING
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    return res.returncode


if __name__ == "__main__":
    raise SystemExit(main())
