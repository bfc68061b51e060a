"""DAGs the integration tests run (tests/integration/). Conversation ids come from the run's conf."""

from __future__ import annotations

import pendulum

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator

START = pendulum.datetime(2025, 1, 1, tz="UTC")
CID = "{{ dag_run.conf['conversation_id'] }}"


@task
def make_payload() -> dict:
    return {"status": "CLOSED", "tags": [{"name": "vip"}, {"name": "renewal"}], "assigned": [{"id": 3}]}


with DAG(
    "hilos_test_xcom_native",
    schedule=None,
    start_date=START,
    catchup=False,
    render_template_as_native_obj=True,
    tags=["test"],
):
    payload = make_payload()
    via_xcomarg = ConversationUpdateOperator(task_id="via_xcomarg", conversation_id=CID, payload=payload)
    via_jinja_native = ConversationUpdateOperator(
        task_id="via_jinja_native",
        conversation_id="{{ dag_run.conf['second_id'] }}",
        payload="{{ ti.xcom_pull(task_ids='make_payload') }}",
        assigned_team=2,
    )
    payload >> via_jinja_native


with DAG("hilos_test_xcom_string", schedule=None, start_date=START, catchup=False, tags=["test"]):
    payload = make_payload()
    via_jinja_json = ConversationUpdateOperator(
        task_id="via_jinja_json",
        conversation_id=CID,
        payload="{{ ti.xcom_pull(task_ids='make_payload') | tojson }}",
    )
    via_jinja_repr = ConversationUpdateOperator(
        task_id="via_jinja_repr",
        conversation_id="{{ dag_run.conf['second_id'] }}",
        payload="{{ ti.xcom_pull(task_ids='make_payload') }}",
        status="RESOLVED",
    )
    payload >> [via_jinja_json, via_jinja_repr]


with DAG("hilos_test_mapped", schedule=None, start_date=START, catchup=False, tags=["test"]):

    @task
    def changes(**context) -> list[dict]:
        return [
            {"conversation_id": cid, "payload": {"status": "IN_PROGRESS", "assigned_team": 1}}
            for cid in context["dag_run"].conf["ids"]
        ]

    ConversationUpdateOperator.partial(task_id="update").expand_kwargs(changes())


with DAG("hilos_test_failures", schedule=None, start_date=START, catchup=False, tags=["test"]):
    ConversationUpdateOperator(
        task_id="bad_token", conversation_id=CID, payload={"status": "NEW"}, hilos_conn_id="hilos_bad_token"
    )
    ConversationUpdateOperator(task_id="bad_payload", conversation_id=CID, payload='{"status": "DONE"}')
    ConversationUpdateOperator(
        task_id="unknown_conversation", conversation_id="{{ dag_run.conf['missing_id'] }}", payload={"status": "NEW"}
    )


with DAG("hilos_test_batch", schedule=None, start_date=START, catchup=False, tags=["test"]):
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    @task
    def batch_rows(**context) -> list[dict]:
        return [{"conversation_id": cid, "status": "RESOLVED"} for cid in context["dag_run"].conf["ids"]]

    ConversationBatchUpdateOperator(task_id="batch", updates=batch_rows(), max_concurrency=8)


with DAG("hilos_test_secrecy", schedule=None, start_date=START, catchup=False, tags=["test"]):
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    ConversationUpdateOperator(task_id="succeeds", conversation_id=CID, payload={"status": "RESOLVED"})
    ConversationUpdateOperator(
        task_id="unauthorized", conversation_id=CID, payload={"status": "NEW"}, hilos_conn_id="hilos_bad_token"
    )
    ConversationUpdateOperator(
        task_id="server_errors_exhausted", conversation_id=CID, payload={"status": "NEW"}, hilos_conn_id="hilos_failing"
    )
    ConversationUpdateOperator(task_id="bad_payload", conversation_id=CID, payload="{'status': 'DONE', 'x': 1}")
    ConversationBatchUpdateOperator(
        task_id="batch_with_failures",
        hilos_conn_id="hilos_failing",
        max_concurrency=2,
        updates=[
            {"conversation_id": CID, "status": "CLOSED"},
            {"conversation_id": "{{ dag_run.conf['missing_id'] }}", "status": "CLOSED"},
        ],
    )


with DAG(
    "hilos_test_retries",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["test"],
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=0)},
):
    ConversationUpdateOperator(
        task_id="revoked_token", conversation_id=CID, payload={"status": "NEW"}, hilos_conn_id="hilos_revoked"
    )
    ConversationUpdateOperator(
        task_id="api_down", conversation_id=CID, payload={"status": "NEW"}, hilos_conn_id="hilos_down"
    )


