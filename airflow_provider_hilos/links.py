"""Extra links: buttons on a task instance that open the Hilos web app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

#: XCom key under which the operator stores the conversation's web URL (one per map index).
CONVERSATION_URL_XCOM_KEY = "hilos_conversation_url"


class HilosConversationLink(BaseOperatorLink):
    """ "Hilos conversation": the updated conversation in the Hilos web app.

    The operator stores the URL in XCom before it sends the update, so the link works
    for failed tries and for each mapped task instance.
    """

    name = "Hilos conversation"

    @property
    def xcom_key(self) -> str:
        return CONVERSATION_URL_XCOM_KEY

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.providers.common.compat.sdk import XCom

        url: Any = XCom.get_value(ti_key=ti_key, key=CONVERSATION_URL_XCOM_KEY)
        return url if isinstance(url, str) else ""
