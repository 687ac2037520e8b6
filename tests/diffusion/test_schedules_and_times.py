import pytest
import torch

from xdlm.diffusion import schedules, time_sampling

SCHEDULES = [
    ("loglinear", {}), ("loglinear", {"eps": 1e-2}), ("cosine", {}), ("polynomial", {"w": 2.5}),
    ("polynomial", {"w": 0.5}), ("geometric", {}), ("geometric", {"sigma_min": 1e-3, "sigma_max": 5.0}),
]


@pytest.mark.parametrize("name,params", SCHEDULES)
def test_dalpha_is_the_derivative_of_alpha(name, params):
    sched = schedules.get(name, **params)
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    numeric = (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h)
    torch.testing.assert_close(sched.dalpha(t), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("name,params", SCHEDULES)
def test_alpha_decreases_from_clean_to_noise(name, params):
    sched = schedules.get(name, **params)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    alpha = sched.alpha(t)
    assert (alpha[1:] < alpha[:-1]).all()
    assert alpha[0] > 0.99 and 0 < alpha[-1] < 0.05
    assert (sched.dalpha(t[1:]) < 0).all()


def test_closed_forms():
    t = torch.tensor([0.25], dtype=torch.float64)
    assert float(schedules.get("loglinear", eps=0.0 + 1e-3).alpha(t)) == pytest.approx(1 - 0.999 * 0.25)
    assert float(schedules.get("polynomial", w=2.0, eps=0.5).alpha(t)) == pytest.approx(1 - 0.5 / 16)
    sigma = 1e-4 ** 0.75 * 20 ** 0.25
    assert float(schedules.get("geometric").alpha(t)) == pytest.approx(torch.exp(torch.tensor(-sigma)).item())


def test_unknown_schedule_lists_available():
    with pytest.raises(ValueError, match="unknown schedule 'linear'; available: cosine, geometric, loglinear, polynomial"):
        schedules.get("linear")
    assert schedules.available() == ["cosine", "geometric", "loglinear", "polynomial"]


@pytest.mark.parametrize("name,params,field", [
    ("loglinear", {"eps": 0.0}, "eps"), ("polynomial", {"w": -1.0}, "w"),
    ("geometric", {"sigma_min": 2.0, "sigma_max": 1.0}, "sigma_min"), ("cosine", {"bogus": 1}, "eps"),
])
def test_bad_schedule_parameters(name, params, field):
    with pytest.raises(ValueError, match=field):
        schedules.get(name, **params)


def test_antithetic_times_are_stratified():
    n = 64
    t = time_sampling.antithetic_times(n, t_min=1e-3, generator=torch.Generator().manual_seed(0))
    assert t.shape == (n,) and (t >= 1e-3).all() and (t <= 1).all()
    u = (t - 1e-3) / (1 - 1e-3)
    strata = torch.floor(u * n).long().sort().values
    assert torch.equal(strata, torch.arange(n))  # exactly one time per stratum


def test_shards_are_disjoint_and_cover_the_global_batch():
    t = time_sampling.antithetic_times(48, generator=torch.Generator().manual_seed(1))
    shards = [time_sampling.shard_times(t, r, 3, a, 4) for a in range(4) for r in range(3)]
    assert all(s.shape == (4,) for s in shards)
    assert torch.equal(torch.cat(shards).sort().values, t.sort().values)
    # strided: every micro-batch spans low and high times
    assert all(s.min() < 0.3 and s.max() > 0.7 for s in shards)


def test_shard_rejects_bad_layout():
    t = torch.rand(10)
    with pytest.raises(ValueError, match="not divisible"):
        time_sampling.shard_times(t, 0, 3)
    with pytest.raises(ValueError, match="rank"):
        time_sampling.shard_times(t, 2, 2)
