import pytest

from perfpredict.primitives import cbuild, reference


def test_a_source_is_compiled_once_and_cached_by_source_hash(monkeypatch, tmp_path):
    monkeypatch.delenv("PERFPREDICT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    compiler = cbuild.find_compiler()
    target = cbuild.library_path(reference.SOURCE, [compiler, *reference.CFLAGS])
    assert target.parent == tmp_path / "perfpredict" and target.name.startswith("reference-")
    assert not target.exists()
    lib = cbuild.load_library(reference.SOURCE, reference.CFLAGS)
    assert target.is_file() and list(target.parent.iterdir()) == [target]  # no temporary left behind
    assert hasattr(lib, "pp_gemm")
    mtime = target.stat().st_mtime_ns
    cbuild.load_library(reference.SOURCE, reference.CFLAGS)
    assert target.stat().st_mtime_ns == mtime  # not compiled again
    other = cbuild.library_path(reference.SOURCE, [compiler, "-O3"])
    assert other != target  # another command, another library


def test_no_compiler_or_a_failing_one_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PERFPREDICT_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-c-compiler-for-perfpredict")
    with pytest.raises(cbuild.CompilerError, match="conv.thing needs? a C compiler"):
        cbuild.find_compiler("conv.thing")
    monkeypatch.delenv("CC")
    bad = tmp_path / "_bad.c"
    bad.write_text("this is not C\n")
    with pytest.raises(cbuild.CompilerError, match="compiling _bad.c with .* failed"):
        cbuild.load_library(bad, ("-shared", "-fPIC"))
    assert list(tmp_path.glob("*.so")) == []  # nothing half-written left
