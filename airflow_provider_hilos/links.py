"""Extra links: buttons on a task instance that open the Hilos web app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

#: XCom key under which the operator stores the conversation's web URL (one per map index).
CONVERSATION_URL_XCOM_KEY = "hilos_conversation_url"
#: The operator attribute holding the same URL while the task runs.
CONVERSATION_URL_ATTRIBUTE = "hilos_conversation_url"


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
        """The URL the operator recorded. Airflow 3 calls this in the task, as it ends, with the operator that ran:
        the URL is on it (or the task failed before it knew one), so there is no XCom to look up, and no "XCom not
        found" error after a failure. Airflow 2's webserver calls it with the DAG's operator: the URL is in XCom."""
        url: Any = getattr(operator, CONVERSATION_URL_ATTRIBUTE, None)
        if url is None:
            from airflow.providers.common.compat.version_compat import AIRFLOW_V_3_0_PLUS

            if AIRFLOW_V_3_0_PLUS:
                return ""
            from airflow.providers.common.compat.sdk import XCom

            url = XCom.get_value(ti_key=ti_key, key=CONVERSATION_URL_XCOM_KEY)
        return url if isinstance(url, str) else ""
