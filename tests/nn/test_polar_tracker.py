import copy

import pytest
import torch

from lowrank_gnn.nn import NuclearNormRegularizer, PolarTracker


def reference(matrix, rank=None):
    """float64 SVD: the nuclear (or Ky Fan) norm and U V^T of the leading ``rank`` triplets."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    k = s.shape[-1] if rank is None else rank
    return s[..., :k].sum(-1), u[..., :k] @ vh[..., :k, :]


def follow(tracker, start, end, steps=200, settle=300):
    """Track the straight path from ``start`` to ``end``, then ``settle`` more calls at ``end``."""
    values = []
    for t in torch.linspace(0, 1, steps).tolist():
        values.append(tracker((1 - t) * start + t * end))
    for _ in range(settle):
        values.append(tracker(end))
    return values


def path(shape, dtype, seed):
    """Two matrices with singular values in [1, 4] whose difference has spectral norm 0.5: the straight
    path between them stays full rank, so its polar factor moves continuously."""
    g = torch.Generator().manual_seed(seed)
    *batch, m, n = shape
    k = min(m, n)
    left = torch.linalg.qr(torch.randn(*batch, m, k, dtype=torch.float64, generator=g))[0]
    right = torch.linalg.qr(torch.randn(*batch, n, k, dtype=torch.float64, generator=g))[0]
    start = left @ torch.diag_embed(torch.linspace(1, 4, k, dtype=torch.float64).expand(*batch, k)) @ right.mT
    step = torch.randn(*shape, dtype=torch.float64, generator=g)
    end = start + 0.5 * step / torch.linalg.matrix_norm(step, ord=2)[..., None, None]
    return start.to(dtype), end.to(dtype)


@pytest.mark.parametrize("shape", [(24, 24), (30, 18), (18, 30), (2, 20, 12)])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_tracks_nuclear_norm_and_polar_factor_along_a_path(shape, dtype, tol):
    start, end = path(shape, dtype, seed=1)
    tracker = PolarTracker(deflate=4)
    value, direction = follow(tracker, start, end)[-1]
    exact, polar = reference(end)
    assert value.dtype == dtype and direction.shape == end.shape
    torch.testing.assert_close(value.double(), exact, rtol=tol, atol=0)
    torch.testing.assert_close(direction.double(), polar, rtol=0, atol=50 * tol)


def test_estimate_is_a_lower_bound_at_every_step():
    start, end = path((20, 16), torch.float64, seed=2)
    tracker = PolarTracker(deflate=3)
    for t in torch.linspace(0, 1, 50).tolist():
        matrix = (1 - t) * start + t * end
        value, direction = tracker(matrix)
        assert float(value) <= float(reference(matrix)[0]) * (1 + 1e-6)
        # orthogonal up to the Newton-Schulz remainder
        assert float(torch.linalg.matrix_norm(direction, ord=2)) <= 1 + 1e-4


@pytest.mark.parametrize("shape", [(14, 9), (9, 14)])
def test_ky_fan_norm_converges_from_an_unrelated_start(shape):
    g = torch.Generator().manual_seed(3)
    matrix = torch.randn(*shape, dtype=torch.float64, generator=g)
    tracker = PolarTracker(rank=3)
    tracker(torch.randn(*shape, dtype=torch.float64, generator=g))  # state of another matrix
    for _ in range(300):
        value, direction = tracker(matrix)
    exact, polar = reference(matrix, rank=3)
    torch.testing.assert_close(value, exact, rtol=1e-10, atol=0)
    torch.testing.assert_close(direction, polar, rtol=0, atol=1e-8)


@pytest.mark.parametrize("rows", [16, 12])
def test_repeated_and_zero_singular_values(rows):
    g = torch.Generator().manual_seed(4)
    left = torch.linalg.qr(torch.randn(rows, 12, dtype=torch.float64, generator=g))[0]
    right = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64, generator=g))[0]
    values = torch.tensor([3.0, 3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    matrix = left @ torch.diag(values) @ right.T
    near = matrix + 0.05 * torch.randn(rows, 12, dtype=torch.float64, generator=g)
    for tracker, exact in ((PolarTracker(deflate=4), values.sum()), (PolarTracker(rank=4), values[:4].sum())):
        value, direction = follow(tracker, near, matrix, steps=50)[-1]
        torch.testing.assert_close(value, exact, rtol=1e-9, atol=0)
        # a subgradient: spectral norm <= 1 and <D, X> = the norm (the direction is not unique here)
        assert float(torch.linalg.matrix_norm(direction, ord=2)) <= 1 + 1e-8
        torch.testing.assert_close((direction * matrix).sum(), exact, rtol=1e-9, atol=0)


def crossing(shape, dtype, seed):
    """A path on which the smallest singular value goes through zero: ``diag(1..4, s)`` with ``s`` from
    ``0.5`` to ``-0.5`` in fixed bases; at the end the norm counts ``|s| = 0.5``, while a tracker that
    follows the path continuously pairs that singular vector with the wrong sign (for a square matrix:
    a tall one leaves room to turn the sign round continuously)."""
    g = torch.Generator().manual_seed(seed)
    m, n = shape
    left = torch.linalg.qr(torch.randn(m, n, dtype=torch.float64, generator=g))[0]
    right = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))[0]
    values = torch.linspace(4, 1, n, dtype=torch.float64)

    def at(signed):
        return (left @ torch.diag(torch.cat([values[:-1], values.new_tensor([signed])])) @ right.T).to(dtype)

    return at(0.5), at(-0.5)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_sign_block_recovers_a_singular_value_that_went_through_zero(dtype, tol):
    start, end = crossing((12, 12), dtype, seed=7)
    exact, polar = reference(end)
    value, direction = follow(PolarTracker(deflate=3), start, end)[-1]
    torch.testing.assert_close(value.double(), exact, rtol=tol, atol=0)
    torch.testing.assert_close(direction.double(), polar, rtol=0, atol=50 * tol)
    # without the block the ascent stays at the local maximum with that sign wrong: 2 * 0.5 low
    value = follow(PolarTracker(deflate=3, sign_block=0), start, end)[-1][0]
    torch.testing.assert_close(value.double(), exact - 1.0, rtol=tol, atol=0)


@pytest.mark.parametrize("sign_block", [0, 1, 100])
def test_converges_with_any_sign_block_width(sign_block):
    start, end = path((18, 14), torch.float64, seed=8)
    value, direction = follow(PolarTracker(deflate=3, sign_block=sign_block), start, end)[-1]
    exact, polar = reference(end)
    torch.testing.assert_close(value, exact, rtol=1e-9, atol=0)
    torch.testing.assert_close(direction, polar, rtol=0, atol=1e-8)


def test_zero_matrix_gives_zero_and_a_finite_direction():
    tracker = PolarTracker(deflate=2)
    value, direction = tracker(torch.zeros(6, 5))
    value, direction = tracker(torch.zeros(6, 5))
    assert float(value) == 0.0 and bool(torch.isfinite(direction).all())


def test_regularizer_polar_gradient_matches_the_svd():
    start, end = path((14, 9), torch.float64, seed=5)
    reg = NuclearNormRegularizer(strength=0.3, method="polar", deflate=3)
    for t in torch.linspace(0, 1, 100).tolist():
        reg((1 - t) * start + t * end)
    for _ in range(200):
        reg(end)
    x = end.clone().requires_grad_()
    value = reg(x)
    value.backward()
    expected = end.clone().requires_grad_()
    (0.3 * torch.linalg.matrix_norm(expected, ord="nuc")).backward()
    torch.testing.assert_close(value.detach(), 0.3 * reference(end)[0], rtol=1e-10, atol=0)
    torch.testing.assert_close(x.grad, expected.grad, rtol=0, atol=1e-8)
    assert reg.aux_loss is None and list(reg.parameters()) == []


def test_state_dict_round_trip_and_mismatch_error():
    g = torch.Generator().manual_seed(6)
    matrix = torch.randn(10, 8, dtype=torch.float64, generator=g)
    tracker = PolarTracker(deflate=2)
    tracker(matrix)
    fresh = PolarTracker(deflate=2)
    fresh.load_state_dict(tracker.state_dict())
    for a, b in zip(fresh(matrix), tracker(matrix), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="tracks a matrix of another shape"):
        tracker(torch.randn(11, 8, dtype=torch.float64))
    tracker.reset()
    tracker(torch.randn(11, 8, dtype=torch.float64))  # a fresh start after reset()


def test_deep_copied_state_dict_is_a_snapshot():
    """The n x n state is updated in place (state_dict() shares it, as with parameters); a deep copy taken
    mid-path restores the tracker to that point exactly."""
    start, end = path((12, 12), torch.float64, seed=17)
    tracker = PolarTracker(deflate=2, sign_block=4)
    follow(tracker, start, end, steps=10, settle=0)
    snapshot = copy.deepcopy(tracker.state_dict())
    expected = tracker(end)
    follow(tracker, end, start, steps=10, settle=0)
    tracker.load_state_dict(snapshot)
    for a, b in zip(tracker(end), expected, strict=True):
        assert torch.equal(a, b)


def test_sign_block_runs_every_second_call_and_checkpoints_keep_the_schedule():
    """The sign block updates its directions on calls 0, 2, 4, ... only; a checkpoint saves where in that schedule
    the tracker is, so a tracker loaded from it continues exactly, and one without it (as saved before the schedule
    existed) loads strictly and starts the schedule again."""
    start, end = path((12, 12), torch.float64, seed=19)
    source = PolarTracker(deflate=2, sign_block=4)
    steps = torch.linspace(0, 1, 6).tolist()
    for i, t in enumerate(steps[:3]):
        before = None if source.lowest is None else source.lowest.clone()
        source((1 - t) * start + t * end)
        assert (i % 2 == 1) == (before is not None and torch.equal(source.lowest, before))
    state = copy.deepcopy(source.state_dict())
    assert state["_extra_state"] == 1
    loaded = PolarTracker(deflate=2, sign_block=4)
    loaded.load_state_dict(state)
    for t in steps[3:]:
        matrix = (1 - t) * start + t * end
        for a, b in zip(loaded(matrix), source(matrix), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(loaded.lowest, source.lowest) and torch.equal(loaded.floor, source.floor)
    restarted = PolarTracker(deflate=2, sign_block=4)
    restarted(start)  # at position 1 of the schedule: the checkpoint without it must move it back to 0
    assert restarted.get_extra_state() == 1
    restarted.load_state_dict({name: value for name, value in state.items() if name != "_extra_state"})
    assert restarted.get_extra_state() == 0
    before = restarted.lowest.clone()
    restarted(end)
    assert not torch.equal(restarted.lowest, before)
    restarted.reset()
    assert restarted.get_extra_state() == 0


def test_a_tracker_pickled_without_the_schedule_position_starts_it():
    """A whole module saved before it had a schedule position (no ``_calls`` attribute) still runs."""
    start, end = path((10, 10), torch.float64, seed=5)
    tracker = PolarTracker(deflate=2, sign_block=3)
    tracker(start)
    del tracker.__dict__["_calls"]
    assert tracker.get_extra_state() == 0
    tracker(end)
    assert tracker.get_extra_state() == 1


def test_float32_matrices_of_huge_scale_stay_finite():
    """The power iteration normalises after each product: sigma_max(R)^2 of entries near 1e10 would overflow
    float32 inside one norm of R^T R p."""
    start, end = path((24, 16), torch.float32, seed=3)
    tracker = PolarTracker(deflate=2, sign_block=4)
    for t in torch.linspace(0, 1, 4).tolist():
        value, direction = tracker(((1 - t) * start + t * end) * 1e10)
        assert torch.isfinite(value).all() and torch.isfinite(direction).all()
    exact = torch.linalg.matrix_norm(end.double() * 1e10, ord="nuc")
    assert abs(float(value) - float(exact)) <= 0.05 * float(exact)


def without_sign_block(state):
    """A checkpoint as a tracker without the sign block state saves it (no ``lowest`` / ``floor``)."""
    return {name: value for name, value in state.items() if name not in ("lowest", "floor")}


@pytest.mark.parametrize("started", [False, True])
def test_checkpoint_without_sign_block_loaded_into_a_sign_block_tracker_runs_the_block(started):
    """A checkpoint stuck with a wrong sign (sign_block=0, or one saved without the block's state) loaded into a
    sign_block=8 tracker, fresh or started: the block is rebuilt, runs and recovers the sign."""
    start, end = crossing((12, 12), torch.float64, seed=7)
    exact = reference(end)[0]
    stuck = PolarTracker(deflate=3, sign_block=0)
    assert torch.isclose(follow(stuck, start, end)[-1][0], exact - 1.0, rtol=1e-9)
    assert "lowest" not in stuck.state_dict() and "floor" not in stuck.state_dict()  # as older checkpoints
    tracker = PolarTracker(deflate=3, sign_block=8)
    if started:
        tracker(start)
    tracker.load_state_dict(stuck.state_dict())
    lowest, right = tracker.lowest, tracker.right
    assert lowest is not None and lowest.shape == (1, 12, 8) and tracker.floor is not None
    torch.testing.assert_close(lowest.mT @ lowest, torch.eye(8, dtype=torch.float64).expand(1, 8, 8), rtol=0,
                               atol=1e-12)
    assert float((right.mT @ lowest).abs().max()) < 1e-12  # on the complement of V
    value = follow(tracker, end, end, steps=1, settle=200)[-1][0]
    torch.testing.assert_close(value, exact, rtol=1e-9, atol=0)


def test_sign_block_checkpoint_follows_the_loading_trackers_sign_block():
    """A sign_block=8 checkpoint: dropped by a sign_block=0 tracker (which then computes what a sign_block=0 tracker
    with the same state does), rebuilt at width 4 by a sign_block=4 one, deterministically."""
    matrix = torch.randn(14, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    source = PolarTracker(deflate=3, sign_block=8)
    for _ in range(5):
        source(matrix)
    state = source.state_dict()
    for started in (False, True):
        zero = PolarTracker(deflate=3, sign_block=0)
        if started:
            zero(matrix)
        zero.load_state_dict(state)
        assert zero.lowest is None and zero.floor is None and "lowest" not in zero.state_dict()
        expected = PolarTracker(deflate=3, sign_block=0)
        expected.load_state_dict(without_sign_block(state))
        for a, b in zip(zero(matrix), expected(matrix), strict=True):
            assert torch.equal(a, b)
    narrow, again = PolarTracker(deflate=3, sign_block=4), PolarTracker(deflate=3, sign_block=4)
    narrow.load_state_dict(state)
    again(matrix)
    again.load_state_dict(state)
    assert narrow.lowest is not None and narrow.lowest.shape == (1, 12, 4)
    assert torch.equal(narrow.lowest, again.lowest)
    assert narrow.floor is not None and torch.equal(narrow.floor, torch.zeros(1, 1, 1, dtype=torch.float64))
    for a, b in zip(narrow(matrix), again(matrix), strict=True):
        assert torch.equal(a, b)
    same = PolarTracker(deflate=3, sign_block=8)
    same.load_state_dict(state)  # a matching block is kept as saved
    assert torch.equal(same.lowest, source.lowest) and torch.equal(same.floor, source.floor)


def test_sign_block_state_of_the_wrong_width_is_rejected():
    matrix = torch.randn(10, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    tracker = PolarTracker(deflate=2, sign_block=5)
    tracker(matrix)
    tracker.lowest = tracker.lowest[..., :3]
    with pytest.raises(ValueError, match=r"sign block state \(\(1, 9, 3\).*sign_block=5, which needs \(1, 9, 5\)"
                                         r".*reset\(\)"):
        tracker(matrix)
    tracker.reset()
    tracker(matrix)


@pytest.mark.parametrize("make, match", [
    (lambda: PolarTracker(step=2.0), r"step must be a number in \(0, 2\)"),
    (lambda: PolarTracker(momentum=1.0), r"momentum must be a number in \[0, 1\)"),
    (lambda: PolarTracker(deflate=0), "deflate must be a positive integer"),
    (lambda: PolarTracker(sign_block=-1), r"sign_block must be an integer >= 0 \(got sign_block=-1\)"),
    (lambda: NuclearNormRegularizer(method="polar", sign_block=2.5), "sign_block must be an integer >= 0"),
    (lambda: NuclearNormRegularizer(method="svd"), "method must be one of 'qr', 'polar'"),
])
def test_rejects_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_rejects_rank_above_the_matrix():
    with pytest.raises(ValueError, match=r"rank must satisfy 1 <= rank <= min\(m, n\)=3 \(got rank=4\)"):
        PolarTracker(rank=4)(torch.randn(5, 3))



def test_returned_values_do_not_alias_the_state():
    """The step updates its state in place: what a call returned stays as it was after the next calls."""
    start, end = path((16, 16), torch.float64, seed=11)
    tracker = PolarTracker(deflate=3)
    value, direction = tracker(start)
    kept = value.clone(), direction.clone()
    for _ in range(3):
        tracker(end)
    assert torch.equal(value, kept[0]) and torch.equal(direction, kept[1])
    assert all(direction.data_ptr() != buffer.data_ptr() for buffer in tracker.buffers())

def test_square_and_tall_steps_agree_on_the_norm():
    """A square matrix and the same matrix with zero rows appended (tall, the general step) have the same norm and
    polar factor (up to the zero rows): both trackers reach it."""
    start, end = path((16, 16), torch.float64, seed=13)
    pad = torch.zeros(5, 16, dtype=torch.float64)
    square = follow(PolarTracker(deflate=3), start, end)[-1]
    tall = follow(PolarTracker(deflate=3), torch.cat([start, pad]), torch.cat([end, pad]))[-1]
    exact, polar = reference(end)
    for value, direction in (square, (tall[0], tall[1][:16])):
        torch.testing.assert_close(value, exact, rtol=1e-9, atol=0)
        torch.testing.assert_close(direction, polar, rtol=0, atol=1e-8)
    torch.testing.assert_close(tall[1][16:], torch.zeros_like(pad), rtol=0, atol=1e-8)


def repeated_crossing(n, crossing, seed):
    """``diag(4 .. 1, s, ..., s)`` in fixed random bases with the last ``crossing`` singular values equal (repeated)
    and ``s`` going from ``0.5`` to ``-0.5``: they all cross zero together."""
    g = torch.Generator().manual_seed(seed)
    left = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))[0]
    right = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))[0]
    values = torch.linspace(4, 1, n - crossing, dtype=torch.float64)

    def at(signed):
        return left @ torch.diag(torch.cat([values, values.new_full((crossing,), signed)])) @ right.T

    return at(0.5), at(-0.5)


@pytest.mark.parametrize("crossing", [2, 3])
def test_sign_block_recovers_repeated_singular_values_that_went_through_zero(crossing):
    """Two or three equal singular values crossing zero at once (a repeated value, so the singular vectors are not
    unique; the polar factor is): the reflection on the block's negative Ritz vectors turns all of them back."""
    start, end = repeated_crossing(14, crossing, seed=14)
    exact, polar = reference(end)
    value, direction = follow(PolarTracker(deflate=3, sign_block=6), start, end)[-1]
    torch.testing.assert_close(value, exact, rtol=1e-9, atol=0)
    torch.testing.assert_close(direction, polar, rtol=0, atol=1e-8)
    if crossing % 2:  # an odd number of sign changes is the other component of the orthogonal group: without
        # the block one of them stays wrong (an even number is a saddle, which the ascent may leave)
        stuck = follow(PolarTracker(deflate=3, sign_block=0), start, end)[-1][0]
        torch.testing.assert_close(stuck, exact - 1.0, rtol=1e-9, atol=0)



@pytest.mark.parametrize("bad, error, match", [
    (torch.ones(6, 4, dtype=torch.long), TypeError, "floating"),
    (torch.ones(6, 4, dtype=torch.half), TypeError, "float16"),
    (torch.full((6, 4), float("nan"), dtype=torch.float64), ValueError, "NaN or Inf"),
    (torch.ones(6, dtype=torch.float64), ValueError, r"shape \(\*batch, m, n\)"),
    (torch.ones(0, 5, dtype=torch.float64), ValueError, "at least one row"),
    ([[1.0, 2.0]], TypeError, "torch.Tensor"),
])
def test_tracker_called_directly_checks_its_matrix(bad, error, match):
    """PolarTracker on its own (not through NuclearNormRegularizer) names a bad matrix clearly."""
    with pytest.raises(error, match=match):
        PolarTracker()(bad)
