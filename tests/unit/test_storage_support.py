"""The Azurite test support: a missing installation skips locally and fails under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import azurite


def test_missing_azurite_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(azurite, "AZURITE_BIN", tmp_path / "no-azurite")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="scripts/azurite-deps"):
        azurite.require_azurite()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        azurite.require_azurite()