with DAG("hilos_test_alert_pattern", schedule=None, start_date=START, catchup=False, tags=["test"]):
    # The README's failure-alert pattern: a summary that runs whatever happened, and a watcher that keeps
    # the DAG run red when the batch failed (a leaf task that succeeds would turn the run green).
    from airflow.providers.common.compat.sdk import AirflowFailException, TriggerRule

    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    apply = ConversationBatchUpdateOperator(task_id="apply", updates="{{ dag_run.conf['rows'] | tojson }}")

    @task(trigger_rule=TriggerRule.ALL_DONE)
    def summary(ti=None) -> dict:
        result = ti.xcom_pull(task_ids="apply", key="hilos_batch_result")
        print(f"Hilos sync: {result['updated']} updated, {result['failed']} failed")
        return result

    @task(trigger_rule=TriggerRule.ONE_FAILED)
    def fail_run_if_batch_failed() -> None:
        raise AirflowFailException("the Hilos batch failed: see its log and report")

    apply >> [summary(), fail_run_if_batch_failed()]


with DAG(
    "hilos_test_plain_values",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"team": 2},  # rendered without render_template_as_native_obj: "{{ params.team }}" is the text "2"
    tags=["test"],
):
    # What DAG authors type: plain tag names and user ids, a templated id, and rows from a warehouse query
    # where SQL NULL (None) means "leave this field as it is", the same for mapped tasks and the batch.
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    ConversationUpdateOperator(
        task_id="plain",
        conversation_id=CID,
        status="IN_PROGRESS",
        tags=["vip", " renewal ", "vip"],
        assigned=[3, "1"],
        assigned_team="{{ params.team }}",
        channel=None,
    )

    @task
    def warehouse_rows(first: int, **context) -> list[dict]:
        ids = context["dag_run"].conf["ids"][first : first + 2]
        return [
            {"conversation_id": ids[0], "status": "RESOLVED", "tags": ["churn"], "assigned": None, "channel": None},
            {"conversation_id": ids[1], "status": None, "tags": None, "assigned": [2], "assigned_team": "1"},
        ]

    ConversationUpdateOperator.partial(task_id="mapped").expand_kwargs(warehouse_rows.override(task_id="for_mapped")(0))
    ConversationBatchUpdateOperator(
        task_id="batch", updates=warehouse_rows.override(task_id="for_batch")(2), max_concurrency=2
    )


with DAG(
    "hilos_test_dry_run",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"dry_run": True},  # rendered as the text "True"
    tags=["test"],
):
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    ConversationUpdateOperator(
        task_id="single", conversation_id=CID, status="CLOSED", tags=["vip"], dry_run="{{ params.dry_run }}"
    )
    ConversationBatchUpdateOperator(
        task_id="batch", updates="{{ dag_run.conf['rows'] | tojson }}", dry_run="{{ params.dry_run }}"
    )


with DAG("hilos_test_asset_outlet", schedule=None, start_date=START, catchup=False, tags=["test"]):
    from airflow.providers.common.compat.assets import Asset

    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    ConversationBatchUpdateOperator(
        task_id="sync",
        updates="{{ dag_run.conf['rows'] | tojson }}",
        outlets=[Asset("hilos://crm/conversations")],
    )


with DAG(
    "hilos_test_templated_options",
    schedule=None,
    start_date=START,
    catchup=False,
    params={"rate": 10},
    default_args={"max_concurrency": 3},  # a batch option, from default_args like any operator argument
    tags=["test"],
):
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    @task
    def templated_rows(**context) -> list[dict]:
        return [{"conversation_id": cid, "status": "IN_PROGRESS"} for cid in context["dag_run"].conf["ids"]]

    ConversationBatchUpdateOperator(
        task_id="batch", updates=templated_rows(), max_requests_per_second="{{ params.rate }}"
    )


with DAG("hilos_test_kill", schedule=None, start_date=START, catchup=False, tags=["test"]):
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    # a long batch over a slow connection, for the end-to-end test that marks it failed while it runs
    ConversationBatchUpdateOperator(
        task_id="long_batch",
        updates_path="{{ dag_run.conf['updates_path'] }}",
        checkpoint_path="{{ dag_run.conf['checkpoint_path'] }}",
        max_concurrency=8,
        hilos_conn_id="hilos_slow",
    )


with DAG("hilos_test_outage", schedule=None, start_date=START, catchup=False, tags=["test"]):
    from airflow_provider_hilos.operators.conversation import ConversationBatchUpdateOperator

    # a paced batch, deferrable, for the end-to-end test where the API goes down for about 90 s in its middle
    ConversationBatchUpdateOperator(
        task_id="paced_batch",
        updates_path="{{ dag_run.conf['updates_path'] }}",
        checkpoint_path="{{ dag_run.conf['checkpoint_path'] }}",
        max_concurrency=4,
        max_requests_per_second=40,
        deferrable=True,
        defer_after_seconds=5,
        hilos_conn_id="hilos_outage",
    )


with DAG(
    "hilos_test_approval",
    schedule=None,
    start_date=START,
    catchup=False,
    tags=["test"],
    render_template_as_native_obj=True,
):
    from airflow_provider_hilos.operators.sync import ConversationSyncOperator

    # a sync whose plan is over its limit (max_changes) waits for a person's approval in the UI
    ConversationSyncOperator(
        task_id="sync",
        state="{{ dag_run.conf['rows'] }}",
        state_store="{{ dag_run.conf['state_store'] }}",
        report_path="{{ dag_run.conf['report_path'] }}",
        max_changes=5,
        approval_timeout=900,
        hilos_conn_id="hilos_approval",
    )
