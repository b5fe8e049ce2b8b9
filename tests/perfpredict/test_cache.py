"""The one cache directory: $PERFPREDICT_CACHE over $XDG_CACHE_HOME over ~/.cache."""

from pathlib import Path

from perfpredict.cache import cache_dir


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("PERFPREDICT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "perfpredict"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "perfpredict"
    monkeypatch.setenv("PERFPREDICT_CACHE", str(tmp_path / "own"))
    assert cache_dir() == tmp_path / "own"


def test_every_cache_user_follows_it(monkeypatch, tmp_path):
    from perfpredict.primitives import cbuild, reference

    monkeypatch.setenv("PERFPREDICT_CACHE", str(tmp_path))
    assert cbuild.library_path(reference.SOURCE, ["cc"]).parent == tmp_path
