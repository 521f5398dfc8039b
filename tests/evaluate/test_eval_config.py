import pytest

from onesearch_jax.evaluate.eval_config import EvalConfig


def test_defaults_and_sorted_cutoffs():
    config = EvalConfig(ks=[10, 1, 5])
    assert config.ks == (1, 5, 10) and config.top_k == 10 and config.beam_size == 20


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ks": (1, 30)}, r"K = 30 is larger than the beam \(20\).*raise EvalConfig.beam_size"),
        ({"beam_size": 4}, r"K = 10 is larger than the beam \(4\)"),
        ({"ks": ()}, "ks must be distinct ints >= 1"),
        ({"ks": (5, 5)}, "ks must be distinct ints >= 1"),
        ({"ks": (0, 5)}, "ks must be distinct ints >= 1"),
        ({"ks": (True,)}, "ks must be distinct ints >= 1"),
        ({"split": "train"}, r"split must be one of \('valid', 'test'\)"),
        ({"input_field": "query"}, "input_field must be one of"),
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"input_length": 1}, "input_length must be an int >= 2"),
        ({"max_queries": 0}, "max_queries must be an int >= 1"),
        ({"watch_poll_seconds": 0}, "watch_poll_seconds must be a number > 0"),
        ({"watch_timeout_seconds": True}, "watch_timeout_seconds must be a number > 0"),
    ],
)
def test_bad_settings_are_refused_with_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EvalConfig(**kwargs)
