"""The "Hilos conversation" button of a task instance."""

from __future__ import annotations

from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.links import CONVERSATION_URL_ATTRIBUTE, CONVERSATION_URL_XCOM_KEY, HilosConversationLink
from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
from tests.helpers import CID


def test_the_link_is_declared_on_the_operator_and_reads_the_url_the_operator_stores():
    link = HilosConversationLink()
    assert link.name == "Hilos conversation" and link.xcom_key == CONVERSATION_URL_XCOM_KEY
    assert isinstance(ConversationUpdateOperator.operator_extra_links[0], HilosConversationLink)


def test_the_url_is_the_web_app_s_conversation_page(hilos_conn):
    hilos_conn(extra={"web_base_url": "https://eu.app.hilos.io/"})
    assert HilosHook().conversation_web_url(CID) == f"https://eu.app.hilos.io/inbox/conversation/{CID}"


def test_on_airflow_3_the_link_reads_the_operator_that_ran_and_never_looks_up_xcom(monkeypatch):
    """Audit 2 point 13: a task that failed before it knew its URL logged "XCom not found" as it ended."""
    import airflow.providers.common.compat.sdk as sdk
    from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

    looked_up: list[object] = []

    class Recording:
        @staticmethod
        def get_value(**kwargs):
            looked_up.append(kwargs)
            return None

    monkeypatch.setattr(sdk, "XCom", Recording, raising=False)
    op = ConversationUpdateOperator(task_id="t", conversation_id=CID, payload={"status": "CLOSED"})
    link = HilosConversationLink()
    if AIRFLOW_V_3_0_PLUS:
        assert link.get_link(op, ti_key=object()) == "" and looked_up == []  # failed before the URL was known
    setattr(op, CONVERSATION_URL_ATTRIBUTE, "https://app.hilos.io/inbox/conversation/x")
    assert link.get_link(op, ti_key=object()) == "https://app.hilos.io/inbox/conversation/x"
    assert looked_up == []
