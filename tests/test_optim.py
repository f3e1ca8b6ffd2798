"""The recipe's optimiser, schedule and model EMA (netspec/train/optim.py), against torch and formulas."""

import math

import pytest

torch = pytest.importorskip("torch")

from pydantic import ValidationError  # noqa: E402
from torch import nn  # noqa: E402

import netspec  # noqa: E402
from netspec.semantics.recipe import Recipe  # noqa: E402
from netspec.train import optim  # noqa: E402

SPEC = """
network Small(classes=3) {
  input x: [2, 6, 6]
  conv(4, kernel=3) -> batchnorm() -> relu()
  conv(4, kernel=3, bias=false) -> layernorm() -> groupnorm(2) -> relu()
  flatten()
  linear(classes)
}
"""


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, bias=False),
                         nn.LayerNorm([4, 2, 2]), nn.Flatten(), nn.Linear(16, 3))


def names_by_group(model, groups):
    names = {id(p): name for name, p in model.named_parameters()}
    return [([names[id(p)] for p in group["params"]], group["weight_decay"]) for group in groups]


def lrs(recipe, steps_per_epoch, model=None):
    """The lr of each optimiser step of the whole run, plus the one the schedule ends on."""
    optimiser, schedule = optim.make_optimiser(recipe, model or small_model(), steps_per_epoch)
    values = [optimiser.param_groups[0]["lr"]]
    for _ in range(recipe.epochs * steps_per_epoch):
        optimiser.step()
        schedule.step()
        values.append(optimiser.param_groups[0]["lr"])
    return values


# --- parameter groups ---------------------------------------------------------------------------------

def test_groups_follow_torchvision_set_weight_decay():
    model = small_model()
    groups = optim.parameter_groups(model, 1e-4, norm_weight_decay=0.0, bias_weight_decay=0.5)
    assert names_by_group(model, groups) == [
        (["0.weight", "3.weight", "6.weight"], 1e-4),
        (["1.weight", "4.weight"], 0.0),
        (["0.bias", "1.bias", "4.bias", "6.bias"], 0.5),  # a norm layer's bias is a bias, as in torchvision
    ]


def test_groups_without_norm_or_bias_settings_are_one_group_in_parameter_order():
    model = small_model()
    groups = optim.parameter_groups(model, 0.05)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.05
    assert [id(p) for p in groups[0]["params"]] == [id(p) for p in model.parameters()]
    norm_only = optim.parameter_groups(model, 0.05, norm_weight_decay=0.0)
    assert names_by_group(model, norm_only) == [
        (["0.weight", "0.bias", "3.weight", "6.weight", "6.bias"], 0.05),
        (["1.weight", "1.bias", "4.weight", "4.bias"], 0.0),
    ]


def test_groups_skip_frozen_shared_and_empty():
    model = small_model()
    model[6].weight = model[0].weight = nn.Parameter(torch.zeros(4, 2, 3, 3))  # one tensor in two modules
    model[6].bias.requires_grad_(False)
    model[1].requires_grad_(False)
    groups = optim.parameter_groups(model, 0.1, norm_weight_decay=0.0, bias_weight_decay=0.0)
    placed = [p for group in groups for p in group["params"]]
    assert len({id(p) for p in placed}) == len(placed) == 5
    assert names_by_group(model, groups) == [(["0.weight", "3.weight"], 0.1), (["4.weight"], 0.0),
                                             (["0.bias", "4.bias"], 0.0)]
    frozen_norms = nn.Sequential(nn.Linear(2, 2, bias=False), nn.BatchNorm1d(2).requires_grad_(False))
    assert [g["weight_decay"] for g in optim.parameter_groups(frozen_norms, 0.1, 0.0, 0.0)] == [0.1]


