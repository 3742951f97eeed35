"""Synthetic LOFAR measurement sets for tests: the ``make_ms`` fixture.

``make_ms(**spec_fields)`` builds the MS described by
:class:`gridlrt.demo.synthetic_ms.SyntheticMSSpec` (``make_ms(subband=101, channels=16)``)
into the test's ``tmp_path`` under its LTA name (``L123456_SAP000_SB101_uv.MS``) and returns
its path. Each distinct spec is built once per session into a cache and copied from there, so
a test may modify (or have DP3 update) its copy freely.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from gridlrt.demo.synthetic_ms import SyntheticMSSpec, make_synthetic_ms


class MSCache:
    """Built measurement sets of this session, one per spec; never handed out directly."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._built: dict[SyntheticMSSpec, Path] = {}

    def get(self, spec: SyntheticMSSpec) -> Path:
        if spec not in self._built:
            where = self.root / f"spec{len(self._built):03d}" / spec.ms_name
            self._built[spec] = make_synthetic_ms(where, spec)
        return self._built[spec]


class MSFactory:
    """``make_ms(**spec_fields) -> Path``; ``directory=`` puts the copy elsewhere than tmp_path."""

    def __init__(self, cache: MSCache, tmp_path: Path) -> None:
        self._cache = cache
        self._tmp_path = tmp_path

    def __call__(self, *, directory: Path | None = None, **spec_fields: Any) -> Path:
        spec = SyntheticMSSpec(**spec_fields)
        target = (directory or self._tmp_path) / spec.ms_name
        if target.exists():
            raise FileExistsError(
                f"{target} was already made in this test; pass directory= for a second copy"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self._cache.get(spec), target)
        return target


@pytest.fixture(scope="session")
def ms_cache(tmp_path_factory: pytest.TempPathFactory) -> MSCache:
    return MSCache(tmp_path_factory.mktemp("ms-cache"))


@pytest.fixture
def make_ms(ms_cache: MSCache, tmp_path: Path) -> MSFactory:
    """A factory building synthetic LOFAR measurement sets into ``tmp_path``."""
    return MSFactory(ms_cache, tmp_path)
