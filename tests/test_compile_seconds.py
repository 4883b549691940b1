"""compile_s in meta.json: the sizing compiles plus the first chunk call's excess over a steady one."""

from gsweep.train.memory import compile_seconds


def test_compile_seconds_subtracts_a_steady_chunk():
    m = compile_seconds([12.0, 2.0, 2.5, 1.5], sizing_s=3.0)
    assert m == {"compile_s": 13.0, "first_chunk_s": 12.0, "steady_chunk_s": 2.0}


def test_compile_seconds_one_chunk_and_fast_first_call():
    assert compile_seconds([4.0], 1.0)["compile_s"] == 5.0
    # a first call no slower than the steady ones (program compiled while sizing) adds nothing
    assert compile_seconds([1.0, 2.0, 2.0], 6.5)["compile_s"] == 6.5