def test_groups_of_a_compiled_spec_place_netspec_norm_layers(tmp_path):
    (tmp_path / "small.net").write_text(SPEC)
    model = netspec.compile(tmp_path / "small.net", seed=0)
    kinds = {name: type(module).__name__ for name, module in model.named_modules()}
    groups = optim.parameter_groups(model, 0.1, norm_weight_decay=0.0, bias_weight_decay=0.2)
    got = [sorted({kinds[n.rpartition(".")[0]] for n in names}) + [decay]
           for names, decay in names_by_group(model, groups)]
    assert got == [["Conv2d", "Linear", 0.1], ["BatchNorm2d", "GroupNorm", "LayerNorm2d", 0.0],
                   ["BatchNorm2d", "Conv2d", "GroupNorm", "LayerNorm2d", "Linear", 0.2]]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_optimisers_take_each_groups_decay():
    model = small_model()
    for name, cls in (("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        recipe = Recipe(optimizer=name, lr=0.5, weight_decay=1e-4, norm_weight_decay=0.0, schedule="none")
        optimiser, _ = optim.make_optimiser(recipe, model, 3)
        assert type(optimiser) is cls
        assert [(len(g["params"]), g["weight_decay"], g["lr"]) for g in optimiser.param_groups] == [
            (5, 1e-4, 0.5), (4, 0.0, 0.5)]
    sgd = optim.make_optimiser(Recipe(optimizer="sgd", momentum=0.8, nesterov=True), model, 3)[0]
    assert (sgd.defaults["momentum"], sgd.defaults["nesterov"]) == (0.8, True)


# --- schedules ----------------------------------------------------------------------------------------

def single_group_optimiser(recipe, model, steps_per_epoch):
    """What make_optimiser built before weight-decay groups and warmup: one group, a schedule over the run."""
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps = recipe.epochs * steps_per_epoch
    schedule = {"onecycle": lambda: torch.optim.lr_scheduler.OneCycleLR(optimiser, recipe.lr, total_steps=steps),
                "cosine": lambda: torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=steps),
                "step": lambda: torch.optim.lr_scheduler.StepLR(optimiser, recipe.step_size * steps_per_epoch,
                                                                recipe.gamma),
                "none": lambda: torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: 1.0)}[recipe.schedule]()
    return optimiser, schedule


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step", "none"])
def test_schedules_without_warmup_match_the_single_group_version(schedule):
    recipe = Recipe(schedule=schedule, epochs=4, step_size=1, gamma=0.5, lr=0.1, weight_decay=0.01)
    model = small_model()
    old_optimiser, old_schedule = single_group_optimiser(recipe, model, 5)
    new_optimiser, new_schedule = optim.make_optimiser(recipe, model, 5)
    assert type(new_schedule) is type(old_schedule)
    # one group, so optimiser state saved by earlier versions loads
    assert new_optimiser.state_dict()["param_groups"] == old_optimiser.state_dict()["param_groups"]
    old = [old_optimiser.param_groups[0]["lr"]]
    for _ in range(4 * 5 - (schedule == "onecycle")):  # OneCycleLR refuses a step past its total
        old_optimiser.step()
        old_schedule.step()
        old.append(old_optimiser.param_groups[0]["lr"])
    assert lrs(recipe, 5)[:len(old)] == old


def test_onecycle_is_torchs_over_all_steps():
    reference = torch.optim.Adam(small_model().parameters(), lr=0.02)
    onecycle = torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=0.02, total_steps=3 * 7)
    expected = [reference.param_groups[0]["lr"]]
    for _ in range(3 * 7 - 1):  # OneCycleLR refuses a step past total_steps; the run's last is not taken
        reference.step()
        onecycle.step()
        expected.append(reference.param_groups[0]["lr"])
    recipe = Recipe(schedule="onecycle", epochs=3, lr=0.02)
    optimiser, schedule = optim.make_optimiser(recipe, small_model(), 7)
    got = [optimiser.param_groups[0]["lr"]]
    for _ in range(3 * 7 - 1):
        optimiser.step()
        schedule.step()
        got.append(optimiser.param_groups[0]["lr"])
    assert got == expected


def cosine(lr, lr_min, t, total):
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * t / total)) / 2


def test_linear_warmup_then_cosine():
    lr, lr_min, decay, per_epoch = 0.4, 0.004, 0.01, 5
    recipe = Recipe(schedule="cosine", epochs=6, warmup_epochs=2, warmup_decay=decay, lr=lr, lr_min=lr_min)
    got = lrs(recipe, per_epoch)
    warmup, main = 2 * per_epoch, 4 * per_epoch
    expected = [lr * (decay + (1 - decay) * s / warmup) for s in range(warmup)]
    expected += [cosine(lr, lr_min, t, main) for t in range(main + 1)]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert got[0] == pytest.approx(0.004) and got[warmup] == lr and got[-1] == pytest.approx(lr_min)


