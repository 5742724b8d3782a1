"""``prepare``: validation, normalisation and the query/gallery arrangement the
engines rely on (SPEC 2-3), on cases worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
from data_gen import integer_rows
from opis_cli.errors import ConfigError, InputError
from opis_cli.prepare import prepare

# five rows in one dimension, near the origin (l2 keeps them as they are); labels b, a, b, a, c
X5 = np.array([[-2.0], [-1.0], [1.0], [2.0], [3.0]])
Y5 = ["b", "a", "b", "a", "c"]


# -- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize("x,needle", [
    (np.zeros(4), "must be a 2-D array"),
    (np.array([["a"], ["b"]]), "must be numeric"),
    (np.zeros((0, 3)), "are empty"),
    (np.zeros((3, 0)), "are empty"),
    (np.array([[0.0, 1.0], [np.nan, 1.0], [1.0, 1.0]]), "row 1 contains NaN or infinity"),
    (np.array([[0.0, 1.0], [1.0, 1.0], [1.0, np.inf]]), "row 2 contains NaN or infinity"),
])
def test_bad_embeddings(x, needle):
    with pytest.raises(InputError, match=needle):
        prepare(x, ["a"] * len(x), metric="l2")


@pytest.mark.parametrize("labels,needle", [
    (["a", "b"], "2 labels for 5 embeddings"),
    ([["a"]] * 5, "labels must be one-dimensional"),
    (["a", "b", None, "a", "b"], "labels: row 2 is null"),
    (["a", float("nan"), "b", "a", "b"], "labels: row 1 is null"),
])
def test_bad_labels(labels, needle):
    with pytest.raises(InputError, match=needle):
        prepare(X5, labels)


def test_labels_are_compared_as_strings():
    p = prepare(X5, [1, "1", 2, 2.5, "x"], metric="l2")
    assert p.class_labels == ("1", "2", "2.5", "x")
    np.testing.assert_array_equal(p.class_rows, [2, 1, 1, 1])


@pytest.mark.parametrize("kw,needle", [
    (dict(is_query=[True] * 4), r"is_query has shape \(4,\), expected \(5,\)"),
    (dict(is_gallery=[0, 1, 2, 1, 1]), "is_gallery must be boolean"),
    (dict(is_query=[0.0, 1.0, 1.0, 1.0, 1.0]), "is_query must be boolean"),
    (dict(is_query=[False] * 5), "no row is a query"),
    (dict(is_gallery=np.zeros(5, bool)), "no row is in the gallery"),
    (dict(groups=["g", None, "g", "h", "h"]), "groups: row 1 is null"),
])
def test_bad_masks_and_groups(kw, needle):
    with pytest.raises(InputError, match=needle):
        prepare(X5, Y5, **kw)


def test_unknown_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="--metric 'dot': expected one of cosine, l2"):
        prepare(X5, Y5, metric="dot")


def test_zero_one_masks_are_booleans():
    a = prepare(X5, Y5, is_query=[1, 1, 0, 1, 1], is_gallery=np.array([1, 0, 1, 1, 1], np.uint8))
    b = prepare(X5, Y5, is_query=[True, True, False, True, True],
                is_gallery=[True, False, True, True, True])
    np.testing.assert_array_equal(a.q_rows, b.q_rows)
    np.testing.assert_array_equal(a.g_rows, b.g_rows)


# -- cosine: rows normalised in float64, then float32 ---------------------------------------
def test_cosine_rows_are_unit_vectors():
    x = np.array([[3.0, 4.0], [0.0, -2.0], [1.0, 1.0]], dtype=np.float16)
    p = prepare(x, ["a", "a", "b"])
    # sorted by (class, row): rows 0, 1 (a), 2 (b); 3-4-5 triangle: (.6, .8)
    assert p.xg.dtype == np.float32 and p.xg.flags.c_contiguous
    np.testing.assert_array_equal(p.xg[:2], np.float32([[0.6, 0.8], [0.0, -1.0]]))
    np.testing.assert_array_equal(p.xg[2], np.float32([np.sqrt(0.5)] * 2))
    np.testing.assert_array_equal(p.qn2, 0.0)  # unused for cosine
    np.testing.assert_array_equal(p.gn2, 0.0)


def test_cosine_zero_row_is_an_input_error():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    with pytest.raises(InputError, match="row 2 is a zero vector.*--metric l2"):
        prepare(x, ["a", "a", "b"])
    prepare(x, ["a", "a", "b"], metric="l2")  # l2 has no such problem


# -- l2: a common translation for rows far from the origin ------------------------------------
def test_l2_rows_near_the_origin_are_kept():
    x = np.array([[0.5, -1.0], [1.5, 2.0], [-3.0, 0.25]])
    p = prepare(x, ["a", "b", "a"], metric="l2")
    np.testing.assert_array_equal(p.xg, np.float32(x[[0, 2, 1]]))
    # float64 squared norms of the float32 rows
    np.testing.assert_array_equal(p.gn2, [1.25, 9.0625, 6.25])


def test_l2_rows_far_from_the_origin_are_moved_to_their_rounded_mean():
    # mean (1001, 2001) is far from the origin compared with the spread (~1):
    # rounded to 8 significant bits, 1001 = 0b1111101001 -> 1000 and 2001 -> 2000
    x = np.array([[1000.0, 2000.0], [1002.0, 2002.0], [1001.0, 2001.0]])
    p = prepare(x, ["a", "a", "b"], metric="l2")
    np.testing.assert_array_equal(p.xg, np.float32([[0, 0], [2, 2], [1, 1]]))
    np.testing.assert_array_equal(p.gn2, [0.0, 8.0, 2.0])
    # distances do not change (exact here: every value is an integer)
    d = ref.distance_matrix(p.xg.astype(np.float64), "l2")
    np.testing.assert_array_equal(d, ref.distance_matrix(x[[0, 1, 2]], "l2"))


def test_l2_translation_moves_queries_and_gallery_alike():
    x = np.array([[1000.0], [1002.0], [1001.0], [1004.0]])
    p = prepare(x, ["a", "a", "b", "b"], metric="l2", is_query=[1, 1, 0, 1],
                is_gallery=[1, 0, 1, 1])
    # the translation (the gallery mean 1001.67 -> 1000 at 8 bits) applies to both sides
    np.testing.assert_array_equal(p.xg[:, 0], np.float32([0, 1, 4]))
    np.testing.assert_array_equal(p.xq[:, 0], np.float32([0, 2, 4]))
    np.testing.assert_array_equal(p.qn2, [0.0, 4.0, 16.0])


# -- arrangement: sorted by (class, original row) ---------------------------------------------
def test_every_row_both_query_and_gallery():
    p = prepare(X5, Y5, metric="l2")
    assert p.class_labels == ("a", "b", "c")
    # classes a = rows 1, 3; b = rows 0, 2; c = row 4
    np.testing.assert_array_equal(p.g_rows, [1, 3, 0, 2, 4])
    np.testing.assert_array_equal(p.q_rows, [1, 3, 0, 2, 4])
    np.testing.assert_array_equal(p.g_class, [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(p.class_start, [0, 2, 4])
    np.testing.assert_array_equal(p.class_end, [2, 4, 5])
    np.testing.assert_array_equal(p.self_col, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(p.xg[:, 0], np.float32([-1, 2, -2, 1, 3]))
    assert p.symmetric
    np.testing.assert_array_equal(p.xq, p.xg)
    np.testing.assert_array_equal(p.class_rows, [2, 2, 1])
    assert (p.n_samples, p.dim, p.n_classes) == (5, 1, 3)
    # P_c = queries of c x (rows of c in the gallery - 1): a: 2 x 1, b: 2 x 1, c: 1 x 0
    # M_c = queries of c x rows of other classes: a: 2 x 3, b: 2 x 3, c: 1 x 4
    P, M = p.class_pair_counts()
    np.testing.assert_array_equal(P, [2, 2, 0])
    np.testing.assert_array_equal(M, [6, 6, 4])
    assert P.dtype == M.dtype == np.int64


def test_query_and_gallery_masks():
    # queries: rows 0 (b), 1 (a), 3 (a), 4 (c); gallery: rows 0 (b), 2 (b), 3 (a), 4 (c)
    p = prepare(X5, Y5, metric="l2", is_query=[True, True, False, True, True],
                is_gallery=[True, False, True, True, True])
    np.testing.assert_array_equal(p.g_rows, [3, 0, 2, 4])
    np.testing.assert_array_equal(p.q_rows, [1, 3, 0, 4])
    np.testing.assert_array_equal(p.q_class, [0, 0, 1, 2])
    np.testing.assert_array_equal(p.class_start, [0, 1, 3])
    np.testing.assert_array_equal(p.class_end, [1, 3, 4])
    # row 1 is no gallery item; rows 3, 0, 4 are gallery columns 0, 1, 3
    np.testing.assert_array_equal(p.self_col, [-1, 0, 1, 3])
    assert not p.symmetric
    np.testing.assert_array_equal(p.xq[:, 0], np.float32([-1, 2, -2, 3]))
    # a: row 1 -> 1 positive (row 3), 3 negatives; row 3 -> 0 positives (itself), 3
    # b: row 0 -> 1 positive (row 2), 2 negatives (rows 3, 4)
    # c: row 4 -> 0 positives, 3 negatives
    P, M = p.class_pair_counts()
    np.testing.assert_array_equal(P, [1, 1, 0])
    np.testing.assert_array_equal(M, [6, 2, 3])
    np.testing.assert_array_equal(p.class_rows, [2, 2, 1])  # every input row, not just queries


def test_group_pair_counts_follow_the_query_group_and_the_class_positivity():
    # groups g, g, h, h, h: a pair belongs to the group of its query; it is positive
    # when the two rows share a class (not a group)
    p = prepare(X5, Y5, metric="l2", groups=["g", "g", "h", "h", "h"])
    assert p.group_labels == ("g", "h")
    np.testing.assert_array_equal(p.group_rows, [2, 3])
    # queries of g: rows 0 (b), 1 (a) -> P = 1 + 1, M = 3 + 3
    # queries of h: rows 2 (b), 3 (a), 4 (c) -> P = 1 + 1 + 0, M = 3 + 3 + 4
    Pg, Mg = p.group_pair_counts()
    np.testing.assert_array_equal(Pg, [2, 2])
    np.testing.assert_array_equal(Mg, [6, 10])


@pytest.mark.parametrize("seed", range(6))
def test_pair_counts_against_the_reference(seed):
    x, y = integer_rows(seed, n=40)
    rng = np.random.default_rng(seed)
    isq = rng.random(40) < 0.7
    isg = rng.random(40) < 0.7
    isq[0] = isg[0] = True
    d = ref.distance_matrix(x, "l2")
    same = np.array(y, dtype=object)[:, None] == np.array(y, dtype=object)[None, :]
    pos, neg = ref.pair_lists(d, y, same, isq, isg)
    p = prepare(x, y, metric="l2", is_query=isq, is_gallery=isg)
    P, M = p.class_pair_counts()
    for i, label in enumerate(p.class_labels):
        assert (P[i], M[i]) == (len(pos[label]), len(neg[label])), label


# -- memory: consume=True, chunked norms --------------------------------------------------------
def _same_prepared(a, b):
    from dataclasses import fields

    for f in fields(a):
        u, v = getattr(a, f.name), getattr(b, f.name)
        if isinstance(u, np.ndarray):
            assert u.dtype == v.dtype and u.shape == v.shape, f.name
            assert u.tobytes() == v.tobytes(), f.name  # bit for bit
        else:
            assert u == v, f.name


def _rows(n=700, d=9, classes=23, shift=0.0, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = (rng.standard_normal((classes, d))[y] + rng.standard_normal((n, d)) + shift)
    return x.astype(np.float32), [f"c{v}" for v in y], rng


@pytest.mark.parametrize("metric,shift", [("cosine", 0.0), ("l2", 0.0), ("l2", 50.0)])
@pytest.mark.parametrize("split", ["none", "queries", "both"])
def test_consume_equals_the_copying_path_bit_for_bit(metric, shift, split):
    x, y, rng = _rows(shift=shift)
    kw = dict(metric=metric, groups=[f"g{i % 4}" for i in range(len(y))])
    if split != "none":
        kw.update(is_query=rng.random(len(y)) < 0.7)
    if split == "both":
        kw.update(is_gallery=rng.random(len(y)) < 0.8)
    ref_prep = prepare(x, y, **kw)
    owned = x.copy()
    got = prepare(owned, y, consume=True, **kw)
    _same_prepared(ref_prep, got)
    if split == "none":  # the input's buffer became the prepared rows: no second copy
        assert got.xq is got.xg and np.shares_memory(got.xq, owned)
    if split == "queries":  # the gallery is the input's buffer; the queries a copy of theirs
        assert np.shares_memory(got.xg, owned) and not np.shares_memory(got.xq, owned)
    assert got.xq.flags.c_contiguous and got.xg.flags.c_contiguous
    # the rows themselves, from their definition: normalised in float64 (cosine),
    # rounded to float32, in class order (then centred, for l2)
    ref = x.astype(np.float64)
    if metric == "cosine":
        ref /= np.sqrt(np.einsum("ij,ij->i", ref, ref))[:, None]
    ref = ref.astype(np.float32)
    if metric == "l2":
        delta = got.xg[0] - ref[got.g_rows[0]]  # the centring translation, if any
        ref = ref + delta
        np.testing.assert_allclose(got.xg, ref[got.g_rows], rtol=0, atol=1e-3 * (1 + shift))
        np.testing.assert_allclose(got.xq, ref[got.q_rows], rtol=0, atol=1e-3 * (1 + shift))
    else:
        assert got.xg.tobytes() == ref[got.g_rows].tobytes()
        assert got.xq.tobytes() == ref[got.q_rows].tobytes()


def test_consume_in_class_order_already_and_in_reverse():
    # fixed points and one long cycle of the permutation
    for order in (np.arange(40), np.arange(40)[::-1]):
        x = np.random.default_rng(1).standard_normal((40, 3)).astype(np.float32)
        y = [f"c{i // 10:02d}" for i in range(40)]
        x, y = x[order], [y[i] for i in order]
        _same_prepared(prepare(x, y), prepare(x.copy(), y, consume=True))


def test_arrays_that_cannot_be_consumed_are_copied_and_left_alone(tmp_path):
    x, y, _ = _rows(n=120)
    expected = prepare(x, y)
    path = tmp_path / "x.npy"
    np.save(path, x)
    ro = x.copy()
    ro.setflags(write=False)
    cases = [x.astype(np.float64), np.asfortranarray(x), ro, np.load(path, mmap_mode="r"),
             np.load(path, mmap_mode="r+")]
    for arr in cases:
        before = np.array(arr, copy=True)
        got = prepare(arr, y, consume=True)
        assert np.array_equal(np.asarray(arr), before)
        assert not np.shares_memory(got.xq, arr)
        if arr.dtype == np.float32:
            _same_prepared(expected, got)
    assert np.array_equal(np.load(path), x)  # the file is untouched


def test_user_arrays_are_never_modified_by_evaluate():
    import opis_cli
    from opis_cli.engines.sampled import SampledEngine

    x, y, _ = _rows(n=300)
    keep = x.copy()
    for metric in ("cosine", "l2"):
        opis_cli.evaluate(x, y, metric=metric, engine=SampledEngine(negatives_per_query=50),
                          timestamp=False)
        assert x.tobytes() == keep.tobytes()


def test_permute_rows_follows_every_cycle():
    from opis_cli.prepare import _permute_rows

    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 500):
        for src in (rng.permutation(n), np.arange(n), np.roll(np.arange(n), 1)):
            x = rng.standard_normal((n, 4)).astype(np.float32)
            want = x[src]
            assert _permute_rows(x, src) is x
            assert x.tobytes() == want.tobytes()


def test_squared_norms_in_chunks_equal_the_whole_array_at_once(monkeypatch):
    import opis_cli.prepare as P

    x = (np.random.default_rng(4).standard_normal((1000, 37)) * 30 + 5).astype(np.float32)
    whole = np.einsum("ij,ij->i", x.astype(np.float64), x.astype(np.float64))
    monkeypatch.setattr(P, "_CHUNK", 64)
    assert P._sq_norms(x).tobytes() == whole.tobytes()


@pytest.mark.parametrize("dim", [37, 384])
def test_normalised_rows_are_the_same_whatever_the_chunk(monkeypatch, dim):
    import opis_cli.prepare as P

    x = (np.random.default_rng(dim).standard_normal((1000, dim)) * 30 + 5).astype(np.float32)
    monkeypatch.setattr(P, "_CHUNK", 10**9)
    whole = P._float32_rows(x, "cosine")
    for chunk in (1, 64, 333):
        monkeypatch.setattr(P, "_CHUNK", chunk)
        assert P._float32_rows(x, "cosine").tobytes() == whole.tobytes()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_evaluate_copy_false_hands_the_array_over_with_the_same_result(metric):
    import opis_cli

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = rng.integers(0, 9, 300)
    want = opis_cli.evaluate(x, y, metric=metric, timestamp=False).to_json()
    kept = x.copy()
    given = x.copy()
    got = opis_cli.evaluate(given, y, metric=metric, timestamp=False, copy=False).to_json()
    assert got == want
    assert not np.array_equal(given, kept)  # normalised / reordered in place
    assert np.array_equal(x, kept)  # copy=True (the default) never touched x
