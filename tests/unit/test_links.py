"""The "Hilos conversation" button of a task instance."""

from __future__ import annotations

from airflow_provider_hilos.hooks.hilos import HilosHook
from airflow_provider_hilos.links import CONVERSATION_URL_XCOM_KEY, HilosConversationLink
from airflow_provider_hilos.operators.conversation import ConversationUpdateOperator
from tests.helpers import CID


def test_the_link_is_declared_on_the_operator_and_reads_the_url_the_operator_stores():
    link = HilosConversationLink()
    assert link.name == "Hilos conversation" and link.xcom_key == CONVERSATION_URL_XCOM_KEY
    assert isinstance(ConversationUpdateOperator.operator_extra_links[0], HilosConversationLink)


def test_the_url_is_the_web_app_s_conversation_page(hilos_conn):
    hilos_conn(extra={"web_base_url": "https://eu.app.hilos.io/"})
    assert HilosHook().conversation_web_url(CID) == f"https://eu.app.hilos.io/inbox/conversation/{CID}"
