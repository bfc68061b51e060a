"""BatchOptions: one definition of every option, checked once."""

from __future__ import annotations

import dataclasses
import inspect
from unittest import mock

import pytest

from airflow_provider_hilos.batch import BatchOptions
from airflow_provider_hilos.batch.options import with_batch_options
from airflow_provider_hilos.exceptions import HilosValidationError
from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator


def test_options_are_checked_once_with_clear_messages():
    for bad, match in [
        ({"max_concurrency": 0}, "from 1 to 256"),
        ({"failure_policy": "sometimes"}, "not one of"),
        ({"max_failed_ratio": 2}, "from 0 to 1"),
        ({"max_invalid_ratio": -1}, "max_invalid_ratio"),
        ({"max_requests_per_second": 0}, "greater than 0"),
        ({"max_failed_rows": -1}, "0 or more"),
        ({"progress_interval": "soon"}, "seconds"),
    ]:
        with pytest.raises(ValueError, match=match):
            BatchOptions(**bad)
    assert BatchOptions(failure_policy="fail_fast").failure_policy == "fail_fast"
    assert "max_concurrency" in BatchOptions.names() and len(BatchOptions.names()) == 8


# -- one definition: the operators' arguments come from BatchOptions ------------------------------------------


def test_the_batch_operator_takes_every_option_as_a_flat_argument_with_its_default_and_doc():
    signature = inspect.signature(ConversationBatchUpdateOperator.__init__)
    for field in dataclasses.fields(BatchOptions):
        parameter = signature.parameters[field.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default == field.default
        assert f":param {field.name}:" in (ConversationBatchUpdateOperator.__doc__ or "")
    assert list(signature.parameters)[-1] == "kwargs"  # BaseOperator's arguments still pass through
    assert set(BatchOptions.names()) <= set(ConversationBatchUpdateOperator.template_fields)


def test_an_option_added_to_batch_options_becomes_an_argument_without_another_copy():
    """What an operator's signature is built from: the dataclass's fields, whatever they are."""

    @dataclasses.dataclass(frozen=True)
    class Grown(BatchOptions):
        new_knob: int = 7

    with mock.patch("airflow_provider_hilos.batch.options.fields", lambda _cls: dataclasses.fields(Grown)):

        def __init__(self, *, updates=None, **kwargs):
            pass

        assert "new_knob" in inspect.signature(with_batch_options(__init__)).parameters


def test_options_are_checked_when_the_dag_is_parsed_and_templates_after_rendering():
    with pytest.raises(ValueError, match=r"ConversationBatchUpdateOperator 'b': max_concurrency=0 must be"):
        ConversationBatchUpdateOperator(task_id="b", updates=[], max_concurrency=0)
    op = ConversationBatchUpdateOperator(
        task_id="b",
        updates=[],
        max_requests_per_second="{{ params.rate }}",  # checked once rendered
        max_concurrency=4,
    )
    assert op.max_requests_per_second == "{{ params.rate }}" and op.max_concurrency == 4
    op.max_requests_per_second = "40"  # what the template rendered, as text
    assert op.batch_options() == BatchOptions(max_concurrency=4, max_requests_per_second=40.0)
    op.max_requests_per_second = "-1"
    with pytest.raises(HilosValidationError, match=r"max_requests_per_second=-1.0 must be a number greater than 0"):
        op.batch_options()


@pytest.mark.parametrize(
    ("rendered", "expected"),
    [
        ({"max_concurrency": "8"}, {"max_concurrency": 8}),
        ({"max_requests_per_second": "12.5"}, {"max_requests_per_second": 12.5}),
        ({"max_requests_per_second": "None"}, {"max_requests_per_second": None}),
        ({"max_failed_ratio": "0.1", "max_invalid_ratio": ""}, {"max_failed_ratio": 0.1, "max_invalid_ratio": None}),
        (
            {"skip_invalid_rows": "True", "failure_policy": "never"},
            {"skip_invalid_rows": True, "failure_policy": "never"},
        ),
        ({"max_failed_rows": "5", "progress_interval": "0"}, {"max_failed_rows": 5, "progress_interval": 0.0}),
    ],
)
def test_numbers_and_flags_a_template_rendered_as_text_are_read(rendered, expected):
    assert BatchOptions.from_arguments(rendered) == BatchOptions(**expected)


@pytest.mark.parametrize(
    ("rendered", "match"),
    [
        ({"max_concurrency": "8.5"}, "max_concurrency='8.5' must be a whole number"),
        ({"skip_invalid_rows": "maybe"}, "skip_invalid_rows='maybe' must be True or False"),
        ({"max_failed_ratio": "lots"}, "max_failed_ratio='lots' must be a number from 0 to 1"),
    ],
)
def test_rendered_text_that_is_not_the_option_s_type_is_refused_naming_it(rendered, match):
    with pytest.raises(ValueError, match=match):
        BatchOptions.from_arguments(rendered)
