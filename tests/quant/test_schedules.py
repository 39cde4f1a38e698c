"""The one home of the quantizers' training schedules (seglearn.quant.schedules) and its protocol."""

import importlib

import pytest

import seglearn.quant.schedules as schedules
from seglearn.quant.convert import quantize_model, scheme_callbacks

MOVED = {"elq": "ELQCallback", "featq": "FeatQExponentClamp", "iao": "IAOSchedule",
         "tsq": "TSQSchedule"}
SCHEDULES = ("BinaryNetClip", "INQSchedule", *MOVED.values())


def test_every_schedule_follows_the_one_protocol():
    from seglearn.train.callbacks import Callback

    assert Callback is schedules.Callback  # train re-exports quant's protocol, it has no copy
    for name in SCHEDULES:
        assert issubclass(getattr(schedules, name), Callback), name


@pytest.mark.parametrize("module,name", sorted(MOVED.items()))
def test_old_import_paths_give_the_same_class(module, name):
    mod = importlib.import_module(f"seglearn.quant.{module}")
    assert getattr(mod, name) is getattr(schedules, name)
    with pytest.raises(AttributeError, match=f"seglearn.quant.{module}.*no_such_name"):
        mod.no_such_name  # noqa: B018 (the module __getattr__ still refuses unknown names)


@pytest.mark.parametrize("scheme,expected", [
    ({"weight": "binarynet", "act": "binarynet"}, {"BinaryNetClip"}),
    ({"weight": "inq", "w_bits": 5}, {"INQSchedule"}),
    ({"weight": "elq"}, {"ELQCallback"}),
    ({"act": "featq", "act_args": {"mode": "power"}}, {"FeatQExponentClamp"}),
    ({"weight": "iao", "act": "iao"}, {"IAOSchedule"}),
    ({"weight": "tsq", "act": "tsq"}, {"TSQSchedule"}),
])
def test_each_method_gets_its_schedule_from_the_one_module(scheme, expected):
    from seglearn.models import FCN

    model = quantize_model(FCN(3, width=4, depth=2), {"first_last": "float", **scheme})
    cbs = scheme_callbacks(model, scheme)
    assert {type(c).__name__ for c in cbs} == expected
    assert all(type(c).__module__ == "seglearn.quant.schedules" for c in cbs)


def test_tsq_schedule_settings_checked_once_for_weight_and_schedule():
    from seglearn.quant.tsq import TSQWeight, check_schedule_args

    assert check_schedule_args(0.5, 3, 2, 40) == {"step1": 0.5, "solve_iters": 3,
                                                  "solve_batches": 2, "max_cols": 40}
    for bad in ({"step1": 1.5}, {"solve_iters": -1}, {"solve_batches": 0}, {"max_cols": True}):
        with pytest.raises(ValueError, match="tsq weight_args"):
            TSQWeight(**bad)
        with pytest.raises(ValueError, match="tsq weight_args"):
            schedules.TSQSchedule(**bad)