def test_constant_warmup_then_step():
    lr, decay, per_epoch = 0.1, 0.25, 3
    recipe = Recipe(schedule="step", epochs=7, warmup_epochs=1, warmup_method="constant", warmup_decay=decay,
                    lr=lr, step_size=2, gamma=0.5)
    got = lrs(recipe, per_epoch)
    expected = [lr * decay] * per_epoch + [lr * 0.5 ** (t // (2 * per_epoch)) for t in range(6 * per_epoch + 1)]
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[per_epoch - 1:per_epoch + 1] == [0.025, 0.1] and got[-1] == pytest.approx(0.0125)


def test_linear_warmup_then_constant():
    recipe = Recipe(schedule="none", epochs=3, warmup_epochs=1, warmup_decay=0.2, lr=1.0)
    assert lrs(recipe, 4) == pytest.approx([0.2, 0.4, 0.6, 0.8] + [1.0] * 9, rel=1e-12)


def test_every_group_follows_the_schedule():
    recipe = Recipe(schedule="cosine", epochs=3, warmup_epochs=1, lr=0.3, weight_decay=0.1, norm_weight_decay=0.0,
                    bias_weight_decay=0.0)
    optimiser, schedule = optim.make_optimiser(recipe, small_model(), 4)
    for _ in range(6):
        optimiser.step()
        schedule.step()
    assert len(optimiser.param_groups) == 3
    assert [g["lr"] for g in optimiser.param_groups] == pytest.approx([cosine(0.3, 0.0, 2, 8)] * 3, rel=1e-12)


@pytest.mark.parametrize("settings", [dict(schedule="cosine", warmup_epochs=2, lr_min=0.001),
                                      dict(schedule="step", warmup_epochs=1, warmup_method="constant", step_size=1),
                                      dict(schedule="none", warmup_epochs=3),
                                      dict(schedule="onecycle")])
def test_a_resumed_schedule_continues_with_the_same_lrs(settings):
    recipe = Recipe(epochs=5, lr=0.2, optimizer="sgd", weight_decay=0.01, norm_weight_decay=0.0, **settings)
    per_epoch, stop = 4, 9  # stopped inside or just after warmup, before the end
    uninterrupted = lrs(recipe, per_epoch)
    optimiser, schedule = optim.make_optimiser(recipe, small_model(), per_epoch)
    for _ in range(stop):
        optimiser.step()
        schedule.step()
    saved_optimiser, saved_schedule = optimiser.state_dict(), schedule.state_dict()
    optimiser, schedule = optim.make_optimiser(recipe, small_model(), per_epoch)
    optimiser.load_state_dict(saved_optimiser)
    schedule.load_state_dict(saved_schedule)
    resumed = [optimiser.param_groups[0]["lr"]]
    for _ in range(recipe.epochs * per_epoch - stop):
        optimiser.step()
        schedule.step()
        resumed.append(optimiser.param_groups[0]["lr"])
    assert resumed == uninterrupted[stop:]


def test_steps_per_epoch_must_be_positive():
    with pytest.raises(ValueError, match="at least one optimiser step"):
        optim.make_optimiser(Recipe(), small_model(), 0)


@pytest.mark.parametrize("settings, message", [
    (dict(schedule="onecycle", warmup_epochs=1), "one-cycle warms up by itself"),
    (dict(schedule="cosine", warmup_epochs=10, epochs=10), r"warmup_epochs \(10\) must be fewer than epochs \(10\)"),
])
def test_recipe_refuses_warmup_it_cannot_run(settings, message):
    with pytest.raises(ValidationError, match=message):
        Recipe(**settings)


# --- model EMA ----------------------------------------------------------------------------------------

def bn_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def perturb(model, seed):
    """Moves the parameters and the batch-norm buffers, as a training step would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(model.parameters()) + [model[1].running_mean, model[1].running_var]:
            tensor.add_(torch.randn(tensor.shape, generator=generator))
        model[1].num_batches_tracked += 10


def test_ema_decay_adjustment():
    recipe = Recipe(ema=True, ema_decay=0.99998, ema_steps=32, epochs=600, batch_size=1024)
    assert optim.ema_decay(recipe, 8, 128) == pytest.approx(1 - 2e-5 * 8 * 128 * 32 / 600, rel=1e-12)
    accumulated = Recipe(ema=True, ema_decay=0.999, ema_steps=4, epochs=10, grad_accumulation=2)
    assert optim.ema_decay(accumulated, 2, 16) == pytest.approx(1 - 0.001 * 2 * 16 * 2 * 4 / 10, rel=1e-12)
    assert optim.ema_decay(Recipe(ema=True, ema_decay=0.9, epochs=1), 1, 128) == 0.0  # alpha capped at 1


def test_make_ema_only_when_asked():
    assert optim.make_ema(Recipe(), bn_model(), 1, 64) is None
    recipe = Recipe(ema=True, ema_decay=0.999, ema_steps=2, epochs=8)
    ema = optim.make_ema(recipe, bn_model(), 1, 16)
    assert isinstance(ema, torch.optim.swa_utils.AveragedModel) and ema.use_buffers
    assert ema.decay == pytest.approx(1 - 0.001 * 16 * 2 / 8, rel=1e-12)


def test_ema_after_k_updates_is_the_hand_computed_average():
    model, decay = bn_model(), 0.75
    ema = optim.ExponentialMovingAverage(model, decay)
    expected = None
    for seed in range(4):
        perturb(model, seed)
        ema.update_parameters(model)
        current = {k: v.clone() for k, v in model.state_dict().items()}
        expected = current if expected is None else {
            k: (decay * expected[k] + (1 - decay) * current[k]).to(current[k].dtype) for k in current}
    averaged = ema.module.state_dict()
    for key in ("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "2.weight"):
        torch.testing.assert_close(averaged[key], expected[key], rtol=1e-6, atol=1e-6)
        assert not torch.equal(averaged[key], model.state_dict()[key])
    # num_batches_tracked, averaged as torchvision does and rounded down: 10, then 0.75*10+0.25*20 = 12.5 -> 12,
    # 0.75*12+0.25*30 = 16.5 -> 16, 0.75*16+0.25*40 = 22
    assert averaged["1.num_batches_tracked"].item() == 22
    assert ema.n_averaged.item() == 4


def test_ema_state_dict_has_the_models_keys(tmp_path):
    (tmp_path / "small.net").write_text(SPEC)
    model = netspec.compile(tmp_path / "small.net", seed=0)
    ema = optim.make_ema(Recipe(ema=True), model, 1, 8)
    assert list(ema.module.state_dict()) == list(model.state_dict())
    ema.update_parameters(model)
    fresh = netspec.compile(tmp_path / "small.net", seed=1)
    fresh.load_state_dict(ema.module.state_dict())  # what `netspec eval` does with the EMA's weights
    x = torch.randn(2, 2, 6, 6)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_ema_step_updates_every_ema_steps_and_copies_during_warmup():
    recipe = Recipe(ema=True, ema_steps=3, ema_decay=0.99, epochs=4, warmup_epochs=1, schedule="cosine")
    model = bn_model()
    ema = optim.ExponentialMovingAverage(model, decay=0.5)
    updates = []
    for epoch, step in [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (0, 6)]:  # the warmup epoch
        perturb(model, 10 * epoch + step)
        optim.ema_step(ema, model, step, recipe, epoch)
        updates.append(ema.n_averaged.item())
        if step % 3 == 0:  # reset after each update: the EMA holds a copy of the model
            torch.testing.assert_close(ema.module.state_dict(), model.state_dict(), rtol=0, atol=0)
    assert updates == [0, 0, 0, 0, 0, 0]
    copied = {k: v.clone() for k, v in model.state_dict().items()}
    perturb(model, 99)
    optim.ema_step(ema, model, 1, recipe, 1)  # not an update step: nothing moves
    torch.testing.assert_close(ema.module.state_dict(), copied, rtol=0, atol=0)
    optim.ema_step(ema, model, 3, recipe, 1)  # after warmup the count is kept; the first update still copies
    assert ema.n_averaged.item() == 1
    torch.testing.assert_close(ema.module.state_dict(), model.state_dict(), rtol=0, atol=0)
    copied = {k: v.clone() for k, v in model.state_dict().items()}
    perturb(model, 100)
    optim.ema_step(ema, model, 6, recipe, 1)  # then averages
    assert ema.n_averaged.item() == 2
    torch.testing.assert_close(ema.module.state_dict()["0.weight"],
                               0.5 * copied["0.weight"] + 0.5 * model.state_dict()["0.weight"], rtol=0, atol=0)
    optim.ema_step(None, model, 0, recipe, 2)  # no EMA: nothing to do
